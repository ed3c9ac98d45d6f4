"""Temperature scaling: the fit, the measures, run.json's temperature and its use by the engine."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ferdash.runs import model_store
from ferdash.runs.calibration import (
    ECE_BINS,
    TEMPERATURE_MAX,
    apply_temperature,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability,
)
from ferdash.runs.rundir import RUN_FILE, RunDirError, read_evaluation, read_run_info
from tiny_runs import make_tiny_run
from synthetic_runs import overconfident_probs
from trainingdata import CLASSES, make_dataset


def test_fitting_recovers_the_temperature_that_sharpened_the_probabilities() -> None:
    probs, labels = overconfident_probs()
    temperature = fit_temperature(probs, labels)
    assert temperature == pytest.approx(2.0, rel=0.1)
    scaled = apply_temperature(probs, temperature)
    # The answer of every face is kept; only its confidence changes.
    np.testing.assert_array_equal(scaled.argmax(axis=1), probs.argmax(axis=1))
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0, atol=1e-5)
    assert expected_calibration_error(probs, labels) > 0.1
    assert expected_calibration_error(scaled, labels) < 0.03
    assert negative_log_likelihood(scaled, labels) < negative_log_likelihood(probs, labels)


def test_a_temperature_of_one_or_none_changes_nothing() -> None:
    probs, _ = overconfident_probs(50)
    assert apply_temperature(probs, None) is not None
    np.testing.assert_array_equal(apply_temperature(probs, None), probs.astype(np.float32))
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, atol=1e-7)


def test_fitting_stays_inside_the_allowed_range() -> None:
    # A network that is right every time at 60%: the NLL keeps falling as T shrinks.
    probs = np.full((100, 2), 0.4)
    probs[:, 0] = 0.6
    labels = np.zeros(100, dtype=int)
    assert fit_temperature(probs, labels) == pytest.approx(0.05, rel=1e-3)
    # Always wrong: the flattest allowed answer.
    assert fit_temperature(probs, np.ones(100, dtype=int)) == pytest.approx(TEMPERATURE_MAX, rel=1e-3)
    with pytest.raises(ValueError, match="no images"):
        fit_temperature(np.zeros((0, 2)), np.zeros(0, dtype=int))


def test_reliability_bins_add_up_to_the_faces_and_the_ece() -> None:
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    table = reliability(probs, labels)
    assert table["bins"] == ECE_BINS and sum(table["count"]) == 4
    # 0.95 falls in the last bin, 0.55 in bin 8 ((8/15, 9/15]), 0.7 in bin 10.
    assert table["count"][14] == 2 and table["count"][8] == 1 and table["count"][10] == 1
    assert table["accuracy"][14] == 0.5 and table["confidence"][14] == pytest.approx(0.95)
    assert table["accuracy"][0] is None and table["confidence"][0] is None
    expected = (2 * abs(0.95 - 0.5) + abs(0.55 - 1) + abs(0.7 - 1)) / 4
    assert table["ece"] == pytest.approx(expected)


def test_the_report_records_both_sides_of_the_scaling() -> None:
    probs, labels = overconfident_probs(1000)
    report = calibration_report(probs, labels, 2.0)
    assert report["temperature"] == 2.0 and report["bins"] == ECE_BINS
    assert report["ece_after"] < report["ece_before"]
    assert report["nll_after"] < report["nll_before"]
    assert sum(report["reliability_before"]["count"]) == sum(report["reliability_after"]["count"]) == 1000
    json.dumps(report)  # evaluation.json must be able to hold it


def _set_temperature(run: Path, value) -> None:
    meta = json.loads((run / RUN_FILE).read_text())
    meta["temperature"] = value
    (run / RUN_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize("forged", [0.0, -1.0, 1e9, "2", True, [1.0]])
def test_a_forged_temperature_is_refused_with_a_reason(tmp_path: Path, forged) -> None:
    run = make_tiny_run(tmp_path, "forged", CLASSES)
    _set_temperature(run, forged)
    with pytest.raises(RunDirError, match="temperature"):
        read_run_info(run)


def test_the_engine_scales_by_the_runs_temperature_without_reloading(tmp_path: Path) -> None:
    model_store.clear_cache()
    run = make_tiny_run(tmp_path, "calibrated", CLASSES)
    faces = np.random.default_rng(1).uniform(0, 255, (8, 48, 48, 1)).astype(np.float32)

    plain = model_store.get_loaded_run(read_run_info(run))
    # A run without a temperature (older runs, users' own) is used as the network gives it.
    assert plain.temperature is None
    np.testing.assert_array_equal(plain.predict(faces), plain.raw_predict(faces))

    _set_temperature(run, 2.5)
    scaled = model_store.get_loaded_run(read_run_info(run))
    assert scaled.temperature == 2.5
    assert scaled.raw_predict is plain.raw_predict  # the same loaded model
    raw = scaled.raw_predict(faces)
    np.testing.assert_allclose(scaled.predict(faces), apply_temperature(raw, 2.5), atol=1e-6)
    assert scaled.predict(faces).max() < raw.max()
    model_store.clear_cache()


@pytest.mark.slow
def test_training_with_sgd_and_ema_calibrates_its_run_and_resumes(tmp_path: Path) -> None:
    import keras

    from training.train import TrainConfig, TrainingError, run_training

    data = make_dataset(tmp_path / "data", 12, 4, 5, size=32)

    class Crash(Exception):
        pass

    class CrashAtEpoch1(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise Crash("simulated crash")

    def config(**kw):
        settings = dict(
            data=str(data), arch="fernet", out=str(tmp_path / "run"), epochs=3, batch_size=16,
            image_size=(32, 32), verbose=0, optimizer="sgd", ema=True, command=["test"],
        )
        return TrainConfig(**{**settings, **kw})

    with pytest.raises(Crash):
        run_training(config(extra_callbacks=[CrashAtEpoch1()]), log=lambda *_: None)
    # Resuming with another optimizer, or without the average, is another run.
    for other in (dict(optimizer="default"), dict(ema=False)):
        with pytest.raises(TrainingError, match="other settings.*" + next(iter(other))):
            run_training(config(**other), log=lambda *_: None)
    logs: list[str] = []
    run = run_training(config(), log=logs.append)
    assert any("resuming" in line for line in logs)

    info = read_run_info(run)
    assert info.meta["optimizer"] == "sgd" and info.meta["ema"] is True
    assert info.meta["epochs_completed"] == 3
    temperature = info.temperature
    assert temperature is not None and math.isfinite(temperature)
    calibration = read_evaluation(run).meta["calibration"]
    assert calibration["temperature"] == pytest.approx(temperature)
    # Fitted on these very images: scaling cannot make their NLL worse.
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-6
    assert sum(calibration["reliability_after"]["count"]) == read_evaluation(run).image_count
