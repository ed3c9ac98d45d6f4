"""The app on two tiny untrained runs (fer7, happy_sad).

The runs are built once into a temporary folder named after the content of
``tests/tiny_runs.py`` and reused by later starts (no TensorFlow import at start-up,
nothing left behind per run); a changed builder gets a fresh folder.
"""

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS_DIR))  # for tiny_runs

from ferdash.app import build_app  # noqa: E402


def _tiny_models_dir() -> Path:
    digest = hashlib.sha256((TESTS_DIR / "tiny_runs.py").read_bytes()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"ferdash-tiny-runs-{digest}"
    if not target.is_dir():
        from tiny_runs import make_default_runs

        # Build aside, then rename: two test runs starting at once never see half a folder.
        staging = Path(tempfile.mkdtemp(prefix="ferdash-tiny-runs-building-"))
        make_default_runs(staging)
        try:
            os.rename(staging, target)
        except OSError:  # another process won the race; its folder is as good
            shutil.rmtree(staging, ignore_errors=True)
    return target


app = build_app(models_dirs=[_tiny_models_dir()])
