"""What the Inspect panels show, read from run directories and cached per file version.

Everything comes from the files a run stored (``run.json``, ``history.csv``,
``evaluation.json``) through the readers of :mod:`ferdash.runs.rundir`; nothing here
recomputes a metric. Readers are cached on ``(path, mtime, size)``: re-rendering a panel
costs a ``stat`` per file, and a run that is still training (its ``history.csv``
growing) is re-read as soon as the file changes.

No Shiny import: the panels call these functions, and tests call them directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Generic, Iterable, TypeVar

import pandas as pd

from .train_settings import TRAIN_COMMAND_TEXT
from .runs.rundir import (
    EVALUATION_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    RUN_FILE,
    Evaluation,
    RunDirError,
    RunInfo,
    RunListing,
    accuracy_columns,
    file_stamp,
    read_evaluation,
    read_history,
    read_run_info,
    resolve_data_dir,
)

T = TypeVar("T")

#: The command the panels suggest when there is no run at all.
TRAIN_COMMAND = f"{TRAIN_COMMAND_TEXT} --data DIR --arch fernet --out models/NAME"

#: Most faces the gallery shows at once; the rest are counted, not rendered.
GALLERY_LIMIT = 60



@dataclass(frozen=True)
class Loaded(Generic[T]):
    """A file read from a run: its value, or why it could not be read."""

    value: T | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.value is not None


def no_runs_message(dirs: Iterable[Path] = ()) -> str:
    """What to say when no run folder holds a run: where we looked and how to make one."""
    where = ", ".join(str(d) for d in dirs) or "models/"
    return f"No runs found in {where}. Train one with: {TRAIN_COMMAND}"


# --- cached readers -------------------------------------------------------------------


@lru_cache(maxsize=256)
def _history_cached(run_dir: str, stamp: tuple[int, int] | None) -> Loaded[pd.DataFrame]:
    try:
        return Loaded(read_history(run_dir))
    except RunDirError as exc:
        return Loaded(None, str(exc))


@lru_cache(maxsize=256)
def _evaluation_cached(run_dir: str, stamp: tuple[int, int] | None) -> Loaded[Evaluation]:
    try:
        return Loaded(read_evaluation(run_dir))
    except RunDirError as exc:
        return Loaded(None, str(exc))


@lru_cache(maxsize=256)
def _run_info_cached(run_dir: str, stamp: tuple[int, int] | None) -> Loaded[RunInfo]:
    try:
        return Loaded(read_run_info(run_dir))
    except RunDirError as exc:
        return Loaded(None, str(exc))


def load_history(run_dir: str | Path) -> Loaded[pd.DataFrame]:
    """``history.csv`` of a run (cached; the frame is shared, so do not modify it)."""
    run_dir = Path(run_dir)
    return _history_cached(str(run_dir), file_stamp(run_dir / HISTORY_FILE))


def load_evaluation(run_dir: str | Path) -> Loaded[Evaluation]:
    """``evaluation.json`` of a run (cached; shared, so do not modify it)."""
    run_dir = Path(run_dir)
    return _evaluation_cached(str(run_dir), file_stamp(run_dir / EVALUATION_FILE))


def load_run_info(run_dir: str | Path) -> Loaded[RunInfo]:
    """``run.json`` of a run (cached)."""
    run_dir = Path(run_dir)
    return _run_info_cached(str(run_dir), file_stamp(run_dir / RUN_FILE))


def clear_caches() -> None:
    """Forget every cached file (tests use it; the app never needs to)."""
    for fn in (_history_cached, _evaluation_cached, _run_info_cached, _thumbnail_cached):
        fn.cache_clear()


# --- runs -----------------------------------------------------------------------------


def run_label(listing: RunListing) -> str:
    """How a run is named in selectors: its label, flagged when run.json is unusable."""
    if listing.info is not None:
        return listing.info.label
    return f"{listing.name} (run.json unusable)"


def selector_choices(runs: Iterable[tuple[Path, str, str]]) -> dict[str, str]:
    """``{path: label}`` for a run selector from ``(path, name, label)`` per run; a name
    that two runs share gets its folder added, or the two would look identical."""
    runs = list(runs)
    names = [name for _, name, _ in runs]
    return {
        str(path): label + (f" — {path.parent}" if names.count(name) > 1 else "")
        for path, name, label in runs
    }


def inspect_problems(listing: RunListing) -> list[str]:
    """The listing's problems that matter to Inspect.

    A missing ``model.keras`` stops Predict, not Inspect (the figures only need the
    stored files), so it is reported as a note rather than an error.
    """
    return [p for p in listing.problems if not p.startswith(f"{MODEL_FILE} is missing")]


def has_model(listing: RunListing) -> bool:
    return (listing.path / MODEL_FILE).is_file()


# --- history --------------------------------------------------------------------------


def best_epoch(history: pd.DataFrame, meta: dict[str, Any] | None = None) -> tuple[int | None, str]:
    """The epoch whose checkpoint was kept, in ``history.csv``'s ``epoch`` numbering.

    ``run.json``'s ``best_epoch`` wins when it names an epoch of the history (the
    training side records which checkpoint it kept); otherwise the epoch of the best
    validation accuracy, else of the lowest validation loss. Returns ``(epoch, source)``.
    """
    epochs = history["epoch"]
    stored = (meta or {}).get("best_epoch")
    if isinstance(stored, int) and not isinstance(stored, bool) and (epochs == stored).any():
        return stored, "run.json best_epoch"
    _, val_acc = accuracy_columns(history)
    if val_acc is not None and history[val_acc].notna().any():
        return int(epochs.loc[history[val_acc].idxmax()]), f"max {val_acc}"
    if "val_loss" in history.columns and history["val_loss"].notna().any():
        return int(epochs.loc[history["val_loss"].idxmin()]), "min val_loss"
    return None, "no validation metric logged"


def _at_epoch(history: pd.DataFrame, column: str | None, epoch: int | None) -> float:
    if column is None or epoch is None or column not in history.columns:
        return math.nan
    rows = history.loc[history["epoch"] == epoch, column]
    return float(rows.iloc[0]) if len(rows) else math.nan


def best_epoch_summary(history: pd.DataFrame, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metrics logged at the kept epoch (what the checkpoint scored)."""
    epoch, source = best_epoch(history, meta)
    train_acc, val_acc = accuracy_columns(history)
    return {
        "epoch": epoch,
        "source": source,
        "loss": _at_epoch(history, "loss", epoch),
        "val_loss": _at_epoch(history, "val_loss", epoch),
        "accuracy": _at_epoch(history, train_acc, epoch),
        "val_accuracy": _at_epoch(history, val_acc, epoch),
    }


