"""What a Shiny file input delivered: this session's upload folder, a checked file list,
and its entries as files to analyse.

The value comes from the browser, which can send anything over the websocket: the
list may be huge or not a list, and an entry's ``datapath`` may name another session's
upload. The list is checked here, on the event loop, before any work is spent on it;
the paths are checked where the files are opened, in the worker (:func:`read_shiny_upload`).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Mapping

from shiny import Session

from ..imaging import MAX_UPLOAD_BYTES, UploadError, read_upload
from ..inference import MAX_FILES_PER_UPLOAD, StoredFile

#: What a file input entry that names no file of this session's uploads gets.
NOT_RECEIVED = "The upload did not reach the server."


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

    def sources(self, upload_root: Path | None) -> list[tuple[str, StoredFile]]:
        """``(name, file)`` pairs for :func:`ferdash.inference.analyse`, each file opened
        only inside ``upload_root`` (see :func:`read_shiny_upload`)."""
        return [(str(f.get("name", "")), stored_upload(f, upload_root)) for f in self.files]


def checked_upload_list(value: Any) -> UploadList:
    """The file input's value cut to :data:`MAX_FILES_PER_UPLOAD` well-formed entries.

    Only the kept entries are looked at, so a forged list of 20,000 entries costs no
    more than one of 100, and draws at most 100 cards.
    """
    # Shiny hands a value set from the browser as a tuple, its own uploads as a list.
    if not isinstance(value, (list, tuple)):
        return UploadList([], problem=NOT_RECEIVED)
    kept = list(value[:MAX_FILES_PER_UPLOAD])
    files = [entry if isinstance(entry, dict) else {"name": ""} for entry in kept]
    return UploadList(files, dropped=len(value) - len(kept))


def read_shiny_upload(
    upload: Mapping[str, Any], upload_root: Path | None, max_bytes: int = MAX_UPLOAD_BYTES
) -> bytes:
    """The bytes of one entry of a Shiny file input (``name``, ``size``, ``datapath``).

    ``upload_root`` is the folder where Shiny stored *this session's* uploads. A browser
    can set any input over the websocket, this one's datapath included: only a regular
    file inside that folder is opened, never another session's upload, any other server
    path, or a device that blocks a worker thread for good. Everything else, and any
    entry when there is no such folder, "did not reach the server". The size is checked
    first so an oversized file is refused without being read.
    """
    size = upload.get("size")
    if isinstance(size, (int, float)) and size > max_bytes:
        raise UploadError(f"The file is larger than the {max_bytes // (1024 * 1024)} MB limit.")
    datapath = upload.get("datapath")
    if not datapath or not isinstance(datapath, str) or upload_root is None:
        raise UploadError(NOT_RECEIVED)
    try:
        path = Path(datapath).resolve()
        inside = path.is_relative_to(Path(upload_root).resolve())
        regular = inside and stat.S_ISREG(path.stat().st_mode)
    except (OSError, ValueError, RuntimeError):  # NUL bytes, names too long, loops
        regular = False
    if not regular:
        raise UploadError(NOT_RECEIVED)
    return read_upload(path, max_bytes)


def stored_upload(entry: Mapping[str, Any], upload_root: Path | None) -> StoredFile:
    """One file input entry, read (through :func:`read_shiny_upload`) only when analysed.

    Keyed by the server's path, so the prepare cache knows the file again when another
    model is chosen.
    """
    datapath = entry.get("datapath")
    return StoredFile(
        key=str(datapath) if datapath else None, read=partial(read_shiny_upload, entry, upload_root)
    )
