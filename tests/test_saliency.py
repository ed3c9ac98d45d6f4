"""Grad-CAM (ferdash.saliency): shape, range, every registered architecture, and where it looks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from ferdash.saliency import GradCam, SaliencyError, gradcam_for, last_conv_layer, overlay

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


@pytest.mark.parametrize("arch", ["fernet", "vgg_fer", "singh_nasoz", "jaramillo", "r_parity"])
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