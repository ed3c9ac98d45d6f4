"""`python -m training train/evaluate` on small generated datasets.

Everything runs at 32x32 on a few dozen images per class, so that the whole file takes
a couple of minutes on two CPU cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ferdash.runs.rundir import read_evaluation, read_history, read_run_info, resolve_data_dir
from trainingdata import CLASSES, assert_runs_refused, make_dataset, make_image_folder

REPO = Path(__file__).resolve().parent.parent
SIZE = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), 12, 4, 5, size=SIZE)


def _config(data: Path, out: Path, **kw):
    from training.train import TrainConfig

    base = dict(
        data=str(data),
        arch="fernet",
        out=str(out),
        epochs=2,
        batch_size=16,
        image_size=(SIZE, SIZE),
        verbose=0,
        command=["test"],
    )
    base.update(kw)
    return TrainConfig(**base)


def _history_epochs(run: Path) -> list[int]:
    return read_history(run)["epoch"].astype(int).tolist()


def _check_evaluation(run: Path, expected_images: int) -> None:
    evaluation = read_evaluation(run)
    matrix = evaluation.confusion_matrix
    assert matrix.sum() == evaluation.image_count == expected_images
    assert evaluation.accuracy == pytest.approx(np.trace(matrix) / matrix.sum())
    assert len(evaluation.misclassified) == matrix.sum() - np.trace(matrix)
    for miss in evaluation.misclassified:
        assert (resolve_data_dir(evaluation, run) / miss["file"]).is_file()
        assert miss["true"] != miss["predicted"]
        assert miss["file"].split("/")[0] == miss["true"]


@pytest.mark.slow
def test_two_epochs_write_a_complete_run_directory(dataset: Path, tmp_path: Path) -> None:
    from ferdash.runs.predictor import load_keras_model
    from training.train import run_training

    run = run_training(_config(dataset, tmp_path / "run", tta="hflip"), log=lambda *_: None)
    for name in ("model.keras", "run.json", "history.csv", "evaluation.json"):
        assert (run / name).is_file(), name
    assert not (run / "backup").exists()  # BackupAndRestore cleans up after a finished fit.
    assert not (run / "model.partial.keras").exists()  # the checkpoint's write-then-rename file
    assert _history_epochs(run) == [0, 1]
    history = read_history(run)
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(history.columns)
    # Each class's recall, per epoch (test_architectures checks the figures themselves).
    recall = [f"val_recall_{c}" for c in CLASSES]
    assert set(recall) <= set(history.columns)
    assert ((history[recall] >= 0) & (history[recall] <= 1)).all().all()

    info = read_run_info(run)
    assert info.classes == CLASSES
    assert info.input_size == (SIZE, SIZE)
    meta = info.meta
    assert meta["architecture"] == "fernet"
    assert meta["epochs"] == 2 and meta["epochs_completed"] == 2
    assert meta["best_epoch"] in (0, 1)
    assert meta["best_val_accuracy"] == pytest.approx(history["val_accuracy"].max())
    assert meta["device"].startswith(("cpu", "gpu"))
    assert meta["tta"] == "hflip" and meta["augment"] is True
    assert meta["params"] > 0 and meta["finished"] and meta["created"]
    assert meta["tensorflow"] and meta["keras"] and meta["seed"] == 1234
    assert meta["class_recall_logged"] is True

    model = load_keras_model(run / "model.keras")
    assert model.output_shape == (None, len(CLASSES))
    # Optimizer state is stripped from the shipped file.
    assert (run / "model.keras").stat().st_size < 25 * 2**20
    _check_evaluation(run, 4 * len(CLASSES))
    assert read_evaluation(run).split == "val"
    assert read_evaluation(run).meta["tta"] == "hflip"
    # The app's TF Lite copy of the final model, recorded so the app can check it.
    from ferdash.runs import model_store

    assert meta["lite"]["file"] == "model.tflite" and (run / "model.tflite").is_file()
    assert meta["lite"]["quantization"] == "dynamic-range"
    model_store.clear_cache()
    loaded = model_store.get_loaded_run(info)
    assert loaded.engine == "tflite"
    # The stored figures come from the engine the app runs.
    assert read_evaluation(run).meta["engine"] == loaded.engine_name
    model_store.clear_cache()

    # Running the finished command again does not retrain.
    before = (run / "history.csv").read_text()
    run_training(_config(dataset, tmp_path / "run", tta="hflip"), log=lambda *_: None)
    assert (run / "history.csv").read_text() == before


class _Crash(Exception):
    pass


@pytest.mark.slow
def test_a_run_that_crashed_resumes_to_exactly_the_requested_epochs(
    dataset: Path, tmp_path: Path
) -> None:
    import keras

    from training.train import run_training

    class CrashAtEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise _Crash("simulated crash")

    out = tmp_path / "run"
    with pytest.raises(_Crash):
        run_training(_config(dataset, out, epochs=3, extra_callbacks=[CrashAtEpoch()]), log=lambda *_: None)
    assert _history_epochs(out) == [0]
    assert (out / "backup").is_dir()
    # A run begun before per-class recall was logged: its history.csv has no such
    # columns, and a resume must not add them under the old header.
    old_columns = ["epoch", "accuracy", "learning_rate", "loss", "val_accuracy", "val_loss"]
    read_history(out)[old_columns].to_csv(out / "history.csv", index=False)
    # Simulate the epoch-1 row being written just before a kill that beat the backup:
    # the resumed run must not keep it twice.
    with (out / "history.csv").open("a") as f:
        f.write("1,0.5,0.001,1.0,0.5,1.0\n")

    logs: list[str] = []
    run_training(_config(dataset, out, epochs=3), log=logs.append)
    assert any("resuming" in line and "epoch 2 of 3" in line for line in logs)
    assert _history_epochs(out) == [0, 1, 2]
    history = read_history(out)
    assert list(history.columns) == old_columns and not history.isna().any().any()
    meta = read_run_info(out).meta
    assert meta["epochs_completed"] == 3 and meta["finished"]
    assert meta["class_recall_logged"] is False
    _check_evaluation(out, 4 * len(CLASSES))


_DRIVER = """
import sys, time
from pathlib import Path
import keras
from training.train import TrainConfig, run_training

