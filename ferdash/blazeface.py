"""MediaPipe's BlazeFace short-range face detector, run with the TensorFlow Lite interpreter.

The model file (``data/blazeface_short_range.tflite``, 229 kB, Apache-2.0, see
``data/NOTICE``) is Google MediaPipe's "face_detection_short_range" network: one 128x128
RGB frame in, 896 anchor boxes with a face score each out, about 1 ms on one CPU core
(1.5–3 ms with the shrinking and padding of a photo; each window searched adds ~1 ms). It
was trained on faces within about 2 m of a phone's camera, i.e. faces that fill a good part
of the frame (portraits, selfies, the photos people upload to an expression app), and it
finds those faces several times faster than OpenCV's Haar cascades and at more angles.
Small faces in large scenes are beyond it. :func:`find_faces` therefore looks again, when
the whole frame shows no face, in square windows of a wide or tall photo (a 1920x1080
frame letterboxed into 128x128 shrinks a face 1.8 times more than a 1080x1080 window of
it does); :mod:`ferdash.faces` searches with the cascades when even that finds nothing.

Decoding follows MediaPipe's own graph for this model (SSD anchors of strides 8 and 16,
box offsets in input pixels relative to the anchor centres, sigmoid scores, weighted
non-maximum suppression), written with numpy.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .imaging import shrink_to_max_side
from .runs.lite_engine import LiteUnavailable, interpreter_class

MODEL_FILE = Path(__file__).with_name("data") / "blazeface_short_range.tflite"
#: Checked before the file reaches the interpreter: TensorFlow Lite does not validate a
#: model's flatbuffer, and a damaged one crashes the whole process instead of raising.
MODEL_SHA256 = "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633"

INPUT_SIDE = 128
#: Above MediaPipe's 0.5: scikit-image's cat and coffee cup score 0.54 and 0.49, the
#: photos of faces used in the tests and benchmarks 0.68-0.85, and a face scored lower
#: is still searched for by the Haar cascade (ferdash.faces), which sees no face in those.
MIN_SCORE = 0.6
#: Boxes overlapping more than this are one face (MediaPipe's value).
NMS_IOU = 0.3


#: A window step of half its side: every face at most half a window wide lies wholly
#: inside one window.
WINDOW_STEP = 0.5
#: Photos closer to square than this are not searched again in windows: a window would
#: enlarge their faces by less than a fifth.
MIN_WINDOW_ASPECT = 1.2
#: Beyond this many windows (a panorama or strip over 6:1) none is searched: each costs a
#: network call (~1 ms), and a strip's short side leaves room only for faces the cascade
#: sees. A row of five portraits (960x200) needs 9.
MAX_WINDOWS = 11


@dataclass(frozen=True)
class PixelBox:
    """A face in image pixels (corners), with its detector score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float


@dataclass(frozen=True)
class Detection:
    """A face in the detector's square frame, coordinates as fractions of its side."""

    xmin: float
    ymin: float
    width: float
    height: float
    score: float


def _anchor_centres() -> np.ndarray:
    """(896, 2) anchor centres (x, y) as fractions of the input side.

    MediaPipe's SsdAnchorsCalculator options for this model: four layers of strides
    8, 16, 16, 16, two anchors per layer and cell, fixed anchor size (so only the centres
    matter). Layers of equal stride share one grid: 16x16 cells x 2 anchors, then 8x8
    cells x 6 anchors.
    """
    centres = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = INPUT_SIDE // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


_ANCHORS = _anchor_centres()
_local = threading.local()


class DetectorUnavailable(RuntimeError):
    """TensorFlow Lite or the model file is missing: callers fall back to other detectors."""


def _interpreter() -> Any:
    # One interpreter per thread: an Interpreter's tensors are not safe to share, and
    # uploads of different sessions are analysed in parallel worker threads.
    interpreter = getattr(_local, "interpreter", None)
    if interpreter is None:
        interpreter = _new_interpreter()
        interpreter.allocate_tensors()
        inputs = interpreter.get_input_details()[0]
        outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
        _local.interpreter = interpreter
        _local.io = (inputs["index"], outputs["regressors"], outputs["classificators"])
    return interpreter


def _new_interpreter() -> Any:
    try:
        Interpreter = interpreter_class()
    except LiteUnavailable as exc:
        raise DetectorUnavailable(str(exc)) from exc
    try:
        content = MODEL_FILE.read_bytes()
    except OSError as exc:
        raise DetectorUnavailable(f"{MODEL_FILE} cannot be read: {exc}") from exc
    if hashlib.sha256(content).hexdigest() != MODEL_SHA256:
        raise DetectorUnavailable(f"{MODEL_FILE} is damaged (its SHA-256 differs)")
    try:
        # The bytes that were checked, not the path: the file could change meanwhile.
        return Interpreter(model_content=content, num_threads=1)
    except Exception as exc:  # an interpreter that refuses the model
        raise DetectorUnavailable(f"{MODEL_FILE} cannot be loaded: {exc}") from exc


