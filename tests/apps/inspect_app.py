"""The dashboard on synthetic runs, for the Inspect browser tests.

At import it writes, into a fresh temporary folder:

- ``models/a-fernet``: seven classes, best_epoch in run.json, learning rate and each
  class's recall logged, calibrated (temperature 1.8), its misclassified faces drawn
  into ``data/``;
- ``models/b-tiny``: happy vs sad, learning rate logged as ``lr``, evaluated on a data
  folder that is not on this machine;
- ``models/c-broken``: run.json that is not JSON (history.csv fine);
- ``models/d-bad-history``: history.csv with text where numbers belong;
- ``extra/e-extra``: a run outside ``models/``, for the "also list runs in folder" input.

No model.keras anywhere: Inspect needs none. The folder is printed to stderr and removed
when the app exits. The tests pass ``INSPECT_APP_ROOT`` (an empty folder) to know
where the runs are; without it a temporary folder is made.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS_DIR))
sys.path.insert(0, str(TESTS_DIR.parent))

from synthetic_runs import make_broken_run, make_run  # noqa: E402

from ferdash.app import build_app  # noqa: E402

if os.environ.get("INSPECT_APP_ROOT"):
    ROOT = Path(os.environ["INSPECT_APP_ROOT"])
else:
    ROOT = Path(tempfile.mkdtemp(prefix="ferdash-inspect-"))
    atexit.register(shutil.rmtree, ROOT, ignore_errors=True)
MODELS = ROOT / "models"
DATA = ROOT / "data"
EXTRA = ROOT / "extra"

make_run(MODELS, "a-fernet", seed=1, epochs=10, best_epoch=6, parameters=2_345_678,
         data_dir=DATA, per_class=20, class_recall=True, temperature=1.8)
make_run(MODELS, "b-tiny", classes=("happy", "sad"), seed=2, epochs=5, architecture="tiny",
         parameters=12_345, input_size=(64, 64), data_dir=ROOT / "not-on-this-machine",
         write_faces=False, per_class=30)
# b-tiny logs its learning rate under the older Keras name "lr".
_hist = (MODELS / "b-tiny" / "history.csv")
_hist.write_text(_hist.read_text().replace("learning_rate", "lr"))
make_broken_run(MODELS, "c-broken", "run-json")
make_broken_run(MODELS, "d-bad-history", "history")
make_run(EXTRA, "e-extra", seed=3, epochs=3, architecture="wide", data_dir=DATA, per_class=5)

print(f"inspect_app: synthetic runs in {ROOT}", file=sys.stderr)

app = build_app(models_dirs=[MODELS])
