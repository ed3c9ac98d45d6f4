"""A labelled set through the Predict pipeline: each image's answer, the set's score,
and what the page and its downloads show.

The images go through :func:`ferdash.inference.analyse` exactly as uploads do (decode,
find the face, crop, the run's calibrated model), in chunks, so a long set reports its
progress and can be cancelled between chunks. An image's answer is its largest face's
top class; an image with no face found, or unreadable, has no answer (counted as wrong,
and shown apart). No Shiny import: the labelled-set panel runs :func:`evaluate_set` in a
worker thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .inference import ImageResult, analyse, display_name
from .labelled_set import LabelledSet
from .runs.model_store import LoadedRun
from .set_score import SetScore, confusion_png, per_face_frame, score

#: Images analysed per model batch: big enough for the batch to pay, small enough that
#: progress moves and a cancel is honoured within about a second.
CHUNK_IMAGES = 64

NO_FACE_MESSAGE = "No face found: not scored as a face reading."


@dataclass(frozen=True)
class SetReport:
    """One run's answers on one labelled set."""

    run_name: str
    score: SetScore
    names: tuple[str, ...]  # display names, one per scored image
    true: tuple[str, ...]
    predicted: tuple[str | None, ...]
    top_probability: tuple[float | None, ...]
    messages: tuple[str, ...]
    crops: tuple[np.ndarray | None, ...]  # the model input of each image, for the cell gallery
    #: What reading the set left out and why (the images' bytes are not kept).
    notes: tuple[str, ...] = ()
    non_images: int = 0
    cancelled_at: int | None = None  # images scored before a cancel; None when complete

    def frame(self) -> pd.DataFrame:
        """One row per image: file, true class, predicted class, top probability, correct, message."""
        return per_face_frame(self.names, self.true, self.predicted, self.top_probability, self.messages)

    def confusion_png(self) -> bytes:
        return confusion_png(self.score)

    def cell_indices(self, true: str, predicted: str) -> list[int]:
        """The images of a confusion cell (``predicted`` empty: all of ``true``'s mistakes)."""
        return [
            i
            for i, (t, p) in enumerate(zip(self.true, self.predicted))
            if t == true and p is not None and (p == predicted if predicted else p != t)
        ]


def answer_of(result: ImageResult) -> tuple[str | None, float | None, str]:
    """(answer, its probability, message) of one analysed image: the largest face's top
    class, or None with why there is none."""
    if not result.ok:
        return None, None, result.error or "The file could not be read."
    if result.model_error:
        return None, None, result.model_error
    faces = result.faces
    if faces and not faces[0].is_face:
        return None, None, NO_FACE_MESSAGE
    top = result.top
    if top is None:
        return None, None, "Not classified."
    return top[0], top[1], ""


def evaluate_set(
    labelled: LabelledSet,
    model: LoadedRun,
    run_name: str,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> SetReport:
    """Score ``model`` on ``labelled``; raises ValueError when the set has no image.

    ``progress(done, total)`` is called after every chunk; once ``cancel`` is set, the
    images scored so far make the report (``cancelled_at`` says how many).
    """
    images = labelled.images
    if not images:
        raise ValueError("The set has no labelled image of this run's classes.")
    answers: list[tuple[str | None, float | None, str]] = []
    crops: list[np.ndarray | None] = []
    cancelled_at: int | None = None
    for start in range(0, len(images), CHUNK_IMAGES):
        if cancel is not None and cancel.is_set():
            cancelled_at = start
            break
        chunk = images[start : start + CHUNK_IMAGES]
        for result in analyse([(image.name, image.data) for image in chunk], model):
            answers.append(answer_of(result))
            crops.append(result.prepared.crop if result.prepared is not None else None)
        if progress is not None:
            progress(len(answers), len(images))
    if not answers:
        raise ValueError("Cancelled before any image was scored.")
    scored = images[: len(answers)]
    true = tuple(image.label for image in scored)
    predicted = tuple(a[0] for a in answers)
    return SetReport(
        run_name=run_name,
        score=score(true, predicted, model.classes),
        names=tuple(display_name(image.name) for image in scored),
        true=true,
        predicted=predicted,
        top_probability=tuple(a[1] for a in answers),
        messages=tuple(a[2] for a in answers),
        crops=tuple(crops),
        notes=labelled.notes,
        non_images=labelled.non_images,
        cancelled_at=cancelled_at,
    )
