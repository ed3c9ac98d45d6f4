"""ferdash.training_jobs without a browser: checks, the command line, one job at a time, cancel."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

from ferdash import config, training_jobs
from ferdash.runs.architectures import ARCHITECTURES
from ferdash.training_jobs import (
    JobBusy,
    JobError,
    TrainRequest,
    inspect_data_folder,
    log_tail,
    read_progress,
    run_folder_state,
    validate_run_name,
)
from trainingdata import make_dataset, make_image_folder


@pytest.fixture
def fake_training(monkeypatch, tmp_path: Path):
    """TRAIN_COMMAND replaced by a script that prints its arguments, then sleeps until killed."""
    script = tmp_path / "fake_training.py"
    script.write_text(
        "import sys, time\nprint('args', *sys.argv[1:], flush=True)\n"
        "time.sleep(float(__import__('os').environ.get('FAKE_SLEEP', '60')))\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(training_jobs, "TRAIN_COMMAND", [sys.executable, str(script)])
    yield
    training_jobs.reset_for_tests()


def _wait_until_logged(path: Path, count: int) -> None:
    # The fake prints once Python has started; cancel only after that, or nothing is logged.
    deadline = time.monotonic() + 60
    while log_tail(path).count("args train") < count:
        assert time.monotonic() < deadline, "the fake training never started"
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def _data_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test's own folder is where the Train tab may read data.
    monkeypatch.setenv(config.DATA_ROOTS_ENV, str(tmp_path))


def test_data_folders_outside_the_roots_are_refused_without_a_look(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "inside", per_class=2, size=16, classes=("happy", "sad"))
    assert inspect_data_folder(str(tmp_path / "inside")).classes == ("happy", "sad")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    make_image_folder(outside, per_class=2, size=16, classes=("happy", "sad"))
    try:
        # The same answer whether the folder exists or not: no probing the server.
        for raw in ("/", "/tmp", "/etc", str(outside), str(outside / "missing"),
                    str(tmp_path / ".." / outside.name), "~"):
            with pytest.raises(JobError, match=f"must be inside {tmp_path}.*{config.DATA_ROOTS_ENV}"):
                inspect_data_folder(raw)
        (tmp_path / "link").symlink_to(outside)  # planted inside, leading out
        with pytest.raises(JobError, match="must be inside"):
            inspect_data_folder(str(tmp_path / "link"))
    finally:
        shutil.rmtree(outside)


def test_a_path_the_file_system_cannot_take_gets_words_not_an_errno(tmp_path: Path) -> None:
    for raw in (str(tmp_path / ("x" * 300)), str(tmp_path / ("d" * 200) / ("e" * 200)),
                str(tmp_path) + "/a\x00b"):
        with pytest.raises(JobError) as caught:
            inspect_data_folder(raw)
        assert "Errno" not in str(caught.value)


def test_run_names_are_names_not_paths() -> None:
    assert validate_run_name(" fer7_small-2 ") == "fer7_small-2"
    for bad in ("", "../x", "a/b", "/abs", ".hidden", "-flag", "a b", "é", "x" * 65):
        with pytest.raises(JobError):
            validate_run_name(bad)


def test_data_folders_are_checked_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="does not exist"):
        inspect_data_folder(str(tmp_path / "missing"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(JobError, match="not a folder"):
        inspect_data_folder(str(tmp_path / "file.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(JobError, match="no class sub-folders"):
        inspect_data_folder(str(tmp_path / "empty"))
    (tmp_path / "no_images" / "happy").mkdir(parents=True)
    (tmp_path / "no_images" / "sad").mkdir()
    (tmp_path / "no_images" / "sad" / "notes.txt").write_text("x")
    with pytest.raises(JobError, match="at least two class sub-folders with images"):
        inspect_data_folder(str(tmp_path / "no_images"))
    with pytest.raises(JobError, match="Type the path"):
        inspect_data_folder("  ")

    flat = inspect_data_folder(str(make_image_folder(tmp_path / "flat", 2, 16, ("happy", "sad"))))
    assert flat.classes == ("happy", "sad") and flat.train_root == flat.path and not flat.has_val
    assert flat.empty == ()
    # Folders with nothing the training command trains on (GIF and BMP it skips) are
    # named, so that a request leaves them out explicitly.
    (tmp_path / "flat" / "fear").mkdir()
    (tmp_path / "flat" / "gifs").mkdir()
    (tmp_path / "flat" / "gifs" / "a.gif").write_bytes(b"GIF89a")
    with_empty = inspect_data_folder(str(tmp_path / "flat"))
    assert with_empty.classes == ("happy", "sad") and with_empty.empty == ("fear", "gifs")
    prepared = inspect_data_folder(str(make_dataset(tmp_path / "prep", 2, 1, size=16)))
    assert prepared.train_root.name == "train" and prepared.has_val and len(prepared.classes) == 7


def test_request_builds_the_training_command_line(tmp_path: Path) -> None:
    request = TrainRequest(
        data=tmp_path / "data", arch="jaramillo", out=tmp_path / "runs" / "r1", epochs=3,
        classes=("happy", "sad"), batch_size=8, image_size=24, augment=False,
        class_weights="balanced", limit_per_class=10, overwrite=True,
    )
    argv = request.argv()
    assert argv[:9] == ["train", "--data", str(tmp_path / "data"), "--arch", "jaramillo",
                        "--out", str(tmp_path / "runs" / "r1"), "--epochs", "3"]
    for pair in (["--classes", "happy,sad"], ["--image-size", "24"], ["--limit", "10"],
                 ["--class-weights", "balanced"], ["--batch-size", "8"]):
        i = argv.index(pair[0])
        assert argv[i : i + 2] == pair
    assert "--no-augment" in argv and "--overwrite" in argv
    assert "--overwrite" not in request.argv(overwrite=False)  # a resume continues
    # The same command line is what the training CLI parses.
    from training.__main__ import build_parser

    args = build_parser().parse_args(argv)
    assert args.epochs == 3 and args.classes == ["happy", "sad"] and args.image_size == (24, 24)
    with pytest.raises(JobError):
        TrainRequest(data=tmp_path, arch="nope", out=tmp_path / "r", epochs=1)
    with pytest.raises(JobError):
        TrainRequest(data=tmp_path, arch="fernet", out=tmp_path / "r", epochs=0)


def test_every_listed_architecture_is_a_trainable_network() -> None:
    from training.architectures import REGISTRY

    assert set(ARCHITECTURES) == set(REGISTRY)
    for name, spec in ARCHITECTURES.items():
        assert REGISTRY[name].spec is spec


def test_one_job_at_a_time_cancel_and_resume(fake_training, tmp_path: Path) -> None:
    request = TrainRequest(data=tmp_path, arch="fernet", out=tmp_path / "runs" / "r1", epochs=2,
                           overwrite=True)
    job = training_jobs.start_job(request)
    assert training_jobs.current_job() is job and job.state == "running"
    with pytest.raises(JobBusy, match="already training"):
        training_jobs.start_job(request)
    _wait_until_logged(request.out / training_jobs.LOG_FILE, 1)
    job.cancel(grace=2.0)
    job.wait(timeout=30)
    assert job.state == "cancelled" and not job.running

    resumed = training_jobs.start_job(request, resume=True)
    assert resumed is training_jobs.current_job() and resumed.resumed
    assert "--overwrite" not in resumed.command
    _wait_until_logged(request.out / training_jobs.LOG_FILE, 2)
    resumed.cancel(grace=2.0)
    resumed.wait(timeout=30)
    log = log_tail(request.out / training_jobs.LOG_FILE)
    assert log.count("args train") == 2  # both processes wrote to the run's log


def test_resume_replaces_the_old_run_when_the_replace_was_stopped_before_it(
    fake_training, tmp_path: Path
) -> None:
    from datetime import datetime, timezone

    from ferdash.runs.rundir import write_run_info

    out = tmp_path / "runs" / "r1"
    # A finished run of that name, trained long ago, that "Replace" is to discard.
    write_run_info(out, ["happy", "sad"], [48, 48], created="2026-01-01T00:00:00+00:00",
                   finished="2026-01-01T01:00:00+00:00")
    (out / training_jobs.LOG_FILE).write_text("an earlier dashboard run\n")
    request = TrainRequest(data=tmp_path, arch="fernet", out=out, epochs=2, overwrite=True)
    job = training_jobs.start_job(request)
    _wait_until_logged(out / training_jobs.LOG_FILE, 1)
    job.cancel(grace=2.0)  # before the command got as far as clearing the old run
    job.wait(timeout=30)
    resumed = training_jobs.start_job(request, resume=True)
    assert "--overwrite" in resumed.command  # the old run is still there: replace it
    _wait_until_logged(out / training_jobs.LOG_FILE, 2)
    resumed.cancel(grace=2.0)
    resumed.wait(timeout=30)
    # Once the replacing run has begun (its run.json is new), Resume continues it.
    write_run_info(out, ["happy", "sad"], [48, 48],
                   created=datetime.now(timezone.utc).isoformat(timespec="seconds"), finished=None)
    again = training_jobs.start_job(request, resume=True)
    assert "--overwrite" not in again.command
    again.cancel(grace=2.0)
    again.wait(timeout=30)


def test_failure_reason_is_the_last_attempt_s() -> None:
    log = "$ train a\nerror: other settings (batch_size)\n$ train a --overwrite\nEpoch 1/2\n"
    assert training_jobs.failure_reason(log) is None  # the last attempt named no reason
    assert training_jobs.failure_reason(log + "MemoryError\n") == "MemoryError"


def test_a_failing_command_is_failed_with_its_log(fake_training, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(training_jobs, "TRAIN_COMMAND",
                        [sys.executable, "-c", "import sys; print('error: bad data'); sys.exit(2)"])
    job = training_jobs.start_job(TrainRequest(data=tmp_path, arch="fernet", out=tmp_path / "r", epochs=1))
    assert job.wait(timeout=30) == 2
    assert job.state == "failed"
    assert "error: bad data" in job.log_tail()


def test_progress_and_folder_state_from_the_run_files(tmp_path: Path) -> None:
    from ferdash.runs.rundir import write_run_info

    out = tmp_path / "run"
    assert run_folder_state(out) == "new"
    assert read_progress(out, 5).done == 0
    out.mkdir()
    (out / "history.csv").write_text("epoch,loss,accuracy\n0,1.0,0.5\n1,0.8,0.6\n", encoding="utf-8")
    progress = read_progress(out, 5)
    assert (progress.done, progress.total, progress.fraction) == (2, 5, 0.4)
    write_run_info(out, ["a", "b"], (24, 24), finished=None)
    assert run_folder_state(out) == "unfinished"
    write_run_info(out, ["a", "b"], (24, 24), finished="2026-01-01T00:00:00+00:00")
    assert run_folder_state(out) == "finished"
    (out / "history.csv").write_text("epoch,loss\n", encoding="utf-8")  # header only, mid-write
    assert read_progress(out, 5).done == 0


def test_dashboard_replaces_only_runs_it_trained(tmp_path: Path) -> None:
    from ferdash.config import DEFAULT_MODELS_DIR
    from ferdash.runs.rundir import write_run_info

    # A shipped run (no train.log): never replaced from the browser.
    with pytest.raises(training_jobs.JobError, match="not trained from this dashboard"):
        training_jobs.check_replaceable(DEFAULT_MODELS_DIR / "happy_sad")
    cli_run = tmp_path / "cli"
    write_run_info(cli_run, ["a", "b"], (24, 24), finished="2026-01-01T00:00:00")
    with pytest.raises(training_jobs.JobError):
        training_jobs.check_replaceable(cli_run)
    # A run the dashboard started, or a name not used yet: fine.
    (cli_run / training_jobs.LOG_FILE).write_text("log")
    training_jobs.check_replaceable(cli_run)
    training_jobs.check_replaceable(tmp_path / "new-name")


def test_data_folder_check_is_bounded_on_huge_trees(tmp_path: Path) -> None:
    # "/" typed in the Train panel must answer at once: the scan never walks a whole disk.
    deep = tmp_path / "a" / "b"
    for i in range(training_jobs._SCAN_BUDGET + 10):
        (tmp_path / "a" / f"f{i}.txt").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "a" / f"f{i}.txt").write_bytes(b"")
    deep.mkdir(parents=True)
    (deep / "x.png").write_bytes(b"")
    (tmp_path / "c").mkdir()
    with pytest.raises(training_jobs.JobError, match="at least two class sub-folders"):
        training_jobs.inspect_data_folder(str(tmp_path))


def test_image_extensions_are_the_training_commands() -> None:
    from ferdash.data_layout import LISTED_EXTENSIONS, TRAINABLE_EXTENSIONS

    assert set(TRAINABLE_EXTENSIONS) < set(LISTED_EXTENSIONS)  # the others reported, skipped


def test_smallest_image_sizes_are_the_networks_own() -> None:
    from training.architectures import build_model

    for name, spec in ARCHITECTURES.items():
        smallest = spec.min_image_size
        build_model(name, (smallest, smallest), 2)
        with pytest.raises(ValueError):
            build_model(name, (smallest - 1, smallest - 1), 2)
    with pytest.raises(JobError, match="singh_nasoz needs images of at least 39x39"):
        TrainRequest(data=Path("d"), arch="singh_nasoz", out=Path("o"), epochs=1, image_size=38)


def test_failure_reason_is_read_from_the_log() -> None:
    log = "Epoch 1/2\n\x1b[1mModel\x1b[0m\nerror: --image-size 8x8 is too small for vgg_fer\n"
    assert training_jobs.failure_reason(log) == "--image-size 8x8 is too small for vgg_fer"
    traceback = "Traceback (most recent call last):\n  File \"x\", line 1\nValueError: bad shape\n"
    assert training_jobs.failure_reason(traceback) == "ValueError: bad shape"
    assert training_jobs.failure_reason("Epoch 1/2\nloss: 1.0\n") is None


def test_log_tail_drops_terminal_colour_codes(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text("\x1b[1mModel: \"fernet\"\x1b[0m\nerror: it failed\n")
    assert training_jobs.log_tail(log) == 'Model: "fernet"\nerror: it failed'
