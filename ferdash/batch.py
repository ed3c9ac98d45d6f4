"""Many image files through the Predict pipeline, fast: what ``python -m ferdash predict``
and :class:`ferdash.Predictor` run.

The same steps as an upload (:func:`ferdash.inference.prepare_file`, then
:func:`ferdash.inference.classify`), arranged for throughput: worker threads read,
decode, detect and crop the files of the next chunks while the model runs on the current
one, and the model gets every face of a chunk (hundreds) in one call. Threads, not
processes: Pillow, OpenCV and TF Lite release the interpreter lock while they work (a
photo's detection, the costly part, runs in parallel), the prepared images need no
copying between processes, and no worker pays TensorFlow's import. A 48x48 crop's
preparation is mostly Python (a fifth of a millisecond), so for crops a second thread
gains little (2,138 against 2,021 crops/s with fer7_fast, ``benchmarks/bench_cli.py``,
docs/cli.md).

No Shiny import, and TensorFlow only once a model is loaded.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path


from . import config, imaging
from .inference import ImageResult, Prepared, StoredFile, classify, prepare_file
from .runs.model_store import LoadedRun
from .runs.rundir import DEFAULT_RUN_NAME, RunDirError, RunInfo, read_run_info

#: Files per model call: a few hundred faces keep the model's batches full (it runs them
#: 64 at a time) while a chunk of photos stays a few tens of MB in memory.
DEFAULT_BATCH_FILES = 256
#: Files per worker task. A task per file costs ~0.1 ms of interpreter time in futures
#: and hand-overs, a third of what preparing a 48x48 crop takes; a photo's few ms dwarf
#: it either way, and 16 photos still spread over the workers of a chunk.
PREPARE_GROUP = 16


def cpu_count() -> int:
    """The cores this process may run on (a container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_run(run: str | os.PathLike[str] | None) -> RunInfo:
    """The run a command line or :class:`ferdash.Predictor` names: a run folder's path,
    or the name of a run in the models folders (``FERDASH_MODELS_DIR``, else the shipped
    ``models/``); None names the default run, ``fer7``. Raises :class:`RunDirError`."""
    if run is not None and Path(run).is_dir():
        return read_run_info(run)
    name = DEFAULT_RUN_NAME if run is None else os.fspath(run)
    if os.sep not in name and "/" not in name:
        for folder in config.models_dirs():
            if (folder / name).is_dir():
                return read_run_info(folder / name)
    searched = ", ".join(str(folder) for folder in config.models_dirs())
    raise RunDirError(f"no run folder {name!r} (a path, or a run's name in {searched})")


def read_local_file(path: str | os.PathLike[str]) -> bytes:
    """A file's bytes, refused above the upload limit; raises
    :class:`~ferdash.imaging.UploadError` with the reason (a missing file, no permission)."""
    try:
        return imaging.read_upload(path)
    except imaging.UploadError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError):  # read_upload's own message speaks of a server
            reason = cause.strerror or cause
            raise imaging.UploadError(f"The file could not be read: {reason}.") from cause
        raise


@dataclass(frozen=True)
class Chunk:
    """One model call's files and their results, in the order of the paths given."""

    paths: tuple[Path, ...]
    results: tuple[ImageResult, ...]


