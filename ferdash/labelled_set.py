"""A user's labelled faces, read from a ``.zip`` of class folders or from loose images
named after their class: the Shiny-free half of "score a labelled set" in Predict. The
command line (``python -m ferdash evaluate``) also reads a folder laid out as the zip.

An archive is hostile input. Nothing here extracts a member to disk or uses a member's
name as a path: names are only split into folder names to read a label from. Every cap
below is checked from the archive's own tables before a member is unpacked, and the bytes
of each member are counted as they are unpacked, so a header that lies about a size is
caught before it costs more than it declared.

Labelling rule (also in ``docs/labelled-sets.md``): when every image lies inside one top
folder whose name is not an expression, that folder only wraps the set and is dropped.
Then an image's folder names its class (``happy/x.png``); an image with no folder is
labelled by the start of its file name (``happy_01.jpg``, see :func:`label_from_filename`);
an image deeper than one folder is ignored. Names match the run's classes ignoring case,
through :data:`LABEL_SYNONYMS`. Images of an expression the run lacks (``contempt``, or
``angry`` for a happy-vs-sad run) are ignored with a note.

Scoring, the per-face table and the confusion figure are in :mod:`ferdash.set_score`.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .imaging import ACCEPT, MAX_UPLOAD_BYTES
from .runs.rundir import FER2013_CLASSES

#: Files read as images: the extensions Predict's file picker offers.
IMAGE_EXTENSIONS: tuple[str, ...] = tuple(e for e in ACCEPT if e.startswith("."))
#: Members that are archives themselves: never opened (each level multiplies the caps).
ARCHIVE_EXTENSIONS: tuple[str, ...] = (
    ".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar",
)

#: Most entries an archive may list (folders included). FER2013's test split, 7,178
#: faces in seven folders, fits.
MAX_MEMBERS = 10_000
#: Largest image unpacked: the same cap as one uploaded image.
MAX_MEMBER_BYTES = MAX_UPLOAD_BYTES
#: Most bytes the labelled images may unpack to, all together: they are held in memory
#: until they are scored.
MAX_TOTAL_BYTES = 256 * 1024 * 1024
#: Largest archive accepted. Images hardly compress, so an honest archive is about the
#: size of what it unpacks to.
MAX_ARCHIVE_BYTES = MAX_TOTAL_BYTES
#: Most times an image may unpack to its packed size. Image formats compress their own
#: pixels, so a zip gains little on them; a member packed much tighter is a zip bomb.
MAX_RATIO = 100
#: Members smaller than this are not held to :data:`MAX_RATIO`: a tiny file packed tight
#: costs nothing, and a flat icon or BMP can legitimately compress that well.
RATIO_EXEMPT_BYTES = 1024 * 1024
#: Largest central directory (the archive's file list) accepted, checked from the end
#: record before Python's zipfile parses it into one object per entry: 1 kB per entry is
#: room for names of several hundred characters.
MAX_DIRECTORY_BYTES = MAX_MEMBERS * 1024

#: Other names that datasets give the FER2013 classes (CK+, RAF-DB, FER+, KDEF,
#: AffectNet, JAFFE folders), lower case; a run's own class names always match too.
LABEL_SYNONYMS: dict[str, str] = {
    "anger": "angry",
    "disgusted": "disgust",
    "afraid": "fear",
    "fearful": "fear",
    "fearfulness": "fear",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
}
#: Expressions of other datasets that no FER2013 class stands for: their images are
#: ignored with a note instead of being reported as unknown folders.
FOREIGN_LABELS: tuple[str, ...] = ("contempt",)

#: How many names a note lists before "…".
_NAMES_SHOWN = 3
_CHUNK_BYTES = 1024 * 1024
_MB = 1024 * 1024


class LabelledSetError(ValueError):
    """A labelled set that cannot be used at all; the message is for the person who sent it."""


@dataclass(frozen=True)
class LabelledImage:
    """One labelled image, not yet decoded."""

    name: str  # the member's name in the archive or the upload's name: display text only
    label: str  # one of the run's classes
    data: bytes


@dataclass(frozen=True)
class LabelledSet:
    """The images that carry one of the run's classes, and what was left out and why."""

    classes: tuple[str, ...]  # the run's, in its order
    images: tuple[LabelledImage, ...]
    notes: tuple[str, ...]  # one sentence per kind of file skipped or ignored
    non_images: int  # files skipped for not having an image extension

    def counts(self) -> dict[str, int]:
        """Images per class, in the run's class order (zero for a class with none)."""
        found = Counter(image.label for image in self.images)
        return {c: found[c] for c in self.classes}


