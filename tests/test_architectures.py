"""Every registered architecture builds, trains a step, and saves/loads under the contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SIZE = (48, 48)  # r_parity's 244x244 original is too heavy for a test; 48 checks the same code.


def _names() -> list[str]:
    from training.architectures import REGISTRY

    return sorted(REGISTRY)


def test_the_registry_has_the_seed_papers_and_ours() -> None:
    assert {"r_parity", "vgg_fer", "singh_nasoz", "jaramillo", "fernet"} <= set(_names())


def test_singh_nasoz_has_the_papers_parameter_count() -> None:
    from training.architectures import build_model

    assert build_model("singh_nasoz", (48, 48), 7).count_params() == 1_271_687


@pytest.mark.parametrize("name", _names())
def test_architecture_trains_a_step_and_round_trips(name: str, tmp_path: Path) -> None:
    import keras

    from ferdash.runs.predictor import compiled_predictor, load_keras_model
    from training.architectures import build_model, compile_model

    keras.utils.set_random_seed(0)
    model = compile_model(build_model(name, SIZE, 7, augment=True, seed=0), name)
    # Contract: augmentation right after the input, then rescaling inside the model.
    layer_names = [layer.name for layer in model.layers]
    assert layer_names[1].startswith("aug_")
    assert "rescale" in layer_names
    assert model.layers[-1].dtype_policy.compute_dtype == "float32"

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, *SIZE, 1)).astype("float32")
    y = keras.utils.to_categorical(np.arange(8) % 7, 7)
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))

    model.save(tmp_path / "model.keras")
    loaded = load_keras_model(tmp_path / "model.keras")  # safe_mode: no Lambda layers
    probs = compiled_predictor(loaded, SIZE, "hflip")(x)
    assert probs.shape == (8, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    # Augmentation is inactive at inference: the loaded model is deterministic and
    # agrees with the one that was trained.
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


def test_per_class_recall_metrics_are_the_confusion_matrix_diagonal_over_its_rows() -> None:
    import keras

    from training.architectures import build_model, compile_model

    classes = ["angry", "fear", "happy", "sad"]
    keras.utils.set_random_seed(0)
    model = compile_model(build_model("fernet", SIZE, 4, seed=0), "fernet", recall_of=classes)
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (64, *SIZE, 1)).astype("float32")
    labels = rng.integers(0, 4, 64)
    model.fit(x, keras.utils.to_categorical(labels, 4), batch_size=16, epochs=1, verbose=0)
    logged = model.evaluate(x, keras.utils.to_categorical(labels, 4), batch_size=16, verbose=0, return_dict=True)
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    for i, name in enumerate(classes):
        expected = np.mean(predicted[labels == i] == i)
        assert logged[f"recall_{name}"] == pytest.approx(expected, abs=1e-6), name


def test_recall_column_names_follow_the_classes() -> None:
    from ferdash.runs.rundir import class_recall_metrics

    assert class_recall_metrics(["happy", "sad"]) == {"happy": "recall_happy", "sad": "recall_sad"}
    assert class_recall_metrics(["not happy", "d-1"]) == {"not happy": "recall_not_happy", "d-1": "recall_d_1"}
    # Two names that would read the same: by index instead.
    assert class_recall_metrics(["a b", "a_b"]) == {"a b": "recall_0", "a_b": "recall_1"}