def predict_chunks(
    paths: Sequence[str | os.PathLike[str]],
    loaded: LoadedRun,
    batch_files: int = DEFAULT_BATCH_FILES,
    workers: int | None = None,
    every_face: bool = True,
) -> Iterator[Chunk]:
    """The results of ``paths``, ``batch_files`` files per model call, in order; never
    raises for a bad file (its :attr:`ImageResult.error` says why). ``every_face``
    False reads each photo's largest face only, skipping the small-face search.

    ``workers`` threads (default: one per core) prepare the files of the current chunk
    and the next one while the model runs. Closing the iterator early (a ``break``, Ctrl-C) cancels what has not
    started and leaves the few files in progress to finish in the background.
    """
    if batch_files < 1:
        raise ValueError("batch_files must be at least 1")
    names = [os.fspath(p) for p in paths]
    prepare = partial(_prepare_group, input_size=loaded.input_size, every_face=every_face)
    threads = max(1, workers or cpu_count())
    pool = ThreadPoolExecutor(threads, thread_name_prefix="ferdash-prepare")
    chunks = [names[start : start + batch_files] for start in range(0, len(names), batch_files)]
    pending: deque[list[Future[list[tuple[Prepared | None, str | None]]]]] = deque()
    try:
        for index, chunk in enumerate(chunks):
            # The current chunk and the next one in flight: the workers keep preparing
            # while this thread waits on the model.
            while len(pending) < 2 and index + len(pending) < len(chunks):
                upcoming = chunks[index + len(pending)]
                pending.append([pool.submit(prepare, group) for group in prepare_groups(upcoming)])
            prepared = [one for future in pending.popleft() for one in future.result()]
            yield Chunk(tuple(Path(n) for n in chunk), tuple(classify(chunk, prepared, loaded)))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def prepare_groups(names: Sequence[str]) -> list[Sequence[str]]:
    """``names`` cut into the worker tasks of :data:`PREPARE_GROUP` files, in order."""
    return [names[i : i + PREPARE_GROUP] for i in range(0, len(names), PREPARE_GROUP)]


def _prepare_group(
    names: Sequence[str], input_size: tuple[int, int], every_face: bool = True
) -> list[tuple[Prepared | None, str | None]]:
    return [_prepare_path(name, input_size, every_face) for name in names]


def _prepare_path(
    name: str, input_size: tuple[int, int], every_face: bool = True
) -> tuple[Prepared | None, str | None]:
    return prepare_file(StoredFile(key=None, read=partial(read_local_file, name)), input_size, every_face)


@dataclass
class Summary:
    """What a batch found, counted as its chunks come."""

    files: int = 0
    faces: int = 0  # face readings: faces found, and small images read as face crops
    files_with_faces: int = 0
    small_images: int = 0
    no_face: int = 0  # readable files in which no face was found (the whole image was read)
    unreadable: Counter[str] = field(default_factory=Counter)  # by message
    #: Readable files the model gave no answer for, by message (a failed model call).
    not_classified: Counter[str] = field(default_factory=Counter)

    def add(self, results: Sequence[ImageResult]) -> None:
        for result in results:
            self.files += 1
            prepared = result.prepared
            if prepared is None:
                self.unreadable[result.error or "The file could not be read."] += 1
                continue
            if result.model_error:
                self.not_classified[result.model_error] += 1
            if prepared.tight_crop:
                self.small_images += 1
            if not prepared.is_face_reading:
                self.no_face += 1
            else:
                self.faces += len(prepared.faces)
                self.files_with_faces += 1

    def lines(self) -> list[str]:
        """The summary line, e.g. "12 files: 14 faces in 9 files (small images taken
        as face crops: 2), 1 without a face, 2 unreadable.", then one line per reason a
        file got no answer, most frequent first ("  unreadable: 2 × The file is ...")."""
        found = f"{_count(self.faces, 'face')} in {_count(self.files_with_faces, 'file')}"
        if self.small_images:
            found += f" (small images taken as face crops: {self.small_images:,})"
        parts = [found, f"{self.no_face:,} without a face"]
        parts.append(f"{sum(self.unreadable.values()):,} unreadable")
        if self.not_classified:
            parts.append(f"{sum(self.not_classified.values()):,} not classified")
        lines = [f"{_count(self.files, 'file')}: {', '.join(parts)}."]
        reasons = (("unreadable", self.unreadable), ("not classified", self.not_classified))
        for what, counts in reasons:
            lines.extend(f"  {what}: {n:,} × {message}" for message, n in counts.most_common())
        return lines


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"