# --- labels ---------------------------------------------------------------------------


def _canonical(word: str) -> str:
    key = word.strip().casefold()
    return LABEL_SYNONYMS.get(key, key)


def match_class(word: str, classes: Sequence[str]) -> str | None:
    """The run's class that ``word`` names, ignoring case and through the synonyms."""
    key = _canonical(word)
    return next((c for c in classes if _canonical(c) == key), None)


def _foreign_expression(word: str) -> str | None:
    """The expression ``word`` names when it is one (a FER2013 class, a synonym of one,
    or a :data:`FOREIGN_LABELS` entry), whether or not the run has it."""
    key = _canonical(word)
    return key if key in FER2013_CLASSES or key in FOREIGN_LABELS else None


_LEADING_WORD = re.compile(r"[^\W\d_]+")


def _leading_word(name: str) -> str:
    base = re.split(r"[/\\]", name)[-1]
    found = _LEADING_WORD.match(base)
    return found.group(0) if found else ""


def label_from_filename(name: str, classes: Sequence[str]) -> str | None:
    """The run's class that a file name starts with, or None.

    The start is the leading run of letters, so ``happy_01.jpg``, ``Sad-3.png``,
    ``happiness7.png`` and ``happy.png`` are labelled and ``happysad.png`` or
    ``IMG_happy.jpg`` are not. Folders in ``name`` are ignored.
    """
    return match_class(_leading_word(name), classes)


class _Notes:
    """What was left out, gathered per reason and written as one sentence each."""

    def __init__(self) -> None:
        self._names: dict[tuple[str, str], list[str]] = {}

    def add(self, reason: str, name: str, detail: str = "") -> None:
        self._names.setdefault((reason, detail), []).append(name)

    def count(self, reason: str) -> int:
        return sum(len(v) for (r, _), v in self._names.items() if r == reason)

    def sentences(self) -> tuple[str, ...]:
        return tuple(
            _SENTENCES[reason](detail, names) for (reason, detail), names in self._names.items()
        )


def _shown(name: str, limit: int = 80) -> str:
    # repr escapes control and invisible formatting characters (NUL, line breaks,
    # right-to-left overrides): names come from the archive and are shown in the page.
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _files(names: list[str], listed: bool = True) -> str:
    """E.g. "3 files", with the first few names when ``listed``."""
    count = f"{len(names)} file{'s' if len(names) != 1 else ''}"
    if not listed:
        return count
    shown = ", ".join(_shown(n) for n in names[:_NAMES_SHOWN])
    return f"{count} ({shown}{', …' if len(names) > _NAMES_SHOWN else ''})"


