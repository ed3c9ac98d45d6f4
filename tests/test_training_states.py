"""What `train` does with what is already in --out, and the input it refuses before
touching it: finished, half-finished, foreign and broken runs; formats TensorFlow's
loader cannot read; sizes and options a network cannot take."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferdash.runs.rundir import read_evaluation, read_history, read_run_info, write_run_info
from trainingdata import make_image_folder

SIZE = 32


def _config(data: Path, out: Path, **kw):
    from training.train import TrainConfig

    base = dict(data=str(data), arch="fernet", out=str(out), epochs=2, batch_size=8,
                image_size=(SIZE, SIZE), verbose=0, command=["test"])
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "faces", per_class=12, size=SIZE,
                             classes=("happy", "sad"))


class _Stop(BaseException):
    """A stop (kill, Ctrl-C) in the steps after fit."""


@pytest.mark.slow
def test_a_run_stopped_after_fit_is_finished_not_trained_again(
    two_classes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.export_lite
    from training.train import run_training

    out = tmp_path / "run"
    real_export = training.export_lite.export_lite

    def stopped(*args, **kw):
        raise _Stop()

    monkeypatch.setattr(training.export_lite, "export_lite", stopped)
    with pytest.raises(_Stop):
        run_training(_config(two_classes, out), log=lambda *_: None)
    # fit ended (so BackupAndRestore removed the backup) but the run is not finished.
    meta = read_run_info(out).meta
    assert not (out / "backup").exists() and meta["fit_ended"] and meta["finished"] is None
    history = (out / "history.csv").read_text()
    assert not (out / "evaluation.json").exists()

    monkeypatch.setattr(training.export_lite, "export_lite", real_export)
    logs: list[str] = []
    run_training(_config(two_classes, out), log=logs.append)
    assert any("finishing it" in line for line in logs)
    assert not any("training fernet" in line for line in logs)  # no epoch trained again
    assert (out / "history.csv").read_text() == history
    meta = read_run_info(out).meta
    assert meta["finished"] and meta["epochs_completed"] == 2 and meta["lite"]["file"] == "model.tflite"
    assert read_evaluation(out).image_count > 0


def test_a_folder_holding_another_run_is_not_overwritten(two_classes: Path, tmp_path: Path) -> None:
    from training.train import TrainingError, run_training

    out = tmp_path / "hand-made"
    # A run the contract allows (classes and input size only), not made by `train`.
    write_run_info(out, ["happy", "sad"], [SIZE, SIZE])
    (out / "model.keras").write_bytes(b"somebody's model")
    with pytest.raises(TrainingError, match="did not start.*--overwrite"):
        run_training(_config(two_classes, out), log=lambda *_: None)
    assert (out / "model.keras").read_bytes() == b"somebody's model"
    assert json.loads((out / "run.json").read_text()) == {"classes": ["happy", "sad"], "input_size": [SIZE, SIZE]}


def test_a_finished_run_with_other_settings_is_refused(two_classes: Path, tmp_path: Path) -> None:
    from training.__main__ import main

    out = tmp_path / "done"
    write_run_info(out, ["happy", "sad"], [SIZE, SIZE], architecture="fernet", batch_size=8,
                   seed=1234, finished="2026-11-24T00:00:00+00:00")
    args = ["train", "--data", str(two_classes), "--arch", "fernet", "--out", str(out),
            "--image-size", str(SIZE), "--verbose", "0"]
    assert main([*args, "--batch-size", "8"]) == 0  # its own command: nothing to do
    assert main([*args, "--batch-size", "16"]) == 2  # another run's: said, not silently 0


def test_overwrite_with_a_mistyped_data_folder_keeps_the_run(tmp_path: Path, capsys) -> None:
    from training.__main__ import main

    out = tmp_path / "run"
    write_run_info(out, ["happy", "sad"], [SIZE, SIZE], finished="2026-11-24T00:00:00+00:00")
    (out / "model.keras").write_bytes(b"the trained model")
    code = main(["train", "--data", str(tmp_path / "no-such-folder"), "--arch", "fernet",
                 "--out", str(out), "--overwrite", "--image-size", str(SIZE)])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    assert (out / "model.keras").read_bytes() == b"the trained model"


def test_a_failed_command_leaves_no_empty_output_folder(tmp_path: Path) -> None:
    from training.__main__ import main

    out = tmp_path / "new-run"
    assert main(["train", "--data", str(tmp_path / "missing"), "--arch", "fernet", "--out", str(out)]) == 2
    assert not out.exists()


@pytest.mark.parametrize("arch", ["fernet", "vgg_fer"])
def test_an_image_size_the_network_cannot_take_is_refused_before_the_data(
    arch: str, tmp_path: Path, capsys
) -> None:
    from training.__main__ import main

    # The data folder does not exist: the size is refused first, in words.
    code = main(["train", "--data", str(tmp_path / "missing"), "--arch", arch,
                 "--out", str(tmp_path / "run"), "--image-size", "8"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--image-size 8x8 is too small for {arch}" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "option, value, message",
    [("--seed", "-1", "from 0 to"), ("--seed", str(2**32), "from 0 to"),
     ("--class-boost", "sad=1e308", "at most 100"), ("--patience", "-1", "0 or a positive")],
)
def test_option_values_out_of_range_are_refused_by_the_parser(
    option: str, value: str, message: str, tmp_path: Path, capsys
) -> None:
    from training.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(tmp_path), "--arch", "fernet", "--out", str(tmp_path / "r"), option, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_patience_zero_is_accepted() -> None:
    from training.__main__ import build_parser

    args = build_parser().parse_args(
        ["train", "--data", "d", "--arch", "fernet", "--out", "o", "--patience", "0", "--lr-patience", "0"]
    )
    assert args.patience == 0 and args.lr_patience == 0


def _faces_with_unreadable_formats(root: Path, per_class: int) -> Path:
    """happy/sad PNG faces, plus happy/z.gif, happy/z.bmp and a CMYK sad/z.jpg."""
    data = make_image_folder(root, per_class=per_class, size=SIZE, classes=("happy", "sad"))
    grey = Image.fromarray(np.full((SIZE, SIZE), 128, np.uint8))
    grey.save(data / "happy" / "z.gif")
    grey.save(data / "happy" / "z.bmp")
    grey.convert("CMYK").save(data / "sad" / "z.jpg")
    return data


def test_gif_bmp_and_cmyk_jpeg_are_skipped_with_a_reason(tmp_path: Path) -> None:
    from training.data import scan_folder

    data = _faces_with_unreadable_formats(tmp_path / "faces", per_class=3)
    scan = scan_folder(data)
    reasons = dict(scan.bad)
    assert set(reasons) == {"happy/z.gif", "happy/z.bmp", "sad/z.jpg"}
    assert "GIF is not read in greyscale" in reasons["happy/z.gif"]
    assert "BMP is not read in greyscale" in reasons["happy/z.bmp"]
    assert "CMYK" in reasons["sad/z.jpg"]
    assert scan.counts == {"happy": 3, "sad": 3}


@pytest.mark.slow
def test_a_folder_with_gif_bmp_and_cmyk_files_trains(tmp_path: Path) -> None:
    """The files TensorFlow's loader refuses mid-epoch never reach it."""
    from training.train import run_training

    data = _faces_with_unreadable_formats(tmp_path / "faces", per_class=10)
    out = run_training(_config(data, tmp_path / "run", epochs=1), log=lambda *_: None)
    assert read_run_info(out).meta["skipped_images"] == 3
    assert len(read_history(out)) == 1


