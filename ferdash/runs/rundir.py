"""The run-directory contract shared by `training/` (writer) and the app (reader).

A run directory `models/<name>/` holds:

- ``model.keras``: a Keras 3 model taking raw greyscale pixels (float 0-255, shape
  ``(H, W, 1)``), rescaling inside the model, returning softmax probabilities;
- ``run.json``: at least ``classes`` (output order) and ``input_size`` ``[H, W]``,
  plus what produced the run (architecture, data, epochs, seed, ...);
- ``history.csv``: the Keras ``CSVLogger`` file, one row per epoch; runs trained since
  per-class recall was recorded also hold ``recall_<class>`` and ``val_recall_<class>``
  columns (:func:`class_recall_metrics`);
- ``evaluation.json``: split, image count, accuracy, confusion matrix (rows = true
  class, columns = predicted, in ``classes`` order), per-class precision/recall/F1,
  and the misclassified files;
- optionally ``model.tflite``: the same model converted for TensorFlow Lite (dynamic-range
  quantised unless exported with ``--float32``), which the app runs; ``run.json``'s
  ``lite`` entry holds its SHA-256 and that of the ``model.keras`` it was converted
  from, so a damaged or stale copy is never run, and its ``quantization``;
- optionally ``temperature`` in ``run.json``: the temperature-scaling factor fitted on
  the validation data after training (``ferdash.runs.calibration``), which every prediction
  of the run is scaled by; ``evaluation.json``'s ``calibration`` then holds the ECE and
  NLL before and after it and both reliability tables. A run without one is unscaled.

Everything here is plain file I/O: no TensorFlow import, so the UI can list and
inspect runs without paying for it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .calibration import check_temperature

MODEL_FILE = "model.keras"
RUN_FILE = "run.json"
HISTORY_FILE = "history.csv"
EVALUATION_FILE = "evaluation.json"
LITE_FILE = "model.tflite"
#: Where an unfinished run keeps its BackupAndRestore state (removed when it finishes).
BACKUP_DIR = "backup"

FER2013_CLASSES: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "neutral",
    "sad",
    "surprise",
)


class RunDirError(ValueError):
    """A run directory, or one of its files, is missing or malformed."""


@dataclass(frozen=True)
class RunInfo:
    """What ``run.json`` says about a run, plus where it lives."""

    name: str
    path: Path
    classes: tuple[str, ...]
    input_size: tuple[int, int]
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def lite_path(self) -> Path:
        return self.path / LITE_FILE

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def evaluation_path(self) -> Path:
        return self.path / EVALUATION_FILE

    @property
    def temperature(self) -> float | None:
        """The run's temperature (checked by :func:`read_run_info`), None when unscaled."""
        return check_temperature(self.meta.get("temperature"))

    @property
    def is_happy_sad(self) -> bool:
        return set(self.classes) == {"happy", "sad"}

    @property
    def label(self) -> str:
        arch = self.meta.get("architecture")
        return f"{self.name} ({arch}, {len(self.classes)} classes)" if arch else self.name