_SENTENCES = {
    "non-image": lambda _, names: (
        f"Not images (no {', '.join(IMAGE_EXTENSIONS)} extension): {_files(names)} skipped."
    ),
    "not-in-run": lambda label, names: (
        f"{label} is not one of the run's classes: {_files(names, False)} ignored."
    ),
    "unknown-folder": lambda folder, names: (
        f"Folder {_shown(folder)} is not an expression: {_files(names, False)} ignored."
    ),
    "unknown-name": lambda _, names: (
        f"In no class folder, and the name does not start with a class: {_files(names)} ignored."
    ),
    "too-deep": lambda _, names: f"Deeper than <class>/<image>: {_files(names)} ignored.",
    "dot-dot": lambda _, names: f"'..' in the path: {_files(names)} skipped.",
    "link": lambda _, names: f"Links or other special files: {_files(names)} skipped.",
    "archive": lambda _, names: f"Archives inside the archive are not opened: {_files(names)} skipped.",
    "encrypted": lambda _, names: f"Encrypted: {_files(names)} skipped.",
    "too-big": lambda _, names: (
        f"Larger than the {MAX_MEMBER_BYTES // _MB} MB limit for one image: {_files(names)} skipped."
    ),
    "unreadable": lambda _, names: f"Could not be read: {_files(names)} skipped.",
    "damaged": lambda _, names: (
        "Could not be unpacked (damaged, or packed in a way this server does not read): "
        f"{_files(names)} skipped."
    ),
}


def _label(folders: tuple[str, ...], name: str, classes: Sequence[str], notes: _Notes) -> str | None:
    """The label of an image in ``folders`` (wrapper already dropped), or None with a note."""
    if len(folders) > 1:
        notes.add("too-deep", name)
        return None
    word = folders[0] if folders else _leading_word(name)
    found = match_class(word, classes)
    if found is None:
        expression = _foreign_expression(word)
        if expression is not None:
            notes.add("not-in-run", name, expression)
        elif folders:
            notes.add("unknown-folder", name, folders[0])
        else:
            notes.add("unknown-name", name)
    return found


def _names_expression(word: str, classes: Sequence[str]) -> bool:
    return match_class(word, classes) is not None or _foreign_expression(word) is not None


def _wrapper(folder_lists: list[tuple[str, ...]], classes: Sequence[str]) -> bool:
    """Whether all images share one top folder that only wraps the set."""
    tops = {folders[0] if folders else None for folders in folder_lists}
    if len(tops) != 1:
        return False
    (top,) = tops
    return top is not None and not _names_expression(top, classes)


def _labelled_set(
    classes: tuple[str, ...], images: list[LabelledImage], notes: _Notes, what: str
) -> LabelledSet:
    result = LabelledSet(classes, tuple(images), notes.sentences(), notes.count("non-image"))
    if not images:
        detail = " ".join(result.notes)
        raise LabelledSetError(
            f"No image in the {what} carries one of the run's classes "
            f"({', '.join(classes)}).{' ' + detail if detail else ''}"
        )
    return result


def label_images(files: Iterable[tuple[str, bytes]], classes: Sequence[str]) -> LabelledSet:
    """Loose uploads ``(file name, bytes)`` labelled by :func:`label_from_filename`.

    Raises :class:`LabelledSetError` when none is labelled. Files without an image
    extension are skipped and counted, as in an archive.
    """
    classes = tuple(classes)
    notes = _Notes()
    images: list[LabelledImage] = []
    for name, data in files:
        if not name.lower().endswith(IMAGE_EXTENSIONS):
            notes.add("non-image", name)
            continue
        label = _label((), name, classes, notes)
        if label is not None:
            images.append(LabelledImage(name, label, data))
    return _labelled_set(classes, images, notes, "upload")


# --- a folder -------------------------------------------------------------------------


