"""Training images/s: our tf.data pipeline vs legacy ``ImageDataGenerator.flow_from_directory``.

    python benchmarks/bench_data_pipeline.py [--data ../shared/data/fer2013/train]
                                             [--per-class 400] [--epochs 3] [--arch r_parity]

Same model (default ``r_parity``, the R app's net, which trained from
``flow_images_from_directory``), same folder, same batch size, measured side by side in
one run. The folder is ``--per-class`` images of each class of FER2013's train/ when
``--data`` exists (linked into a temporary folder that both loaders read), else
generated images. Each loader trains ``--epochs`` epochs after a short warm-up that
pays for tracing; the first epoch of the tf.data pipeline fills its cache, later ones
read decoded images from memory, whereas the generator decodes every PNG every epoch.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))


def make_folder(source: Path | None, per_class: int, tmp: Path) -> Path:
    from training.data import keras_directory, scan_folder

    if source is not None and source.is_dir():
        scan = scan_folder(source, limit_per_class=per_class)
        scan.limited = True  # Always link: both loaders must read exactly these files.
        return keras_directory(scan)
    from trainingdata import make_image_folder

    return make_image_folder(tmp / "generated", per_class=per_class, size=48)


def model_for(arch: str, size: int, classes: int):
    import keras

    from training.architectures import build_model, compile_model

    keras.utils.set_random_seed(0)
    return compile_model(build_model(arch, (size, size), classes), arch)


def time_epochs(model, data, steps: int, epochs: int) -> list[float]:
    """Seconds per epoch of ``steps`` batches."""
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared/data/fer2013/train")
    parser.add_argument("--per-class", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--arch", default="r_parity")
    args = parser.parse_args()

    import tensorflow as tf

    from training.data import load_training_data

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(args.data, args.per_class, Path(tmp))
        size = (args.size, args.size)

        # Ours: the training pipeline itself, validation left out of the timing.
        ours = load_training_data(folder, image_size=size, batch_size=args.batch_size,
                                  validation_split=0.001, log=lambda *_: None)
        n = len(ours.train_files)
        steps = n // args.batch_size
        classes = len(ours.classes)

        legacy_gen = tf.keras.preprocessing.image.ImageDataGenerator()
        legacy = legacy_gen.flow_from_directory(
            str(folder), target_size=size, color_mode="grayscale", class_mode="categorical",
            batch_size=args.batch_size, shuffle=True, seed=0,
        )
        print(f"{folder if args.data.is_dir() else 'generated images'}: {n} images, {classes} classes, "
              f"{args.arch} at {args.size}x{args.size}, batch {args.batch_size}, {steps} steps/epoch, "
              f"{os.cpu_count()} CPU cores, GPUs: {len(tf.config.list_physical_devices('GPU'))}")

        # Input alone (no model): what each loader can feed, the ceiling it puts on a
        # fast model (a GPU); then training the model, what a run on this machine sees.
        feed, train = {}, {}
        loaders = (("tf.data (ours)", ours.train.repeat()), ("ImageDataGenerator", legacy))
        for label, data in loaders:
            iterator = iter(data)
            for _ in range(steps):  # first pass: fills our cache / warms the disk cache
                next(iterator)
            start = time.perf_counter()
            for _ in range(args.epochs * steps):
                next(iterator)
            feed[label] = args.epochs * steps * args.batch_size / (time.perf_counter() - start)
        for label, data in loaders:
            model = model_for(args.arch, args.size, classes)
            model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)  # trace
            times = time_epochs(model, data, steps, args.epochs)
            train[label] = args.epochs * steps * args.batch_size / sum(times)
            per_epoch = ", ".join(f"{steps * args.batch_size / t:.0f}" for t in times)
            print(f"{label:<20} input alone {feed[label]:8.0f} images/s; training {args.arch} "
                  f"{train[label]:6.0f} images/s (per epoch: {per_epoch})", flush=True)
        ours_key, legacy_key = "tf.data (ours)", "ImageDataGenerator"
        print(f"ratio tf.data / ImageDataGenerator: input alone {feed[ours_key] / feed[legacy_key]:.1f}x, "
              f"training {train[ours_key] / train[legacy_key]:.2f}x")

if __name__ == "__main__":
    main()
