"""Grad-CAM (ferdash.saliency): shape, range, every registered architecture, where it
looks, and on real faces with the shipped fer7: a map for every face, on the face, for the
class the card names."""

from __future__ import annotations


import numpy as np
import pytest

from ferdash.saliency import (
    GradCam,
    SaliencyError,
    explained_layer,
    gradcam_for,
    last_conv_layer,
    overlay,
    run_saliency,
)

SIZE = 32
PATTERN = 9


def _pattern_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Class 0: a filled square, class 1: an X, drawn at a random place on a noisy flat
    background; returns images (uint8), labels and each pattern's top-left corner."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, SIZE, SIZE), np.uint8)
    labels = np.arange(n) % 2
    corners = []
    for i in range(n):
        img = rng.uniform(20, 60) + rng.normal(0, 10, (SIZE, SIZE))
        y0, x0 = (int(v) for v in rng.integers(0, SIZE - PATTERN, 2))
        fg = rng.uniform(180, 255)
        if labels[i] == 0:
            img[y0 : y0 + PATTERN, x0 : x0 + PATTERN] = fg
        else:
            for k in range(PATTERN):
                img[y0 + k, x0 + k] = img[y0 + k, x0 + PATTERN - 1 - k] = fg
                if k + 1 < PATTERN:
                    img[y0 + k + 1, x0 + k] = img[y0 + k, x0 + PATTERN - 2 - k] = fg
        images[i] = np.clip(img, 0, 255)
        corners.append((y0, x0))
    return images, labels, corners