def read_folder(folder: str | os.PathLike[str], classes: Sequence[str]) -> LabelledSet:
    """The labelled images of a folder on this machine, laid out as an archive would be
    (class folders, or images named by class): :func:`read_zip`'s labelling rule, notes
    and caps (files listed, bytes per image, bytes in all).

    Names are the paths inside ``folder``, with ``/``. Links to files are read, links to
    folders are not followed. Raises :class:`LabelledSetError` for a folder that cannot
    be used at all.
    """
    classes = tuple(classes)
    root = Path(folder)
    if not root.is_dir():
        raise LabelledSetError(f"{_shown(str(folder))} is not a folder.")
    notes = _Notes()
    found: list[tuple[str, tuple[str, ...], Path, int]] = []
    listed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            listed += 1
            if listed > MAX_MEMBERS:
                raise LabelledSetError(
                    f"The folder holds too many files (more than {MAX_MEMBERS:,}). "
                    "Score a smaller set."
                )
            path = Path(dirpath) / filename
            parts = list(path.relative_to(root).parts)
            name = "/".join(parts)
            if _is_system_file(parts):
                continue
            if not filename.lower().endswith(IMAGE_EXTENSIONS):
                notes.add("non-image", name)
                continue
            try:
                info = path.stat()
            except OSError:
                notes.add("unreadable", name)
                continue
            if not stat.S_ISREG(info.st_mode):  # a broken link, a FIFO, a device
                notes.add("link", name)
            elif info.st_size > MAX_MEMBER_BYTES:
                notes.add("too-big", name)
            else:
                found.append((name, tuple(parts[:-1]), path, info.st_size))
    labels = _labels([(name, folders) for name, folders, _, _ in found], classes, notes)
    labelled = [(entry, label) for entry, label in zip(found, labels) if label is not None]
    total = sum(size for (_, _, _, size), _ in labelled)
    if total > MAX_TOTAL_BYTES:
        raise LabelledSetError(
            f"The folder's labelled images are too large ({total / _MB:,.0f} MB; the limit "
            f"is {MAX_TOTAL_BYTES // _MB} MB). Score a smaller set."
        )
    images = []
    for (name, _, path, _), label in labelled:
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_MEMBER_BYTES + 1)
        except OSError:
            notes.add("unreadable", name)
            continue
        if len(data) > MAX_MEMBER_BYTES:  # grew since it was listed
            notes.add("too-big", name)
            continue
        images.append(LabelledImage(name, label, data))
    return _labelled_set(classes, images, notes, "folder")


# --- the archive ----------------------------------------------------------------------


def read_zip(source: bytes | str | os.PathLike[str], classes: Sequence[str]) -> LabelledSet:
    """The labelled images of a zip archive (its bytes, or the server's path to it).

    Raises :class:`LabelledSetError` for an archive that cannot be used at all (not a
    zip, over a cap, a forged size, no labelled image); files that are only skipped
    (non-images, links, nested archives, encrypted, damaged, over the size of one image,
    not labelled) are reported in :attr:`LabelledSet.notes`.
    """
    classes = tuple(classes)
    with _archive_file(source) as fp:
        _check_directory_size(fp)
        try:
            archive = zipfile.ZipFile(fp)
        except Exception as exc:  # a forged directory raises assorted types inside zipfile
            raise LabelledSetError(_not_a_zip_message(fp)) from exc
        with archive:
            members = archive.infolist()
            if len(members) > MAX_MEMBERS:
                raise LabelledSetError(_too_many_message(len(members)))
            notes = _Notes()
            labelled = _labelled_members(_image_members(members, notes), classes, notes)
            _check_unpacked_total([info for info, _ in labelled])
            images = []
            for info, label in labelled:
                data = _unpack(archive, info, notes)
                if data is not None:
                    images.append(LabelledImage(info.filename, label, data))
    return _labelled_set(classes, images, notes, "archive")


@contextmanager
def _archive_file(source: bytes | str | os.PathLike[str]) -> Iterator[BinaryIO]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        size = len(source)
        _check_archive_size(size)
        yield io.BytesIO(source)
        return
    try:
        fp = open(source, "rb")  # the server's path to the upload, never a user's name
        size = os.fstat(fp.fileno()).st_size
    except OSError as exc:
        raise LabelledSetError("The archive could not be read on the server.") from exc
    with fp:
        _check_archive_size(size)
        yield fp


def _check_archive_size(size: int) -> None:
    if size == 0:
        raise LabelledSetError("The archive is empty (0 bytes).")
    if size > MAX_ARCHIVE_BYTES:
        raise LabelledSetError(
            f"The archive is larger than the {MAX_ARCHIVE_BYTES // _MB} MB limit."
        )


