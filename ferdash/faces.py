"""Finding the face in a photo and cutting the square crop the model is fed.

Two detectors, fastest first:

1. MediaPipe's BlazeFace short-range network (:mod:`ferdash.blazeface`, a 229 kB model
   that ships with the app, run by TensorFlow Lite): 1.5–3 ms for a photo, finds faces
   that fill a good part of the frame (portraits, selfies), also turned or tilted, and,
   in square windows of a wide or tall photo, somewhat smaller ones (~1 ms a window).
2. Only when it finds nothing: OpenCV's frontal-face Haar cascade ("alt2"), whose model
   file ships inside the ``opencv-python-headless`` wheel, searching a coarse copy and then
   a finer one (:func:`detect_faces`) for the smaller faces of group photos and wide shots.
   It is also what runs when TensorFlow Lite is unavailable.

Detection was most of an upload's cost (profiled: ~80% of decode-to-probabilities with
the cascade alone); ``benchmarks/bench_detection.py`` measures both detectors.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .imaging import shrink_to_max_side

CASCADE_FILE = "haarcascade_frontalface_alt2.xml"

#: The detectors tried in turn until one finds a face (benchmarks switch them).
DETECTORS: tuple[str, ...] = ("blazeface", "haar")

#: The detector searches twice at most. First a coarse copy whose long side is at most
#: this: in a portrait or selfie the face is large, and a 200-px copy finds it for about
#: 40% of the cost of a 320-px one (fewer pixels at every searched scale).
COARSE_MAX_SIDE = 200

#: Only when the coarse search finds nothing, a finer copy this long is searched, for the
#: smaller faces only (the sizes the coarse pass already covered are skipped). Together
#: they find faces down to ~1/16 of the photo's long side.
DETECT_MAX_SIDE = 400

#: The copy searched for faces too small for BlazeFace beside the ones it found (group
#: photos): finer than the lone-face search, down to ~1/40 of the photo's long side.
SMALL_FACES_MAX_SIDE = 1024
#: ... and no finer than to find faces of this many pixels: BlazeFace confirms small
#: faces from about 40 px (smaller ones it cannot tell from cloth), and the cascade finds
#: a face reliably a third above its 24-px window, so a copy where a 32-px face is that
#: window is enough: a 640x480 photo is searched at 480 px, about half the cost of its
#: full size.
SMALLEST_CONFIRMED_FACE = 32

#: Images whose long side is at most this are taken to be face crops already (FER2013
#: images are 48x48): too small for the detector's 24-px window to be meaningful.
TIGHT_CROP_MAX_SIDE = 96

#: Margin added around the detector's box on each side, as a fraction of its size:
#: Haar boxes cut at the eyebrows and chin, FER2013 faces include a little more.
#: BlazeFace's boxes are ~13% smaller and sit a little lower, yet fer7 reads crops from
#: either as well as FER2013's own (accuracy 0.596 / 0.601 / 0.598 on 391 PublicTest
#: faces pasted on scenes, found by both): one margin serves both detectors.
CROP_MARGIN = 0.1

#: Smallest face searched for, in detection-copy pixels: the cascade's own window.
_MIN_FACE = 24
#: Step between searched scales. With the "alt2" cascade (tree-shaped stages: fewer
#: features per window than "default" and more faces found on generated FER2013 scenes,
#: see benchmarks/bench_vs_fer.py) 1.2 finds frontal faces at about half the cost of 1.1.
_SCALE_FACTOR = 1.2
#: Overlapping hits needed to keep a face; 3 (not OpenCV's usual 5) because coarse scale
#: steps give fewer hits per real face; no false faces on the generated test scenes.
_MIN_NEIGHBORS = 3

# One classifier per thread: CascadeClassifier keeps per-call scratch state, and uploads
# of different sessions are analysed in parallel worker threads.
_local = threading.local()
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceBox:
    """A face rectangle in the coordinates of the image it was found in."""

    x: int
    y: int
    w: int
    h: int
    #: Which detector found it ("blazeface" or "haar"): the Predict card says so.
    detector: str = "haar"

    @property
    def area(self) -> int:
        return self.w * self.h


_xml_lock = threading.Lock()
_xml_path: str | None = None


def _get_cascade() -> cv2.CascadeClassifier:
    # Loaded once per thread (parsing the XML costs ~30 ms; threads are pooled).
    cascade = getattr(_local, "cascade", None)
    if cascade is None:
        global _xml_path
        with _xml_lock:
            if _xml_path is None:
                _xml_path = str(Path(cv2.data.haarcascades) / CASCADE_FILE)
        cascade = cv2.CascadeClassifier(_xml_path)
        if cascade.empty():
            raise RuntimeError(f"OpenCV's face cascade could not be loaded from {_xml_path}")
        _local.cascade = cascade
    return cascade


def _search(
    grey: np.ndarray, max_side: int, max_face: int | None = None
) -> tuple[list[tuple[int, int, int, int]], float]:
    """Raw boxes in a copy of ``grey`` at most ``max_side`` long, and that copy's scale."""
    small, scale = shrink_to_max_side(grey, max_side)
    if min(small.shape[:2]) < _MIN_FACE:
        return [], scale
    # Equalising evens out exposure, which the cascade's fixed thresholds are sensitive to.
    small = cv2.equalizeHist(small)
    limit = (max_face, max_face) if max_face else (0, 0)  # (0, 0): no upper limit
    found = _get_cascade().detectMultiScale(
        small,
        scaleFactor=_SCALE_FACTOR,
        minNeighbors=_MIN_NEIGHBORS,
        minSize=(_MIN_FACE, _MIN_FACE),
        maxSize=limit,
    )
    return [tuple(int(v) for v in box) for box in (found if len(found) else [])], scale


