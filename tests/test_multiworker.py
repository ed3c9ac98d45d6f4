"""Training on two machines, played by two worker processes on this one.

Each worker gets its own ``TF_CONFIG`` (a two-worker cluster on free localhost ports)
and its own ``TMPDIR``; ``MultiWorkerMirroredStrategy`` all-reduces over the CPU with
collective ops on localhost. One test walks a run through its life: both workers killed
in the second epoch, both restarted (it continues at epoch 2), then run again (nothing
is trained): about a minute and a half on two CPU cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ferdash.runs import model_store
from ferdash.runs.rundir import BACKUP_DIR, HISTORY_FILE, RUN_FILE, read_history, read_run_info
from training import multiworker
from training.errors import TrainingError
from tiny_runs import empty_cache  # noqa: F401 (fixture)
from trainingdata import CLASSES, make_dataset

REPO = Path(__file__).resolve().parent.parent
SIZE = 32
WORKERS = 2
#: Seconds a worker may take for anything it is waited for (start-up, an epoch, finishing).
PATIENCE = 240

TRAIN = ["--arch", "fernet", "--epochs", "2", "--batch-size", "8", "--image-size", str(SIZE), "--verbose", "0"]

# The first launch: the same run as TRAIN's, pausing once epoch 0 is backed up (inside
# epoch 1), so that the test kills the workers where a real failure could.
_DRIVER = """
import sys, time
from pathlib import Path
import keras
from training.train import TrainConfig, run_training

