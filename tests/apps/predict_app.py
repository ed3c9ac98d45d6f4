"""The app on two tiny untrained runs (fer7, happy_sad) built into a temporary folder."""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tiny_runs

from tiny_runs import make_default_runs  # noqa: E402

from ferdash.app import build_app  # noqa: E402

_models = Path(tempfile.mkdtemp(prefix="ferdash-predict-app-"))
make_default_runs(_models)

app = build_app(models_dirs=[_models])
