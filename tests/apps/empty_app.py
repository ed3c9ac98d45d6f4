"""The app on an empty models folder: no trained model installed."""

import tempfile
from pathlib import Path

from ferdash.app import build_app

# A fixed folder (nothing is ever written into it), so no temporary folder is left per start.
_models = Path(tempfile.gettempdir()) / "ferdash-no-models"
_models.mkdir(exist_ok=True)

app = build_app(models_dirs=[_models])