def _small_net(augment: bool = True):
    """The layout of the registry's nets in small: augmentation, rescaling, conv-BN-ReLU, GAP."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.RandomFlip("horizontal")(inputs) if augment else inputs
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu", name="last_relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.slow
def test_a_trained_model_looks_at_the_pattern_not_the_background() -> None:
    import keras

    model = _small_net()
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    images, labels, _ = _pattern_images(400, seed=0)
    model.fit(images[..., None].astype("float32"), keras.utils.to_categorical(labels, 2),
              epochs=15, batch_size=32, verbose=0)
    test_images, test_labels, corners = _pattern_images(40, seed=1)
    probs = model.predict(test_images[..., None].astype("float32"), verbose=0)
    assert (probs.argmax(axis=1) == test_labels).mean() >= 0.9  # it learned the task

    cam = GradCam(model)
    assert cam.layer.name == "last_relu"
    maps = cam(test_images)
    assert maps.shape == test_images.shape and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1

    inside_means, outside_means = [], []
    for heat, (y0, x0) in zip(maps, corners):
        inside = np.zeros(heat.shape, bool)
        inside[y0 : y0 + PATTERN, x0 : x0 + PATTERN] = True
        inside_means.append(heat[inside].mean())
        outside_means.append(heat[~inside].mean())
    inside_means, outside_means = np.array(inside_means), np.array(outside_means)
    # Per area, the pattern's 9x9 box holds more of the map than the background, in
    # (nearly) every image and by a wide margin overall.
    assert (inside_means > outside_means).mean() >= 0.9
    assert inside_means.mean() > 3 * outside_means.mean()


#: The grid each architecture is explained on, for a 48x48 face: the last block at twice
#: the last convolution's resolution, or the last convolution when none is.
EXPLAINED_GRID = {"fernet": 12, "vgg_fer": 12, "singh_nasoz": 17, "jaramillo": 40, "r_parity": 44}


@pytest.mark.parametrize("arch", sorted(EXPLAINED_GRID))
def test_every_registered_architecture_gets_a_map_of_the_face_size(arch: str, tmp_path) -> None:
    from ferdash.runs.predictor import load_keras_model
    from training.architectures import build_model

    # Saved and loaded like a run's model.keras (safe mode), augmentation layers included.
    build_model(arch, (48, 48), 3, augment=True, seed=0).save(tmp_path / "model.keras")
    model = load_keras_model(tmp_path / "model.keras")
    faces = np.random.default_rng(0).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    maps = GradCam(model)(faces, class_indices=[0, 2])
    assert maps.shape == (2, 48, 48) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert type(last_conv_layer(model)).__name__ in {
        "Conv2D", "Activation", "BatchNormalization", "LeakyReLU"
    }
    assert explained_layer(model).output.shape[1] == EXPLAINED_GRID[arch]


def test_no_positive_evidence_gives_zeros_not_nan() -> None:
    import keras

    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(4, 3, kernel_initializer="zeros", bias_initializer="zeros")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    maps = GradCam(model)(np.full((1, SIZE, SIZE), 128, np.uint8))
    assert maps.shape == (1, SIZE, SIZE)
    assert np.isfinite(maps).all() and not maps.any()


def test_a_model_without_convolution_is_refused() -> None:
    import keras

    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    with pytest.raises(SaliencyError, match="no 2-D convolution"):
        GradCam(keras.Model(inputs, outputs))


def test_the_sub_model_is_built_once_per_loaded_model() -> None:
    model = _small_net(augment=False)
    first = gradcam_for(model)
    assert gradcam_for(model) is first


def test_overlay_is_rgb_of_the_crop_and_keeps_cold_pixels() -> None:
    crop = np.tile(np.arange(48, dtype=np.uint8)[None, :] * 5, (48, 1))
    heat = np.zeros((48, 48), np.float32)
    heat[10:20, 10:20] = 1.0
    rgb = overlay(crop, heat)
    assert rgb.shape == (48, 48, 3) and rgb.dtype == np.uint8
    assert (rgb[30:, 30:] == crop[30:, 30:, None]).all()  # no evidence: the face's own grey
    assert not (rgb[12, 12] == crop[12, 12]).all()  # evidence: coloured
    assert overlay(crop, np.zeros((6, 6), np.float32)).shape == (48, 48, 3)  # map resized


def test_a_card_whose_map_has_no_positive_evidence_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferdash import prediction, saliency
    from ferdash.faces import FaceBox
    from ferdash.inference import FaceCrop, ImageResult, Prepared

    def photo(*probs: list[float]) -> ImageResult:
        crop = np.full((SIZE, SIZE), 100, np.uint8)
        prepared = Prepared(
            preview=crop, preview_scale=1.0, original_size=(SIZE, SIZE), format="PNG",
            multi_frame=False, faces_found=len(probs), tight_crop=False,
            faces=tuple(FaceCrop(box=FaceBox(0, 0, 4, 4), crop=crop) for _ in probs),
        )
        return ImageResult(name="face.png", face_probs=tuple(np.array(p) for p in probs),
                           classes=("happy", "sad"), prepared=prepared)

    # A two-face photo, an unreadable file, a one-face photo: one Grad-CAM batch of three.
    results = [photo([0.9, 0.1], [0.6, 0.4]), ImageResult(name="bad.png", error="unreadable"),
               photo([0.2, 0.8])]
    maps = np.zeros((3, SIZE, SIZE), np.float32)
    maps[0, 4:8, 4:8] = 1.0  # evidence for the first face
    maps[1, 0:2, 0:2] = 0.5  # and the second; none for the last
    monkeypatch.setattr(saliency, "run_saliency", lambda model, crops, chosen: maps)
    cards = prediction.saliency_overlays(results, model=None)
    assert [len(c) for c in cards] == [2, 0, 1]
    assert all(uri.startswith("data:image/png;base64,") and note is None for uri, note in cards[0])
    (uri, note), = cards[2]
    assert uri is None and "no region arguing for “sad”" in note


# -- the shipped fer7 on scikit-image's LFW faces -----------------------------------------


@pytest.fixture(scope="module")
def fer7():
    from ferdash.config import DEFAULT_MODELS_DIR
    from ferdash.runs.model_store import get_loaded_run
    from ferdash.runs.rundir import read_run_info

    return get_loaded_run(read_run_info(DEFAULT_MODELS_DIR / "fer7"))


@pytest.fixture(scope="module")
def lfw_faces() -> np.ndarray:
    """The 100 faces of scikit-image's LFW sample (its other 100 images are backgrounds),
    resized from 25x25 to fer7's 48x48 as a face crop is."""
    import cv2
    from skimage.data import lfw_subset

    faces = [cv2.resize(f.astype(np.float32) * 255, (48, 48), interpolation=cv2.INTER_LINEAR)
             for f in lfw_subset()[:100]]
    return np.clip(np.round(np.stack(faces)), 0, 255).astype(np.uint8)


def _named(loaded, crops: np.ndarray) -> np.ndarray:
    """The class each card would name: the top of the run's probabilities (TTA included)."""
    return loaded.predict(crops[..., None].astype(np.float32)).argmax(axis=1).astype(np.int32)


