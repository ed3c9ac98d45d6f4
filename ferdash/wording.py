"""The sentences the Predict panel shows, kept apart from the UI so tests can read them."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def percent(probability: float) -> int:
    """A probability as a whole percentage, rounded half up (0.745 -> 75), as R's paste shows it."""
    return int(np.floor(float(probability) * 100.0 + 0.5))


def happy_sad_winner(classes: Sequence[str], probs: Sequence[float]) -> tuple[str, float]:
    """The more probable of "happy" and "sad", and its probability (a tie reads as happy)."""
    index = {name: i for i, name in enumerate(classes)}
    p_happy, p_sad = float(probs[index["happy"]]), float(probs[index["sad"]])
    return ("happy", p_happy) if p_happy >= p_sad else ("sad", p_sad)


def happy_sad_sentence(classes: Sequence[str], probs: Sequence[float]) -> str:
    """The original R app's sentence, word for word, ellipsis included: "With an expression
    percentage of 74% ... the image expression is more happy."."""
    label, probability = happy_sad_winner(classes, probs)
    return (
        f"With an expression percentage of {percent(probability)}% ... "
        f"the image expression is more {label}."
    )


def top_class(classes: Sequence[str], probs: Sequence[float]) -> tuple[str, float]:
    """The most probable class and its probability."""
    i = int(np.argmax(np.asarray(probs)))
    return classes[i], float(probs[i])


def top_class_text(classes: Sequence[str], probs: Sequence[float]) -> str:
    """E.g. "Top expression: happy (74%)"."""
    label, probability = top_class(classes, probs)
    return f"Top expression: {label} ({percent(probability)}%)"


#: An answer is "uncertain" when its top probability is below this: with calibrated
#: probabilities it is then more often wrong than right (fer7 on FER2013 PublicTest:
#: answers at 40-50% were right 43% of the time, at 50-57% 47%, at 57-63% 56%).
UNCERTAIN_BELOW = 0.5
#: ... or when the two most probable classes are closer than this.
UNCERTAIN_MARGIN = 0.10
#: In happy-vs-sad mode, a seven-expression run's answer other than happy or sad at
#: least this probable is worth a second line: the two-way sentence alone would hide it.
CLEARLY_OTHER_AT_LEAST = 0.5


def top_two(classes: Sequence[str], probs: Sequence[float]) -> list[tuple[str, float]]:
    """The two most probable classes, most probable first."""
    order = np.argsort(-np.asarray(probs, dtype=np.float64), kind="stable")[:2]
    return [(classes[int(i)], float(probs[int(i)])) for i in order]


def is_uncertain(classes: Sequence[str], probs: Sequence[float]) -> bool:
    """Whether the answer is too weak for one class (see :data:`UNCERTAIN_BELOW`)."""
    return _weak(top_two(classes, probs))


def _weak(best: list[tuple[str, float]]) -> bool:
    if best[0][1] < UNCERTAIN_BELOW:
        return True
    return len(best) > 1 and best[0][1] - best[1][1] < UNCERTAIN_MARGIN


def answer(classes: Sequence[str], probs: Sequence[float]) -> str:
    """The answer in a word or three: "happy", or "uncertain: sad or neutral"."""
    best = top_two(classes, probs)
    if _weak(best) and len(best) > 1:
        return f"uncertain: {best[0][0]} or {best[1][0]}"
    return best[0][0]


def answer_text(classes: Sequence[str], probs: Sequence[float]) -> str:
    """The card's line: "Top expression: happy (74%)", or for a weak answer
    "Uncertain: sad (38%) or neutral (31%)"."""
    best = top_two(classes, probs)
    if _weak(best) and len(best) > 1:
        (a, pa), (b, pb) = best
        return f"Uncertain: {a} ({percent(pa)}%) or {b} ({percent(pb)}%)"
    return top_class_text(classes, probs)


def neither_happy_nor_sad_text(classes: Sequence[str], probs: Sequence[float]) -> str | None:
    """The happy-vs-sad card's second line when a seven-expression run reads the face as
    clearly something else, e.g. "This face looks more angry than happy or sad
    (seven-expression model: angry 71%)"; None when it does not."""
    label, probability = top_class(classes, probs)
    if label in ("happy", "sad") or probability < CLEARLY_OTHER_AT_LEAST:
        return None
    return (
        f"This face looks more {label} than happy or sad "
        f"(seven-expression model: {label} {percent(probability)}%)"
    )


NOT_A_FACE_TEXT = (
    "Not a face reading: no face was found, so the whole image was classified. "
    "The numbers say what the model makes of the picture, not of an expression."
)


DETECTOR_NAMES = {"blazeface": "BlazeFace", "haar": "the Haar cascade"}


def faces_text(
    faces_found: int,
    tight_crop: bool,
    classified: bool = True,
    detector: str | None = None,
    shown: int | None = None,
) -> str:
    """What the detector did, in one line (``classified``: whether a model then ran;
    ``shown``: how many of the faces were kept, when a cap cut them).

    ``detector`` (see :class:`ferdash.faces.FaceBox`) is named when given: the two find
    different faces (BlazeFace tilted and turned ones, the cascade small ones), which is
    worth knowing when a crop looks wrong.
    """
    verb = "classified" if classified else "used"
    if tight_crop:
        return f"Small image taken as a face crop: {verb} whole."
    if faces_found == 0:
        return f"No face found: the whole image was {verb}."
    by = f" by {DETECTOR_NAMES.get(detector, detector)}" if detector else ""
    if faces_found == 1:
        return f"1 face found{by}."
    if shown and shown < faces_found:
        return f"{faces_found} faces found{by}: the {shown} largest were {verb}."
    return f"{faces_found} faces found{by}, each {verb}."


def no_saliency_text(class_name: str) -> str:
    """Why a card has no Grad-CAM map: the map held no positive evidence (a flat image)."""
    return (
        f"Grad-CAM found no region arguing for “{class_name}”: compared with a plain grey "
        "image, no part of this crop pushed the network towards it, so there is no map to "
        "show: a flat or nearly flat crop has nothing to point at."
    )