#: BlazeFace (whole photo or square windows of its short side) sees faces down to about
#: this share of the photo's short side; the cascade is asked only for faces smaller than
#: that beside the ones BlazeFace found (with a little overlap between the two ranges).
BLAZEFACE_SMALLEST_SHARE = 1 / 6

#: A cascade face overlapping a BlazeFace one this much (intersection over the smaller
#: box) is the same face seen twice.
SAME_FACE_OVERLAP = 0.3


def detect_faces(
    grey: np.ndarray, max_side: int = DETECT_MAX_SIDE, every_face: bool = True
) -> list[FaceBox]:
    """The faces in a greyscale uint8 image, largest first, in ``grey``'s coordinates.

    BlazeFace finds the faces of about 1/6 of the short side and up, turned or tilted
    ones too; with ``every_face`` the cascade then adds the smaller ones beside them (a
    group photo, a crowd), searching only below BlazeFace's range, each confirmed by
    BlazeFace on its enlarged neighbourhood. That search costs ~10-15 ms a 640x480 photo, so a
    caller that wants only the largest face skips it. When BlazeFace finds nothing (or
    is not available), the cascade's coarse search, then its finer one, decides alone.
    """
    grey = np.asarray(grey, dtype=np.uint8)
    found = _blazeface_faces(grey) if "blazeface" in DETECTORS else []
    if "haar" in DETECTORS:
        if not found:
            found = _haar_faces(grey, max_side)
        elif every_face:
            smallest = int(min(grey.shape[:2]) * BLAZEFACE_SMALLEST_SHARE * 1.25)
            found += [
                box
                for box in _haar_small_faces(grey, _small_faces_side(grey), smallest)
                if not any(_overlap(box, other) > SAME_FACE_OVERLAP for other in found)
                and _confirmed_by_blazeface(grey, box)
            ]
    return sorted(found, key=lambda b: b.area, reverse=True)


#: Side of the neighbourhood BlazeFace looks at to confirm a small cascade face, in box
#: sides: the face then fills about 2/5 of BlazeFace's input, well inside its range.
CONFIRM_CONTEXT = 2.5


