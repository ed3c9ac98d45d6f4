"""``python -m ferdash evaluate LABELLED``: a labelled folder or zip scored as Predict's
"score a labelled set" does (:func:`ferdash.set_evaluation.evaluate_set`): accuracy,
macro-F1 and the per-class table printed; with ``--out-dir``, the per-image CSV, the
per-class and confusion CSVs and the confusion figure written. Ctrl-C stops after the
current chunk and reports on the images scored so far.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from . import CommandError, load_run

#: What ``--out-dir`` receives.
PER_IMAGE_CSV = "per-image.csv"
PER_CLASS_CSV = "per-class.csv"
CONFUSION_CSV = "confusion.csv"
CONFUSION_PNG = "confusion.png"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="score a run on a labelled folder or zip",
        description=(
            "Score a run on labelled faces: a folder or .zip of class folders "
            "(happy/x.png), or images named by class (happy_01.jpg); docs/labelled-sets.md "
            "has the rules. Prints accuracy, macro-F1 and per-class figures."
        ),
    )
    parser.add_argument("labelled", type=Path, metavar="LABELLED_FOLDER_OR_ZIP")
    parser.add_argument(
        "--run", help="run folder, or a run's name in the models folder (default: fer7)"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        help=f"write {PER_IMAGE_CSV}, {PER_CLASS_CSV}, {CONFUSION_CSV} and {CONFUSION_PNG} here",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..batch import resolve_run
    from ..labelled_set import LabelledSetError, read_folder, read_zip
    from ..runs.rundir import RunDirError

    try:
        info = resolve_run(args.run)
        if args.labelled.is_dir():
            labelled = read_folder(args.labelled, info.classes)
        elif args.labelled.is_file():
            labelled = read_zip(args.labelled, info.classes)
        else:
            raise CommandError(f"no such folder or zip: {args.labelled}")
    except (RunDirError, LabelledSetError) as exc:
        raise CommandError(str(exc)) from None

    from ..set_evaluation import evaluate_set

    loaded = load_run(info)
    counts = ", ".join(f"{n:,} {c}" for c, n in labelled.counts().items())
    print(f"{len(labelled.images):,} labelled images ({counts}); run {info.name}", file=sys.stderr)
    for note in labelled.notes:
        print(f"  {note}", file=sys.stderr)

    with _cancel_on_ctrl_c() as cancel:
        report = evaluate_set(labelled, loaded, info.name, _progress_printer(), cancel)
    _print_report(report)
    if args.out_dir is not None:
        _write(report, args.out_dir)
    return 130 if report.cancelled_at is not None else 0


def _progress_printer():
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        end = "\n" if done == total else ""
        print(f"\rscored {done:,}/{total:,}", end=end, file=sys.stderr, flush=True)

    return show


@contextlib.contextmanager
def _cancel_on_ctrl_c() -> Iterator[threading.Event]:
    """An event that the first Ctrl-C sets (the report then covers what was scored); a
    second one interrupts at once. Ctrl-C's usual meaning comes back after the block."""
    cancel = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\nStopping after this chunk (Ctrl-C again to quit now)...", file=sys.stderr)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: Ctrl-C keeps its usual meaning
        yield cancel
        return
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_report(report) -> None:
    from ..set_score import per_class_frame

    s = report.score
    if report.cancelled_at is not None:
        print(f"Cancelled: the figures cover the first {report.cancelled_at:,} images.")
    print(f"run {report.run_name}: {s.images:,} images, {s.correct:,} right")
    print(f"accuracy   {s.accuracy:.4f}")
    print(f"macro-F1   {s.macro_f1:.4f}")
    if s.unclassified_count:
        print(
            f"accuracy on the {s.classified:,} images with an answer {s.accuracy_classified:.4f} "
            f"({s.unclassified_count:,} without one: no face found, or unreadable)"
        )
    print()
    print(per_class_frame(s).to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def _write(report, out_dir: Path) -> None:
    from ..prediction import csv_text
    from ..set_score import per_class_frame

    out_dir.mkdir(parents=True, exist_ok=True)
    s = report.score
    (out_dir / PER_IMAGE_CSV).write_text(csv_text(report.frame()), encoding="utf-8")
    per_class_frame(s).to_csv(out_dir / PER_CLASS_CSV, index=False)
    confusion = pd.DataFrame(s.confusion, index=list(s.classes), columns=list(s.classes))
    confusion["no answer"] = s.unclassified
    # Rows: the true class; columns: the answer given, then the images without one.
    confusion.rename_axis("true class").to_csv(out_dir / CONFUSION_CSV)
    (out_dir / CONFUSION_PNG).write_bytes(report.confusion_png())
    written = ", ".join((PER_IMAGE_CSV, PER_CLASS_CSV, CONFUSION_CSV, CONFUSION_PNG))
    print(f"\nWritten to {out_dir}: {written}")