def test_the_tflite_copy_has_the_model_s_permissions(tmp_path: Path) -> None:
    import os
    import stat

    from tiny_runs import make_tiny_run
    from training.export_lite import export_lite

    run = make_tiny_run(tmp_path, "tiny", ["a", "b"], seed=1)
    os.chmod(run / "model.keras", 0o644)
    path = export_lite(run)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_finished_run_s_command_needs_neither_its_data_nor_its_seed_run(tmp_path: Path, capsys) -> None:
    """docs/training.md's commands that reproduce the shipped runs, on a machine without the data or the
    (git-ignored) seed runs: "already finished", at once."""
    from training.__main__ import main

    out = tmp_path / "fer7"
    write_run_info(out, ["a", "b"], [48, 48], architecture="fernet", init_from="runs/fer7_ft",
                   data="../shared/data/fer2013", finished="2026-11-24T00:00:00+00:00")
    code = main(["train", "--data", "../shared/data/fer2013", "--arch", "fernet", "--out", str(out),
                 "--init-from", "runs/fer7_ft"])
    assert code == 0 and "already holds a finished run" in capsys.readouterr().out


@pytest.mark.slow
def test_a_run_stopped_in_its_first_epoch_starts_over_with_new_settings(
    two_classes: Path, tmp_path: Path
) -> None:
    from training.train import run_training

    out = tmp_path / "run"
    # What a stop during epoch 1 leaves: run.json begun, no backup, fit not ended.
    write_run_info(out, ["happy", "sad"], [SIZE, SIZE], architecture="fernet", batch_size=8,
                   finished=None, fit_ended=None)
    (out / "history.csv").write_text("epoch,accuracy\n")
    run_training(_config(two_classes, out, epochs=1, batch_size=16), log=lambda *_: None)
    meta = read_run_info(out).meta
    assert meta["batch_size"] == 16 and meta["finished"]


class _Crash(Exception):
    pass


@pytest.mark.slow
def test_resuming_with_fewer_epochs_than_trained_is_refused(two_classes: Path, tmp_path: Path) -> None:
    import keras

    from training.train import TrainingError, run_training

    class CrashAtEpoch2(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise _Crash()

    out = tmp_path / "run"
    with pytest.raises(_Crash):
        run_training(_config(two_classes, out, epochs=3, extra_callbacks=[CrashAtEpoch2()]),
                     log=lambda *_: None)
    with pytest.raises(TrainingError, match="trained 2 epochs, more than --epochs 1"):
        run_training(_config(two_classes, out, epochs=1), log=lambda *_: None)
    assert (out / "backup").is_dir()  # still resumable with its own command
    logs: list[str] = []
    run_training(_config(two_classes, out, epochs=2), log=logs.append)  # as many as trained
    assert any("finishing the run" in line for line in logs)
    meta = read_run_info(out).meta
    assert meta["epochs_completed"] == 2 and meta["epochs"] == 2 and meta["finished"]


def test_a_phone_jpeg_stored_as_mpo_is_trained_on(tmp_path: Path) -> None:
    from training.data import scan_folder

    data = make_image_folder(tmp_path / "faces", per_class=3, size=SIZE, classes=("happy", "sad"))
    frames = [Image.fromarray(np.full((SIZE, SIZE, 3), v, np.uint8)) for v in (90, 160)]
    frames[0].save(data / "sad" / "phone.jpg", "MPO", save_all=True, append_images=frames[1:])
    assert Image.open(data / "sad" / "phone.jpg").format == "MPO"
    scan = scan_folder(data)
    assert scan.bad == [] and "sad/phone.jpg" in scan.files["sad"]
