"""A narrow network seeded from a wide run (pruning) and taught by it (distillation):
``python -m training train --arch fernet_s --init-from RUN --distill-from RUN``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ferdash.runs.rundir import read_run_info, write_run_info
from trainingdata import CLASSES, assert_runs_refused, make_dataset

SIZE = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), 10, 3, 0, size=SIZE)


def _wide_run_with_dead_channels(path: Path, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A fernet run whose channels beyond fernet_s's widths are dead (BatchNorm scale
    and shift zero: they pass on nothing), the live ones scattered among them; returns
    the run and, per BatchNorm layer, the live channels."""
    import keras

    from training.architectures import build_model

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    wide = build_model("fernet", (SIZE, SIZE), len(CLASSES))
    narrow = build_model("fernet_s", (SIZE, SIZE), len(CLASSES))
    narrow_widths = [
        l.weights[0].shape[0] for l in narrow.layers if isinstance(l, keras.layers.BatchNormalization)
    ]
    live: dict[str, np.ndarray] = {}
    bns = [l for l in wide.layers if isinstance(l, keras.layers.BatchNormalization)]
    for layer, keep in zip(bns, narrow_widths):
        gamma, beta, mean, var = layer.get_weights()
        chosen = np.sort(rng.choice(len(gamma), keep, replace=False))
        alive = np.zeros(len(gamma), bool)
        alive[chosen] = True
        gamma = np.where(alive, rng.uniform(0.5, 2.0, len(gamma)), 0.0).astype(np.float32)
        beta = np.where(alive, rng.normal(0, 0.1, len(gamma)), 0.0).astype(np.float32)
        mean = rng.normal(0, 0.1, len(gamma)).astype(np.float32)
        var = rng.uniform(0.5, 1.5, len(gamma)).astype(np.float32)
        layer.set_weights([gamma, beta, mean, var])
        live[layer.name] = chosen
    path.mkdir(parents=True)
    wide.save(path / "model.keras")
    write_run_info(path, list(CLASSES), (SIZE, SIZE), architecture="fernet")
    return path, live


def test_pruning_keeps_the_channels_that_pass_something_on(tmp_path: Path) -> None:
    import keras

    from ferdash.runs.predictor import load_keras_model
    from training import warm_start
    from training.architectures import build_model

    run, live = _wide_run_with_dead_channels(tmp_path / "wide")
    source = warm_start.check_source(run, "fernet_s", (SIZE, SIZE))
    narrow = build_model("fernet_s", (SIZE, SIZE), len(CLASSES))
    seeded = warm_start.copy_weights(narrow, source, list(CLASSES))
    assert seeded.pruned and seeded.classifier_copied
    assert "pruned to this network's widths" in seeded.describe()

    wide = load_keras_model(run / "model.keras")
    wide_convs = [l for l in wide.layers if isinstance(l, keras.layers.Conv2D)]
    narrow_convs = [l for l in narrow.layers if isinstance(l, keras.layers.Conv2D)]
    first_live = live[[l.name for l in wide.layers if isinstance(l, keras.layers.BatchNormalization)][0]]
    np.testing.assert_array_equal(
        np.asarray(narrow_convs[0].kernel), np.asarray(wide_convs[0].kernel)[..., first_live]
    )
    # The dead channels pass on nothing, so the network cut down to the live ones gives
    # the wide network's probabilities: every layer kept the right channels and inputs
    # (the Dense after Flatten included).
    images = np.random.default_rng(1).uniform(0, 255, (6, SIZE, SIZE, 1)).astype(np.float32)
    np.testing.assert_allclose(
        narrow.predict(images, verbose=0), wide.predict(images, verbose=0), atol=1e-5
    )


def test_a_wide_run_seeds_only_the_network_that_narrows_it(tmp_path: Path) -> None:
    from training import warm_start

    run, _ = _wide_run_with_dead_channels(tmp_path / "wide")
    assert warm_start.check_source(run, "fernet", (SIZE, SIZE)).name == "wide"
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    write_run_info(narrow, list(CLASSES), (SIZE, SIZE), architecture="fernet_s")
    (narrow / "model.keras").write_bytes((run / "model.keras").read_bytes())
    # Narrow to wide is no pruning, and other architectures are refused as before.
    with pytest.raises(warm_start.WarmStartError, match="a 'fernet_s' run; only a 'fernet' run has"):
        warm_start.check_source(narrow, "fernet", (SIZE, SIZE))
    assert warm_start.check_source(narrow, "fernet_s", (SIZE, SIZE)).name == "narrow"
    vgg = tmp_path / "vgg"
    vgg.mkdir()
    write_run_info(vgg, list(CLASSES), (SIZE, SIZE), architecture="vgg_fer")
    (vgg / "model.keras").write_bytes((run / "model.keras").read_bytes())
    with pytest.raises(
        warm_start.WarmStartError, match="only a 'fernet_s' run or a 'fernet' run \\(pruned\\) has"
    ):
        warm_start.check_source(vgg, "fernet_s", (SIZE, SIZE))


