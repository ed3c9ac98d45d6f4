"""One upload in, one result out: decode, find the face, crop, classify.

Every step that can fail on a user's file is caught per file, so one bad file in a
batch of uploads gets its own message and the others are still classified. The model
is called once for all faces of an upload (one batch), not once per image.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import faces, imaging, wording
from .imaging import UploadError
from .runs.model_store import LoadedRun

#: Crop size shown when no model is installed (FER2013's).
DEFAULT_INPUT_SIZE = (48, 48)

#: Long side of the copy kept for display: results live in the session while shown, and
#: a 2048-px working image per file would cost 4 MB each for a picture shown at 360 px.
PREVIEW_KEEP_MAX_SIDE = 720

#: Files beyond this in one upload are not processed (each gets a message), so one
#: upload cannot hold the session for minutes.
MAX_FILES_PER_UPLOAD = 100


@dataclass(frozen=True)
class Prepared:
    """An image decoded and cropped, ready for a model."""

    preview: np.ndarray  # uint8 greyscale copy for display, long side <= PREVIEW_KEEP_MAX_SIDE
    preview_scale: float  # preview pixels per pixel of the image the box refers to
    original_size: tuple[int, int]  # (width, height) in the file
    format: str
    multi_frame: bool
    faces_found: int
    box: faces.FaceBox | None  # the classified face; None when the whole image was used
    tight_crop: bool  # a small image taken to be a face crop already
    crop: np.ndarray  # uint8 (H, W) at the model's input size

    @property
    def whole_image(self) -> bool:
        return self.box is None


@dataclass(frozen=True)
class ImageResult:
    """What the Predict panel shows for one file."""

    name: str  # the user's file name: display text only, never a path
    prepared: Prepared | None = None
    classes: tuple[str, ...] = ()
    probs: np.ndarray | None = None  # None when no model ran (error, or none installed)
    error: str | None = None
    model_error: str | None = None  # set when the image was fine but the model failed

    @property
    def ok(self) -> bool:
        return self.error is None and self.prepared is not None

    @property
    def top(self) -> tuple[str, float] | None:
        """The most probable class and its probability, as the card's sentence names it."""
        return None if self.probs is None else wording.top_class(self.classes, self.probs)


def prepare_image(data: bytes, input_size: tuple[int, int]) -> Prepared:
    """Decode, detect and crop; raises :class:`UploadError` for unusable files."""
    decoded = imaging.decode_image(data)
    grey = decoded.grey
    tight = faces.is_tight_crop(grey)
    found: list[faces.FaceBox] = [] if tight else faces.detect_faces(grey)
    if found:
        box: faces.FaceBox | None = found[0]  # the largest face: most pixels, likeliest subject
        crop = faces.crop_face(grey, found[0], input_size)
    else:
        box = None
        crop = faces.whole_image_input(grey, input_size)
    preview, preview_scale = imaging.shrink_to_max_side(grey, PREVIEW_KEEP_MAX_SIDE)
    return Prepared(
        preview=preview,
        preview_scale=preview_scale,
        original_size=decoded.original_size,
        format=decoded.format,
        multi_frame=decoded.multi_frame,
        faces_found=len(found),
        box=box,
        tight_crop=tight,
        crop=crop,
    )


#: Longest file name kept for display (the CSV and card titles); longer ones are cut.
MAX_NAME_CHARS = 255
#: Invisible characters that belong in names: the joiners inside emoji sequences.
_KEPT_FORMAT_CHARS = {"\u200c", "\u200d"}


def display_name(raw: str) -> str:
    """A user's file name made safe to show: control characters (NUL, newlines) and
    invisible formatting ones (right-to-left overrides that make "exe.jpg" read
    "gpj.exe") become U+FFFD, visibly; cut to :data:`MAX_NAME_CHARS`."""
    cleaned = "".join(
        "\ufffd" if unicodedata.category(c) in ("Cc", "Cf") and c not in _KEPT_FORMAT_CHARS else c
        for c in str(raw)[: MAX_NAME_CHARS + 1]
    )
    return cleaned if len(cleaned) <= MAX_NAME_CHARS else cleaned[: MAX_NAME_CHARS - 1] + "…"


@dataclass(frozen=True)
class StoredFile:
    """A file the server keeps (an upload), read only when it is analysed.

    ``read`` returns its bytes or raises :class:`UploadError`; it is where a caller
    checks that the file is one it may open. ``key`` names the file for the prepare
    cache (its server path, never the user's name); None keeps it out of the cache.
    """

    key: str | None
    read: Callable[[], bytes]


#: One file to analyse, under the user's name: its bytes, or a file the server keeps.
FileSource = tuple[str, bytes | StoredFile]

PrepareCache = dict[tuple[str, tuple[int, int]], tuple["Prepared | None", "str | None"]]


def analyse(
    files: Sequence[FileSource],
    loaded: LoadedRun | None,
    cache: PrepareCache | None = None,
) -> list[ImageResult]:
    """Results for ``(name, bytes or stored file)`` pairs, in order; never raises for bad files.

    ``cache`` (a dict the caller keeps per upload) remembers the decoded, cropped images
    of stored files by key and input size, so choosing another model re-runs only the
    model.
    """
    input_size = loaded.input_size if loaded else DEFAULT_INPUT_SIZE
    prepared: list[Prepared | None] = []
    errors: list[str | None] = []
    for index, (_name, source) in enumerate(files):
        if index >= MAX_FILES_PER_UPLOAD:
            prepared.append(None)
            errors.append(f"Not processed: at most {MAX_FILES_PER_UPLOAD} files per upload.")
            continue
        key = None
        if cache is not None and isinstance(source, StoredFile) and source.key:
            key = (source.key, input_size)
            if key in cache:
                one, error = cache[key]
                prepared.append(one)
                errors.append(error)
                continue
        try:
            data = source if isinstance(source, bytes) else source.read()
            one, error = prepare_image(data, input_size), None
        except UploadError as exc:
            one, error = None, str(exc)
        except Exception as exc:  # never let one odd file end the session
            one, error = None, f"The file could not be processed ({type(exc).__name__})."
        prepared.append(one)
        errors.append(error)
        if key is not None:
            cache[key] = (one, error)

    probs: list[np.ndarray | None] = [None] * len(files)
    model_error: str | None = None
    good = [i for i, p in enumerate(prepared) if p is not None]
    if loaded is not None and good:
        batch = np.stack([prepared[i].crop for i in good]).astype(np.float32)[..., None]
        try:
            out = loaded.predict(batch)
            for j, i in enumerate(good):
                probs[i] = out[j]
        except Exception as exc:
            model_error = f"The model failed on these images: {exc}"

    classes = loaded.classes if loaded else ()
    return [
        ImageResult(
            name=display_name(name),
            prepared=prepared[i],
            classes=classes,
            probs=probs[i],
            error=errors[i],
            model_error=model_error if prepared[i] is not None else None,
        )
        for i, (name, _source) in enumerate(files)
    ]


def analyse_bytes(data: bytes, loaded: LoadedRun | None, name: str = "image") -> ImageResult:
    """One image's result (see :func:`analyse`)."""
    return analyse([(name, data)], loaded)[0]