# --- runs comparison ------------------------------------------------------------------


def _first(meta: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = meta.get(key)
        if value is not None:
            return value
    return None


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _short_problem(message: str, run_dir: Path) -> str:
    """A reader's message cut to a table cell: no folder (the row names the run), no detail.

    The full message is shown by the panels and the sidebar when the run is selected.
    """
    return message.replace(f" in {run_dir}", "").split(": ")[0]


def _pct(value: float) -> float:
    return round(100.0 * value, 1) if not math.isnan(value) else math.nan


def comparison_frame(listings: Iterable[RunListing]) -> pd.DataFrame:
    """One row per run: what the run is and how it scored.

    Accuracies and recalls are percentages (numbers, so the table sorts them right);
    ``nan`` where a run did not store the value. ``problems`` says what is missing.
    """
    rows: list[dict[str, Any]] = []
    all_classes: list[str] = []
    for listing in listings:
        info = listing.info
        meta = info.meta if info is not None else {}
        history = load_history(listing.path)
        evaluation = load_evaluation(listing.path)
        errors = [*inspect_problems(listing), history.error, evaluation.error]
        problems = [_short_problem(e, listing.path) for e in errors if e]
        if not has_model(listing):
            problems.append("no model.keras")

        row: dict[str, Any] = {
            "run": listing.name,
            "architecture": str(_first(meta, "architecture", "arch") or ""),
            "parameters": _number(_first(meta, "parameters", "params", "param_count")),
            "input size": "×".join(str(v) for v in info.input_size) if info else "",
            "classes": len(info.classes) if info else math.nan,
            "epochs": math.nan,
            "best epoch": math.nan,
            "best val acc %": math.nan,
            "best val loss": math.nan,
            "train acc %": math.nan,
            "train loss": math.nan,
            "eval split": "",
            "eval acc %": math.nan,
            "macro F1": math.nan,
            "ECE": math.nan,
            "temperature": math.nan,
        }
        if history.ok:
            frame = history.value
            assert frame is not None
            row["epochs"] = len(frame)
            summary = best_epoch_summary(frame, meta)
            if summary["epoch"] is not None:
                # Counted from 1, as the history panel draws it (CSVLogger counts from 0).
                row["best epoch"] = summary["epoch"] + 1
            _, val_acc = accuracy_columns(frame)
            if val_acc is not None:
                row["best val acc %"] = _pct(float(frame[val_acc].max()))
            if "val_loss" in frame.columns:
                row["best val loss"] = round(float(frame["val_loss"].min()), 4)
            row["train acc %"] = _pct(summary["accuracy"])
            row["train loss"] = round(summary["loss"], 4) if not math.isnan(summary["loss"]) else math.nan
        elif info is not None:
            row["epochs"] = _number(meta.get("epochs"))
        if evaluation.ok:
            ev = evaluation.value
            assert ev is not None
            row["eval split"] = ev.split
            row["eval acc %"] = _pct(ev.accuracy)
            row["macro F1"] = round(ev.macro_f1, 3) if not math.isnan(ev.macro_f1) else math.nan
            calibration = calibration_of(ev)
            if calibration is not None:
                row["ECE"] = round(calibration.ece, 4)
                row["temperature"] = _number(calibration.temperature)
            for cls in ev.classes:
                if cls not in all_classes:
                    all_classes.append(cls)
                recall = _number(ev.per_class.get(cls, {}).get("recall"))
                row[f"recall {cls} %"] = _pct(recall)
        row["problems"] = "; ".join(problems)
        rows.append(row)

    # What a user compares first leads; what the run is (architecture, sizes, the
    # training curve's figures) follows and scrolls.
    columns = [
        "run",
        "problems",
        "eval split",
        "eval acc %",
        "macro F1",
        "ECE",
        *[f"recall {c} %" for c in all_classes],
        "best val acc %",
        "best epoch",
        "epochs",
        "architecture",
        "parameters",
        "input size",
        "classes",
        "temperature",
        "best val loss",
        "train acc %",
        "train loss",
    ]
    # Plain float columns (not Int64): NaN travels to the browser as an empty cell,
    # whereas pandas.NA would be sent as the text "<NA>".
    return pd.DataFrame(rows, columns=columns)


# --- confusion ------------------------------------------------------------------------


def per_class_frame(evaluation: Evaluation) -> pd.DataFrame:
    """Precision, recall, F1 and support per class, as stored in ``evaluation.json``."""
    rows = []
    for cls in evaluation.classes:
        stored = evaluation.per_class.get(cls, {})
        rows.append(
            {
                "class": cls,
                "precision": _number(stored.get("precision")),
                "recall": _number(stored.get("recall")),
                "F1": _number(stored.get("f1")),
                "support": _number(stored.get("support")),
            }
        )
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "F1", "support"])


