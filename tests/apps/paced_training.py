"""``python -m training`` that holds its first run at the start of epoch 2, for the Train panel test.

The browser test must cancel a run *between* epochs, but on generated data an epoch
takes well under a second: a cancel click would race the run's end. This wrapper runs
the real command line (same arguments, same code) with one extra Keras callback that,
the first time a run folder reaches the start of its second epoch, waits there until
the process is cancelled. Epoch 1 is complete by then (history row written, backup
saved), so a resume continues from epoch 2; the marker file makes the resumed process
go straight through.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402

import training.train as train_module  # noqa: E402
from training.__main__ import main  # noqa: E402

MARKER = ".paused-once"


class PauseOnceAtSecondEpoch(keras.callbacks.Callback):
    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.marker = marker

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if epoch == 1 and not self.marker.exists():
            self.marker.touch()
            # Until the Train panel's Cancel ends this process; a test that died
            # meanwhile must not leave it waiting for ever.
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                time.sleep(0.2)
            sys.exit("paced_training: nobody cancelled the paused run")


_run_training = train_module.run_training


def _paced(cfg, log=print):
    cfg.extra_callbacks.append(PauseOnceAtSecondEpoch(Path(cfg.out) / MARKER))
    return _run_training(cfg, log)


train_module.run_training = _paced

if __name__ == "__main__":
    sys.exit(main())
