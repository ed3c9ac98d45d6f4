"""Where training runs: CPU, one GPU (mixed precision), several (MirroredStrategy), or
several machines (MultiWorkerMirroredStrategy, see :mod:`training.multiworker`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.multiworker import Cluster


@dataclass
class DeviceSetup:
    kind: str  # "cpu" or "gpu"
    name: str
    replicas: int
    mixed_precision: bool
    strategy: Any
    #: Machines training together (1 unless ``TF_CONFIG`` names a cluster).
    workers: int = 1

    @property
    def label(self) -> str:
        label = f"{self.kind} ({self.name})" if self.name else self.kind
        return label + (f" on each of {self.workers} workers" if self.workers > 1 else "")


def setup_device(
    mixed_precision: str = "auto", force_cpu: bool = False, cluster: Cluster | None = None
) -> DeviceSetup:
    """Pick the strategy and precision policy; call before any model is built.

    ``mixed_precision``: "auto" (on with a GPU: float16 maths on tensor cores roughly
    doubles throughput, while on a CPU it only slows things down), "on" or "off".
    With a ``cluster``, call it before TensorFlow runs anything at all: the strategy
    configures collective ops, which TensorFlow allows only at program start-up.
    """
    import keras
    import tensorflow as tf

    gpus = [] if force_cpu else tf.config.list_physical_devices("GPU")
    if force_cpu:
        tf.config.set_visible_devices([], "GPU")
    for gpu in gpus:
        try:
            # Share the card with the app or another run instead of grabbing it all.
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # Already initialised: growth can no longer be set; harmless.
    if gpus:
        names = []
        for gpu in gpus:
            try:
                names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
            except Exception:  # Details are best-effort, for run.json only.
                names.append(gpu.name)
        name = ", ".join(sorted(set(names))) + (f" x{len(gpus)}" if len(gpus) > 1 else "")
        strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
        kind = "gpu"
    else:
        import platform

        name = platform.processor() or platform.machine()
        strategy = tf.distribute.get_strategy()
        kind = "cpu"
    if cluster is not None:
        from training.multiworker import patch_keras

        patch_keras()
        # It reads TF_CONFIG itself, and uses this machine's GPUs (or its CPU) as its
        # local replicas, all-reducing over them and the other workers' in one step.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    use_mp = mixed_precision == "on" or (mixed_precision == "auto" and kind == "gpu")
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mp else "float32")
    return DeviceSetup(
        kind=kind,
        name=name,
        replicas=int(strategy.num_replicas_in_sync),
        mixed_precision=use_mp,
        strategy=strategy,
        workers=cluster.workers if cluster is not None else 1,
    )
