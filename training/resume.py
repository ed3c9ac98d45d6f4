"""Making a killed run continue exactly where it stopped, and deciding whether it should.

:func:`already_finished` and :func:`plan_start` decide what the command does with what
``--out`` already holds (return at once, start fresh, resume, or only finish).

``BackupAndRestore`` restores weights, optimizer state and the epoch counter, but the
other pieces of a run's state live elsewhere and need help:

- ``history.csv``: ``CSVLogger(append=True)`` appends; an epoch whose row was written
  before the kill but whose backup was not is trained again, so rows from the restored
  epoch on are cut before training resumes (exactly one row per epoch);
- ``ModelCheckpoint`` forgets its best value on restart and would overwrite a better
  ``model.keras`` with the first resumed epoch: it is given the best value so far;
- ``EarlyStopping`` / ``ReduceLROnPlateau`` forget their patience counters: the earlier
  epochs' logs are replayed into them;
- ``ModelCheckpoint`` writes ``model.keras`` in place: a kill (or the dashboard reading
  a live run) can meet half a zip file, so the checkpoint is written beside it and
  renamed.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import keras

from ferdash.runs.rundir import (
    BACKUP_DIR,
    EVALUATION_FILE,
    HISTORY_FILE,
    LITE_FILE,
    MODEL_FILE,
    RUN_FILE,
    read_run_info,
)
from training.errors import TrainingError

WEIGHTS_FILE = "latest.weights.h5"
METADATA_FILE = "training_metadata.json"


def _readable_h5(path: Path) -> bool:
    try:
        import h5py

        with h5py.File(path, "r"):
            return True
    except Exception:  # A half-written file raises a variety of h5py/OS errors.
        return False


def restorable_epoch(
    backup_dir: Path, can_load: Callable[[Path], bool] = _readable_h5
) -> int | None:
    """The epoch a ``BackupAndRestore`` backup will resume at, or None for a fresh start.

    A kill during the backup write can leave a truncated weights file or metadata; we
    fall back to the previous copy (``double_checkpoint=True`` keeps one) and drop the
    backup altogether when neither is usable, instead of failing on restart.
    ``can_load`` decides whether a weights file is usable (training passes one that
    loads it into the model: a cut file may still open as HDF5).
    """
    weights, meta = backup_dir / WEIGHTS_FILE, backup_dir / METADATA_FILE
    prev_weights, prev_meta = Path(f"{weights}.bkp"), Path(f"{meta}.bkp")

    def epoch_of(path: Path) -> int | None:
        try:
            return int(json.loads(path.read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    if weights.exists() and epoch_of(meta) is not None and can_load(weights):
        return epoch_of(meta)
    if prev_weights.exists() and epoch_of(prev_meta) is not None and can_load(prev_weights):
        shutil.copyfile(prev_weights, weights)
        shutil.copyfile(prev_meta, meta)
        return epoch_of(meta)
    if backup_dir.exists():
        shutil.rmtree(backup_dir)
    return None


def read_history_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        return [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r.get("epoch") not in (None, "")]
        return list(reader.fieldnames or []), rows


def truncate_history(path: Path, keep_epochs: int) -> list[dict[str, str]]:
    """Keep the rows of epochs ``0..keep_epochs-1`` (one each, the last written wins)."""
    fields, rows = read_history_rows(path)
    by_epoch: dict[int, dict[str, str]] = {}
    for row in rows:
        try:
            epoch = int(float(row["epoch"]))
        except ValueError:
            continue  # A line cut by the kill.
        if epoch < keep_epochs and all(row.get(k) not in (None, "") for k in fields):
            by_epoch[epoch] = row
    kept = [by_epoch[e] for e in sorted(by_epoch)]
    if fields:
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
        tmp.replace(path)
    return kept


def best_so_far(rows: list[dict[str, str]], monitor: str, mode: str = "max") -> float | None:
    values = []
    for row in rows:
        try:
            value = float(row[monitor])
        except (KeyError, ValueError):
            continue
        if not math.isnan(value):
            values.append(value)
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


class ReplayMonitors(keras.callbacks.Callback):
    """Feed earlier epochs' logs to patience-keeping callbacks once a resumed fit starts.

    Runs at the first ``on_epoch_begin``, i.e. after every ``on_train_begin`` (which
    resets those callbacks) and after ``BackupAndRestore`` restored the optimizer, whose
    learning rate is put back afterwards because replaying ``ReduceLROnPlateau`` would
    apply its earlier reductions a second time.
    """

    def __init__(self, rows: list[dict[str, str]], targets: list[keras.callbacks.Callback]):
        super().__init__()
        self.rows = rows
        self.targets = targets
        self._done = False

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._done or not self.rows:
            return
        self._done = True
        optimizer = self.model.optimizer
        lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        # Quiet while replaying: their messages would report past epochs as if new
        # (e.g. a learning-rate cut that is undone just below).
        verbosity = {id(cb): getattr(cb, "verbose", 0) for cb in self.targets}
        for cb in self.targets:
            cb.verbose = 0
        try:
            for row in self.rows:
                row_logs = {k: float(v) for k, v in row.items() if k != "epoch" and _is_number(v)}
                for cb in self.targets:
                    cb.set_model(self.model)
                    cb.on_epoch_end(int(float(row["epoch"])), row_logs)
        finally:
            for cb in self.targets:
                cb.verbose = verbosity[id(cb)]
        optimizer.learning_rate = lr
        # EarlyStopping may conclude from the replay that the run is over; let the
        # current epoch finish (it is already starting) and stop after it.


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` whose file appears whole or not at all (write, then rename)."""

    def __init__(self, filepath: str | Path, **kwargs: Any):
        self.final_path = Path(filepath)
        self.partial_path = partial_checkpoint(self.final_path)
        super().__init__(str(self.partial_path), **kwargs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        if self.partial_path.exists():
            os.replace(self.partial_path, self.final_path)


def partial_checkpoint(path: Path) -> Path:
    # Keras insists on a ".keras" suffix.
    return path.with_name(path.stem + ".partial.keras")


class ResumableSwapEMAWeights(keras.callbacks.SwapEMAWeights):
    """``SwapEMAWeights(swap_on_epoch=True)`` that knows a resumed run's weights came from
    a backup written with the average swapped in, so that it swaps them back before
    training (Keras' own assumes every fit starts with the raw weights in the model)."""

    def __init__(self, restored: bool) -> None:
        super().__init__(swap_on_epoch=True)
        self._restored = restored

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._ema_weights_in_model = self._restored


# --- what the command does with what is already in --out -------------------------------

#: The files of the contract (and the TF Lite copy) that make a folder hold a run.
RUN_FILES = (MODEL_FILE, RUN_FILE, HISTORY_FILE, EVALUATION_FILE, LITE_FILE)
#: Identity entries that name a path: compared as the same file, however they are spelt.
_PATH_KEYS = ("data", "init_from", "distill_from")


def _resolved(key: str, value: Any) -> Any:
    """A path entry as the folder it names ("../x" there and "../x" now may be two folders)."""
    return os.path.realpath(value) if key in _PATH_KEYS and isinstance(value, str) else value


def _same(key: str, there: Any, now: Any) -> bool:
    return _resolved(key, there) == _resolved(key, now)


def check_same_run(out: Path, meta: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    """Refuse to continue a run of other settings: its epochs and ours would share a history."""
    diffs = [
        f"{k}: {_resolved(k, meta.get(k))!r} there, {_resolved(k, v)!r} now"
        for k, v in expected.items()
        if k in meta and not _same(k, meta.get(k), v)
    ]
    if diffs:
        fix = (
            "re-run its own command to resume it, or pass --overwrite to start over"
            if what == "an unfinished run"
            else "pass --overwrite to retrain it, or choose another --out"
        )
        raise TrainingError(f"{out} holds {what} with other settings ({'; '.join(diffs)}); {fix}")


def read_meta(out: Path) -> dict[str, Any] | None:
    try:
        return read_run_info(out).meta
    except Exception:  # No or broken run.json.
        return None


def already_finished(
    out: Path, identity: dict[str, Any], *, overwrite: bool, log: Callable[[str], Any]
) -> bool:
    """Whether ``out`` holds this very run, finished: its own command then returns at
    once, before the data is read (neither the data nor an --init-from run need still be
    there). Refuses a finished run of other settings, and a folder holding files of a
    run this command did not start."""
    if overwrite:
        return False
    meta = read_meta(out)
    if not (out / BACKUP_DIR).exists() and meta is not None and meta.get("finished"):
        check_same_run(out, meta, identity, "a finished run")
        log(f"{out} already holds a finished run ({meta['finished']}); pass --overwrite to retrain")
        return True
    if (meta is None or "finished" not in meta) and any((out / n).exists() for n in RUN_FILES):
        raise TrainingError(
            f"{out} holds a run that this command did not start (its run.json is missing, "
            "unreadable or has no 'finished' entry); pass --overwrite to replace it, or "
            "choose another --out"
        )
    return False


def plan_start(
    out: Path,
    identity: dict[str, Any],
    *,
    overwrite: bool,
    model_loads: Callable[[Path], bool],
    log: Callable[[str], Any],
) -> str:
    """How training starts, once the data is read (``identity`` then has its classes):

    - ``"fresh"``: nothing to continue (or ``--overwrite``): clear the folder and train;
    - ``"resume"``: a backup of this run's settings: continue from it (it may still turn
      out unloadable, see :func:`restorable_epoch`);
    - ``"finish"``: every epoch was trained (``fit_ended`` is written just before
      BackupAndRestore deletes the backup) but a stop came before the run was finished:
      train nothing, only finish it.
    """
    if overwrite:
        return "fresh"
    has_backup = (out / BACKUP_DIR).exists()
    meta = read_meta(out) or {}
    fit_ended = bool(meta.get("fit_ended"))
    if has_backup or fit_ended:
        check_same_run(out, meta, identity, "an unfinished run")
    if fit_ended:
        if model_loads(out / MODEL_FILE):
            log(f"{out}: its epochs were all trained but the run was stopped before it was finished; finishing it")
            return "finish"
        log(f"{out}: its training had ended but model.keras cannot be loaded: training it again")
        return "fresh"
    # No backup: stopped during its first epoch, before any was written, or never begun.
    return "resume" if has_backup else "fresh"