def _pasted(crops: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each face at half size at a random place on a flat canvas of its mean grey, and
    where it is."""
    import cv2

    rng = np.random.default_rng(seed)
    canvases = np.empty_like(crops)
    where = np.zeros(crops.shape, bool)
    for i, crop in enumerate(crops):
        canvases[i] = int(round(crop.mean()))
        y0, x0 = (int(v) for v in rng.integers(0, 25, 2))
        small = cv2.resize(crop, (24, 24), interpolation=cv2.INTER_AREA)
        canvases[i, y0 : y0 + 24, x0 : x0 + 24] = small
        where[i, y0 : y0 + 24, x0 : x0 + 24] = True
    return canvases, where


def test_every_lfw_face_gets_a_map(fer7, lfw_faces: np.ndarray) -> None:
    # The Grad-CAM shipped before (the last block's channels weighted by their mean
    # gradient) left 14 of these 100 faces without a map.
    maps = run_saliency(fer7, lfw_faces, _named(fer7, lfw_faces))
    assert maps.shape == lfw_faces.shape and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0
    assert (maps.max(axis=(1, 2)) > 0).all()
    assert np.allclose(maps.max(axis=(1, 2)), 1.0)  # each scaled to a peak of 1
    # A map, not a wash: under a tenth of the face as hot as the peak's half, on average.
    assert (maps >= 0.5).mean() < 0.1


def test_the_peak_lies_on_a_face_pasted_on_a_flat_background(fer7, lfw_faces: np.ndarray) -> None:
    pasted, where = _pasted(lfw_faces)
    maps = run_saliency(fer7, pasted, _named(fer7, pasted))
    peaks = [np.unravel_index(int(m.argmax()), m.shape) for m in maps]
    on_face = np.mean([m.max() > 0 and w[p] for m, w, p in zip(maps, where, peaks)])
    assert on_face >= 0.6  # the face is a quarter of the canvas (84% measured)


def test_the_map_is_what_the_named_class_rests_on(fer7, lfw_faces: np.ndarray) -> None:
    """Blurring the map's hottest fifth costs the named class more probability than
    blurring a random fifth, or the hottest fifth of the runner-up class's map."""
    import cv2

    probs = fer7.predict(lfw_faces[..., None].astype(np.float32))
    named = probs.argmax(axis=1).astype(np.int32)
    runner_up = np.argsort(probs, axis=1)[:, -2].astype(np.int32)
    blurred = np.stack([cv2.GaussianBlur(c, (0, 0), 4) for c in lfw_faces])
    rng = np.random.default_rng(0)
    noise = np.stack([cv2.GaussianBlur(rng.random((48, 48)).astype(np.float32), (0, 0), 4)
                      for _ in lfw_faces])

    def loss(maps: np.ndarray) -> float:
        flat = maps.reshape(len(maps), -1) + rng.random((len(maps), 48 * 48)) * 1e-6  # ties
        hot = (flat >= np.quantile(flat, 0.8, axis=1, keepdims=True)).reshape(maps.shape)
        edited = np.where(hot, blurred, lfw_faces)
        after = fer7.predict(edited[..., None].astype(np.float32))
        rows = np.arange(len(named))
        return float((probs[rows, named] - after[rows, named]).mean())

    own = loss(run_saliency(fer7, lfw_faces, named))
    other = loss(run_saliency(fer7, lfw_faces, runner_up))
    random = loss(noise)
    # Measured: 37, 15 and 16 points (the Grad-CAM shipped before: 26, 7 and 16).
    assert own > 2 * random and own > 2 * other


def test_maps_of_a_batch_equal_maps_one_by_one(fer7, lfw_faces: np.ndarray) -> None:
    faces = lfw_faces[:6]
    named = _named(fer7, faces)
    together = run_saliency(fer7, faces, named)
    alone = np.concatenate(
        [run_saliency(fer7, faces[i : i + 1], named[i : i + 1]) for i in range(6)]
    )
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_a_run_with_flip_tta_gets_a_mirror_symmetric_map(fer7, lfw_faces: np.ndarray) -> None:
    # fer7 answers with the mean of the face and its mirror image: so does its map, and
    # the map of a mirrored face is the mirrored map.
    assert fer7.tta == "hflip"
    faces = lfw_faces[:4]
    named = _named(fer7, faces)
    maps = run_saliency(fer7, faces, named)
    mirrored = run_saliency(fer7, faces[:, :, ::-1], named)
    np.testing.assert_allclose(mirrored, maps[:, :, ::-1], atol=1e-4)
    np.testing.assert_allclose(gradcam_for(fer7.model)(faces, named, mirror=True), maps)
    assert not np.allclose(gradcam_for(fer7.model)(faces, named), maps, atol=1e-3)


def test_fernet_is_explained_on_its_12x12_block(fer7) -> None:
    layer = explained_layer(fer7.model)
    assert tuple(layer.output.shape[1:3]) == (12, 12)
    assert type(layer).__name__ == "Activation"


def test_a_constant_image_has_no_map(fer7) -> None:
    # Nothing in it differs from a blank: the card's "no region arguing for" note.
    flat = np.stack([np.full((48, 48), v, np.uint8) for v in (0, 97, 255)])
    assert not run_saliency(fer7, flat, [3, 3, 4]).any()


def test_a_certain_answer_still_gets_a_map() -> None:
    # Logits 10,000 times larger: a softmax of exactly 1.0 in float32, whose gradient is
    # zero (the probability's Grad-CAM was empty); the log-odds keep theirs.
    model = _small_net(augment=False)
    dense = model.layers[-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 1e4, bias])
    faces = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE), dtype=np.uint8)
    probs = model(faces[..., None].astype("float32"), training=False).numpy()
    assert (probs.max(axis=1) == 1.0).all()
    maps = GradCam(model)(faces, probs.argmax(axis=1))
    assert (maps.max(axis=(1, 2)) > 0).all()
