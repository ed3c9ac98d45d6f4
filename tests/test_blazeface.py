"""The BlazeFace detector: what it finds, where it puts the box, and the cascade fallback."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from skimage import data

from ferdash import blazeface, faces, imaging


def _iou(a: faces.FaceBox, b: faces.FaceBox) -> float:
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    return inter / (a.area + b.area - inter)


def _grey(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image).convert("L")


@pytest.fixture()
def astronaut() -> Image.Image:
    return _grey(data.astronaut())


@pytest.fixture()
def fresh_detector_state():
    """Forget the per-thread interpreter and any earlier 'unavailable' verdict, before and after."""

    def reset() -> None:
        faces._blazeface_failed = None
        blazeface._local = threading.local()

    reset()
    yield
    reset()


def test_anchors_follow_mediapipe_layout() -> None:
    anchors = blazeface._ANCHORS
    assert anchors.shape == (896, 2)
    # Stride 8: 16x16 cells, two anchors each, centred in their cell.
    np.testing.assert_allclose(anchors[0], anchors[1])
    np.testing.assert_allclose(anchors[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(anchors[511], [15.5 / 16, 15.5 / 16])
    # Stride 16: 8x8 cells, six anchors each.
    np.testing.assert_allclose(anchors[512:518], [[0.5 / 8, 0.5 / 8]] * 6)
    np.testing.assert_allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_finds_the_astronaut_where_the_cascade_does(astronaut: Image.Image) -> None:
    grey = np.asarray(astronaut)
    frame, side, left, top = blazeface.square_frame(grey)
    assert frame.shape == (128, 128) and (side, left, top) == (512, 0, 0)
    detections = blazeface.detect(frame)
    assert len(detections) == 1 and detections[0].score >= blazeface.MIN_SCORE
    (box,) = faces._blazeface_faces(grey)
    (haar,) = faces._haar_faces(grey, faces.DETECT_MAX_SIDE)
    assert _iou(box, haar) > 0.6
    assert faces.detect_faces(grey) == [box]  # the fast detector decided, not the cascade
    assert box.detector == "blazeface" and haar.detector == "haar"


@pytest.mark.parametrize("angle", [25, 35, 45])
def test_finds_tilted_faces_the_cascade_misses(astronaut: Image.Image, angle: int) -> None:
    tilted = np.asarray(astronaut.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=128))
    assert faces._haar_faces(tilted, faces.DETECT_MAX_SIDE) == []
    (box,) = faces.detect_faces(tilted)
    # The face turned about the image centre (256, 256): its box centre moved left and down.
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    assert 120 < cx < 230 and 120 < cy < 260 and 70 < box.w < 130


@pytest.mark.parametrize(
    "canvas, at",
    [((700, 300), (400, 20)), ((300, 700), (20, 400)), ((700, 300), (20, 20))],
    ids=["wide-right", "tall-bottom", "wide-left"],
)
def test_boxes_come_back_in_the_uploaded_image_coordinates(
    astronaut: Image.Image, canvas: tuple[int, int], at: tuple[int, int]
) -> None:
    head = astronaut.crop((100, 0, 360, 260))
    image = Image.new("L", canvas, 90)
    image.paste(head, at)
    grey = np.asarray(image)
    (box,) = faces._blazeface_faces(grey)
    (haar,) = faces._haar_faces(grey, faces.DETECT_MAX_SIDE)
    assert _iou(box, haar) > 0.5
    assert 0 <= box.x and box.x + box.w <= canvas[0] and 0 <= box.y and box.y + box.h <= canvas[1]


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket"])
def test_no_face_in_photos_without_one(name: str) -> None:
    grey = np.asarray(_grey(getattr(data, name)()))
    assert faces._blazeface_faces(grey) == []
    assert faces.detect_faces(grey) == []


def test_small_faces_in_a_square_photo_are_left_to_the_cascade() -> None:
    # Five faces of ~80 px on a 660x660 canvas: ~15 px in BlazeFace's 128-px frame, too
    # small for it, and a square photo has no windows to look in again.
    from hostile_corpus import astronaut_face

    canvas = Image.new("L", (660, 660), 120)
    face = astronaut_face(210).convert("L")
    for i in range(5):
        canvas.paste(face, (10 + (i % 3) * 215, 110 + (i // 3) * 215))
    grey = np.asarray(canvas)
    assert blazeface.windows(*grey.shape) == []
    assert faces._blazeface_faces(grey) == []
    found = faces.detect_faces(grey)
    assert len(found) == 5 and {b.detector for b in found} == {"haar"}


def test_windows_cover_the_long_side_with_half_overlap() -> None:
    assert blazeface.windows(512, 512) == []
    assert blazeface.windows(480, 560) == []  # closer to square than MIN_WINDOW_ASPECT
    wide = blazeface.windows(128, 228)
    assert wide == [(0, 0, 128), (64, 0, 128), (100, 0, 128)]
    tall = blazeface.windows(400, 128)
    assert [y for _, y, _ in tall] == [0, 64, 128, 192, 256, 272]
    assert all(x == 0 and side == 128 for x, _, side in tall)
    # A strip would need many windows: none (the cascade searches it alone).
    assert len(blazeface.windows(128, 768)) == blazeface.MAX_WINDOWS  # 6:1
    assert blazeface.windows(128, 800) == [] and blazeface.windows(2048, 30) == []
    for height, width in ((128, 228), (128, 760), (400, 128), (128, 154), (97, 300)):
        spans = [
            (x, x + side) if width >= height else (y, y + side)
            for x, y, side in blazeface.windows(height, width)
        ]
        side = min(height, width)
        assert spans[0][0] == 0 and spans[-1][1] == max(height, width)
        # Each next window starts at most half a side on: a face up to half a window wide
        # lies wholly inside one of them.
        assert all(b[0] - a[0] <= side // 2 for a, b in zip(spans, spans[1:]))


def _whole_frame_finds_nothing(grey: np.ndarray) -> None:
    """Precondition of the window tests: without windows, BlazeFace sees no face here."""
    real = blazeface.windows
    blazeface.windows = lambda height, width: []
    try:
        assert blazeface.find_faces(grey) == []
    finally:
        blazeface.windows = real


def _fake_detect(monkeypatch, answers: list[list[blazeface.Detection]]) -> list[np.ndarray]:
    """Make ``detect`` return ``answers`` in turn; returns the frames it was given."""
    frames: list[np.ndarray] = []

    def detect(frame: np.ndarray, min_score: float = blazeface.MIN_SCORE) -> list:
        frames.append(frame)
        return answers[len(frames) - 1] if len(frames) <= len(answers) else []

    monkeypatch.setattr(blazeface, "detect", detect)
    return frames


def test_whole_frame_boxes_map_back_exactly_on_both_axes(monkeypatch) -> None:
    # 3000x2000 shrinks to 128x85: x scale 128/3000, y scale 85/2000, not the same. The
    # image (85 rows) sits 21 rows down in the 128x128 frame.
    frames = _fake_detect(
        monkeypatch, [[blazeface.Detection(xmin=0.25, ymin=(21 + 42.5) / 128, width=0.125, height=0.125, score=0.9)]]
    )
    (box,) = blazeface.find_faces(np.zeros((2000, 3000), np.uint8))
    assert frames[0].shape == (128, 128)
    assert box.x0 == pytest.approx(32 * 3000 / 128)
    assert box.y0 == pytest.approx(42.5 * 2000 / 85)  # 1000: the middle row, exactly
    assert box.x1 - box.x0 == pytest.approx(16 * 3000 / 128)
    assert box.y1 - box.y0 == pytest.approx(16 * 2000 / 85)


def test_window_boxes_map_back_exactly_on_both_axes(monkeypatch) -> None:
    # 2000x1000 (portrait) shrinks to 128x256 for the windows: scales 128/1000 and 256/2000;
    # windows start at rows 0, 64, 128. A face in the middle of the second window.
    face = blazeface.Detection(xmin=0.5, ymin=0.5, width=0.25, height=0.25, score=0.9)
    frames = _fake_detect(monkeypatch, [[], [], [face]])
    (box,) = blazeface.find_faces(np.zeros((2000, 1000), np.uint8))
    assert [f.shape for f in frames] == [(128, 128)] * 4  # the whole frame, three windows
    assert box.x0 == pytest.approx(64 * 1000 / 128)
    assert box.y0 == pytest.approx((64 + 64) * 2000 / 256)
    assert box.y1 - box.y0 == pytest.approx(32 * 2000 / 256)


def test_windows_find_faces_the_whole_frame_misses_in_a_wide_photo() -> None:
    # Five ~80-px faces on a 660x440 canvas: ~15 px in the letterboxed 128-px frame, but
    # ~23 px in a 440-px window.
    from hostile_corpus import five_faces

    grey = imaging.decode_image(five_faces()).grey
    _whole_frame_finds_nothing(grey)
    found = faces.detect_faces(grey)
    assert len(found) == 5 and {b.detector for b in found} == {"blazeface"}
    # The same faces the cascade finds, each seen once although windows overlap.
    haar = faces._haar_faces(grey, faces.DETECT_MAX_SIDE)
    assert len(haar) == 5
    for box in found:
        assert max(_iou(box, h) for h in haar) > 0.5


def test_a_face_in_a_wide_photo_comes_back_in_its_pixels(astronaut: Image.Image) -> None:
    # The face is ~165 px of a 420-px head-and-shoulders crop: ~11 px in the letterboxed
    # frame of the whole photo (missed), ~20 px in a 1080-px window (found).
    head = astronaut.crop((100, 0, 360, 260)).resize((420, 420))
    image = Image.new("L", (1920, 1080), 90)
    image.paste(head, (1400, 650))
    grey = np.asarray(image)
    _whole_frame_finds_nothing(grey)
    (box,) = faces.detect_faces(grey)
    assert box.detector == "blazeface"
    # Where the face is in the pasted crop (found there on its own), moved to the paste.
    (alone,) = faces.detect_faces(np.asarray(head))
    truth = faces.FaceBox(x=1400 + alone.x, y=650 + alone.y, w=alone.w, h=alone.h)
    assert _iou(box, truth) > 0.6


def test_parallel_threads_get_the_same_boxes(astronaut: Image.Image) -> None:
    images = [
        np.asarray(astronaut.rotate(angle, fillcolor=128)) for angle in (0, 10, 20, 30)
    ] * 4
    expected = [faces.detect_faces(g) for g in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(faces.detect_faces, images)) == expected


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_without_the_model_the_cascade_takes_over(
    astronaut: Image.Image, tmp_path, monkeypatch, caplog, fresh_detector_state, damage: str
) -> None:
    model = tmp_path / "blazeface_short_range.tflite"
    if damage == "corrupt":
        model.write_bytes(blazeface.MODEL_FILE.read_bytes()[:5000])
    monkeypatch.setattr(blazeface, "MODEL_FILE", model)
    grey = np.asarray(astronaut)
    with caplog.at_level("WARNING", logger="ferdash.faces"):
        first = faces.detect_faces(grey)
        second = faces.detect_faces(grey)
    assert first == second == faces._haar_faces(grey, faces.DETECT_MAX_SIDE) != []
    warnings = [r for r in caplog.records if "BlazeFace" in r.getMessage()]
    assert len(warnings) == 1  # said once, not per upload
    assert faces._blazeface_failed


def test_the_model_file_ships_with_its_licence() -> None:
    folder = blazeface.MODEL_FILE.parent
    assert blazeface.MODEL_FILE.stat().st_size == 229_032
    notice = (folder / "NOTICE").read_text()
    import hashlib

    digest = hashlib.sha256(blazeface.MODEL_FILE.read_bytes()).hexdigest()
    assert digest in notice and "Apache License" in notice
    assert "Apache License" in (folder / "LICENSE-APACHE-2.0").read_text()


def test_boxes_without_area_are_dropped_not_averaged_into_nan(monkeypatch) -> None:
    raw_scores = np.full((1, 896, 1), -50.0, dtype=np.float32)
    raw_scores[0, 100, 0] = raw_scores[0, 101, 0] = 5.0
    raw_boxes = np.zeros((1, 896, 16), dtype=np.float32)
    raw_boxes[0, 101, 2:4] = 40.0  # a 40-px box at anchor 101; anchor 100's has no area

    class FakeInterpreter:
        def set_tensor(self, index, value) -> None:
            pass

        def invoke(self) -> None:
            pass

        def get_tensor(self, index):
            return raw_boxes if index == "boxes" else raw_scores

    monkeypatch.setattr(blazeface, "_interpreter", lambda: FakeInterpreter())
    monkeypatch.setattr(blazeface._local, "io", ("input", "boxes", "scores"), raising=False)
    (only,) = blazeface.detect(np.zeros((128, 128), np.uint8))
    assert np.isfinite([only.xmin, only.ymin, only.width, only.height]).all()
    assert only.width == pytest.approx(40 / 128)


def test_a_detector_error_on_one_image_leaves_it_to_the_cascade(
    astronaut: Image.Image, monkeypatch, caplog, fresh_detector_state
) -> None:
    def broken(frame, min_score=blazeface.MIN_SCORE):
        raise RuntimeError("interpreter failed")

    monkeypatch.setattr(blazeface, "detect", broken)
    grey = np.asarray(astronaut)
    with caplog.at_level("ERROR", logger="ferdash.faces"):
        assert faces.detect_faces(grey) == faces._haar_faces(grey, faces.DETECT_MAX_SIDE) != []
    assert "BlazeFace failed" in caplog.text
    assert faces._blazeface_failed is None  # one bad image does not switch it off


def test_a_row_of_five_portraits_is_searched_in_windows() -> None:
    # 960x200 (4.8:1): nine windows, within MAX_WINDOWS; the cascade alone finds none here.
    from hostile_corpus import astronaut_face

    canvas = Image.new("L", (960, 200), 120)
    face = astronaut_face(180).convert("L")
    for i in range(5):
        canvas.paste(face, (10 + i * 190, 10))
    grey = np.asarray(canvas)
    assert len(blazeface.windows(*grey.shape)) == 9
    found = faces.detect_faces(grey)
    assert len(found) == 5 and {b.detector for b in found} == {"blazeface"}
    assert sorted(b.x // 190 for b in found) == [0, 1, 2, 3, 4]  # one per portrait
