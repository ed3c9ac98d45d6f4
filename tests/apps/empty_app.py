"""The app on an empty models folder: no trained model installed."""

import tempfile
from pathlib import Path

from ferdash.app import build_app

app = build_app(models_dirs=[Path(tempfile.mkdtemp(prefix="ferdash-empty-models-"))])
