"""Image folders to ``tf.data`` pipelines, skipping files that would crash them.

``keras.utils.image_dataset_from_directory`` decodes lazily, so one corrupt PNG kills
training mid-epoch. We therefore list the folder the way Keras does, fully decode every
file once with Pillow, and when anything is unreadable (or ``--limit`` trims the
folder) point Keras at a mirror of symbolic links to the good files only. The decoding
itself stays Keras's.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ferdash import data_layout
from ferdash.data_layout import LISTED_EXTENSIONS

#: Pillow formats that Keras's loader decodes in greyscale (``channels=1``); it refuses
#: GIF and BMP so (mid-epoch), and CMYK JPEGs whatever the channels.
_TF_DECODABLE = {"PNG", "JPEG", "MPO"}  # MPO: a phone's JPEG with extra frames


class DataError(ValueError):
    """A data folder that cannot be trained or evaluated on."""


@dataclass
class FolderScan:
    """The usable images of a class-per-subfolder tree."""

    root: Path
    classes: list[str]
    #: Relative paths (to ``root``) of readable images, per class, sorted.
    files: dict[str, list[str]]
    #: (relative path, reason) of every image that was skipped as unreadable.
    bad: list[tuple[str, str]] = field(default_factory=list)
    limited: bool = False

    @property
    def counts(self) -> dict[str, int]:
        return {c: len(self.files[c]) for c in self.classes}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def needs_mirror(self) -> bool:
        return bool(self.bad) or self.limited


def list_class_folders(root: Path) -> list[str]:
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist or is not a folder")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_image(path: Path) -> str | None:
    """Why ``path`` cannot be decoded, or None if it can."""
    try:
        with Image.open(path) as img:
            fmt = img.format
            img.load()  # Decode every pixel: a truncated PNG only fails here.
        mode = img.mode
    except Exception as exc:  # Pillow raises many types; all mean "unreadable".
        return f"{type(exc).__name__}: {exc}"
    if fmt not in _TF_DECODABLE:
        return f"{fmt} is not read in greyscale by TensorFlow's loader: convert it to PNG"
    if mode == "CMYK":
        return "a CMYK JPEG is not read by TensorFlow's loader: convert it to PNG or RGB JPEG"
    return None


def scan_folder(
    root: str | Path,
    classes: list[str] | None = None,
    limit_per_class: int | None = None,
) -> FolderScan:
    """List and validate ``root/<class>/*`` images; ``classes`` picks (and orders) a subset."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    present = list_class_folders(root)
    if classes is None:
        classes = present
    missing = [c for c in classes if c not in present]
    if missing:
        raise DataError(
            f"class folder(s) {', '.join(missing)} missing in {root} (found: {', '.join(present)})"
        )
    if len(classes) < 2:
        raise DataError(f"need at least 2 classes, got {classes} in {root}")
    files: dict[str, list[str]] = {}
    bad: list[tuple[str, str]] = []
    limited = False
    for cls in classes:
        # os.walk + sorted, like Keras's index_directory, so that --limit keeps the same
        # files Keras would list first.
        found: list[str] = []
        for dirpath, _, names in sorted(os.walk(root / cls, followlinks=True), key=lambda w: w[0]):
            for fname in sorted(names):
                if fname.lower().endswith(LISTED_EXTENSIONS):
                    found.append(os.path.relpath(os.path.join(dirpath, fname), root))
        if limit_per_class is not None and len(found) > limit_per_class:
            found = found[:limit_per_class]
            limited = True
        good = []
        for rel in found:
            reason = _check_image(root / rel)
            if reason is None:
                good.append(rel)
            else:
                bad.append((rel, reason))
        if not good:
            raise DataError(f"no readable images for class {cls!r} in {root / cls}")
        files[cls] = good
    return FolderScan(root=root, classes=list(classes), files=files, bad=bad, limited=limited)


def report_skipped(scan: FolderScan, log=print) -> None:
    if not scan.bad:
        return
    log(f"skipped {len(scan.bad)} unreadable image(s) in {scan.root}:")
    for rel, reason in scan.bad[:20]:
        log(f"  {rel}: {reason}")
    if len(scan.bad) > 20:
        log(f"  ... and {len(scan.bad) - 20} more")


def keras_directory(scan: FolderScan) -> Path:
    """A folder that holds exactly ``scan``'s good files, for image_dataset_from_directory.

    The folder itself when nothing was skipped; otherwise a temporary tree of symbolic
    links (removed at exit), so Keras never opens a file we know it cannot decode.
    """
    if not scan.needs_mirror:
        return scan.root
    mirror = Path(tempfile.mkdtemp(prefix="ferdash-images-"))
    atexit.register(shutil.rmtree, mirror, ignore_errors=True)
    for cls in scan.classes:
        for rel in scan.files[cls]:
            link = mirror / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((scan.root / rel).resolve())
    return mirror


def relative_to_scan(path: str, directory: Path) -> str:
    """A dataset ``file_paths`` entry, relative to the data folder (mirror or not)."""
    return Path(os.path.relpath(path, directory)).as_posix()


@dataclass
class Datasets:
    train: object  # tf.data.Dataset of (images float32 0-255, one-hot labels), batched
    val: object
    classes: list[str]
    train_files: list[str]
    val_files: list[str]
    #: "folder" (DIR/val) or "split" (a seeded validation_split of DIR/train).
    val_source: str
    val_dir: Path
    train_counts: dict[str, int]
    scans: list[FolderScan]


def load_training_data(
    data: str | Path,
    *,
    image_size: tuple[int, int],
    batch_size: int,
    classes: list[str] | None = None,
    validation_split: float = 0.1,
    seed: int = 1234,
    limit_per_class: int | None = None,
    cache: bool = True,
    teacher: Callable[[np.ndarray], np.ndarray] | None = None,
    teacher_weight: float = 0.5,
    log=print,
) -> Datasets:
    """Training and validation pipelines for ``data`` (see :mod:`ferdash.data_layout`).

    Validation is ``data/val`` when that folder exists, else a seeded
    ``validation_split`` of the training folder.

    ``teacher`` (a batch of raw 0-255 images in, probabilities over the same classes
    out) makes each training target ``teacher_weight`` times the teacher's
    probabilities plus the rest times the one-hot label (knowledge distillation); it
    runs once per image, before the cache. Validation keeps the plain labels.
    """
    import keras
    import tensorflow as tf

    data = Path(data)
    train_root = data_layout.train_root(data)
    val_root = data_layout.val_folder(data)
    if classes is None:
        classes = list_class_folders(train_root)
    classes = sorted(classes)  # The contract's output order: sorted names.
    train_scan = scan_folder(train_root, classes, limit_per_class)
    report_skipped(train_scan, log)
    common = dict(
        labels="inferred",
        label_mode="categorical",
        class_names=classes,
        color_mode="grayscale",
        image_size=image_size,
        batch_size=None,  # Batched after cache + shuffle below.
        follow_links=True,
        verbose=False,
    )
    scans = [train_scan]
    train_dir = keras_directory(train_scan)
    if val_root is not None:
        val_scan = scan_folder(val_root, classes, limit_per_class)
        report_skipped(val_scan, log)
        scans.append(val_scan)
        val_dir = keras_directory(val_scan)
        train_ds = keras.utils.image_dataset_from_directory(
            train_dir, shuffle=True, seed=seed, **common
        )
        val_ds = keras.utils.image_dataset_from_directory(val_dir, shuffle=False, **common)
        val_source, val_data_dir = "folder", val_root
        val_files = [relative_to_scan(p, val_dir) for p in val_ds.file_paths]
        train_files = [relative_to_scan(p, train_dir) for p in train_ds.file_paths]
    else:
        if int(validation_split * train_scan.total) < 1:
            # Keras would then return an *empty training* set (samples[:-0]).
            raise DataError(
                f"{train_scan.total} images are too few for a validation split of "
                f"{validation_split}; add a val/ folder or more images"
            )
        train_ds, val_ds = keras.utils.image_dataset_from_directory(
            train_dir,
            shuffle=True,
            seed=seed,
            validation_split=validation_split,
            subset="both",
            **common,
        )
        val_source, val_data_dir = "split", train_root
        train_files = [relative_to_scan(p, train_dir) for p in train_ds.file_paths]
        val_files = [relative_to_scan(p, train_dir) for p in val_ds.file_paths]
        # The validation subset is built unshuffled, so file_paths match its order.

    counts = Counter(Path(f).parts[0] for f in train_files)
    train_counts = {c: int(counts.get(c, 0)) for c in classes}

    def finish(ds: tf.data.Dataset, training: bool) -> tf.data.Dataset:
        # uint8 in the cache: a quarter of the memory of float32, and pixels are 8-bit
        # anyway (exact when no resize happens, as for 48x48 FER2013).
        ds = ds.map(
            lambda x, y: (tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        if training and teacher is not None:
            ds = _distilled(ds, teacher, teacher_weight, len(classes), len(train_files))
        if cache:
            ds = ds.cache()
        if training:
            ds = ds.shuffle(min(len(train_files), 30000), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
        # Under MultiWorkerMirroredStrategy (a no-op otherwise): every worker reads the
        # whole folder and keeps its share of each global batch. Sharding by file cannot
        # apply, the pipeline starts from a list of names, and AUTO would only warn before
        # falling back to this; the shares are disjoint because every worker shuffles
        # with the same seed.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return ds.prefetch(tf.data.AUTOTUNE).with_options(options)

    return Datasets(
        train=finish(train_ds, True),
        val=finish(val_ds, False),
        classes=classes,
        train_files=train_files,
        val_files=val_files,
        val_source=val_source,
        val_dir=val_data_dir,
        train_counts=train_counts,
        scans=scans,
    )


#: Images per teacher call while the targets are made.
TEACHER_BATCH = 256


def _distilled(
    ds: Any, teacher: Callable[[np.ndarray], np.ndarray], weight: float, n_classes: int, count: int
) -> Any:
    """``ds`` with each label mixed with the teacher's probabilities (see
    :func:`load_training_data`). The teacher is called from Python (it is the app's
    TF Lite engine, not a TensorFlow graph) on batches of :data:`TEACHER_BATCH`."""
    import tensorflow as tf

    def soft(images: Any) -> np.ndarray:
        probs = np.asarray(teacher(images.numpy().astype(np.float32)), dtype=np.float32)
        if probs.shape != (len(images), n_classes):
            raise ValueError(f"the teacher returned {probs.shape}, not ({len(images)}, {n_classes})")
        return probs

    def mix(images: Any, labels: Any) -> tuple[Any, Any]:
        probs = tf.py_function(soft, [images], tf.float32)
        probs.set_shape(labels.shape)
        return images, weight * probs + (1.0 - weight) * labels

    # unbatch() forgets the length, which Keras needs to count an epoch's steps.
    return ds.batch(TEACHER_BATCH).map(mix).unbatch().apply(tf.data.experimental.assert_cardinality(count))


def load_eval_data(
    data: str | Path,
    *,
    classes: list[str],
    image_size: tuple[int, int],
    batch_size: int = 256,
    log=print,
) -> tuple[object, list[str], FolderScan]:
    """An unshuffled (images, int labels) pipeline over ``data/<class>`` and its files."""
    import keras

    scan = scan_folder(data, list(classes))
    report_skipped(scan, log)
    directory = keras_directory(scan)
    ds = keras.utils.image_dataset_from_directory(
        directory,
        labels="inferred",
        label_mode="int",
        class_names=list(classes),  # The model's output order, not the folder's.
        color_mode="grayscale",
        image_size=image_size,
        batch_size=batch_size,
        shuffle=False,
        follow_links=True,
        verbose=False,
    )
    files = [relative_to_scan(p, directory) for p in ds.file_paths]
    return ds, files, scan


def class_weights(
    counts: dict[str, int],
    classes: list[str],
    mode: str,
    boost: dict[str, float] | None = None,
) -> dict[int, float] | None:
    """Keras ``class_weight`` from class counts.

    ``balanced``: n / (k * n_c), each class weighs as much in the loss as the others
    (disgust, 436 of 28,709 FER2013 faces, gets ~9.4). ``sqrt``: the square root of
    that, a softer correction that costs less overall accuracy. ``boost`` multiplies the
    weights of the classes it names (from 1 with mode ``none``): a class recognised too
    rarely, e.g. fear, which no count-based weight singles out.
    """
    boost = boost or {}
    unknown = sorted(set(boost) - set(classes))
    if unknown:
        raise DataError(f"cannot boost {', '.join(unknown)}: not among the classes {', '.join(classes)}")
    if mode == "none":
        if not boost:
            return None
        weights = np.ones(len(classes))
    elif mode in ("balanced", "sqrt"):
        n = np.array([counts[c] for c in classes], dtype=float)
        if (n == 0).any():
            raise DataError("cannot weight classes with no training images")
        weights = n.sum() / (len(n) * n)
        if mode == "sqrt":
            weights = np.sqrt(weights)
    else:
        raise ValueError(f"unknown class-weight mode {mode!r}")
    weights = weights * np.array([boost.get(c, 1.0) for c in classes])
    return {i: round(float(w), 4) for i, w in enumerate(weights)}
