"""The dashboard on an empty models folder (the "how to train one" message)."""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from ferdash.app import build_app  # noqa: E402

ROOT = Path(tempfile.mkdtemp(prefix="ferdash-empty-"))
atexit.register(shutil.rmtree, ROOT, ignore_errors=True)
(ROOT / "models").mkdir()

app = build_app(models_dirs=[ROOT / "models"])