# --- calibration ----------------------------------------------------------------------


@dataclass(frozen=True)
class Reliability:
    """One reliability table: per confidence bin, faces, mean confidence and accuracy."""

    count: list[int]
    confidence: list[float]  # nan where the bin is empty
    accuracy: list[float]

    @property
    def bins(self) -> int:
        return len(self.count)


@dataclass(frozen=True)
class Calibration:
    """evaluation.json's "calibration", checked: the figures of the reliability panel."""

    temperature: float | None
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    before: Reliability
    after: Reliability

    @property
    def ece(self) -> float:
        """The ECE of the probabilities the app shows ("after" is "before" when the run
        has no temperature)."""
        return self.ece_after


def _reliability(table: Any, bins: int) -> Reliability | None:
    if not isinstance(table, dict):
        return None
    columns = [table.get(k) for k in ("count", "confidence", "accuracy")]
    if not all(isinstance(c, list) and len(c) == bins for c in columns):
        return None
    count = [_number(v) for v in columns[0]]
    if any(math.isnan(n) or n < 0 or n != int(n) for n in count):
        return None
    return Reliability([int(n) for n in count], [_number(v) for v in columns[1]],
                       [_number(v) for v in columns[2]])


def calibration_of(evaluation: Evaluation) -> Calibration | None:
    """The evaluation's calibration figures, or None when it stored none (older runs) or
    they are malformed (the file is anyone's to edit: a bad table is not drawn)."""
    stored = evaluation.meta.get("calibration")
    if not isinstance(stored, dict):
        return None
    bins = stored.get("bins")
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= 1000:
        return None
    before = _reliability(stored.get("reliability_before"), bins)
    after = _reliability(stored.get("reliability_after"), bins)
    if before is None or after is None:
        return None
    temperature = stored.get("temperature")
    temperature = _number(temperature) if temperature is not None else None
    if temperature is not None and not math.isfinite(temperature):
        return None
    return Calibration(
        temperature,
        *(_number(stored.get(k)) for k in ("ece_before", "ece_after", "nll_before", "nll_after")),
        before,
        after,
    )


