"""Where the app finds its runs and data; set by environment variables."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DEFAULT_MODELS_DIR = REPO_ROOT / "models"

#: Run folders the app lists, separated by os.pathsep; defaults to the shipped `models/`.
MODELS_ENV = "FERDASH_MODELS_DIR"
#: Folder of evaluated images (e.g. FER2013's `val/`) for the misclassified-faces gallery.
DATA_ENV = "FERDASH_DATA_DIR"
#: How many loaded models the process keeps (least recently used dropped beyond it).
MAX_LOADED_MODELS_ENV = "FERDASH_MAX_LOADED_MODELS"
DEFAULT_MAX_LOADED_MODELS = 8
#: "auto" (default): a run's checked model.tflite when it has one (every batch if it is
#: quantised, small ones if float32); "tensorflow": the Keras model's exact probabilities.
ENGINE_ENV = "FERDASH_ENGINE"
ENGINES = ("auto", "tensorflow")
#: Folders the Train tab may read data from, separated by os.pathsep: a typed data folder
#: must lie inside one, so the tab is not a browser of the server's files.
DATA_ROOTS_ENV = "FERDASH_DATA_ROOTS"
#: By default: ``data/`` beside ``models/``, and ``../shared`` (where FER2013 lives).
DEFAULT_DATA_ROOTS = (REPO_ROOT / "data", REPO_ROOT.parent / "shared")


def models_dirs() -> list[Path]:
    raw = os.environ.get(MODELS_ENV, "")
    dirs = [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]
    return dirs or [DEFAULT_MODELS_DIR]


def data_dir_override() -> Path | None:
    raw = os.environ.get(DATA_ENV, "").strip()
    return Path(raw).expanduser() if raw else None


def data_roots() -> list[Path]:
    """``FERDASH_DATA_ROOTS``, resolved; :data:`DEFAULT_DATA_ROOTS` when unset."""
    raw = os.environ.get(DATA_ROOTS_ENV, "")
    roots = [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]
    resolved = []
    for root in roots or DEFAULT_DATA_ROOTS:
        try:
            resolved.append(root.resolve())
        except (OSError, RuntimeError):
            continue  # a root that cannot be resolved admits nothing
    return resolved


def max_loaded_models() -> int:
    """``FERDASH_MAX_LOADED_MODELS`` (at least 1); the default, 8, when unset or not a number."""
    raw = os.environ.get(MAX_LOADED_MODELS_ENV, "").strip()
    try:
        value = int(raw)
    except ValueError:
        return DEFAULT_MAX_LOADED_MODELS
    return max(1, value)


def engine() -> str:
    """``FERDASH_ENGINE``: one of :data:`ENGINES`; "auto" when unset or unknown."""
    raw = os.environ.get(ENGINE_ENV, "").strip().lower()
    return raw if raw in ENGINES else "auto"
