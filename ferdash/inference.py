"""One upload in, one result out: decode, find every face, crop, classify.

Every step that can fail on a user's file is caught per file, so one bad file in a
batch of uploads gets its own message and the others are still classified. The model
is called once for all faces of all files of an upload (one batch), not once per face.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
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

#: Faces classified per photo at most, the largest first; the card says how many more
#: were found. A crowd photo would otherwise cost a model batch and a card section per
#: face in the background.
MAX_FACES_PER_PHOTO = 20


@dataclass(frozen=True)
class FaceCrop:
    """One face of a photo, cut out for the model."""

    box: faces.FaceBox | None  # in working-image pixels; None when the whole image was used
    crop: np.ndarray  # uint8 (H, W) at the model's input size


@dataclass(frozen=True)
class Prepared:
    """An image decoded, its faces found and cropped, ready for a model."""

    preview: np.ndarray  # uint8 greyscale copy for display, long side <= PREVIEW_KEEP_MAX_SIDE
    preview_scale: float  # preview pixels per pixel of the image the boxes refer to
    original_size: tuple[int, int]  # (width, height) in the file
    format: str
    multi_frame: bool
    faces_found: int  # every face the detector found, also those beyond the cap
    #: The faces classified, largest first (at most MAX_FACES_PER_PHOTO); one entry
    #: without a box when no face was found or the image is a face crop already.
    faces: tuple[FaceCrop, ...]
    tight_crop: bool  # a small image taken to be a face crop already
    file_scale: float = 1.0  # file pixels per working-image pixel (large files are reduced)

    @property
    def box(self) -> faces.FaceBox | None:
        """The largest face's box; None when the whole image was used."""
        return self.faces[0].box

    @property
    def crop(self) -> np.ndarray:
        return self.faces[0].crop

    @property
    def whole_image(self) -> bool:
        return self.box is None

    @property
    def is_face_reading(self) -> bool:
        """Whether the model read a face: one was found, or the image is a face crop
        already; False when no face was found and the whole image was classified."""
        return self.tight_crop or not self.whole_image

    def box_in_file(self, box: faces.FaceBox) -> tuple[int, int, int, int]:
        """``box`` as (x, y, w, h) in the pixels of the uploaded file."""
        f = self.file_scale
        return round(box.x * f), round(box.y * f), round(box.w * f), round(box.h * f)


@dataclass(frozen=True)
class FaceResult:
    """One face's answer, as its card section and its table row show it."""

    number: int  # 1 for the largest face, as the photo's boxes are numbered
    box: faces.FaceBox | None
    crop: np.ndarray
    classes: tuple[str, ...]
    probs: np.ndarray | None
    #: False when no face was found and the whole image was classified: the numbers are
    #: then not a reading of a face.
    is_face: bool
    #: A seven-expression run's reading of the same face (classes, probabilities), given
    #: in happy-vs-sad mode; None otherwise.
    second_opinion: tuple[tuple[str, ...], np.ndarray] | None = None

    @property
    def top(self) -> tuple[str, float] | None:
        return None if self.probs is None else wording.top_class(self.classes, self.probs)


@dataclass(frozen=True)
class ImageResult:
    """What the Predict panel shows for one file."""

    name: str  # the user's file name: display text only, never a path
    prepared: Prepared | None = None
    classes: tuple[str, ...] = ()
    #: Per face of ``prepared.faces``; empty when no model ran (error, or none installed).
    face_probs: tuple[np.ndarray, ...] = ()
    error: str | None = None
    model_error: str | None = None  # set when the image was fine but the model failed
    #: The second run's (classes, per-face probabilities), in happy-vs-sad mode.
    second_opinion: tuple[tuple[str, ...], tuple[np.ndarray, ...]] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.prepared is not None

    @property
    def probs(self) -> np.ndarray | None:
        """The largest face's probabilities."""
        return self.face_probs[0] if self.face_probs else None

    @property
    def top(self) -> tuple[str, float] | None:
        """The largest face's most probable class and its probability."""
        return None if self.probs is None else wording.top_class(self.classes, self.probs)

    @property
    def faces(self) -> tuple[FaceResult, ...]:
        """Every classified face (or the whole image), largest first; none when unreadable."""
        if self.prepared is None:
            return ()
        is_face = self.prepared.is_face_reading
        out = []
        for i, face in enumerate(self.prepared.faces):
            second = None
            if self.second_opinion is not None and i < len(self.second_opinion[1]):
                second = (self.second_opinion[0], self.second_opinion[1][i])
            out.append(
                FaceResult(
                    number=i + 1,
                    box=face.box,
                    crop=face.crop,
                    classes=self.classes,
                    probs=self.face_probs[i] if i < len(self.face_probs) else None,
                    is_face=is_face,
                    second_opinion=second,
                )
            )
        return tuple(out)