# --- misclassified gallery ------------------------------------------------------------


@dataclass(frozen=True)
class GalleryRoot:
    """Where the gallery reads images: a folder that exists, or why there is none."""

    path: Path | None
    source: str
    problem: str | None = None


def gallery_root(evaluation: Evaluation, override: Path | None, run_dir: Path) -> GalleryRoot:
    """The evaluated data folder: ``FERDASH_DATA_DIR`` when set, else evaluation's data_dir.

    A relative data_dir is read from the run folder, so a shipped run can point at
    ``../shared`` beside whichever checkout it lives in.
    """
    if override is not None:
        if override.is_dir():
            return GalleryRoot(override.resolve(), "FERDASH_DATA_DIR")
        return GalleryRoot(
            None,
            "FERDASH_DATA_DIR",
            f"FERDASH_DATA_DIR is {override}, which is not a folder on this machine.",
        )
    if not evaluation.data_dir:
        return GalleryRoot(
            None,
            "evaluation.json",
            "evaluation.json does not say which data folder was evaluated (no data_dir); "
            "set FERDASH_DATA_DIR to that folder to see the faces.",
        )
    path = resolve_data_dir(evaluation, run_dir)
    if path is not None and path.is_dir():
        return GalleryRoot(path.resolve(), "evaluation.json data_dir")
    return GalleryRoot(
        None,
        "evaluation.json data_dir",
        f"The evaluated images are not on this machine: data_dir {evaluation.data_dir} "
        "(from evaluation.json) is not a folder here. Set FERDASH_DATA_DIR to the folder "
        "that holds them to see the faces.",
    )


def safe_image_path(root: Path, file: Any) -> Path | None:
    """``root / file`` resolved, or ``None`` when ``file`` would leave ``root``.

    ``file`` comes from a JSON file anyone can edit: an absolute path, ``..`` parts or a
    symlink pointing outside must not let the app read arbitrary files.
    """
    if not isinstance(file, str) or not file or "\x00" in file:
        return None
    root = root.resolve()
    try:
        candidate = (root / file).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if not candidate.is_relative_to(root) or candidate == root:
        return None
    return candidate


@dataclass(frozen=True)
class Mistake:
    """One well-formed entry of evaluation.json's misclassified list."""

    file: str
    true: str
    predicted: str
    probability: float


def misclassified_entries(evaluation: Evaluation) -> tuple[list[Mistake], int]:
    """The well-formed misclassified entries, and how many malformed ones were skipped."""
    good: list[Mistake] = []
    bad = 0
    for entry in evaluation.misclassified:
        if not isinstance(entry, dict):
            bad += 1
            continue
        file, true, pred = entry.get("file"), entry.get("true"), entry.get("predicted")
        if not (isinstance(file, str) and isinstance(true, str) and isinstance(pred, str)):
            bad += 1
            continue
        good.append(Mistake(file, true, pred, _number(entry.get("probability"))))
    return good, bad


def filter_mistakes(mistakes: list[Mistake], true: str | None, predicted: str | None) -> list[Mistake]:
    """Mistakes matching the filters (``None`` or ``""`` = any), most confident first.

    The most confident mistakes are the informative ones (label noise, look-alike
    expressions), so they lead.
    """
    chosen = [
        m
        for m in mistakes
        if (not true or m.true == true) and (not predicted or m.predicted == predicted)
    ]
    return sorted(chosen, key=lambda m: -m.probability if not math.isnan(m.probability) else 1.0)


_THUMB_PX = 96


@lru_cache(maxsize=1024)
def _thumbnail_cached(path: str, stamp: tuple[int, int] | None) -> str | None:
    # The same guarded decoder as uploads: a data folder is files anyone could have put
    # there, so no format outside the allow-list and no decompression bomb.
    from .imaging import UploadError, decode_image, png_data_uri, read_upload

    try:
        decoded = decode_image(read_upload(path))
    except UploadError:
        return None
    return png_data_uri(decoded.grey, max_side=_THUMB_PX)


def thumbnail_uri(path: Path) -> str | None:
    """A PNG data URI of the image at ``path`` (cached per file version); None if unreadable."""
    stamp = file_stamp(path)
    if stamp is None:
        return None
    return _thumbnail_cached(str(path), stamp)
