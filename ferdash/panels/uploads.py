"""What a Shiny file input delivered: this session's upload folder and a checked file list.

Both values come from the browser, which can send anything over the websocket: the
list may be huge or not a list, and an entry's ``datapath`` may name another session's
upload. The list is checked here, on the event loop, before any work is spent on it;
the paths are checked where the files are opened (:func:`ferdash.inference.read_shiny_upload`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiny import Session

from ..inference import MAX_FILES_PER_UPLOAD


def session_upload_dir(session: Session) -> Path | None:
    """The folder where Shiny stores this session's uploads (and removes at its end).

    Shiny makes one per session (``FileUploadManager``) and writes every file of the
    session's uploads under it; None when this Shiny keeps it elsewhere, which refuses
    every upload rather than opening paths nobody checked.
    """
    manager = getattr(session.root_scope(), "_file_upload_manager", None)
    basedir = getattr(manager, "_basedir", None)
    return Path(basedir) if isinstance(basedir, str) and basedir else None


@dataclass(frozen=True)
class UploadList:
    """The entries to analyse, and how many the browser sent beyond the limit."""

    files: list[dict[str, Any]]
    dropped: int = 0
    problem: str | None = None  # the whole value was unusable

    def notice(self) -> str | None:
        if self.problem:
            return self.problem
        if self.dropped:
            return (
                f"Only the first {MAX_FILES_PER_UPLOAD} files of an upload are analysed; "
                f"the other {self.dropped} were not. Upload them in another batch."
            )
        return None


def checked_upload_list(value: Any) -> UploadList:
    """The file input's value cut to :data:`MAX_FILES_PER_UPLOAD` well-formed entries.

    Only the kept entries are looked at, so a forged list of 20,000 entries costs no
    more than one of 100, and draws at most 100 cards.
    """
    # Shiny hands a value set from the browser as a tuple, its own uploads as a list.
    if not isinstance(value, (list, tuple)):
        return UploadList([], problem="The upload did not reach the server.")
    kept = list(value[:MAX_FILES_PER_UPLOAD])
    files = [entry if isinstance(entry, dict) else {"name": ""} for entry in kept]
    return UploadList(files, dropped=len(value) - len(kept))
