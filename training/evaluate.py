"""``python -m training evaluate``: a run's model on a labelled folder -> evaluation.json.

Predictions go through the predictor the dashboard uses (``ferdash.runs.model_store``: the
run's checked TF Lite copy when it has one, else TensorFlow's compiled function), so the
figures reported are the ones the dashboard would compute, test-time augmentation
included; ``evaluation.json`` names the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ferdash.runs.rundir import read_run_info, write_evaluation, write_run_info


def evaluate_dataset(
    run_dir: str | Path,
    dataset: Iterable[tuple[Any, Any]],
    files: list[str],
    *,
    data_dir: str | Path,
    split: str,
    tta: str | None = None,
    skipped: list[tuple[str, str]] | None = None,
    fit_temperature: bool = False,
) -> dict[str, Any]:
    """Evaluate ``run_dir``'s model on an unshuffled (images, int labels) dataset.

    ``files`` are the dataset's files in the same order, relative to ``data_dir``.
    ``fit_temperature``: fit the run's temperature on these images first (training does,
    on its validation data) and record it in run.json; otherwise the run's own applies.
    """
    from ferdash.runs import model_store
    from ferdash.runs.calibration import apply_temperature, calibration_report
    from ferdash.runs.calibration import fit_temperature as fit
    from ferdash.runs.predictor import compiled_predictor

    # Cached by the files' stamps and run.json's entries: a run just (re)written loads anew.
    info = read_run_info(run_dir)
    loaded = model_store.get_loaded_run(info)
    # Another test-time augmentation than the run declares is not what the dashboard
    # computes: that evaluation runs on TensorFlow.
    same = tta == loaded.tta
    predict = loaded.raw_predict if same else compiled_predictor(loaded.model, loaded.input_size, tta)
    classes = list(loaded.classes)
    k = len(classes)
    raw_parts, truth_parts = [], []
    for images, labels in dataset:
        raw_parts.append(predict(np.asarray(images)))
        truth_parts.append(np.asarray(labels).astype(np.int64).reshape(-1))
    raw = np.concatenate(raw_parts) if raw_parts else np.zeros((0, k), np.float32)
    truth = np.concatenate(truth_parts) if truth_parts else np.zeros(0, np.int64)
    if len(truth) != len(files):
        raise RuntimeError(f"evaluated {len(truth)} images but {len(files)} files were listed")
    temperature = loaded.temperature
    if fit_temperature and len(truth):
        temperature = round(fit(raw, truth), 6)
        write_run_info(run_dir, info.classes, info.input_size, temperature=temperature)
    probs = apply_temperature(raw, temperature)
    pred = probs.argmax(axis=1)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (truth, pred), 1)
    misclassified = [
        {
            "file": files[i],
            "true": classes[truth[i]],
            "predicted": classes[pred[i]],
            "probability": round(float(probs[i, pred[i]]), 6),
            "true_probability": round(float(probs[i, truth[i]]), 6),
        }
        for i in np.flatnonzero(pred != truth)
    ]
    # Named after the pass: TF Lite may have failed during it and handed over to TensorFlow.
    engine = loaded.engine_name if same else "tensorflow"
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
        engine=engine,
        calibration=calibration_report(raw, truth, temperature) if len(truth) else None,
        skipped_files=[{"file": f, "reason": r} for f, r in (skipped or [])],
    )
    import json

    return json.loads(path.read_text())


def reevaluate(run_dir: str | Path, log=print) -> dict[str, Any] | None:
    """Evaluate ``run_dir`` again on the folder, split and TTA its ``evaluation.json`` names.

    For a run whose engine changed (a new TF Lite copy). Returns None, saying why, when
    the run has no evaluation, its folder is not on this machine, or the evaluated images
    cannot be told from the folder alone: a ``validation_split`` (a fraction of the
    training folder) or a run limited to some images per class (``--limit``).
    """
    from ferdash.runs.rundir import EVALUATION_FILE, RunDirError, read_evaluation, resolve_data_dir

    run_dir = Path(run_dir)
    if not (run_dir / EVALUATION_FILE).is_file():
        return None
    try:
        previous = read_evaluation(run_dir)
        info = read_run_info(run_dir)
    except RunDirError as exc:
        log(f"{EVALUATION_FILE} not recomputed: {exc}")
        return None
    how = "run 'python -m training evaluate' to make its figures the engine's"
    if previous.split == "validation_split" or info.meta.get("limit_per_class"):
        log(
            f"{EVALUATION_FILE} not recomputed: it is on part of a folder "
            f"({'a validation split' if previous.split == 'validation_split' else '--limit'}); {how}"
        )
        return None
    data_dir = resolve_data_dir(previous, run_dir)
    if data_dir is None or not data_dir.is_dir():
        log(f"{EVALUATION_FILE} not recomputed: its data folder {previous.data_dir!r} is not here; {how}")
        return None
    # The TTA it was made with (an evaluation written before "tta" was recorded: the run's).
    tta = previous.meta["tta"] if "tta" in previous.meta else "run"
    result = evaluate_folder(run_dir, data_dir, split=previous.split, tta=tta, log=log)
    if (
        info.meta.get("val_accuracy") == previous.accuracy
        and result["image_count"] == previous.image_count
    ):
        # run.json's figure was this evaluation's, on the same images: keep them the same.
        write_run_info(run_dir, info.classes, info.input_size, val_accuracy=result["accuracy"])
    return result


def evaluate_folder(
    run_dir: str | Path,
    data_dir: str | Path,
    *,
    split: str | None = None,
    tta: str | None = "run",
    batch_size: int = 256,
    fit_temperature: bool = False,
    log=print,
) -> dict[str, Any]:
    """Evaluate on ``data_dir/<class>/*`` (only the run's classes are read).

    ``tta="run"`` uses what run.json declares; None or "hflip" override it.
    ``fit_temperature``: (re)fit the run's temperature on this folder first.
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
        fit_temperature=fit_temperature,
    )
    cal = result.get("calibration") or {}
    log(
        f"{info.name} on {data_dir} ({result['image_count']} images): accuracy "
        f"{result['accuracy']:.4f}, macro F1 {result['macro_f1']:.4f}"
        + (f", tta {tta}" if tta else "")
        + (f", ECE {cal['ece_after']:.4f}" if cal else "")
        + (f" (temperature {cal['temperature']:.3f})" if cal.get("temperature") else "")
    )
    return result
