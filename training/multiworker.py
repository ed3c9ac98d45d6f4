"""Training on several machines: ``TF_CONFIG``, who writes the run, and the workers agreeing.

Every worker runs the same ``train`` command under ``MultiWorkerMirroredStrategy``. The
chief (the ``chief`` task, else worker 0) writes the run directory; every other worker
writes the same files (checkpoint, backup, history, run.json) to a folder of its own
under the temporary directory, as TensorFlow's multi-worker guide asks, removed once the
run is finished. That folder is also what lets a killed worker resume: its backup and
history are its own copy of the chief's, so ``--out`` need not be on shared storage.

The workers must take every decision together: a collective op that one worker skips
(an early return, an exception, one more variable created) leaves the others waiting
in it for ever. :class:`Team` runs each step that may differ between them (reading
``--out``, the data, a seed run) everywhere and then tells each worker how it went on
the others, the chief's answer winning where there is one to take.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from training.errors import TrainingError

T = TypeVar("T")

#: The ``TF_CONFIG`` task types that train (``ps`` and ``evaluator`` belong to other strategies).
TRAINING_TASKS = ("chief", "worker")


@dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster ``TF_CONFIG`` names."""

    task_type: str
    task_index: int
    #: Training tasks in the cluster (the chief task included).
    workers: int
    #: Whether the cluster has a ``chief`` task (then every ``worker`` is a non-chief).
    has_chief_task: bool

    @property
    def is_chief(self) -> bool:
        if self.has_chief_task:
            return self.task_type == "chief"
        return self.task_index == 0

    @property
    def rank(self) -> int:
        """0 for the chief, then the workers in order: TensorFlow's order of the replicas."""
        return self.task_index + (1 if self.has_chief_task and self.task_type == "worker" else 0)

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_index}"


def from_env(environ: dict[str, str] | None = None) -> Cluster | None:
    """The cluster of ``TF_CONFIG`` when it has more than one training task, else None."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
        spec = config.get("cluster") or {}
        task = config.get("task") or {}
        counts = {t: len(spec.get(t) or []) for t in TRAINING_TASKS}
        task_type, task_index = task.get("type"), int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError) as exc:
        raise TrainingError(f"TF_CONFIG is not a TensorFlow cluster description: {exc}") from exc
    if sum(counts.values()) <= 1:
        return None
    if task_type not in TRAINING_TASKS or not 0 <= task_index < counts[task_type]:
        raise TrainingError(
            f"TF_CONFIG's task {task_type!r} {task_index} is not one of its cluster's "
            f"{' or '.join(TRAINING_TASKS)} tasks"
        )
    return Cluster(task_type, task_index, sum(counts.values()), counts["chief"] > 0)


def worker_dir(out: Path, cluster: Cluster, temp_root: str | Path | None = None) -> Path:
    """Where a non-chief writes its copy of the run ``out``: the same folder each time the
    command is run on this host (its backup is how it resumes), one per run and task,
    in ``temp_root`` (default: the temporary folder, ``TMPDIR``)."""
    digest = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:12]
    name = f"ferdash-{cluster.task_type}{cluster.task_index}-{digest}"
    return Path(temp_root or tempfile.gettempdir()) / name


def remove_worker_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class Team:
    """The workers of one run, each learning how a step went on all the others.

    ``together`` is also a barrier: no worker goes on before every one has done the step.
    """

    def __init__(self, strategy: Any, cluster: Cluster) -> None:
        self.strategy = strategy
        self.cluster = cluster

    @property
    def is_chief(self) -> bool:
        return self.cluster.is_chief

    def rows(self, row: Sequence[int]) -> list[tuple[int, ...]]:
        """Every worker's ``row`` (same length everywhere), the chief's first."""
        import tensorflow as tf

        value = tf.constant([list(row)], dtype=tf.int64)
        per_replica = self.strategy.experimental_distribute_values_from_function(lambda _: value)
        table = self.strategy.gather(per_replica, axis=0).numpy()
        # One row per replica: a worker with several GPUs sends its row once per GPU.
        per_worker = table.shape[0] // self.cluster.workers
        return [tuple(int(v) for v in r) for r in table[::per_worker]]

    def together(
        self,
        stage: str,
        step: Callable[[], T],
        encode: Callable[[T], Sequence[int]] = lambda _: (),
        width: int = 0,
    ) -> tuple[T, list[tuple[int, ...]]]:
        """Run ``step`` here; then, on every worker, raise if it failed anywhere, else
        return its result here and each worker's ``encode(result)`` (``width`` ints)."""
        failure: BaseException | None = None
        result: Any = None
        try:
            result = step()
            row = list(encode(result))
        except Exception as exc:  # Re-raised below, once the others know.
            failure, row = exc, [0] * width
        table = self.rows([int(failure is not None), *row])
        if failure is not None:
            raise failure
        failed = [i for i, r in enumerate(table) if r[0]]
        if failed:
            raise TrainingError(
                f"{stage}: failed on worker(s) {', '.join(map(str, failed))} of "
                f"{self.cluster.workers} (0 is the chief); their output says why"
            )
        return result, [r[1:] for r in table]


class Solo:
    """The one-worker stand-in for :class:`Team`: each step runs here and nowhere else."""

    is_chief = True

    def together(
        self,
        stage: str,
        step: Callable[[], T],
        encode: Callable[[T], Sequence[int]] = lambda _: (),
        width: int = 0,
    ) -> tuple[T, list[tuple[int, ...]]]:
        result = step()
        return result, [tuple(encode(result))]


def patch_keras() -> None:
    """Work around two Keras 3 bugs that make every ``fit`` under a multi-worker
    ``MultiWorkerMirroredStrategy`` fail (keras-team/keras#20585, open; seen with Keras
    3.15 and TensorFlow 2.21), without changing anything for other strategies:

    - before the first step, ``_maybe_symbolic_build`` averages a data batch across the
      workers to learn its shapes, passing the whole (x, y) structure to
      ``strategy.reduce``, which takes one value only ("Attempt to convert a value
      (PerReplica ...) with an unsupported type"): this worker's own batch has the shapes;
    - each step's logs, scalars, are averaged across workers with ``axis=0``
      ("Invalid reduction dimension 0 for input with 0 dimensions",
      tensorflow/tensorflow#72388): scalars are averaged with ``axis=None``.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_ferdash_multi_worker_patch", False):
        return
    multi_worker = trainer._collective_all_reduce_multi_worker
    build = trainer.TensorFlowTrainer._maybe_symbolic_build
    reduce_per_replica = trainer.reduce_per_replica

    def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        if iterator is None or self._distribute_strategy is None or not multi_worker(
            self.distribute_strategy
        ):
            return build(self, iterator=iterator, data_batch=data_batch)
        strategy = self.distribute_strategy
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues)
                else v,
                next(it),
            )
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def _reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None if v.shape.rank == 0 else 0),
                values,
            )
        return reduce_per_replica(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer.reduce_per_replica = _reduce_per_replica
    trainer._ferdash_multi_worker_patch = True