def _confirmed_by_blazeface(grey: np.ndarray, box: FaceBox) -> bool:
    """Whether BlazeFace, shown the face's neighbourhood enlarged, also sees a face there.

    The cascade's small-face search also fires on badges and patterned cloth beside real
    faces (the astronaut's mission patch); BlazeFace rejects those and confirms real
    faces of 40 px and up with scores above 0.9.
    """
    from . import blazeface

    side = int(max(box.w, box.h) * CONFIRM_CONTEXT)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    region = np.ascontiguousarray(grey[y0 : y0 + side, x0 : x0 + side])
    try:
        seen = blazeface.find_faces(region)
    except Exception:  # BlazeFace ran on the whole photo a moment ago; keep the face
        return True
    return any(
        b.x0 + x0 <= cx <= b.x1 + x0 and b.y0 + y0 <= cy <= b.y1 + y0 for b in seen
    )


def _small_faces_side(grey: np.ndarray) -> int:
    """Long side of the copy the small-face search looks at (see SMALLEST_CONFIRMED_FACE)."""
    long_side = max(grey.shape[:2])
    return min(SMALL_FACES_MAX_SIDE, round(long_side * _MIN_FACE / SMALLEST_CONFIRMED_FACE))


def _overlap(a: FaceBox, b: FaceBox) -> float:
    """Intersection over the smaller box's area."""
    w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    h = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    if w <= 0 or h <= 0:
        return 0.0
    return (w * h) / max(1, min(a.area, b.area))


_blazeface_failed: str | None = None


def _blazeface_faces(grey: np.ndarray) -> list[FaceBox]:
    global _blazeface_failed
    if _blazeface_failed is not None or min(grey.shape[:2]) < _MIN_FACE:
        return []
    from . import blazeface

    try:
        found = blazeface.find_faces(grey)
    except blazeface.DetectorUnavailable as exc:
        # Once per process: the cascade does the work from now on.
        _blazeface_failed = str(exc)
        logger.warning("BlazeFace face detector unavailable, using the Haar cascade: %s", exc)
        return []
    except Exception:
        # A failure on this one image must not cost the upload: the cascade still looks.
        logger.exception("BlazeFace failed on an image; the Haar cascade searches it instead")
        return []
    height, width = grey.shape[:2]
    boxes = []
    for b in found:
        # Clipped to the image, as the cascade's are (a face at the border overhangs it).
        x0, y0 = max(0, int(round(b.x0))), max(0, int(round(b.y0)))
        x1, y1 = min(width, int(round(b.x1))), min(height, int(round(b.y1)))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            boxes.append(FaceBox(x=x0, y=y0, w=x1 - x0, h=y1 - y0, detector="blazeface"))
    return boxes


def _haar_faces(grey: np.ndarray, max_side: int) -> list[FaceBox]:
    coarse = min(COARSE_MAX_SIDE, max_side)
    found, scale = _search(grey, coarse)
    if not found and max_side > coarse:
        long_side = max(grey.shape[:2])
        if long_side > coarse:
            # Faces the coarse pass could see were >= _MIN_FACE there; in the finer copy
            # they are this big: search only below it (with a little overlap).
            fine_scale = min(1.0, max_side / long_side)
            max_face = int(_MIN_FACE * fine_scale / (coarse / long_side) * 1.25)
            found, scale = _search(grey, max_side, max_face)
    return _to_image_boxes(found, scale)


def _haar_small_faces(grey: np.ndarray, max_side: int, largest: int) -> list[FaceBox]:
    """The cascade's faces up to ``largest`` pixels of ``grey``, from the finer copy."""
    fine_scale = min(1.0, max_side / max(grey.shape[:2]))
    max_face = int(largest * fine_scale)
    if max_face < _MIN_FACE:
        return []
    found, scale = _search(grey, max_side, max_face)
    return _to_image_boxes(found, scale)


def _to_image_boxes(found: list[tuple[int, int, int, int]], scale: float) -> list[FaceBox]:
    return [
        FaceBox(
            x=int(round(x / scale)),
            y=int(round(y / scale)),
            w=int(round(w / scale)),
            h=int(round(h / scale)),
        )
        for (x, y, w, h) in found
    ]


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
