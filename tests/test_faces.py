"""Face detection on a real photo (scikit-image's astronaut) and generated images, and cropping."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from ferdash import faces
from ferdash.faces import FaceBox

# Where Eileen Collins's face is in the 512x512 astronaut image (checked by eye).
ASTRONAUT_FACE_CENTRE = (220, 115)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.asarray(Image.fromarray(data.astronaut()).convert("L"))


def centre(box: FaceBox) -> tuple[float, float]:
    return box.x + box.w / 2, box.y + box.h / 2


def near(point: tuple[float, float], target: tuple[float, float], tolerance: float) -> bool:
    return abs(point[0] - target[0]) <= tolerance and abs(point[1] - target[1]) <= tolerance


def test_finds_the_astronaut_face(astronaut: np.ndarray) -> None:
    found = faces.detect_faces(astronaut)
    assert found, "no face found in the astronaut photo"
    assert near(centre(found[0]), ASTRONAUT_FACE_CENTRE, 30)
    assert 70 <= found[0].w <= 150
    assert [b.area for b in found] == sorted((b.area for b in found), reverse=True)


def test_boxes_are_in_original_coordinates(astronaut: np.ndarray) -> None:
    # The same photo at twice the size, padded into a wider frame.
    big = np.asarray(Image.fromarray(astronaut).resize((1024, 1024)))
    canvas = np.full((1024, 1400), 128, dtype=np.uint8)
    canvas[:, 200:1224] = big
    found = faces.detect_faces(canvas)
    assert found
    cx, cy = ASTRONAUT_FACE_CENTRE
    assert near(centre(found[0]), (200 + 2 * cx, 2 * cy), 60)


def test_640x480_photo(astronaut: np.ndarray) -> None:
    canvas = np.full((480, 640), 100, dtype=np.uint8)
    canvas[:, 80:560] = np.asarray(Image.fromarray(astronaut).resize((480, 480)))
    found = faces.detect_faces(canvas)
    assert found
    scale = 480 / 512
    assert near(centre(found[0]), (80 + ASTRONAUT_FACE_CENTRE[0] * scale, ASTRONAUT_FACE_CENTRE[1] * scale), 30)


@pytest.mark.parametrize(
    "image",
    [
        np.full((480, 640), 128, dtype=np.uint8),
        np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (480, 1)),
        np.zeros((10, 10), dtype=np.uint8),
        np.zeros((1, 2000), dtype=np.uint8),
    ],
    ids=["flat", "gradient", "tiny", "sliver"],
)
def test_no_face_in_generated_images(image: np.ndarray) -> None:
    assert faces.detect_faces(image) == []


def test_cascade_is_loaded_once() -> None:
    assert faces._get_cascade() is faces._get_cascade()


def test_tight_crop_rule() -> None:
    assert faces.is_tight_crop(np.zeros((48, 48), np.uint8))
    assert faces.is_tight_crop(np.zeros((96, 60), np.uint8))
    assert not faces.is_tight_crop(np.zeros((480, 640), np.uint8))


def test_crop_face_is_square_with_margin_and_resized() -> None:
    grey = np.zeros((200, 300), np.uint8)
    grey[50:150, 100:200] = 255  # the "face"
    crop = faces.crop_face(grey, FaceBox(100, 50, 100, 100), (48, 48), margin=0.1)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    # 10% margin each side: the bright square fills the middle 100/120 of the crop.
    assert crop[24, 24] == 255 and crop[1, 1] == 0 and crop[46, 46] == 0


def test_crop_at_the_border_is_padded_not_shifted() -> None:
    grey = np.full((100, 100), 50, np.uint8)
    crop = faces.crop_face(grey, FaceBox(-10, 80, 40, 40), (32, 40))
    assert crop.shape == (32, 40)


@pytest.mark.parametrize("shape", [(1, 1), (1, 500), (500, 1), (480, 640)])
def test_whole_image_input_any_aspect(shape: tuple[int, int]) -> None:
    out = faces.whole_image_input(np.full(shape, 77, np.uint8), (48, 48))
    assert out.shape == (48, 48)
    assert (out == 77).all()


def _group(astronaut: np.ndarray) -> np.ndarray:
    """The astronaut large (face ~84 px) and, mirrored, small (~48 px) on one canvas."""
    photo = Image.fromarray(astronaut)
    canvas = Image.new("L", (1000, 600), 120)
    canvas.paste(photo.resize((440, 440)), (0, 160))
    canvas.paste(photo.transpose(Image.FLIP_LEFT_RIGHT).resize((260, 260)), (460, 340))
    return np.asarray(canvas)


def test_every_face_of_a_group_photo_faces_of_different_sizes(astronaut: np.ndarray) -> None:
    found = faces.detect_faces(_group(astronaut))
    # Both faces, largest first: the small one beside a large one is the cascade's, and
    # the badge on the large astronaut's suit it also fires on is rejected by BlazeFace.
    assert [b.detector for b in found] == ["blazeface", "haar"]
    big, small = found
    assert near(centre(big), (440 / 512 * 220, 160 + 440 / 512 * 115), 20)
    assert near(centre(small), (460 + 260 - 260 / 512 * 220, 340 + 260 / 512 * 115), 15)
    assert 30 <= small.w <= 70 < big.w


def test_largest_face_only_skips_the_small_face_search(astronaut: np.ndarray) -> None:
    found = faces.detect_faces(_group(astronaut), every_face=False)
    assert [b.detector for b in found] == ["blazeface"]