@dataclass(frozen=True)
class Evaluation:
    """The content of ``evaluation.json``."""

    split: str
    image_count: int
    accuracy: float
    classes: tuple[str, ...]
    confusion_matrix: np.ndarray
    per_class: dict[str, dict[str, float]]
    macro_f1: float
    misclassified: list[dict[str, Any]]
    data_dir: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunListing:
    """One entry of :func:`discover_runs`: a run that loads, or why it does not."""

    name: str
    path: Path
    info: RunInfo | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.info is not None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunDirError(f"{path.name} is missing in {path.parent}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path.name} in {path.parent} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RunDirError(f"{path.name} in {path.parent} must hold a JSON object")
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # Write then rename, so that a reader (the dashboard polling a live run) never
    # sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    tmp.replace(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def read_run_info(run_dir: str | Path) -> RunInfo:
    """Read ``run.json``; raise :class:`RunDirError` saying what is wrong."""
    run_dir = Path(run_dir)
    meta = _read_json(run_dir / RUN_FILE)
    classes = meta.get("classes")
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or not all(isinstance(c, str) and c for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise RunDirError(f"run.json in {run_dir} needs 'classes': a list of 2+ distinct names")
    size = meta.get("input_size")
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise RunDirError(f"run.json in {run_dir} needs 'input_size': [height, width]")
    try:
        check_temperature(meta.get("temperature"))
    except ValueError as exc:
        raise RunDirError(f"run.json in {run_dir}: {exc}") from None
    return RunInfo(
        name=run_dir.name,
        path=run_dir,
        classes=tuple(classes),
        input_size=(size[0], size[1]),
        meta=meta,
    )


def write_run_info(
    run_dir: str | Path,
    classes: list[str] | tuple[str, ...],
    input_size: tuple[int, int] | list[int],
    **meta: Any,
) -> Path:
    """Write ``run.json`` (merging into an existing one, so a resumed run keeps its story)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_FILE
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = _read_json(path)
        except RunDirError:
            data = {}
    data.update(meta)
    data["classes"] = list(classes)
    data["input_size"] = [int(input_size[0]), int(input_size[1])]
    _write_json(path, data)
    return path


def class_recall_metrics(classes: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The ``history.csv`` metric name of each class's recall (validation: ``val_`` + it).

    ``recall_<class>`` with anything but letters, digits and ``_`` replaced by ``_``, so
    the columns read as the classes they are; by index (``recall_0``...) when two classes
    would share a name that way.
    """
    names = {c: "recall_" + re.sub(r"[^0-9A-Za-z_]", "_", c) for c in classes}
    if len(set(names.values())) < len(names):
        names = {c: f"recall_{i}" for i, c in enumerate(classes)}
    return names


#: Accuracy column names Keras may log in history.csv, in order of preference.
ACCURACY_COLUMNS = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy")
#: Learning-rate column names (``lr`` in older Keras).
LR_COLUMNS = ("learning_rate", "lr")


def accuracy_columns(history: pd.DataFrame) -> tuple[str | None, str | None]:
    """(train, validation) accuracy column names present in ``history``."""
    for name in ACCURACY_COLUMNS:
        if name in history.columns or f"val_{name}" in history.columns:
            train = name if name in history.columns else None
            val = f"val_{name}" if f"val_{name}" in history.columns else None
            return train, val
    return None, None


def lr_column(history: pd.DataFrame) -> str | None:
    """The learning-rate column, when the run logged one."""
    return next((c for c in LR_COLUMNS if c in history.columns), None)


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """Read ``history.csv`` (Keras CSVLogger: ``epoch`` plus one column per metric)."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        raise RunDirError(f"history.csv is missing in {path.parent}")
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RunDirError(f"history.csv in {path.parent} cannot be read: {exc}") from exc
    if "epoch" not in frame.columns or frame.empty:
        raise RunDirError(f"history.csv in {path.parent} has no 'epoch' rows")
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise RunDirError(
            f"history.csv in {path.parent} has non-numeric columns: {', '.join(non_numeric)}"
        )
    return frame


def read_evaluation(run_dir: str | Path) -> Evaluation:
    """Read ``evaluation.json`` and check that its matrix fits its classes."""
    run_dir = Path(run_dir)
    data = _read_json(run_dir / EVALUATION_FILE)
    try:
        classes = tuple(data["classes"])
        matrix = np.asarray(data["confusion_matrix"], dtype=np.int64)
        per_class = {str(k): dict(v) for k, v in data["per_class"].items()}
        evaluation = Evaluation(
            split=str(data["split"]),
            image_count=int(data["image_count"]),
            accuracy=float(data["accuracy"]),
            classes=classes,
            confusion_matrix=matrix,
            per_class=per_class,
            macro_f1=float(data.get("macro_f1", math.nan)),
            misclassified=list(data.get("misclassified", [])),
            data_dir=data.get("data_dir"),
            meta={k: v for k, v in data.items() if k not in _EVALUATION_KEYS},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RunDirError(f"evaluation.json in {run_dir} is malformed: {exc!r}") from exc
    n = len(classes)
    if matrix.shape != (n, n):
        raise RunDirError(
            f"evaluation.json in {run_dir}: confusion matrix is {matrix.shape}, expected ({n}, {n})"
        )
    return evaluation


_EVALUATION_KEYS = {
    "split",
    "image_count",
    "accuracy",
    "classes",
    "confusion_matrix",
    "per_class",
    "macro_f1",
    "misclassified",
    "data_dir",
}


def metrics_from_confusion(
    matrix: np.ndarray, classes: list[str] | tuple[str, ...]
) -> tuple[float, dict[str, dict[str, float]], float]:
    """Accuracy, per-class precision/recall/F1/support and macro-F1 of a confusion matrix."""
    matrix = np.asarray(matrix, dtype=np.int64)
    total = int(matrix.sum())
    tp = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    actual = matrix.sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(actual[i]),
        }
        for i, name in enumerate(classes)
    }
    accuracy = float(tp.sum() / total) if total else 0.0
    return accuracy, per_class, float(f1.mean()) if len(classes) else 0.0


def write_evaluation(
    run_dir: str | Path,
    *,
    split: str,
    classes: list[str] | tuple[str, ...],
    confusion_matrix: np.ndarray,
    misclassified: list[dict[str, Any]] | None = None,
    data_dir: str | Path | None = None,
    **meta: Any,
) -> Path:
    """Write ``evaluation.json``; accuracy and per-class metrics come from the matrix."""
    matrix = np.asarray(confusion_matrix, dtype=np.int64)
    accuracy, per_class, macro_f1 = metrics_from_confusion(matrix, classes)
    data = {
        "split": split,
        "data_dir": _relative_to_run(data_dir, Path(run_dir)),
        "image_count": int(matrix.sum()),
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "classes": list(classes),
        "confusion_matrix": matrix.tolist(),
        "per_class": per_class,
        **meta,
        "misclassified": misclassified or [],
    }
    path = Path(run_dir) / EVALUATION_FILE
    _write_json(path, data)
    return path


def _relative_to_run(data_dir: str | Path | None, run_dir: Path) -> str | None:
    # Stored relative to the run folder (readers resolve it from there), so a run and its
    # data that move together, e.g. a checkout with ../shared beside it, stay linked
    # whatever the working directory of the command that wrote it.
    if data_dir is None:
        return None
    return os.path.relpath(Path(data_dir).resolve(), run_dir.resolve())


def resolve_data_dir(evaluation: Evaluation, run_dir: str | Path) -> Path | None:
    """The evaluated folder of ``evaluation``: a relative data_dir is read from the run folder."""
    if not evaluation.data_dir:
        return None
    path = Path(evaluation.data_dir).expanduser()
    return path if path.is_absolute() else Path(run_dir) / path


def file_stamp(path: str | Path) -> tuple[int, int] | None:
    """``(st_mtime_ns, st_size)`` of ``path``, or None when it cannot be stat-ed.

    The cheap "has this file changed" fingerprint the caches and polls key on: a file
    rewritten in place (a run retrained, a history growing) gets a new stamp.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks (model files are megabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: ``quantization`` of a ``lite`` entry whose copy keeps its weights in int8 and quantises
#: each face's activations when it runs (TF Lite's dynamic-range quantisation).
DYNAMIC_RANGE = "dynamic-range"


def lite_entry(
    lite_path: str | Path, model_sha256: str, quantization: str | None = None
) -> dict[str, str]:
    """The ``lite`` entry of ``run.json``: ``lite_path``'s hash and its source model's, and
    how it was quantised (absent for a float32 copy)."""
    entry = {"file": LITE_FILE, "sha256": sha256_file(lite_path), "model_sha256": model_sha256}
    if quantization:
        entry["quantization"] = quantization
    return entry


#: The run the dashboard opens on when it is installed (the shipped seven-class run).
DEFAULT_RUN_NAME = "fer7"


def preferred_run(infos: Sequence[RunInfo], name: str | None) -> RunInfo | None:
    """The run a selector opens on: the one called ``name`` (a shipped run's) when there
    is one, else the first. Predict and Inspect share this rule, so both open on the
    same run. A run trained under the same name in another runs folder must not take
    the shipped model's place: among several, the one with the seven FER2013 classes."""
    named = [info for info in infos if info.name == name]
    named.sort(key=lambda info: tuple(info.classes) != tuple(FER2013_CLASSES))
    if named:
        return named[0]
    return infos[0] if infos else None


#: The files whose change means a run appeared, ended or was rewritten.
_WATCHED = (RUN_FILE, MODEL_FILE, HISTORY_FILE, EVALUATION_FILE)


def runs_signature(dirs: Iterable[str | Path]) -> tuple:
    """Cheap fingerprint of run folders: changes when a run appears, ends or is rewritten.

    A ``stat`` per watched file, so a poll can call it every few seconds; a folder that
    cannot be read counts as empty rather than raising into the poll.
    """
    sig: list[tuple] = []
    for root in dirs:
        try:
            run_dirs = sorted(p for p in Path(root).iterdir() if p.is_dir())
        except (OSError, ValueError):
            sig.append((str(root), None))
            continue
        for run_dir in run_dirs:
            for name in _WATCHED:
                stamp = file_stamp(run_dir / name)
                if stamp is not None:
                    sig.append((str(run_dir), name, *stamp))
    return tuple(sig)


def discover_runs(*roots: str | Path) -> list[RunListing]:
    """Every sub-folder of ``roots`` that looks like a run (has ``run.json`` or ``model.keras``).

    A broken run is listed with its problems instead of raising, so one bad folder
    never hides the others.
    """
    listings: list[RunListing] = []
    seen: set[Path] = set()
    for root in roots:
        root = Path(root)
        try:
            entries = sorted(p for p in root.iterdir() if p.is_dir())
        except (OSError, ValueError):  # missing, unreadable, or a name the OS refuses
            continue
        for run_dir in entries:
            try:
                resolved = run_dir.resolve()
                is_run = (run_dir / RUN_FILE).exists() or (run_dir / MODEL_FILE).exists()
            except (OSError, RuntimeError):
                continue
            if resolved in seen or not is_run:
                continue
            seen.add(resolved)
            problems: list[str] = []
            info: RunInfo | None = None
            try:
                info = read_run_info(run_dir)
            except RunDirError as exc:
                problems.append(str(exc))
            if not (run_dir / MODEL_FILE).is_file():
                problems.append(f"model.keras is missing in {run_dir}")
            listings.append(RunListing(run_dir.name, run_dir, info, tuple(problems)))
    return listings
