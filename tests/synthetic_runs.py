"""Small synthetic run directories for tests: run.json, history.csv, evaluation.json, faces.

No TensorFlow: the files follow the contract of ``ferdash.runs.rundir`` and are written with its
writers, so the Inspect panels can be tested without training anything.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ferdash.runs.calibration import apply_temperature, calibration_report
from ferdash.runs.rundir import FER2013_CLASSES, class_recall_metrics, write_evaluation, write_run_info

#: Mouth curvature per class (positive = smile), so the generated faces differ visibly.
_MOUTH = {
    "angry": -0.6,
    "disgust": -0.4,
    "fear": -0.2,
    "happy": 1.0,
    "neutral": 0.0,
    "sad": -1.0,
    "surprise": 0.5,
}


def face_image(expression: str, size: int = 48, seed: int = 0) -> Image.Image:
    """A greyscale cartoon face whose mouth hints at ``expression``."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (size, size), int(rng.integers(30, 90)))
    draw = ImageDraw.Draw(img)
    pad = size // 8
    draw.ellipse([pad, pad, size - pad, size - pad], fill=int(rng.integers(150, 210)))
    eye_y = size * 0.4
    for cx in (size * 0.37, size * 0.63):
        draw.ellipse([cx - 2, eye_y - 2, cx + 2, eye_y + 2], fill=20)
    curve = _MOUTH.get(expression, 0.0)
    mouth_y = size * 0.68
    left, right = size * 0.35, size * 0.65
    bend = curve * size * 0.08
    draw.line([(left, mouth_y - bend), ((left + right) / 2, mouth_y + bend), (right, mouth_y - bend)],
              fill=30, width=2)
    return img


def history_rows(
    epochs: int,
    *,
    seed: int = 0,
    with_lr: bool = True,
    lr_column: str = "learning_rate",
    recall_of: Sequence[str] = (),
) -> list[dict[str, float]]:
    """CSVLogger-like rows: loss falls, accuracy rises, validation a bit worse and noisy;
    with each class of ``recall_of``'s recall (training and validation) when given."""
    rng = np.random.default_rng(seed)
    rows = []
    for epoch in range(epochs):
        t = epoch / max(epochs - 1, 1)
        row: dict[str, float] = {
            "epoch": epoch,
            "accuracy": round(0.25 + 0.5 * t + float(rng.normal(0, 0.01)), 4),
            "loss": round(1.9 - 1.1 * t + float(rng.normal(0, 0.02)), 4),
            "val_accuracy": round(0.22 + 0.38 * t + float(rng.normal(0, 0.03)), 4),
            "val_loss": round(1.95 - 0.7 * t + float(rng.normal(0, 0.04)), 4),
        }
        if with_lr:
            row[lr_column] = 1e-3 if epoch < epochs // 2 else 1e-4
        for k, metric in enumerate(class_recall_metrics(list(recall_of)).values()):
            # Classes learnt at different rates, the later ones slower.
            level = min(1.0, max(0.0, (0.2 + 0.6 * t) * (1 - 0.08 * k) + float(rng.normal(0, 0.02))))
            row[metric] = round(min(1.0, level + 0.05), 4)
            row[f"val_{metric}"] = round(level, 4)
        rows.append(row)
    return rows


def write_history(run_dir: Path, rows: list[dict[str, float]]) -> Path:
    path = run_dir / "history.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def confusion(classes: Sequence[str], per_class: int = 20, skill: float = 0.6, seed: int = 0) -> np.ndarray:
    """A diagonal-heavy confusion matrix with ``per_class`` images per true class."""
    rng = np.random.default_rng(seed)
    n = len(classes)
    matrix = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        probs = np.full(n, (1 - skill) / max(n - 1, 1))
        probs[i] = skill
        matrix[i] = rng.multinomial(per_class, probs)
    return matrix