def test_distilled_targets_mix_the_teacher_and_the_label(dataset: Path) -> None:
    from training.data import load_training_data

    def teacher(images: np.ndarray) -> np.ndarray:
        # A made-up answer that depends on the image, so that a target paired with
        # another image's answer is caught.
        brightness = images.reshape(len(images), -1).mean(axis=1, keepdims=True) / 255.0
        logits = brightness * np.arange(len(CLASSES))[None, :] * 5.0
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    weight = 0.3
    data = load_training_data(
        dataset,
        image_size=(SIZE, SIZE),
        batch_size=8,
        teacher=teacher,
        teacher_weight=weight,
        log=lambda *_: None,
    )
    seen = 0
    for _ in range(2):  # the second epoch reads the cache, reshuffled
        for images, targets in data.train:
            images, targets = np.asarray(images), np.asarray(targets)
            label = (targets - weight * teacher(images)) / (1 - weight)
            np.testing.assert_allclose(label.max(axis=1), 1.0, atol=1e-5)
            np.testing.assert_allclose(label.sum(axis=1), 1.0, atol=1e-5)
            np.testing.assert_allclose(np.sort(label, axis=1)[:, :-1], 0.0, atol=1e-5)
            seen += len(images)
    assert seen == 2 * len(data.train_files) == 2 * 10 * len(CLASSES)
    # Validation keeps the labels alone.
    for _, targets in data.val:
        assert set(np.unique(np.asarray(targets))) <= {0.0, 1.0}


@pytest.mark.slow
def test_a_narrow_run_learns_from_a_wide_one(dataset: Path, tmp_path: Path) -> None:
    from training.__main__ import main

    base = ["train", "--data", str(dataset), "--image-size", str(SIZE), "--epochs", "1",
            "--batch-size", "16", "--verbose", "0"]
    teacher = tmp_path / "teacher"
    assert main([*base, "--arch", "fernet", "--out", str(teacher)]) == 0
    student = tmp_path / "student"
    assert main([*base, "--arch", "fernet_s", "--out", str(student), "--init-from", str(teacher),
                 "--distill-from", str(teacher), "--distill-weight", "0.7"]) == 0
    meta = read_run_info(student).meta
    assert meta["architecture"] == "fernet_s"
    assert (meta["distill_from"], meta["distill_weight"], meta["init_from"]) == (str(teacher), 0.7, str(teacher))
    assert meta["params"] < read_run_info(teacher).meta["params"] / 10
    assert meta["finished"] and (student / "model.tflite").is_file()
    # The same command on the finished run returns at once; another teacher is another run.
    assert main([*base, "--arch", "fernet_s", "--out", str(student), "--init-from", str(teacher),
                 "--distill-from", str(teacher), "--distill-weight", "0.7"]) == 0
    assert main([*base, "--arch", "fernet_s", "--out", str(student), "--init-from", str(teacher),
                 "--distill-from", str(student), "--distill-weight", "0.7"]) == 2


def test_distill_from_refuses_a_run_that_cannot_teach(dataset: Path, tmp_path: Path, capsys) -> None:
    from training.__main__ import main
    from training.architectures import build_model

    run, _ = _wide_run_with_dead_channels(tmp_path / "wide")
    other_size = tmp_path / "big"
    other_size.mkdir()
    write_run_info(other_size, list(CLASSES), (48, 48), architecture="fernet")
    two_classes = tmp_path / "two"
    two_classes.mkdir()
    build_model("fernet", (SIZE, SIZE), 2).save(two_classes / "model.keras")
    write_run_info(two_classes, ["happy", "sad"], (SIZE, SIZE), architecture="fernet")
    base = ["train", "--data", str(dataset), "--arch", "fernet_s", "--image-size", str(SIZE),
            "--epochs", "1", "--verbose", "0"]
    cases = {
        "its input is 48x48": other_size,
        "not a run directory": tmp_path / "missing",
        "this run learns angry, disgust": two_classes,
    }
    assert_runs_refused(main, base, "--distill-from", cases, tmp_path, capsys)
    itself = tmp_path / "itself"
    assert main([*base, "--out", str(itself), "--distill-from", str(itself)]) == 2
    assert "is the run being trained" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--out", str(itself), "--distill-from", str(run), "--distill-weight", "1.5"])
    assert "--distill-weight: 1.5 must be between 0 and 1" in capsys.readouterr().err
