"""Training throughput (images/s) of every registered architecture on this machine.

    python benchmarks/bench_architectures.py [--size 48] [--batch-size 64] [--steps 12]
                                             [--arch fernet --arch vgg_fer ...]

Each architecture trains on in-memory random 0-255 images (the input pipeline is
measured by bench_data_pipeline.py, not here): a few warm-up steps pay for tracing,
then ``--steps`` timed steps. r_parity runs at ``--size`` too (its original 244x244
would take minutes per architecture here; ``--r-parity-size 244`` measures it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(name: str, size: int, batch: int, steps: int, augment: bool) -> tuple[float, float, int]:
    """(images per wall second, images per CPU second of this process, parameters)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from training.architectures import build_model, compile_model

    keras.utils.set_random_seed(0)
    model = compile_model(build_model(name, (size, size), 7, augment=augment, seed=0), name)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch * 4, size, size, 1)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 7, batch * 4), 7)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache().repeat()
    model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)  # trace + warm caches
    start, cpu_start = time.perf_counter(), time.process_time()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return steps * batch / elapsed, steps * batch / cpu, model.count_params()


def main() -> None:
    from training.architectures import REGISTRY

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--r-parity-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--arch", action="append", choices=sorted(REGISTRY))
    args = parser.parse_args()
    import tensorflow as tf

    print(f"tensorflow {tf.__version__}, {os.cpu_count()} CPU cores, "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}; batch {args.batch_size}, "
          f"{args.steps} timed steps")
    # Images per CPU-second is what the machine would do alone (times its cores, if the
    # maths scales), even while other processes share it; wall-clock rate is what a run
    # sees now.
    print(f"{'architecture':<22} {'input':>7} {'params':>11} {'train images/s':>15} {'per CPU-s':>10}")
    for name in args.arch or list(REGISTRY):
        size = args.r_parity_size if name == "r_parity" and args.r_parity_size else args.size
        variants = [False, True] if REGISTRY[name].default_augment else [False]
        for augment in variants:
            rate, per_cpu, params = measure(name, size, args.batch_size, args.steps, augment)
            label = name + (" +augment" if augment else "")
            print(f"{label:<22} {f'{size}x{size}':>7} {params:>11,} {rate:>15.1f} {per_cpu:>10.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