def _too_many_message(count: int) -> str:
    return (
        f"The archive lists too many files ({count:,}; the limit is {MAX_MEMBERS:,}). "
        "Score a smaller set."
    )


# The end record of a zip (APPNOTE 4.3.16) and, for ZIP64, its locator and record.
_END = struct.Struct("<4s4H2LH")
_END_SIGNATURE = b"PK\x05\x06"
_END64_LOCATOR = struct.Struct("<4sLQL")
_END64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_END64 = struct.Struct("<4sQ2H2L4Q")
_END64_SIGNATURE = b"PK\x06\x06"


def _check_directory_size(fp: BinaryIO) -> None:
    """Refuse a file list too long to parse, from the end record, as zipfile finds it.

    zipfile builds one object per listed entry as it opens an archive, before its caller
    can count them: a 256 MB archive of empty entries would cost gigabytes.
    """
    fp.seek(0, os.SEEK_END)
    size = fp.tell()
    tail_start = max(0, size - _END.size - 0xFFFF)  # the record, then a comment of <64 kB
    fp.seek(tail_start)
    tail = fp.read()
    at = tail.rfind(_END_SIGNATURE)
    if at < 0 or at + _END.size > len(tail):
        return  # no end record: zipfile refuses the file itself
    *_, entries, directory_bytes, _, _ = _END.unpack_from(tail, at)
    locator_at = tail_start + at - _END64_LOCATOR.size
    if locator_at >= _END64.size:
        fp.seek(locator_at - _END64.size)
        head = fp.read(_END64.size + _END64_LOCATOR.size)
        record, locator = head[: _END64.size], head[_END64.size :]
        if locator[:4] == _END64_LOCATOR_SIGNATURE and record[:4] == _END64_SIGNATURE:
            fields = _END64.unpack(record)
            entries, directory_bytes = fields[7], fields[8]
    if entries > MAX_MEMBERS:
        raise LabelledSetError(_too_many_message(entries))
    if directory_bytes > MAX_DIRECTORY_BYTES:
        raise LabelledSetError(
            f"The archive's list of files is too large ({directory_bytes // 1024:,} kB; "
            f"the limit is {MAX_DIRECTORY_BYTES // 1024:,} kB)."
        )


_OTHER_FORMATS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x1f\x8b", "a gzip file"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (0, b"Rar!\x1a\x07", "a RAR archive"),
    (0, b"BZh", "a bzip2 file"),
    (0, b"\xfd7zXZ\x00", "an xz file"),
    (257, b"ustar", "a tar archive"),
)


def _not_a_zip_message(fp: BinaryIO) -> str:
    fp.seek(0)
    head = fp.read(512)
    for offset, magic, what in _OTHER_FORMATS:
        if head[offset : offset + len(magic)] == magic:
            return f"This is {what}, not a zip archive: only .zip archives are read."
    if head.startswith(b"PK"):
        return "The zip archive is damaged or truncated: its list of files cannot be read."
    return "This is not a zip archive (or it is truncated): its list of files cannot be found."


@dataclass(frozen=True)
class _ImageMember:
    info: zipfile.ZipInfo
    folders: tuple[str, ...]  # folder names from the top, without any empty or "." part


def _path_parts(name: str) -> list[str]:
    # Windows tools write backslashes; a leading "/" or drive letter is only dropped,
    # since the parts are read as folder names and never joined into a path.
    parts = [p for p in re.split(r"[/\\]", name) if p not in ("", ".")]
    if parts and re.fullmatch(r"[A-Za-z]:", parts[0]):
        parts = parts[1:]
    return parts


def _is_system_file(parts: list[str]) -> bool:
    # macOS's Archive Utility adds __MACOSX/ with a "._x.png" resource fork per file:
    # never the user's images, and they would break the single-top-folder rule.
    return "__MACOSX" in parts or parts[-1].startswith("._")