def prepare_image(data: bytes, input_size: tuple[int, int], every_face: bool = True) -> Prepared:
    """Decode, detect and crop every face (only the largest unless ``every_face``);
    raises :class:`UploadError` for unusable files."""
    decoded = imaging.decode_image(data)
    grey = decoded.grey
    tight = faces.is_tight_crop(grey)
    found: list[faces.FaceBox] = [] if tight else faces.detect_faces(grey, every_face=every_face)
    if found:
        crops = tuple(
            FaceCrop(box=box, crop=faces.crop_face(grey, box, input_size))
            for box in found[: MAX_FACES_PER_PHOTO if every_face else 1]
        )
    else:
        crops = (FaceCrop(box=None, crop=faces.whole_image_input(grey, input_size)),)
    preview, preview_scale = imaging.shrink_to_max_side(grey, PREVIEW_KEEP_MAX_SIDE)
    return Prepared(
        preview=preview,
        preview_scale=preview_scale,
        original_size=decoded.original_size,
        format=decoded.format,
        multi_frame=decoded.multi_frame,
        faces_found=len(found),
        faces=crops,
        tight_crop=tight,
        file_scale=decoded.original_size[0] / grey.shape[1],
    )


#: Longest file name kept for display (the CSV and card titles); longer ones are cut.
MAX_NAME_CHARS = 255
#: Invisible characters that belong in names: the joiners inside emoji sequences.
_KEPT_FORMAT_CHARS = {"\u200c", "\u200d"}


