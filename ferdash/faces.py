"""Finding the face in a photo and cutting the square crop the model is fed.

The detector is OpenCV's frontal-face Haar cascade, whose model file ships inside the
``opencv-python-headless`` wheel (``cv2.data.haarcascades``): nothing to download, a
few milliseconds per photo on a CPU, and good enough at finding the roughly frontal,
well-lit faces an expression classifier trained on FER2013 can read anyway.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CASCADE_FILE = "haarcascade_frontalface_default.xml"

#: Detection runs on a copy whose long side is at most this: a 640x480 photo is
#: searched at 320x240, four times fewer pixels, which still finds faces from ~48 px.
DETECT_MAX_SIDE = 320

#: Images whose long side is at most this are taken to be face crops already (FER2013
#: images are 48x48): too small for the detector's 24-px window to be meaningful.
TIGHT_CROP_MAX_SIDE = 96

#: Margin added around the detector's box on each side, as a fraction of its size:
#: Haar boxes cut at the eyebrows and chin, FER2013 faces include a little more.
CROP_MARGIN = 0.1

#: Smallest face searched for, in detection-copy pixels (the cascade's window is 24).
#: 30 px of a 320-px copy is ~10% of the long side: smaller faces carry too few pixels
#: for the classifier, and skipping those scales makes detection ~2x faster.
_MIN_FACE = 30
#: Step between searched scales; 1.2 instead of the usual 1.1 halves the work and still
#: finds frontal faces (checked on scikit-image's astronaut and generated images).
_SCALE_FACTOR = 1.2

_cascade_lock = threading.Lock()
_cascade: cv2.CascadeClassifier | None = None


@dataclass(frozen=True)
class FaceBox:
    """A face rectangle in the coordinates of the image it was found in."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h


def _get_cascade() -> cv2.CascadeClassifier:
    # Loaded once per process: parsing the 900 kB XML costs ~30 ms.
    global _cascade
    with _cascade_lock:
        if _cascade is None:
            path = Path(cv2.data.haarcascades) / CASCADE_FILE
            cascade = cv2.CascadeClassifier(str(path))
            if cascade.empty():
                raise RuntimeError(f"OpenCV's face cascade could not be loaded from {path}")
            _cascade = cascade
        return _cascade


def detect_faces(grey: np.ndarray, max_side: int = DETECT_MAX_SIDE) -> list[FaceBox]:
    """Faces in a greyscale uint8 image, largest first, in ``grey``'s coordinates."""
    grey = np.asarray(grey, dtype=np.uint8)
    height, width = grey.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    small = grey
    if scale < 1.0:
        small = cv2.resize(
            grey,
            (max(1, round(width * scale)), max(1, round(height * scale))),
            interpolation=cv2.INTER_AREA,
        )
    if min(small.shape[:2]) < _MIN_FACE:
        return []
    # Equalising evens out exposure, which the cascade's fixed thresholds are sensitive to.
    small = cv2.equalizeHist(small)
    cascade = _get_cascade()
    # CascadeClassifier keeps per-call scratch state; serialise calls from threads.
    with _cascade_lock:
        found = cascade.detectMultiScale(
            small, scaleFactor=_SCALE_FACTOR, minNeighbors=5, minSize=(_MIN_FACE, _MIN_FACE)
        )
    boxes = [
        FaceBox(
            x=int(round(x / scale)),
            y=int(round(y / scale)),
            w=int(round(w / scale)),
            h=int(round(h / scale)),
        )
        for (x, y, w, h) in (found if len(found) else [])
    ]
    boxes.sort(key=lambda b: b.area, reverse=True)
    return boxes


def is_tight_crop(grey: np.ndarray) -> bool:
    """Whether an image is small enough to be a face crop already (e.g. FER2013's 48x48)."""
    return max(grey.shape[:2]) <= TIGHT_CROP_MAX_SIDE


def crop_face(
    grey: np.ndarray, box: FaceBox, size: tuple[int, int], margin: float = CROP_MARGIN
) -> np.ndarray:
    """The square around ``box`` (plus ``margin``), resized to ``size`` ``(H, W)``.

    Parts of the square outside the image are filled by repeating the edge pixels, so
    a face at the border keeps its proportions.
    """
    side = max(box.w, box.h) * (1.0 + 2.0 * margin)
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    side_px = max(1, int(round(side)))
    return _square_region(grey, x0, y0, side_px, size)


def whole_image_input(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The whole image, padded to a square around its centre, resized to ``size``.

    Padding instead of stretching keeps faces' proportions for any aspect ratio.
    """
    height, width = grey.shape[:2]
    side = max(height, width)
    x0 = (width - side) // 2
    y0 = (height - side) // 2
    return _square_region(grey, x0, y0, side, size)


def _square_region(
    grey: np.ndarray, x0: int, y0: int, side: int, size: tuple[int, int]
) -> np.ndarray:
    height, width = grey.shape[:2]
    pad_left, pad_top = max(0, -x0), max(0, -y0)
    pad_right, pad_bottom = max(0, x0 + side - width), max(0, y0 + side - height)
    region = grey[max(0, y0) : min(height, y0 + side), max(0, x0) : min(width, x0 + side)]
    if pad_left or pad_top or pad_right or pad_bottom:
        region = cv2.copyMakeBorder(
            np.ascontiguousarray(region),
            pad_top,
            pad_bottom,
            pad_left,
            pad_right,
            cv2.BORDER_REPLICATE,
        )
    out_h, out_w = size
    interpolation = cv2.INTER_AREA if side > max(out_h, out_w) else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(region), (out_w, out_h), interpolation=interpolation)
