"""The app for the Train panel's browser test.

Runs go to ``FERDASH_MODELS_DIR`` (set by the test to a fresh folder). Training is the
real command line run through ``paced_training.py``, which pauses a run once between
its first and second epoch so that the test can cancel it deterministically.
"""

import sys
from pathlib import Path

from ferdash import training_jobs
from ferdash.app import build_app

training_jobs.TRAIN_COMMAND = [sys.executable, str(Path(__file__).with_name("paced_training.py"))]

app = build_app()
