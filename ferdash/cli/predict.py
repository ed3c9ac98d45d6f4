"""``python -m ferdash predict PATH...``: the Predict table's rows for many files.

Rows are :func:`ferdash.prediction.results_frame`'s (probabilities 0-1): by default one
per file, its largest face (the detector then skips its small-face search: ~10x faster
on photos); ``--every-face`` gives a row per face, as in the Predict table. Bad files get a row with their message and never stop the run. Rows are
written a chunk at a time (:mod:`ferdash.cli.writers`), so Ctrl-C leaves a valid partial
output that ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import CommandError, load_run
from ..batch import DEFAULT_BATCH_FILES, Summary, predict_chunks, resolve_run
from ..inference import MAX_FACES_PER_PHOTO, display_name
from ..paths import NoSuchPath, iter_image_paths
from ..runs.rundir import RunDirError, RunInfo
from .writers import OutputError, open_writer, output_format, read_existing

RAY_HINT = "install ferdash[ray] (pip install 'ferdash[ray]')"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict",
        help="predict the expression of the faces in files, folders and globs",
        description=(
            "The Predict table's rows (probabilities 0-1) for image files, folders (their "
            "images) and glob patterns: one per file, its largest face, or one per face "
            "with --every-face. Unreadable files get a row with the reason. A summary goes "
            "to standard error at the end."
        ),
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns"
    )
    parser.add_argument(
        "--run", help="run folder, or a run's name in the models folder (default: fer7)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output file: .csv, .jsonl or .parquet (default: CSV on standard output); replaced "
        "unless --resume",
    )
    faces = parser.add_mutually_exclusive_group()
    faces.add_argument(
        "--every-face",
        dest="largest_face",
        action="store_false",
        help=f"one row per face found, at most {MAX_FACES_PER_PHOTO} per file, small faces "
        "beside large ones included (as the Predict tab; about 10-15 ms more per 640x480 photo)",
    )
    faces.add_argument(
        "--largest-face",
        action="store_true",
        help="one row per file: its largest face only (the default)",
    )
    parser.add_argument("-r", "--recursive", action="store_true", help="folders: sub-folders too")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip the files already in --out and append the others",
    )
    parser.add_argument(
        "--batch-files",
        type=positive_int,
        default=DEFAULT_BATCH_FILES,
        metavar="N",
        help=f"files per model call and per chunk written (default {DEFAULT_BATCH_FILES})",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="threads that read, decode and detect (default: one per core)",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (default); ray: Ray Data (needs ferdash[ray] and --out)",
    )
    parser.set_defaults(handler=run, largest_face=True)


def run(args: argparse.Namespace) -> int:
    try:
        fmt = output_format(args.out)
        paths = iter_image_paths(args.paths, args.recursive)
        info = resolve_run(args.run)
    except (OutputError, NoSuchPath, RunDirError) as exc:
        raise CommandError(str(exc)) from None
    if not paths:
        raise CommandError("no image files in " + ", ".join(args.paths))
    if args.engine == "ray":
        return _run_ray(args, paths, info)
    if args.resume and args.out is None:
        raise CommandError("--resume needs --out: the file to continue")

    existing = read_existing(args.out, fmt) if args.resume else None
    if existing is not None and existing.runs - {info.name}:
        raise CommandError(
            f"{args.out} holds rows of run {', '.join(sorted(existing.runs))}, not {info.name}: "
            "resume with the same --run, or write to another --out"
        )
    todo = [p for p in paths if existing is None or display_name(str(p)) not in existing.files]
    skipped = len(paths) - len(todo)
    if not todo:
        print(f"Nothing to do: all {len(paths):,} files are in {args.out}.", file=sys.stderr)
        return 0

    from ..prediction import probability_columns, results_frame

    loaded = load_run(info)
    writer = open_writer(args.out, fmt, existing, probability_columns(info.classes, False))
    summary = Summary()
    interrupted = False
    started = time.perf_counter()
    with _progress(len(todo)) as advance:
        try:
            with contextlib.closing(
                predict_chunks(
                    todo, loaded, args.batch_files, args.workers, every_face=not args.largest_face
                )
            ) as chunks:
                for chunk in chunks:
                    frame = results_frame(chunk.results, False, run=info.name)
                    with _interrupt_after():
                        writer.write(frame)
                        summary.add(chunk.results)
                    advance(len(chunk.paths))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            writer.close()
    seconds = time.perf_counter() - started
    print("\n".join(summary.lines()), file=sys.stderr)
    rate = f" in {seconds:.1f} s ({summary.files / seconds:,.0f} files/s)" if seconds > 0 else ""
    done = f"Rows written to {args.out}" if args.out else "Rows written"
    extra = f"; {skipped:,} files already there skipped" if skipped else ""
    print(f"{done}{rate}{extra}.", file=sys.stderr)
    if interrupted:
        left = len(todo) - summary.files
        print(
            f"Interrupted: {left:,} files not done. The output is valid; "
            "run the same command with --resume to continue.",
            file=sys.stderr,
        )
        return 130
    return 0


@contextlib.contextmanager
def _interrupt_after() -> Iterator[None]:
    """Ctrl-C held back until the block is done, so a chunk is written whole (and
    counted); only the main thread can hold it (elsewhere the block just runs)."""
    caught: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _progress(total: int) -> Iterator:
    """``advance(files)``: a progress bar on standard error when it is a terminal,
    nothing when it is piped or redirected."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("predicting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files {task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("predict", total=total, rate="")
        started = time.perf_counter()

        def advance(n: int) -> None:
            done = bar.tasks[0].completed + n
            rate = done / max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=n, rate=f"{rate:,.0f}/s")

        yield advance


def _run_ray(args: argparse.Namespace, paths: Sequence[Path], info: RunInfo) -> int:
    """The same rows through Ray Data (:mod:`ferdash.ray_engine`, imported only here)."""
    if args.out is None:
        raise CommandError("--engine ray writes a file: give --out")
    if args.resume:
        raise CommandError("--resume: only with --engine local")
    try:
        ray_engine = importlib.import_module("ferdash.ray_engine")
        ray_engine.predict_paths(
            [str(p) for p in paths],
            run_dir=str(info.path),
            out=str(args.out),
            batch_size=args.batch_files,
            every_face=not args.largest_face,
        )
    except ImportError as exc:
        missing = exc.name or ""
        if missing.split(".")[0] != "ray" and missing != "ferdash.ray_engine":
            raise  # something else is broken: its own traceback says more
        raise CommandError(
            f"--engine ray needs Ray and ferdash.ray_engine ({exc}): {RAY_HINT}"
        ) from None
    return 0
