"""ferdash from Python: a run's predictions for images and folders, without the dashboard.

>>> import ferdash
>>> predictor = ferdash.Predictor("models/fer7")          # doctest: +SKIP
>>> for face in predictor.predict("group.jpg"):            # doctest: +SKIP
...     print(face.number, face.box, face.answer, round(face.top_probability, 2))
1 (412, 188, 96, 96) happy 0.93
2 (130, 240, 61, 61) uncertain: neutral or sad 0.41
>>> table = predictor.predict_many(["photos/"], recursive=True)  # doctest: +SKIP

The same pipeline as the Predict tab and ``python -m ferdash predict``: the image
decoded with the upload's checks, every face found (at most
:data:`~ferdash.inference.MAX_FACES_PER_PHOTO`, largest first), cropped, and the run's
calibrated model. :meth:`Predictor.predict_many` returns the rows of the command's
output. TensorFlow is imported when a :class:`Predictor` is made, not with ``ferdash``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import wording
from .batch import DEFAULT_BATCH_FILES, predict_chunks, read_local_file, resolve_run
from .imaging import UploadError
from .inference import analyse
from .paths import iter_image_paths
from .runs.rundir import RunInfo

#: What :meth:`Predictor.predict` takes: a path, encoded image bytes, a Pillow image, or
#: a uint8 array (H, W) grey or (H, W, 3) RGB.
ImageInput = str | os.PathLike[str] | bytes | Any


@dataclass(frozen=True)
class FacePrediction:
    """One face of an image (or the whole image, when no face was found)."""

    #: 1 for the largest face, as the Predict photo numbers them; None when no face was
    #: found, or the image is a small face crop already (the whole image was read).
    number: int | None
    box: tuple[int, int, int, int] | None  # (x, y, w, h) in the file's pixels
    probabilities: dict[str, float]  # per class of the run, calibrated
    top_class: str
    top_probability: float
    answer: str  # "happy", or "uncertain: sad or neutral" for a weak answer
    #: False when no face was found and the whole image was classified: the numbers are
    #: then not a reading of a face.
    is_face: bool
    detector: str | None  # "blazeface" or "haar"; None without a box


class Predictor:
    """One run, loaded once, answering for images and folders.

    >>> predictor = Predictor("models/fer7")                   # doctest: +SKIP
    >>> [(f.number, f.top_class) for f in predictor.predict("astronaut.png")]  # doctest: +SKIP
    [(1, 'happy')]

    ``run``: a run folder, or the name of a run in the models folder
    (``FERDASH_MODELS_DIR``, else the shipped ``models/``); None: ``fer7``. Raises
    :class:`ferdash.runs.rundir.RunDirError` for a folder that is no run, and
    :class:`ferdash.runs.predictor.ModelLoadError` for a model that cannot be used.
    """

    def __init__(self, run: str | os.PathLike[str] | None = None) -> None:
        from .runs.model_store import get_loaded_run

        self.info: RunInfo = resolve_run(run)
        self._loaded = get_loaded_run(self.info)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    def predict(self, image: ImageInput) -> list[FacePrediction]:
        """Every face of one image, largest first (one entry for the whole image when no
        face is found). Raises :class:`~ferdash.imaging.UploadError` (a ValueError) with
        the reason when the image cannot be read."""
        result = analyse([("image", _encoded(image))], self._loaded)[0]
        if result.error is not None or result.prepared is None:
            raise UploadError(result.error or "The image could not be read.")
        if result.model_error is not None:
            raise RuntimeError(result.model_error)
        prepared = result.prepared
        faces = []
        for face in result.faces:
            top = face.top
            assert top is not None and face.probs is not None
            faces.append(
                FacePrediction(
                    number=face.number if face.box is not None else None,
                    box=prepared.box_in_file(face.box) if face.box is not None else None,
                    probabilities={c: float(p) for c, p in zip(face.classes, face.probs)},
                    top_class=top[0],
                    top_probability=top[1],
                    answer=wording.answer(face.classes, face.probs),
                    is_face=face.is_face,
                    detector=face.box.detector if face.box is not None else None,
                )
            )
        return faces

    def predict_many(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        recursive: bool = False,
        largest_face: bool = True,
        batch_files: int = DEFAULT_BATCH_FILES,
        workers: int | None = None,
    ) -> pd.DataFrame:
        """The rows ``python -m ferdash predict`` writes for ``paths`` (files, folders,
        globs; see :mod:`ferdash.paths`): one per file, its largest face, as the command's
        default (``largest_face`` False: one per face, small ones included, as
        ``--every-face``), probabilities 0-1; a file that cannot be read gets a row with
        its message. Raises
        :class:`ferdash.paths.NoSuchPath` when an argument names nothing."""
        from .prediction import results_frame

        frames = [
            results_frame(chunk.results, False, run=self.info.name)
            for chunk in predict_chunks(
                iter_image_paths(paths, recursive),
                self._loaded,
                batch_files,
                workers,
                every_face=not largest_face,
            )
        ]
        frame = pd.concat(frames, ignore_index=True) if frames else results_frame([], False)
        return frame


def _encoded(image: ImageInput) -> bytes:
    """The image as file bytes, so that every input takes the upload's decoding path."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return read_local_file(Path(image))
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    raise TypeError(f"expected a path, bytes, a PIL image or an array, not {type(image).__name__}")
