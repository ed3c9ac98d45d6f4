"""How well a run did on a user's labelled set (:mod:`ferdash.labelled_set`): accuracy,
macro-F1, the confusion matrix and per-class numbers, the per-face table and the
confusion figure.

Plain inputs only: true labels, predicted labels, the run's classes. A predicted label
of None is an image that got no answer (an unreadable file, or no face found where the
caller counts that as no answer); it is never counted as correct:

- ``accuracy`` is over every labelled image, an unanswered one counting as wrong;
- ``accuracy_classified`` is over the images that got an answer;
- per-class recall and F1, and macro-F1, count an unanswered image as a miss of its
  true class; precision only looks at the answers given;
- the confusion matrix holds the answered images, ``unclassified`` the others per class.

The metrics are those of the run's own evaluation
(:func:`ferdash.runs.rundir.metrics_from_confusion`), the figure that of Inspect
(:func:`ferdash.plots.confusion_figure`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .plots import confusion_figure, figure_png_bytes
from .runs.rundir import metrics_from_confusion

#: The per-face table's columns. "file" is the column that
#: :func:`ferdash.prediction.csv_text` defuses for spreadsheets.
PER_FACE_COLUMNS: tuple[str, ...] = (
    "file", "true class", "predicted class", "top probability", "correct", "message",
)
PER_CLASS_COLUMNS: tuple[str, ...] = (
    "class", "images", "unclassified", "precision", "recall", "F1",
)


@dataclass(frozen=True)
class SetScore:
    """A run's score on a labelled set (see the module's docstring for what counts)."""

    classes: tuple[str, ...]  # the run's, in its order
    confusion: np.ndarray  # (n, n) answered images: rows true class, columns predicted
    unclassified: np.ndarray  # (n,) images of each true class that got no answer
    accuracy: float  # correct / every labelled image
    accuracy_classified: float  # correct / answered images; nan when none was answered
    macro_f1: float  # over the classes that are true or predicted at least once
    per_class: dict[str, dict[str, float]]  # precision, recall, f1, support (all images)

    @property
    def images(self) -> int:
        return int(self.confusion.sum() + self.unclassified.sum())

    @property
    def classified(self) -> int:
        return int(self.confusion.sum())

    @property
    def unclassified_count(self) -> int:
        return int(self.unclassified.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))


# Names the "no answer" column of the matrix handed to metrics_from_confusion: run
# classes are non-empty (score checks it), so it never shadows one.
_NO_ANSWER = ""


def score(
    true: Sequence[str], predicted: Sequence[str | None], classes: Sequence[str]
) -> SetScore:
    """Score predictions against labels; both are class names of ``classes``, or None
    for an image that got no answer. Raises ValueError for mismatched inputs."""
    classes = tuple(classes)
    if len(set(classes)) != len(classes) or not all(classes):
        raise ValueError("classes must be distinct, non-empty names")
    if len(true) != len(predicted):
        raise ValueError(f"{len(true)} labels but {len(predicted)} predictions")
    if not true:
        raise ValueError("there are no images to score")
    index = {name: i for i, name in enumerate(classes)}
    n = len(classes)
    # The run's matrix plus a last column for the images without an answer (and an
    # empty last row, to keep it square): its accuracy and per-class recall are then
    # over every image, as stated above.
    with_unanswered = np.zeros((n + 1, n + 1), dtype=np.int64)
    for label, answer in zip(true, predicted):
        if label not in index:
            raise ValueError(f"label {label!r} is not one of the classes")
        if answer is not None and answer not in index:
            raise ValueError(f"prediction {answer!r} is not one of the classes")
        with_unanswered[index[label], n if answer is None else index[answer]] += 1
    accuracy, per_class, _ = metrics_from_confusion(with_unanswered, [*classes, _NO_ANSWER])
    per_class = {c: per_class[c] for c in classes}
    confusion = with_unanswered[:n, :n].copy()
    unclassified = with_unanswered[:n, n].copy()
    # A class neither in the set nor ever predicted has no F1 to speak of; averaging its
    # 0 in would mark down a set that simply lacks it (scikit-learn's default too).
    seen = [c for i, c in enumerate(classes) if with_unanswered[i].sum() or confusion[:, i].sum()]
    macro_f1 = float(np.mean([per_class[c]["f1"] for c in seen]))
    answered = int(confusion.sum())
    accuracy_classified = metrics_from_confusion(confusion, classes)[0] if answered else math.nan
    return SetScore(
        classes=classes,
        confusion=confusion,
        unclassified=unclassified,
        accuracy=accuracy,
        accuracy_classified=accuracy_classified,
        macro_f1=macro_f1,
        per_class=per_class,
    )


def per_face_frame(
    files: Sequence[str],
    true: Sequence[str],
    predicted: Sequence[str | None],
    top_probability: Sequence[float | None],
    messages: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per image (:data:`PER_FACE_COLUMNS`): no answer reads as an empty
    predicted class, a blank probability and not correct; ``messages`` say why."""
    messages = messages if messages is not None else [""] * len(files)
    lengths = {len(files), len(true), len(predicted), len(top_probability), len(messages)}
    if len(lengths) != 1:
        raise ValueError("every per-face input needs one entry per file")
    rows = [
        (
            name,
            label,
            answer or "",
            round(float(p), 4) if p is not None else math.nan,
            answer is not None and answer == label,
            message,
        )
        for name, label, answer, p, message in zip(files, true, predicted, top_probability, messages)
    ]
    frame = pd.DataFrame(rows, columns=list(PER_FACE_COLUMNS))
    frame["top probability"] = frame["top probability"].astype(float)
    frame["correct"] = frame["correct"].astype(bool)
    return frame


def per_class_frame(result: SetScore) -> pd.DataFrame:
    """One row per class of the run (:data:`PER_CLASS_COLUMNS`), in its order."""
    rows = [
        (
            c,
            int(result.per_class[c]["support"]),
            int(result.unclassified[i]),
            result.per_class[c]["precision"],
            result.per_class[c]["recall"],
            result.per_class[c]["f1"],
        )
        for i, c in enumerate(result.classes)
    ]
    return pd.DataFrame(rows, columns=list(PER_CLASS_COLUMNS))


def confusion_png(result: SetScore, *, normalize: bool = False, dpi: int = 100) -> bytes:
    """Inspect's confusion figure of the answered images, as PNG bytes; the title says
    how many images got no answer, since the matrix leaves them out."""
    title = f"{result.classified:,} classified images" + (" (row-normalised)" if normalize else "")
    if result.unclassified_count:
        title += f"; {result.unclassified_count:,} without an answer not shown"
    figure = confusion_figure(result.confusion, result.classes, normalize=normalize, title=title)
    return figure_png_bytes(figure, dpi=dpi)