def _image_members(members: list[zipfile.ZipInfo], notes: _Notes) -> list[_ImageMember]:
    """The members that may be images, each other file noted by why it is skipped."""
    found = []
    for info in members:
        name = info.filename
        mode = info.external_attr >> 16
        parts = _path_parts(name)
        if info.is_dir() or stat.S_ISDIR(mode) or not parts or _is_system_file(parts):
            continue
        lower = parts[-1].lower()
        if ".." in parts:
            notes.add("dot-dot", name)
        elif stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # links (S_IFLNK), devices, fifos
            notes.add("link", name)
        elif lower.endswith(ARCHIVE_EXTENSIONS):
            notes.add("archive", name)
        elif not lower.endswith(IMAGE_EXTENSIONS):
            notes.add("non-image", name)
        elif info.flag_bits & 0x1:
            notes.add("encrypted", name)
        elif _is_bomb(info):
            raise LabelledSetError(
                f"The archive looks like a zip bomb: {_shown(name)} unpacks to "
                f"{info.file_size // max(info.compress_size, 1):,} times its packed size "
                f"(images reach at most {MAX_RATIO})."
            )
        elif info.file_size > MAX_MEMBER_BYTES:
            notes.add("too-big", name)
        else:
            found.append(_ImageMember(info, tuple(parts[:-1])))
    return found


def _labels(
    images: Sequence[tuple[str, tuple[str, ...]]], classes: tuple[str, ...], notes: _Notes
) -> list[str | None]:
    """The label of each ``(name, folders)`` image of a set (None, noted, for those left
    out): the labelling rule of the module's docstring, for archives and folders alike."""
    drop = 1 if _wrapper([folders for _, folders in images], classes) else 0
    return [_label(folders[drop:], name, classes, notes) for name, folders in images]


def _labelled_members(
    members: list[_ImageMember], classes: tuple[str, ...], notes: _Notes
) -> list[tuple[zipfile.ZipInfo, str]]:
    labels = _labels([(m.info.filename, m.folders) for m in members], classes, notes)
    return [(m.info, label) for m, label in zip(members, labels) if label is not None]


def _is_bomb(info: zipfile.ZipInfo) -> bool:
    # Whatever its size: one over the one-image cap would only be skipped, but an image
    # packed that tight says the whole archive was made to hurt.
    return info.file_size > RATIO_EXEMPT_BYTES and info.file_size > MAX_RATIO * max(
        info.compress_size, 1
    )


def _check_unpacked_total(members: list[zipfile.ZipInfo]) -> None:
    """Refuse, from the declared sizes and before unpacking anything, a set too large to
    hold. :func:`_unpack` then holds each member to its declared size, so the total
    needs no second count."""
    total = sum(info.file_size for info in members)
    if total > MAX_TOTAL_BYTES:
        raise LabelledSetError(
            f"The archive is too large when unpacked ({total / _MB:,.0f} MB of labelled "
            f"images; the limit is {MAX_TOTAL_BYTES // _MB} MB). Score a smaller set."
        )


def _unpack(archive: zipfile.ZipFile, info: zipfile.ZipInfo, notes: _Notes) -> bytes | None:
    """The member's bytes, counted as they come; None (noted) when it cannot be unpacked.

    Raises :class:`LabelledSetError` when it unpacks to more than its header declared:
    the declared sizes are what the caps were checked on, so the archive is forged.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(_CHUNK_BYTES):
                size += len(chunk)
                if size > info.file_size:
                    raise LabelledSetError(
                        f"The archive is forged: {_shown(info.filename)} unpacks to more "
                        f"than the {info.file_size:,} bytes its header declares."
                    )
                chunks.append(chunk)
    except LabelledSetError:
        raise
    # A wrong checksum (zipfile stops at the declared size, so a header that declares
    # less ends in one), a broken stream, an unknown compression method.
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError,
            RuntimeError, ValueError):
        notes.add("damaged", info.filename)
        return None
    return b"".join(chunks)