def display_name(raw: str) -> str:
    """A user's file name made safe to show: control characters (NUL, newlines) and
    invisible formatting ones (right-to-left overrides that make "exe.jpg" read
    "gpj.exe") become U+FFFD, visibly; cut to :data:`MAX_NAME_CHARS`."""
    raw = str(raw)
    if len(raw) <= MAX_NAME_CHARS and raw.isprintable():
        return raw  # no control or formatting character (the common case, checked fast)
    cleaned = "".join(
        "\ufffd" if unicodedata.category(c) in ("Cc", "Cf") and c not in _KEPT_FORMAT_CHARS else c
        for c in raw[: MAX_NAME_CHARS + 1]
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

PrepareCache = dict[tuple[str, tuple[int, int], bool], tuple["Prepared | None", "str | None"]]


def cache_key(file_key: str, input_size: tuple[int, int], every_face: bool = True) -> tuple[str, tuple[int, int], bool]:
    """Where :func:`analyse`'s prepare cache keeps a stored file prepared for a model of
    ``input_size``: a caller that prepared files elsewhere fills the cache with it."""
    return (file_key, tuple(input_size), every_face)


def prepare_file(
    source: bytes | StoredFile, input_size: tuple[int, int], every_face: bool = True
) -> tuple[Prepared | None, str | None]:
    """:func:`prepare_image` of one file, or None and the message its result shows.

    Never raises for a bad file: :func:`analyse`, the command line's worker threads
    (:mod:`ferdash.batch`) and the Ray engine's prepare tasks (:mod:`ferdash.ray_engine`)
    all call it, so a file fails with the same words everywhere. Safe to call from worker
    threads (the detectors keep one instance per thread).
    """
    try:
        data = source if isinstance(source, bytes) else source.read()
        return prepare_image(data, input_size, every_face), None
    except UploadError as exc:
        return None, str(exc)
    except Exception as exc:  # never let one odd file end the session
        return None, f"The file could not be processed ({type(exc).__name__})."


def analyse(
    files: Sequence[FileSource],
    loaded: LoadedRun | None,
    cache: PrepareCache | None = None,
    second: LoadedRun | None = None,
    every_face: bool = True,
) -> list[ImageResult]:
    """Results for ``(name, bytes or stored file)`` pairs, in order; never raises for bad files.

    ``cache`` (a dict the caller keeps per upload) remembers the decoded, cropped images
    of stored files by key and input size, so choosing another model re-runs only the
    model. ``second``, a seven-expression run, also reads every face (happy-vs-sad mode
    says when a face is clearly neither); its failure only loses that second reading.
    ``every_face`` False classifies only each photo's largest face (faster detection).
    """
    input_size = loaded.input_size if loaded else DEFAULT_INPUT_SIZE
    prepared: list[tuple[Prepared | None, str | None]] = []
    for index, (_name, source) in enumerate(files):
        if index >= MAX_FILES_PER_UPLOAD:
            refused = f"Not processed: at most {MAX_FILES_PER_UPLOAD} files per upload."
            prepared.append((None, refused))
            continue
        key = None
        if cache is not None and isinstance(source, StoredFile) and source.key:
            key = cache_key(source.key, input_size, every_face)
            if key in cache:
                prepared.append(cache[key])
                continue
        one = prepare_file(source, input_size, every_face)
        prepared.append(one)
        if key is not None:
            cache[key] = one
    return classify([name for name, _ in files], prepared, loaded, second)


def classify(
    names: Sequence[str],
    prepared: Sequence[tuple[Prepared | None, str | None]],
    loaded: LoadedRun | None,
    second: LoadedRun | None = None,
) -> list[ImageResult]:
    """The results of files already through :func:`prepare_file` (one ``(prepared,
    error)`` per name): every face of every file in one model batch (see :func:`analyse`)."""
    images = [p for p, _ in prepared]
    crops = [face.crop for p in images if p is not None for face in p.faces]
    face_probs: list[tuple[np.ndarray, ...]] = [()] * len(images)
    model_error: str | None = None
    if loaded is not None and crops:
        try:
            face_probs = _per_file(images, loaded.predict(_batch(crops, loaded.input_size)))
        except Exception as exc:
            model_error = f"The model failed on these images: {exc}"
    seconds: list[tuple[np.ndarray, ...]] | None = None
    if second is not None and crops and model_error is None:
        try:
            seconds = _per_file(images, second.predict(_batch(crops, second.input_size)))
        except Exception:  # the answer asked for stands without the second reading
            seconds = None

    classes = loaded.classes if loaded else ()
    return [
        ImageResult(
            name=display_name(name),
            prepared=images[i],
            classes=classes,
            face_probs=face_probs[i],
            error=prepared[i][1],
            model_error=model_error if images[i] is not None else None,
            second_opinion=(second.classes, seconds[i]) if seconds is not None and second else None,
        )
        for i, name in enumerate(names)
    ]


def _batch(crops: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """The crops as one float batch at ``size`` (a second run may take another size)."""
    height, width = size
    resized = [
        c if c.shape == (height, width) else cv2.resize(c, (width, height), interpolation=cv2.INTER_AREA)
        for c in crops
    ]
    return np.stack(resized).astype(np.float32)[..., None]


def _per_file(prepared: Sequence[Prepared | None], out: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """The batch's rows split back into one tuple per file (empty for unreadable ones)."""
    per_file: list[tuple[np.ndarray, ...]] = []
    start = 0
    for p in prepared:
        n = len(p.faces) if p is not None else 0
        per_file.append(tuple(out[start : start + n]))
        start += n
    return per_file


def analyse_bytes(data: bytes, loaded: LoadedRun | None, name: str = "image") -> ImageResult:
    """One image's result (see :func:`analyse`)."""
    return analyse([(name, data)], loaded)[0]