class PauseInEpoch1(keras.callbacks.Callback):
    # Mid-epoch 1 (after epoch 0 was backed up), say so and wait to be killed.
    def on_train_batch_end(self, batch, logs=None):
        if self._epoch == 1:
            Path(sys.argv[3]).write_text("paused")
            time.sleep(120)
    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

run_training(TrainConfig(data=sys.argv[1], arch="fernet", out=sys.argv[2], epochs=3,
    batch_size=16, image_size=(32, 32), verbose=0, extra_callbacks=[PauseInEpoch1()]))
"""


@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes(dataset: Path, tmp_path: Path) -> None:
    out, marker = tmp_path / "run", tmp_path / "paused"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    # stderr to a file, not a pipe: nobody reads a pipe while the driver trains, and
    # TensorFlow's warnings could fill it and block the child.
    stderr_log = (tmp_path / "driver.stderr").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, str(dataset), str(out), str(marker)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr_log,
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"driver exited early: {(tmp_path / 'driver.stderr').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("driver never reached epoch 1")
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr_log.close()
    assert _history_epochs(out) == [0]

    cmd = [sys.executable, "-m", "training", "train", "--data", str(dataset), "--arch", "fernet",
           "--out", str(out), "--epochs", "3", "--batch-size", "16", "--image-size", "32", "--verbose", "0"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stdout
    assert _history_epochs(out) == [0, 1, 2]
    assert read_run_info(out).meta["epochs_completed"] == 3
    history = read_history(out)  # the resumed epochs log the recall columns too
    assert f"val_recall_{CLASSES[0]}" in history.columns and not history.isna().any().any()


@pytest.mark.slow
def test_class_subset_validation_split_and_evaluate_cli(tmp_path: Path, capsys) -> None:
    from ferdash.runs.predictor import load_keras_model
    from training.__main__ import main

    # A bare class folder (no train/ or val/): validation comes from a seeded split.
    data = make_image_folder(tmp_path / "faces", per_class=20, size=SIZE)
    # A corrupt PNG and an empty file must be skipped, not crash the epoch.
    (data / "happy" / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (data / "sad" / "zz_empty.png").write_bytes(b"")
    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--arch", "fernet", "--out", str(out),
                 "--classes", "sad,happy", "--epochs", "1", "--batch-size", "8",
                 "--image-size", str(SIZE), "--no-augment", "--class-weights", "--verbose", "0"])
    assert code == 0
    text = capsys.readouterr().out
    assert "zz_corrupt.png" in text and "zz_empty.png" in text
    info = read_run_info(out)
    assert info.classes == ("happy", "sad")  # sorted, like image_dataset_from_directory
    assert load_keras_model(out / "model.keras").output_shape == (None, 2)
    meta = info.meta
    assert meta["val_split"] == 0.1 and meta["skipped_images"] == 2
    assert meta["train_images"] + meta["val_images"] == 40
    assert set(meta["class_weights"]) == {"happy", "sad"}
    assert read_evaluation(out).split == "validation_split"
    _check_evaluation(out, meta["val_images"])

    # Evaluate on another folder holding all seven classes: only the run's are read.
    test = make_image_folder(tmp_path / "test", per_class=6, size=SIZE)
    (test / "sad" / "broken.png").write_bytes(b"GIF89a")
    assert main(["evaluate", "--run", str(out), "--data", str(test), "--tta", "hflip"]) == 0
    evaluation = read_evaluation(out)
    assert evaluation.split == "test" and evaluation.classes == ("happy", "sad")
    assert evaluation.meta["tta"] == "hflip"
    assert [s["file"] for s in evaluation.meta["skipped_files"]] == ["sad/broken.png"]
    _check_evaluation(out, 12)


def test_an_unwritable_output_fails_before_training(tmp_path: Path, capsys) -> None:
    from training.__main__ import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["train", "--data", str(tmp_path), "--arch", "fernet", "--out", str(blocker / "run")])
    assert code == 2
    assert "not writable" in capsys.readouterr().err
    # --out naming the file itself: said in words, not "File exists".
    assert main(["train", "--data", str(tmp_path), "--arch", "fernet", "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert f"{blocker} is a file, not a folder" in err and "File exists" not in err


def test_a_full_disk_fails_with_a_clear_message(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from training.train import TrainingError, check_free_space

    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 10**6))
    with pytest.raises(TrainingError, match="not enough free disk space"):
        check_free_space(tmp_path, params=1_000_000)


def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    import h5py

    from ferdash.runs.rundir import write_run_info
    from training.train import TrainingError, run_training

    data = make_image_folder(tmp_path / "data", per_class=10, size=SIZE, classes=("happy", "sad"))
    out = tmp_path / "run"
    # An unfinished run as a kill leaves it: run.json without 'finished', a backup.
    write_run_info(out, ["happy", "sad"], [SIZE, SIZE], architecture="fernet", batch_size=16,
                   augment=True, seed=1234, init_from=None, learning_rate=None, finished=None)
    (out / "backup").mkdir()
    with h5py.File(out / "backup" / "latest.weights.h5", "w") as f:
        f["x"] = np.zeros(1)
    (out / "backup" / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    with pytest.raises(TrainingError, match="other settings.*batch_size"):
        run_training(_config(data, out, batch_size=8), log=lambda *_: None)
    # Weights seeded from elsewhere, or another starting rate, are another run too.
    with pytest.raises(TrainingError, match="other settings.*learning_rate"):
        run_training(_config(data, out, batch_size=16, learning_rate=1e-4), log=lambda *_: None)
    donor = tmp_path / "donor"
    write_run_info(donor, ["happy", "sad"], [SIZE, SIZE], architecture="fernet")
    with zipfile.ZipFile(donor / "model.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(TrainingError, match="other settings.*init_from"):
        run_training(_config(data, out, batch_size=16, init_from=str(donor)), log=lambda *_: None)
    # Other images, fewer of them, or another validation split: another run too (its
    # history rows and kept checkpoint were measured on other faces).
    write_run_info(out, ["happy", "sad"], [SIZE, SIZE], data=str(data), limit_per_class=None,
                   val_split=0.1)
    other = make_image_folder(tmp_path / "other", per_class=10, size=SIZE, classes=("happy", "sad"))
    with pytest.raises(TrainingError, match="other settings.*data"):
        run_training(_config(other, out, batch_size=16), log=lambda *_: None)
    with pytest.raises(TrainingError, match="other settings.*limit_per_class"):
        run_training(_config(data, out, batch_size=16, limit_per_class=5), log=lambda *_: None)
    with pytest.raises(TrainingError, match="other settings.*val_split"):
        run_training(_config(data, out, batch_size=16, validation_split=0.5), log=lambda *_: None)
    assert (out / "backup" / "latest.weights.h5").is_file()  # refusals touch nothing


def test_paths_are_the_same_run_however_they_are_spelt(tmp_path: Path, monkeypatch) -> None:
    from training.resume import _same

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "a").mkdir(parents=True)
    assert _same("init_from", "runs/a", "./runs/a")
    assert _same("data", str(tmp_path / "runs"), "runs/")
    assert not _same("data", "runs/a", "runs/b")
    assert not _same("seed", 1, 2)


# --- fast unit tests of the resume helpers -------------------------------------------


def test_truncate_history_keeps_one_row_per_epoch_below_the_restored_one(tmp_path: Path) -> None:
    from training.resume import truncate_history

    path = tmp_path / "history.csv"
    path.write_text(
        "epoch,accuracy,val_accuracy\n0,0.1,0.2\n1,0.3,0.4\n1,0.35,0.45\n2,0.5,0.6\n3,0.7"
    )
    rows = truncate_history(path, keep_epochs=2)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    frame = pd.read_csv(path)
    assert frame["epoch"].tolist() == [0, 1]
    assert frame["val_accuracy"].tolist() == [0.2, 0.45]  # the last write of epoch 1 wins


def test_a_truncated_backup_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    import h5py

    from training.resume import restorable_epoch

    backup = tmp_path / "backup"
    backup.mkdir()
    with h5py.File(backup / "latest.weights.h5.bkp", "w") as f:
        f["x"] = np.zeros(3)
    (backup / "training_metadata.json.bkp").write_text(json.dumps({"epoch": 4, "batch": 0}))
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    (backup / "training_metadata.json").write_text(json.dumps({"epoch": 5, "batch": 0}))
    assert restorable_epoch(backup) == 4
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 4

    (backup / "latest.weights.h5").write_bytes(b"junk")
    (backup / "latest.weights.h5.bkp").write_bytes(b"junk")
    assert restorable_epoch(backup) is None
    assert not backup.exists()  # Unusable: start afresh rather than crash.


def test_class_weights_from_counts() -> None:
    from training.data import class_weights

    counts = {"disgust": 436, "happy": 7215}
    balanced = class_weights(counts, ["disgust", "happy"], "balanced")
    assert balanced[0] == pytest.approx(7651 / (2 * 436), rel=1e-3)
    assert balanced[0] * 436 == pytest.approx(balanced[1] * 7215, rel=1e-3)
    soft = class_weights(counts, ["disgust", "happy"], "sqrt")
    assert soft[0] == pytest.approx(balanced[0] ** 0.5, rel=1e-3)
    assert class_weights(counts, ["disgust", "happy"], "none") is None


def test_class_boost_multiplies_the_named_classes() -> None:
    from training.__main__ import build_parser
    from training.data import DataError, class_weights

    counts = {"disgust": 436, "fear": 4097, "happy": 7215}
    classes = list(counts)
    soft = class_weights(counts, classes, "sqrt")
    boosted = class_weights(counts, classes, "sqrt", {"fear": 1.5})
    assert boosted[1] == pytest.approx(soft[1] * 1.5, rel=1e-3)
    assert (boosted[0], boosted[2]) == (soft[0], soft[2])
    assert class_weights(counts, classes, "none", {"fear": 2.0}) == {0: 1.0, 1: 2.0, 2: 1.0}
    with pytest.raises(DataError, match="cannot boost anger"):
        class_weights(counts, classes, "sqrt", {"anger": 1.5})

    parser = build_parser()
    base = ["train", "--data", "d", "--arch", "fernet", "--out", "o"]
    args = parser.parse_args([*base, "--class-boost", "fear=1.5, sad=0.8"])
    assert args.class_boost == {"fear": 1.5, "sad": 0.8}
    for bad in ("fear", "fear=0", "fear=-1", "fear=x", "=2", "fear=inf", "fear=1,fear=2"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--class-boost", bad])


@pytest.mark.slow
def test_mixed_precision_keeps_a_float32_softmax(tmp_path: Path) -> None:
    # What a GPU run does by default; forced on here so that CPU-only CI covers it.
    import keras

    from ferdash.runs.predictor import compiled_predictor, load_keras_model
    from training.train import run_training

    data = make_dataset(tmp_path / "data", 6, 2, size=SIZE, classes=("happy", "sad"))
    try:
        run = run_training(
            # 16x16: float16 maths is slow on a CPU.
            _config(data, tmp_path / "run", epochs=1, mixed_precision="on", augment=False,
                    image_size=(16, 16)),
            log=lambda *_: None,
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert read_run_info(run).meta["mixed_precision"] is True
    model = load_keras_model(run / "model.keras")
    assert model.layers[-1].dtype_policy.compute_dtype == "float32"
    probs = compiled_predictor(model, (16, 16))(np.zeros((2, 16, 16, 1), np.float32))
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-3)


@pytest.mark.slow
def test_a_backup_that_does_not_load_starts_the_run_over(tmp_path: Path) -> None:
    import h5py

    from ferdash.runs.rundir import write_run_info
    from training.train import run_training

    data = make_dataset(tmp_path / "data", 6, 2, size=SIZE, classes=("happy", "sad"))
    out = tmp_path / "run"
    write_run_info(out, ["happy", "sad"], [SIZE, SIZE], architecture="fernet", batch_size=16,
                   augment=True, seed=1234, finished=None)
    (out / "history.csv").write_text("epoch,accuracy\n0,0.5\n")
    (out / "backup").mkdir()
    with h5py.File(out / "backup" / "latest.weights.h5", "w") as f:
        f["not_the_model"] = np.zeros(3)  # opens as HDF5, yet is no backup of this model
    (out / "backup" / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    logs: list[str] = []
    run_training(_config(data, out, augment=True), log=logs.append)
    assert any("starting the run over" in line for line in logs)
    assert _history_epochs(out) == [0, 1]
    assert read_run_info(out).meta["epochs_completed"] == 2


def test_replay_restores_patience_counters_but_not_the_learning_rate(capsys) -> None:
    import keras

    from training.resume import ReplayMonitors

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.25), loss="mse")
    reduce_lr = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", patience=3, factor=0.5, verbose=1
    )
    early = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=10, verbose=1
    )
    for cb in (reduce_lr, early):
        cb.set_model(model)
        cb.on_train_begin()
    # val_loss best at epoch 0, then four worse epochs: one LR reduction at epoch 3
    # (already applied to the restored optimizer), then one epoch of waiting.
    rows = [
        {"epoch": str(e), "val_loss": str(v), "val_accuracy": str(a)}
        for e, (v, a) in enumerate([(1.0, 0.5), (1.1, 0.6), (1.2, 0.55), (1.3, 0.58), (1.4, 0.57)])
    ]
    replay = ReplayMonitors(rows, [reduce_lr, early])
    replay.set_model(model)
    replay.on_epoch_begin(5)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.25)
    assert reduce_lr.best == pytest.approx(1.0) and reduce_lr.wait == 1
    assert early.best == pytest.approx(0.6) and early.wait == 3
    assert not model.stop_training
    # The replayed epoch-3 reduction is history, not news: nothing printed, and the
    # callbacks speak again for the epochs that follow.
    assert "reducing learning rate" not in capsys.readouterr().out
    assert reduce_lr.verbose == 1 and early.verbose == 1


def _first_conv_kernel(model):
    import keras

    layer = next(l for l in model.layers if isinstance(l, keras.layers.Conv2D))
    return keras.ops.convert_to_numpy(layer.kernel)


def _classifier(model):
    return [np.asarray(w) for w in model.get_layer("probs").get_weights()]


@pytest.mark.slow
def test_init_from_seeds_a_class_subset_with_the_source_features(
    dataset: Path, tmp_path: Path
) -> None:
    from ferdash.runs.predictor import load_keras_model
    from training.train import run_training

    quiet = dict(log=lambda *_: None)
    source = run_training(_config(dataset, tmp_path / "fer7", epochs=1), **quiet)
    donor = load_keras_model(source / "model.keras")

    # A learning rate too small to move any weight: what the run ships is what it was seeded with.
    subset = run_training(
        _config(
            dataset,
            tmp_path / "happy_sad",
            epochs=1,
            classes=["happy", "sad"],
            init_from=str(source),
            learning_rate=1e-12,
        ),
        **quiet,
    )
    seeded = load_keras_model(subset / "model.keras")
    np.testing.assert_allclose(_first_conv_kernel(seeded), _first_conv_kernel(donor), atol=1e-6)
    assert seeded.output_shape == (None, 2)  # a new two-class classifier
    meta = read_run_info(subset).meta
    assert meta["init_from"] == str(source) and meta["learning_rate"] == 1e-12

    # Same classes: the classifier is carried over too, so the predictions are the source's.
    again = run_training(
        _config(
            dataset, tmp_path / "again", epochs=1, init_from=str(source), learning_rate=1e-12
        ),
        **quiet,
    )
    for mine, theirs in zip(_classifier(load_keras_model(again / "model.keras")), _classifier(donor)):
        np.testing.assert_allclose(mine, theirs, atol=1e-6)

    # Without --init-from the same seed starts elsewhere: the comparison above can fail.
    fresh = run_training(
        _config(dataset, tmp_path / "fresh", epochs=1, classes=["happy", "sad"], learning_rate=1e-12),
        **quiet,
    )
    assert not np.allclose(
        _first_conv_kernel(load_keras_model(fresh / "model.keras")), _first_conv_kernel(donor), atol=1e-6
    )

    # A resumed run takes its weights from its own backup, never again from the seed run:
    # crash after one epoch, put another network in the seed run's place, resume.
    import keras

    class CrashAtEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise _Crash("simulated crash")

    resumed = tmp_path / "resumed"
    settings = dict(epochs=2, classes=["happy", "sad"], init_from=str(source), learning_rate=1e-12)
    with pytest.raises(_Crash):
        run_training(_config(dataset, resumed, **settings, extra_callbacks=[CrashAtEpoch()]), **quiet)
    shutil.copy(fresh / "model.keras", source / "model.keras")
    run_training(_config(dataset, resumed, **settings), **quiet)
    assert read_run_info(resumed).meta["epochs_completed"] == 2
    np.testing.assert_allclose(
        _first_conv_kernel(load_keras_model(resumed / "model.keras")), _first_conv_kernel(donor), atol=1e-6
    )


def test_init_from_refuses_a_run_it_cannot_seed_from(dataset: Path, tmp_path: Path, capsys) -> None:
    from training.__main__ import main

    def write_run(path: Path, arch: str, size: int) -> Path:
        from ferdash.runs.rundir import write_run_info

        path.mkdir()
        write_run_info(path, list(CLASSES), (size, size), **({"architecture": arch} if arch else {}))
        (path / "model.keras").write_bytes(b"not a model")
        return path

    base = ["train", "--data", str(dataset), "--arch", "fernet", "--image-size", str(SIZE),
            "--epochs", "1", "--verbose", "0"]
    cases = {
        "is a 'vgg_fer' run": write_run(tmp_path / "vgg", "vgg_fer", SIZE),
        "its input is 48x48": write_run(tmp_path / "big", "fernet", 48),
        "not a run directory": tmp_path / "missing",
        "not a Keras .keras archive": write_run(tmp_path / "broken", "fernet", SIZE),
        "records no architecture": write_run(tmp_path / "unnamed", None, SIZE),
    }
    assert_runs_refused(main, base, "--init-from", cases, tmp_path, capsys)

    # Seeding a run from itself.
    itself = write_run(tmp_path / "itself", "fernet", SIZE)
    assert main([*base, "--out", str(itself), "--init-from", str(itself)]) == 2
    assert "is the run being trained" in capsys.readouterr().err
