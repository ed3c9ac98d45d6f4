"""How a folder of labelled faces is laid out: one definition for the training command
(``training/data.py``) and the Train tab's check (``ferdash/training_jobs.py``).

``DIR/<class>/*.png``, or a prepared ``DIR/train/<class>/`` with an optional
``DIR/val/<class>/`` for validation (what ``python -m training prepare`` writes).
No TensorFlow, no Shiny: both sides import it.
"""

from __future__ import annotations

from pathlib import Path

TRAIN_DIR = "train"
VAL_DIR = "val"

#: Image files the training command trains on.
TRAINABLE_EXTENSIONS: tuple[str, ...] = (".jpeg", ".jpg", ".png")
#: Listed too (Keras's image_dataset_from_directory lists them), but only to be reported
#: as skipped: TensorFlow's loader cannot read them in greyscale.
SKIPPED_EXTENSIONS: tuple[str, ...] = (".bmp", ".gif")
LISTED_EXTENSIONS: tuple[str, ...] = TRAINABLE_EXTENSIONS + SKIPPED_EXTENSIONS


def train_root(data: Path) -> Path:
    """The folder of class folders: ``data/train`` of a prepared root, else ``data`` itself."""
    prepared = data / TRAIN_DIR
    return prepared if prepared.is_dir() else data


def val_folder(data: Path) -> Path | None:
    """``data/val`` when ``data`` is a prepared root that has one, else None (validation
    is then a seeded split of the training images)."""
    val = data / VAL_DIR
    return val if (data / TRAIN_DIR).is_dir() and val.is_dir() else None
