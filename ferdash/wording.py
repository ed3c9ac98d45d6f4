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


DETECTOR_NAMES = {"blazeface": "BlazeFace", "haar": "the Haar cascade"}


def faces_text(
    faces_found: int, tight_crop: bool, classified: bool = True, detector: str | None = None
) -> str:
    """What the detector did, in one line (``classified``: whether a model then ran).

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
    return f"{faces_found} faces found{by}: the largest was {verb}."


def no_saliency_text(class_name: str) -> str:
    """Why a card has no Grad-CAM map: the map held no positive evidence (a flat image)."""
    return (
        f"Grad-CAM found no region arguing for “{class_name}”: compared with a plain grey "
        "image, no part of this crop pushed the network towards it, so there is no map to "
        "show: a flat or nearly flat crop has nothing to point at."
    )
