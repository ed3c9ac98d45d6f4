"""The live list of runs the dashboard shows, shared by every panel of a session."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from shiny import reactive

from ..runs.rundir import RunListing, discover_runs, runs_signature


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