class PauseInEpoch1(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if self._epoch == 1:
            Path(sys.argv[3]).write_text("paused")
            time.sleep(600)

run_training(TrainConfig(data=sys.argv[1], arch="fernet", out=sys.argv[2], epochs=2,
    batch_size=8, image_size=(32, 32), verbose=0, extra_callbacks=[PauseInEpoch1()]))
"""


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:  # All bound at once, so the ports differ.
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Cluster:
    """Two worker processes, one launch at a time, each writing its output to a file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmpdirs = [root / f"tmp{i}" for i in range(WORKERS)]
        for d in self.tmpdirs:
            d.mkdir()
        self.launches = 0
        self.procs: list[subprocess.Popen] = []

    def start(self, argv_for: list[list[str]]) -> None:
        self.launches += 1
        # Fresh ports each launch: a killed worker's may not be free again yet.
        workers = [f"localhost:{p}" for p in _free_ports(WORKERS)]
        self.procs = []
        for i, argv in enumerate(argv_for):
            env = {
                **os.environ,
                "PYTHONPATH": str(REPO),
                "TF_CPP_MIN_LOG_LEVEL": "3",
                "TMPDIR": str(self.tmpdirs[i]),
                "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}),
            }
            # Files, not pipes: nobody reads a pipe while the workers train, and a full
            # one would block its worker (and, through the collectives, the other).
            log = self.log(i).open("wb")
            self.procs.append(subprocess.Popen(
                [sys.executable, *argv], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            ))
            log.close()

    def worker_copy(self, out: Path) -> Path:
        """The folder the non-chief worker writes its copy of ``out`` to."""
        worker = multiworker.Cluster("worker", 1, WORKERS, has_chief_task=False)
        return multiworker.worker_dir(out, worker, self.tmpdirs[1])

    def log(self, i: int) -> Path:
        return self.root / f"launch{self.launches}-worker{i}.log"

    def output(self, i: int) -> str:
        return self.log(i).read_text(errors="replace")

    def wait(self) -> list[int]:
        try:
            return [p.wait(PATIENCE) for p in self.procs]
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("a worker hung:\n" + "\n".join(self.output(i)[-3000:] for i in range(WORKERS)))

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(30)


def _cli(data: Path, out: Path) -> list[str]:
    return ["-m", "training", "train", "--data", str(data), "--out", str(out), *TRAIN]


@pytest.mark.slow
def test_two_workers_train_one_run_resume_it_and_leave_it_finished(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", 12, 4, 0, size=SIZE)
    out = tmp_path / "run"
    cluster = Cluster(tmp_path)
    try:
        markers = [tmp_path / f"paused{i}" for i in range(WORKERS)]
        cluster.start([["-c", _DRIVER, str(data), str(out), str(markers[i])] for i in range(WORKERS)])
        deadline = time.monotonic() + PATIENCE
        while not markers[0].exists():
            if any(p.poll() is not None for p in cluster.procs) or time.monotonic() > deadline:
                cluster.kill()
                pytest.fail("the chief never reached epoch 1:\n" + cluster.output(0)[-3000:] + cluster.output(1)[-3000:])
            time.sleep(0.2)
        cluster.kill()
        assert read_history(out)["epoch"].astype(int).tolist() == [0]
        assert (out / BACKUP_DIR).is_dir()
        # The other worker's backup is its own, in its temporary folder.
        copy = cluster.worker_copy(out)
        assert (copy / BACKUP_DIR).is_dir() and (copy / HISTORY_FILE).is_file()

        cluster.start([_cli(data, out)] * WORKERS)
        assert cluster.wait() == [0, 0], cluster.output(0)[-3000:] + cluster.output(1)[-3000:]
    finally:
        cluster.kill()
    assert "resuming" in cluster.output(0) and "at epoch 2 of 2" in cluster.output(0)
    assert "resuming" in cluster.output(1)  # from its own copy
    assert read_history(out)["epoch"].astype(int).tolist() == [0, 1]

    # Only the chief's run directory is left: the other worker removed its copy.
    assert not cluster.worker_copy(out).exists()
    assert {p.name for p in out.iterdir()} == {
        "run.json", "history.csv", "model.keras", "model.tflite", "evaluation.json", "logs"
    }
    info = read_run_info(out)
    assert info.meta["workers"] == WORKERS and info.meta["replicas"] == WORKERS
    assert info.meta["epochs_completed"] == 2 and info.meta["finished"]
    loaded = model_store.get_loaded_run(info)
    probs = loaded.predict(np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 1)))
    assert probs.shape == (3, len(CLASSES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    # A finished run is not trained again, on any worker.
    before = (out / RUN_FILE).read_bytes(), (out / HISTORY_FILE).read_bytes()
    cluster.start([_cli(data, out)] * WORKERS)
    try:
        assert cluster.wait() == [0, 0], cluster.output(0)[-3000:] + cluster.output(1)[-3000:]
    finally:
        cluster.kill()
    assert "already holds a finished run" in cluster.output(0)
    assert ((out / RUN_FILE).read_bytes(), (out / HISTORY_FILE).read_bytes()) == before
    assert not cluster.worker_copy(out).exists()


def _config(cluster: dict, task_type: str, index: int) -> dict[str, str]:
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})}


def test_tf_config_names_the_chief_or_leaves_training_on_one_machine() -> None:
    two = {"worker": ["a:1", "b:1"]}
    assert multiworker.from_env({}) is None
    assert multiworker.from_env(_config({"worker": ["a:1"]}, "worker", 0)) is None
    assert [multiworker.from_env(_config(two, "worker", i)).is_chief for i in (0, 1)] == [True, False]
    with_chief = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    chief = multiworker.from_env(_config(with_chief, "chief", 0))
    workers = [multiworker.from_env(_config(with_chief, "worker", i)) for i in (0, 1)]
    assert chief.is_chief and chief.workers == 3 and not any(w.is_chief for w in workers)
    assert [chief.rank, *(w.rank for w in workers)] == [0, 1, 2]  # TensorFlow's replica order
    for bad in ("{not json", json.dumps({"cluster": two, "task": {"type": "ps", "index": 0}}),
                json.dumps({"cluster": two, "task": {"type": "worker", "index": 2}})):
        with pytest.raises(TrainingError):
            multiworker.from_env({"TF_CONFIG": bad})
