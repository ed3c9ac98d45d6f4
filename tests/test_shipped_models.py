"""Every run folder that ships under models/ honours the contract and works in the app's path."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferdash.runs.calibration import apply_temperature
from ferdash.config import DEFAULT_MODELS_DIR
from ferdash.inference import analyse_bytes
from ferdash.runs.lite_engine import QUANTIZED_PROBE_TOLERANCE
from ferdash.runs.model_store import get_loaded_run
from ferdash.runs.predictor import compiled_predictor
from ferdash.runs.rundir import (
    FER2013_CLASSES,
    discover_runs,
    read_evaluation,
    read_history,
    read_run_info,
    sha256_file,
)

SHIPPED = sorted(p for p in DEFAULT_MODELS_DIR.iterdir() if (p / "run.json").is_file())

#: What each shipped run must be: the app's defaults, and the R app's own network.
EXPECTED_CLASSES = {
    "fer7": FER2013_CLASSES,
    "fer7_fast": FER2013_CLASSES,
    "happy_sad": ("happy", "sad"),
    "r_parity": ("happy", "sad"),
}

MAX_MODEL_BYTES = 25 * 1024 * 1024


def test_a_shipped_run_shows_per_class_recall_curves() -> None:
    for name in ("fer7", "fer7_fast", "happy_sad", "r_parity"):
        assert read_run_info(DEFAULT_MODELS_DIR / name).meta["class_recall_logged"] is True


def test_the_fast_run_is_fer7_taught_to_a_network_a_sixteenth_its_size() -> None:
    fast = read_run_info(DEFAULT_MODELS_DIR / "fer7_fast").meta
    fer7 = read_run_info(DEFAULT_MODELS_DIR / "fer7").meta
    assert fast["architecture"] == "fernet_s" and fer7["architecture"] == "fernet"
    # Pruned from fer7, then taught by it, through the shipped folder's own path.
    assert fast["init_from"] == fast["distill_from"] == "models/fer7"
    assert 0 < fast["distill_weight"] < 1
    assert fast["params"] * 10 < fer7["params"]
    assert fast["tta"] is None  # one pass per face: the point of the run


def test_models_folder_ships_runs() -> None:
    assert SHIPPED, "models/ holds no run"
    assert all(listing.ok and not listing.problems for listing in discover_runs(DEFAULT_MODELS_DIR))


@pytest.mark.parametrize("run_dir", SHIPPED, ids=lambda p: p.name)
def test_shipped_run_is_complete(run_dir: Path) -> None:
    info = read_run_info(run_dir)
    if run_dir.name in EXPECTED_CLASSES:
        assert info.classes == EXPECTED_CLASSES[run_dir.name]
    assert info.input_size == (48, 48)
    assert info.model_path.stat().st_size < MAX_MODEL_BYTES
    assert info.lite_path.stat().st_size < MAX_MODEL_BYTES
    assert info.meta["lite"]["model_sha256"] == sha256_file(info.model_path)
    assert info.meta["lite"]["sha256"] == sha256_file(info.lite_path)
    # Provenance a reader needs to trust the figures.
    for key in ("architecture", "data", "epochs", "seed", "command"):
        assert key in info.meta, key
    history = read_history(run_dir)
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.columns)
    assert list(history["epoch"]) == list(range(len(history)))
    if info.meta.get("class_recall_logged"):  # what Inspect's recall panel draws
        recall = [f"val_recall_{c}" for c in info.classes]
        assert set(recall) <= set(history.columns)
        assert history[recall].notna().all().all()
    evaluation = read_evaluation(run_dir)
    assert evaluation.classes == info.classes
    assert evaluation.split == "val"  # FER2013 PublicTest
    assert evaluation.confusion_matrix.sum() == evaluation.image_count
    diagonal = np.trace(evaluation.confusion_matrix) / evaluation.image_count
    assert evaluation.accuracy == pytest.approx(diagonal)
    # No machine-specific path: the gallery finds ../shared beside any checkout.
    assert evaluation.data_dir is not None and not Path(evaluation.data_dir).is_absolute()
    assert json.loads((run_dir / "run.json").read_text())["data"].startswith("../shared/")


@pytest.mark.slow
@pytest.mark.parametrize("run_dir", SHIPPED, ids=lambda p: p.name)
def test_shipped_model_classifies_generated_images(run_dir: Path) -> None:
    info = read_run_info(run_dir)
    loaded = get_loaded_run(info)
    rng = np.random.default_rng(0)
    # A tight 48x48 "face", a larger greyscale noise image and an RGB image: all three
    # paths (whole crop, no face found, colour conversion) reach the model.
    images = [
        rng.integers(0, 256, (48, 48), dtype=np.uint8),
        rng.integers(0, 256, (240, 320), dtype=np.uint8),
        rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
    ]
    # Every batch runs on the shipped quantised TF Lite copy, checked against the Keras
    # model at load: a face gets the same probabilities alone or in a batch, and the
    # stored evaluation was computed by it.
    assert loaded.engine == "tflite" and loaded.quantized
    assert read_evaluation(run_dir).meta["engine"] == loaded.engine_name
    faces = rng.uniform(0, 255, (40, 48, 48, 1)).astype(np.float32)
    one_by_one = np.concatenate([loaded.predict(faces[i : i + 1]) for i in range(len(faces))])
    np.testing.assert_array_equal(one_by_one, loaded.predict(faces))
    exact = compiled_predictor(loaded.model, info.input_size, loaded.tta)(faces)
    assert np.abs(loaded.raw_predict(faces) - exact).max() <= QUANTIZED_PROBE_TOLERANCE
    # The shipped runs are calibrated: what the app shows is the network's output
    # scaled by run.json's temperature.
    assert info.temperature is not None
    np.testing.assert_allclose(
        one_by_one, apply_temperature(loaded.raw_predict(faces), info.temperature), atol=1e-6
    )
    for i, pixels in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        result = analyse_bytes(buf.getvalue(), loaded, name=f"generated-{i}.png")
        assert result.ok and result.model_error is None, (result.error, result.model_error)
        probs = np.asarray(result.probs)
        assert probs.shape == (len(info.classes),)
        assert np.all(probs >= 0) and probs.sum() == pytest.approx(1.0, abs=1e-4)
