"""The image files that command-line arguments name: files, folders and glob patterns.

Shared by every batch engine (``python -m ferdash predict``, :class:`ferdash.Predictor`,
and the Ray engine), so that they all read the same files in the same order. No Shiny,
no TensorFlow: only the file system.

- A file named (or matched by a pattern) is taken whatever its extension, as the shell
  would hand it over: a file that is no image gets its own message, like an upload.
- A folder gives its images: the files with one of :data:`IMAGE_EXTENSIONS`, sorted by
  name; with ``recursive``, those of its sub-folders too. Hidden files and folders (a
  leading dot, as macOS's ``._photo.jpg`` companions) are left out.
- A pattern (``*``, ``?``, ``[``) is expanded with :mod:`glob`; ``**`` spans folders.
- A file reached twice (named twice, or through two arguments) is listed once, where it
  first came.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from .labelled_set import IMAGE_EXTENSIONS

_GLOB_CHARS = ("*", "?", "[")


class NoSuchPath(FileNotFoundError):
    """Arguments that name nothing: no file, no folder, no match for the pattern."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(f"no such file or folder, or no match: {', '.join(missing)}")


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the extensions a folder's images are taken by."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def iter_image_paths(
    paths: Iterable[str | os.PathLike[str]], recursive: bool = False
) -> list[Path]:
    """The files ``paths`` name, in order (see the module's docstring for the rules).

    Raises :class:`NoSuchPath` listing every argument that names nothing, before any
    work is done: a mistyped folder should not pass for an empty one.
    """
    found: list[Path] = []
    seen: set[str] = set()
    missing: list[str] = []

    def add(path: Path, key: str | None = None) -> None:
        key = key or os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            found.append(path)

    for raw in paths:
        text = os.fspath(raw)
        if any(c in text for c in _GLOB_CHARS) and not os.path.exists(text):
            matches = sorted(glob.glob(text, recursive=True))
        else:
            matches = [text] if os.path.exists(text) else []
        if not matches:
            missing.append(text)
        for match in matches:
            path = Path(match)
            if path.is_dir():
                for image, key in _folder_images(path, recursive):
                    add(image, key)
            else:
                add(path)
    if missing:
        raise NoSuchPath(missing)
    return found


def _folder_images(folder: Path, recursive: bool) -> list[tuple[Path, str]]:
    """The images of ``folder`` (see the module's docstring), each with the real path
    that tells a file reached twice: the folder's real path and the name, which saves
    resolving every one of a large folder's files (a link is resolved on its own)."""
    if not recursive:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
            real = os.path.realpath(folder)
        except OSError:
            return []
        return [
            (folder / e.name, os.path.realpath(e.path) if e.is_symlink() else os.path.join(real, e.name))
            for e in entries
            if not e.name.startswith(".") and is_image_name(e.name) and e.is_file()
        ]
    images = []
    # Links to folders are not followed: a link back up would never end.
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base, real = Path(root), os.path.realpath(root)
        for name in sorted(files):
            full = os.path.join(root, name)
            if name.startswith(".") or not is_image_name(name) or not os.path.isfile(full):
                continue
            key = os.path.realpath(full) if os.path.islink(full) else os.path.join(real, name)
            images.append((base / name, key))
    return images
