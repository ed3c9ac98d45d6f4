"""Tiny Keras run directories for tests: a real ``model.keras`` that loads in well under a second.

Each run follows the contract of :mod:`ferdash.runs.rundir` (model.keras, run.json,
history.csv, evaluation.json). The models are untrained (seeded random weights):
tests check the plumbing, not the accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typing import Any, Sequence

import numpy as np

from ferdash.runs.rundir import FER2013_CLASSES, MODEL_FILE, write_evaluation, write_run_info

HAPPY_SAD_CLASSES: tuple[str, ...] = ("happy", "sad")


def build_tiny_model(classes: int, input_size: tuple[int, int] = (48, 48), seed: int = 0) -> Any:
    """Input(H, W, 1) -> Rescaling(1/255) -> Conv 4x3x3 -> GAP -> Dense softmax (~100 weights)."""
    import keras

    keras.utils.set_random_seed(seed)
    height, width = input_size
    inputs = keras.Input((height, width, 1))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny")


def make_tiny_run(
    root: str | Path,
    name: str,
    classes: Sequence[str],
    input_size: tuple[int, int] = (48, 48),
    seed: int = 0,
    **meta: Any,
) -> Path:
    """Write a complete tiny run folder ``root/name`` and return its path."""
    run_dir = Path(root) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(len(classes), input_size, seed)
    model.save(run_dir / MODEL_FILE)
    write_run_info(
        run_dir,
        list(classes),
        input_size,
        architecture="tiny",
        data="none (untrained test model)",
        epochs=1,
        seed=seed,
        **meta,
    )
    (run_dir / "history.csv").write_text(
        "epoch,accuracy,loss,val_accuracy,val_loss\n0,0.3,1.8,0.3,1.8\n", encoding="utf-8"
    )
    n = len(classes)
    write_evaluation(
        run_dir,
        split="test",
        classes=list(classes),
        confusion_matrix=np.eye(n, dtype=np.int64) + 1,
    )
    return run_dir


def make_default_runs(root: str | Path) -> list[Path]:
    """The two runs the app looks for by default: ``fer7`` (7 classes) and ``happy_sad``."""
    return [
        make_tiny_run(root, "fer7", FER2013_CLASSES, seed=1),
        make_tiny_run(root, "happy_sad", HAPPY_SAD_CLASSES, seed=2),
    ]


# Fixtures shared by the model-store tests (import them into a test module to use them).
@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny fer7 and happy_sad runs, built once per test module."""
    root = tmp_path_factory.mktemp("runs")
    make_default_runs(root)
    return root


@pytest.fixture(autouse=True)
def empty_cache():
    """A cold process-wide model cache before and after each test."""
    from ferdash.runs import model_store

    model_store.clear_cache()
    yield
    model_store.clear_cache()