def overconfident_probs(
    n: int = 4000, classes: int = 7, sharpening: float = 2.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a calibrated model, sharpened as by temperature ``1/sharpening``.

    The true class of each face is sampled from the calibrated probabilities, so the
    calibrated model is exactly right on average and the sharpened one over-confident:
    temperature scaling should find T close to ``sharpening``.
    """
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, classes))
    calibrated = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=p) for p in calibrated])
    return apply_temperature(calibrated, 1.0 / sharpening), labels


def make_run(
    root: Path,
    name: str,
    *,
    classes: Sequence[str] = FER2013_CLASSES,
    epochs: int = 8,
    architecture: str = "fernet",
    parameters: int = 123_456,
    input_size: tuple[int, int] = (48, 48),
    seed: int = 0,
    best_epoch: int | None = None,
    with_lr: bool = True,
    class_recall: bool = False,
    history: bool = True,
    evaluation: bool = True,
    data_dir: Path | None = None,
    per_class: int = 20,
    write_faces: bool = True,
    model_placeholder: bool = False,
    extra_meta: dict[str, Any] | None = None,
    temperature: float | None = None,
) -> Path:
    """A run folder under ``root``; misclassified faces are drawn into ``data_dir`` when given.

    ``data_dir`` is recorded in evaluation.json; faces go to ``data_dir/<true>/<name>_NNN.png``
    (only when ``write_faces``, so a test can point at images that are not there).
    ``temperature`` calibrates the run: run.json declares it and evaluation.json holds
    the calibration figures of over-confident probabilities scaled by it.
    """
    run_dir = root / name
    meta: dict[str, Any] = {
        "architecture": architecture,
        "parameters": parameters,
        "epochs": epochs,
        "batch_size": 64,
        "seed": seed,
        **(extra_meta or {}),
    }
    if best_epoch is not None:
        meta["best_epoch"] = best_epoch
    if temperature is not None:
        meta["temperature"] = temperature
    write_run_info(run_dir, list(classes), input_size, **meta)
    if history:
        recall_of = list(classes) if class_recall else []
        write_history(run_dir, history_rows(epochs, seed=seed, with_lr=with_lr, recall_of=recall_of))
    if evaluation:
        matrix = confusion(classes, per_class=per_class, seed=seed)
        rng = np.random.default_rng(seed + 1)
        misclassified = []
        k = 0
        for i, true in enumerate(classes):
            for j, pred in enumerate(classes):
                for _ in range(int(matrix[i, j]) if i != j else 0):
                    file = f"{true}/{name}_{k:03d}.png"
                    misclassified.append(
                        {"file": file, "true": true, "predicted": pred,
                         "probability": round(float(rng.uniform(0.3, 0.99)), 3)}
                    )
                    if data_dir is not None and write_faces:
                        path = data_dir / file
                        path.parent.mkdir(parents=True, exist_ok=True)
                        face_image(true, seed=seed * 1000 + k).save(path)
                    k += 1
        calibration = {}
        if temperature is not None:
            raw, labels = overconfident_probs(500, len(classes), temperature, seed)
            calibration["calibration"] = calibration_report(raw, labels, temperature)
        write_evaluation(
            run_dir,
            split="val",
            classes=list(classes),
            confusion_matrix=matrix,
            misclassified=misclassified,
            data_dir=data_dir,
            **calibration,
        )
    if model_placeholder:
        (run_dir / "model.keras").write_bytes(b"placeholder, not a Keras file")
    return run_dir


def make_broken_run(root: Path, name: str, kind: str) -> Path:
    """A run folder with one kind of damage: ``run-json`` (malformed run.json),
    ``history`` (garbled history.csv) or ``evaluation`` (evaluation.json that is not JSON)."""
    run_dir = root / name
    if kind == "run-json":
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "run.json").write_text("{ not json", encoding="utf-8")
        write_history(run_dir, history_rows(4))
    elif kind == "history":
        make_run(root, name, history=False, evaluation=True, per_class=5)
        (run_dir / "history.csv").write_text("epoch,loss\n0,abc\n1,def\n", encoding="utf-8")
    elif kind == "evaluation":
        make_run(root, name, evaluation=False)
        (run_dir / "evaluation.json").write_text('{"split": "val", "accuracy": ', encoding="utf-8")
    else:
        raise ValueError(kind)
    return run_dir
