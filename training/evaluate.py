"""``python -m training evaluate``: a run's model on a labelled folder -> evaluation.json.

Predictions go through ``ferdash.predictor.compiled_predictor`` on the model loaded by
``load_keras_model``: the figures reported are the ones the dashboard would compute,
test-time augmentation included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ferdash.rundir import read_run_info, write_evaluation


def evaluate_dataset(
    run_dir: str | Path,
    dataset: Iterable[tuple[Any, Any]],
    files: list[str],
    *,
    data_dir: str | Path,
    split: str,
    tta: str | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Evaluate ``run_dir``'s model on an unshuffled (images, int labels) dataset.

    ``files`` are the dataset's files in the same order, relative to ``data_dir``.
    """
    from ferdash.predictor import compiled_predictor, load_keras_model

    info = read_run_info(run_dir)
    model = load_keras_model(info.model_path)
    predict = compiled_predictor(model, info.input_size, tta)
    classes = list(info.classes)
    k = len(classes)
    matrix = np.zeros((k, k), dtype=np.int64)
    misclassified: list[dict[str, Any]] = []
    seen = 0
    for images, labels in dataset:
        probs = predict(np.asarray(images))
        truth = np.asarray(labels).astype(np.int64).reshape(-1)
        pred = probs.argmax(axis=1)
        np.add.at(matrix, (truth, pred), 1)
        for i in np.flatnonzero(pred != truth):
            misclassified.append(
                {
                    "file": files[seen + i],
                    "true": classes[truth[i]],
                    "predicted": classes[pred[i]],
                    "probability": round(float(probs[i, pred[i]]), 6),
                    "true_probability": round(float(probs[i, truth[i]]), 6),
                }
            )
        seen += len(truth)
    if seen != len(files):
        raise RuntimeError(f"evaluated {seen} images but {len(files)} files were listed")
    # The most confident mistakes first: the ones worth looking at.
    misclassified.sort(key=lambda m: -m["probability"])
    path = write_evaluation(
        run_dir,
        split=split,
        classes=classes,
        confusion_matrix=matrix,
        misclassified=misclassified,
        data_dir=str(data_dir),
        tta=tta,
        skipped_files=[{"file": f, "reason": r} for f, r in (skipped or [])],
    )
    import json

    return json.loads(path.read_text())


def evaluate_folder(
    run_dir: str | Path,
    data_dir: str | Path,
    *,
    split: str | None = None,
    tta: str | None = "run",
    batch_size: int = 256,
    log=print,
) -> dict[str, Any]:
    """Evaluate on ``data_dir/<class>/*`` (only the run's classes are read).

    ``tta="run"`` uses what run.json declares; None or "hflip" override it.
    """
    from training.data import load_eval_data

    info = read_run_info(run_dir)
    if tta == "run":
        tta = info.meta.get("tta")
    ds, files, scan = load_eval_data(
        data_dir, classes=list(info.classes), image_size=info.input_size, batch_size=batch_size, log=log
    )
    data_dir = Path(data_dir)
    result = evaluate_dataset(
        run_dir,
        ds,
        files,
        data_dir=data_dir,
        split=split or data_dir.resolve().name,
        tta=tta,
        skipped=scan.bad,
    )
    log(
        f"{info.name} on {data_dir} ({result['image_count']} images): accuracy "
        f"{result['accuracy']:.4f}, macro F1 {result['macro_f1']:.4f}"
        + (f", tta {tta}" if tta else "")
    )
    return result
