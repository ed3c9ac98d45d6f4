"""Training on a real, tiny, full filesystem: a clear message before any epoch runs.

``tests/test_training.py`` already covers a SIGKILL mid-run followed by a resume to
exactly the requested epochs, an unwritable output folder, and the free-space check with
``shutil.disk_usage`` patched. What it cannot show is the CLI on an actual small disk:
here a 1 MiB tmpfs is mounted (root only; skipped elsewhere), once with room to spare
for nothing but the write probe and once filled to the last byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from trainingdata import make_dataset


@pytest.fixture()
def small_disk(tmp_path: Path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), 6, 3, 3, size=32)


def train(dataset: Path, out: Path) -> int:
    from training.__main__ import main

    return main(
        ["train", "--data", str(dataset), "--arch", "fernet", "--out", str(out),
         "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--verbose", "0"]
    )


def test_a_disk_too_small_for_the_checkpoints_is_refused_before_training(
    dataset: Path, small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = small_disk / "run"
    assert train(dataset, out) == 2
    err = capsys.readouterr().err
    assert "not enough free disk space" in err and "MiB needed" in err
    # Refused before the first epoch: no model, no history, nothing half-written.
    assert not any((out / name).exists() for name in ("model.keras", "history.csv", "model.partial.keras"))


def test_a_full_disk_is_refused_before_training(
    dataset: Path, small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filler = small_disk / "filler"
    with filler.open("wb", buffering=0) as f:  # unbuffered: nothing left to fail on close
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass  # ENOSPC: the disk is full now
    out = small_disk / "run"
    assert train(dataset, out) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and "No space left on device" in err
    assert not (out / "model.keras").exists() and not (out / "history.csv").exists()
