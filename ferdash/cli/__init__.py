"""``python -m ferdash``: the Predict pipeline and labelled-set scoring outside the browser.

Subcommands (``--help`` on each lists its flags; docs/cli.md has examples):

- ``predict PATH...``: one row per face, as the Predict table, for files, folders and
  globs, to CSV (standard output or a file), JSON Lines or Parquet
  (:mod:`ferdash.cli.predict`);
- ``evaluate LABELLED``: a labelled folder or zip scored as Predict scores it
  (:mod:`ferdash.cli.evaluate`).

Each subcommand imports what it needs when it runs, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import __version__

if TYPE_CHECKING:
    from ..runs.model_store import LoadedRun
    from ..runs.rundir import RunInfo


class CommandError(Exception):
    """An invocation refused before any work: printed as "ferdash CMD: error: ..."."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def load_run(info: RunInfo) -> LoadedRun:
    """The run's model; raises :class:`CommandError` (status 1) saying why it cannot be used.

    TensorFlow's C++ start-up lines (oneDNN, CUDA, XNNPACK) ignore TF_CPP_MIN_LOG_LEVEL
    and would bury the command's own output: what is written to standard error while the
    model and the face detector load is held back, and shown only when the load fails.
    """
    import numpy as np

    from ..faces import detect_faces
    from ..prediction import load_model

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            loaded, error = load_model(info)
            # BlazeFace's first interpreter announces its XNNPACK delegate, once a process.
            detect_faces(np.zeros((64, 64), np.uint8))
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        if loaded is None:
            held.seek(0)
            chatter = held.read().decode("utf-8", "replace").strip()
            detail = f"\n{chatter}" if chatter else ""
            raise CommandError(f"{error or 'the model cannot be used'}{detail}", code=1)
    return loaded


def build_parser() -> argparse.ArgumentParser:
    from . import evaluate, predict

    parser = argparse.ArgumentParser(
        prog="python -m ferdash",
        description="Facial-expression predictions and labelled-set scores from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"ferdash {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict.add_parser(commands)
    evaluate.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (0 done, 1 the model cannot be used,
    2 a refused invocation, 130 interrupted)."""
    # TensorFlow's C++ start-up lines would mix with the summary on standard error.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CommandError as exc:
        print(f"ferdash {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        # The reader of standard output went away (`| head`): stop quietly, and keep
        # Python's own flush at exit from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
