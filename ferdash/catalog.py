"""The live list of runs the dashboard shows, shared by every panel of a session."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from shiny import reactive

from .rundir import (
    EVALUATION_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    RUN_FILE,
    RunListing,
    discover_runs,
    file_stamp,
)

_WATCHED = (RUN_FILE, MODEL_FILE, HISTORY_FILE, EVALUATION_FILE)


def runs_signature(dirs: list[Path]) -> tuple:
    """Cheap fingerprint of the run folders: changes when a run appears, ends or is rewritten."""
    sig: list[tuple] = []
    for root in dirs:
        if not root.is_dir():
            sig.append((str(root), None))
            continue
        for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for name in _WATCHED:
                stamp = file_stamp(run_dir / name)
                if stamp is not None:
                    sig.append((str(run_dir), name, *stamp))
    return tuple(sig)


def run_catalog(
    dirs: Callable[[], list[Path]], interval_secs: float = 2.0
) -> Callable[[], list[RunListing]]:
    """A reactive list of runs under ``dirs()``, re-read only when the folders change.

    Must be called inside a Shiny server function. ``dirs`` may itself be reactive
    (e.g. a runs folder the user types in).
    """

    @reactive.poll(lambda: runs_signature(dirs()), interval_secs)
    def _runs() -> list[RunListing]:
        return discover_runs(*dirs())

    return _runs