def square_frame(grey: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """``grey`` padded to a square (centred, black borders) and resized to the input side.

    Returns the frame and, to map boxes back, the square's side and the padding added
    on the left and at the top.
    """
    height, width = grey.shape[:2]
    side = max(height, width)
    left, top = (side - width) // 2, (side - height) // 2
    square = cv2.copyMakeBorder(
        np.ascontiguousarray(grey, dtype=np.uint8),
        top,
        side - height - top,
        left,
        side - width - left,
        cv2.BORDER_CONSTANT,
        value=0,
    )
    if side == INPUT_SIDE:
        return square, side, left, top
    interpolation = cv2.INTER_AREA if side > INPUT_SIDE else cv2.INTER_LINEAR
    frame = cv2.resize(square, (INPUT_SIDE, INPUT_SIDE), interpolation=interpolation)
    return frame, side, left, top


def windows(height: int, width: int) -> list[tuple[int, int, int]]:
    """Square windows ``(x0, y0, side)`` of the short side along the long one.

    Stepped by :data:`WINDOW_STEP` of a side, the last flush with the far edge; none for
    a photo closer to square than :data:`MIN_WINDOW_ASPECT` or one that would need more
    than :data:`MAX_WINDOWS`.
    """
    side, long_side = min(height, width), max(height, width)
    if side <= 0 or long_side < side * MIN_WINDOW_ASPECT:
        return []
    step = max(1, int(side * WINDOW_STEP))
    starts = list(range(0, long_side - side, step)) + [long_side - side]
    if len(starts) > MAX_WINDOWS:
        return []
    if width >= height:
        return [(x, 0, side) for x in starts]
    return [(0, y, side) for y in starts]


def find_faces(grey: np.ndarray, min_score: float = MIN_SCORE) -> list[PixelBox]:
    """Faces in a greyscale image, in its pixels, highest score first.

    The whole image first (one network call); only when it shows no face, each of its
    :func:`windows`, whose findings are merged by the same weighted suppression so that
    a face seen by two overlapping windows counts once.
    """
    # Shrunk first, then padded square: padding a 1920x1080 photo to 1920x1920 before
    # shrinking it would cost more than the network.
    reduced, sx, sy = _shrunk(grey, INPUT_SIDE)
    frame, side, left, top = square_frame(reduced)
    found = [
        PixelBox(
            x0=(d.xmin * side - left) / sx,
            y0=(d.ymin * side - top) / sy,
            x1=((d.xmin + d.width) * side - left) / sx,
            y1=((d.ymin + d.height) * side - top) / sy,
            score=d.score,
        )
        for d in detect(frame, min_score)
    ]
    if found:
        return found
    # One shrink for all windows (short side to the network's input), so each window is a
    # 128x128 slice that needs no resize of its own.
    height, width = grey.shape[:2]
    small, sx, sy = _shrunk(grey, round(INPUT_SIDE * max(height, width) / min(height, width)))
    corners, scores = [], []
    for x0, y0, win in windows(*small.shape[:2]):
        tile, _, _, _ = square_frame(small[y0 : y0 + win, x0 : x0 + win])
        for d in detect(tile, min_score):
            corners.append([(x0 + d.xmin * win) / sx, (y0 + d.ymin * win) / sy,
                            (x0 + (d.xmin + d.width) * win) / sx,
                            (y0 + (d.ymin + d.height) * win) / sy])
            scores.append(d.score)
    if not scores:
        return []
    merged = _weighted_nms(np.asarray(corners, dtype=np.float64), np.asarray(scores))
    return [
        PixelBox(x0=d.xmin, y0=d.ymin, x1=d.xmin + d.width, y1=d.ymin + d.height, score=d.score)
        for d in merged
    ]


def _shrunk(grey: np.ndarray, max_side: int) -> tuple[np.ndarray, float, float]:
    """:func:`ferdash.imaging.shrink_to_max_side`, with the x and y scales it applied.

    Each side is rounded on its own, so the two differ slightly; boxes map back with both,
    read off the copy's shape (a 6000x4000 photo becomes 128x85: one scale would misplace
    y by 15 px).
    """
    small, _ = shrink_to_max_side(np.ascontiguousarray(grey, dtype=np.uint8), max_side)
    return small, small.shape[1] / grey.shape[1], small.shape[0] / grey.shape[0]


def detect(frame: np.ndarray, min_score: float = MIN_SCORE) -> list[Detection]:
    """Faces in a 128x128 greyscale ``frame``, highest score first."""
    interpreter = _interpreter()
    input_index, boxes_index, scores_index = _local.io
    # The network takes RGB in [-1, 1]; a grey frame is the same value in all three.
    x = (frame.astype(np.float32) / 127.5 - 1.0)[None, :, :, None]
    interpreter.set_tensor(input_index, np.repeat(x, 3, axis=-1))
    interpreter.invoke()
    raw_boxes = interpreter.get_tensor(boxes_index)[0]
    raw_scores = interpreter.get_tensor(scores_index)[0, :, 0]
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.astype(np.float64), -100.0, 100.0)))
    keep = np.flatnonzero(scores >= min_score)
    if keep.size == 0:
        return []
    offsets = raw_boxes[keep, :4] / INPUT_SIDE
    centres = _ANCHORS[keep] + offsets[:, :2]
    sizes = offsets[:, 2:4]
    corners = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    # A box without area (or with NaN in it) would poison the weighted mean below.
    sane = np.isfinite(corners).all(axis=1) & (sizes > 0).all(axis=1)
    if not sane.any():
        return []
    return _weighted_nms(corners[sane], scores[keep][sane])


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    lo = np.maximum(box[:2], others[:, :2])
    hi = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(others[:, 2:] - others[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-9)


def _weighted_nms(corners: np.ndarray, scores: np.ndarray) -> list[Detection]:
    """MediaPipe's weighted NMS: each face is the score-weighted mean of its overlapping boxes."""
    order = np.argsort(-scores)
    corners, scores = corners[order], scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    found = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        overlap = remaining & (_iou(corners[i], corners) > NMS_IOU)
        overlap[i] = True  # a box is always in its own group, whatever its IoU rounds to
        weights = scores[overlap]
        box = (corners[overlap] * weights[:, None]).sum(axis=0) / weights.sum()
        remaining &= ~overlap
        found.append(
            Detection(
                xmin=float(box[0]),
                ymin=float(box[1]),
                width=float(box[2] - box[0]),
                height=float(box[3] - box[1]),
                score=float(scores[i]),
            )
        )
    return found
