"""Convert a run's ``model.keras`` to ``model.tflite`` for the app's small batches.

``python -m training train`` does this when a run finishes; ``python -m training
export-lite --run RUN`` does it for a run trained before, or again. The copy is written
atomically and recorded in ``run.json`` (``lite``: its SHA-256 and that of the
``model.keras`` it came from), which is what lets the app trust it (see
``ferdash.lite_engine``). Float32, no quantisation: the app checks that it gives the
same probabilities as the Keras model.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from ferdash.rundir import LITE_FILE, MODEL_FILE, lite_entry, read_run_info, write_run_info


class ExportError(RuntimeError):
    """The model could not be converted; the run stays usable on TensorFlow."""


def convert_keras_model(model: Any) -> bytes:
    """The TF Lite flatbuffer of a Keras model (float32, TF Lite built-in ops only)."""
    import tensorflow as tf

    # Keras's export (which the converter calls) prints "Saved artifact at ..." and the
    # whole signature to stdout: noise in a training log.
    with contextlib.redirect_stdout(io.StringIO()):
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def export_lite(run_dir: str | Path, model: Any | None = None) -> Path:
    """Write ``RUN/model.tflite`` from ``RUN/model.keras`` and record it in ``run.json``.

    ``model``: the already loaded ``model.keras`` of the run, when the caller has it.
    """
    from ferdash.predictor import ModelLoadError, load_keras_model

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    try:
        model = model if model is not None else load_keras_model(run_dir / MODEL_FILE)
        content = convert_keras_model(model)
    except ModelLoadError as exc:
        raise ExportError(str(exc)) from exc
    except Exception as exc:  # the converter raises many types for unsupported models
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExportError(f"TF Lite cannot convert the model of {run_dir}: {first}") from exc
    path = run_dir / LITE_FILE
    tmp = run_dir / "model.tmp.tflite"
    tmp.write_bytes(content)
    tmp.replace(path)
    write_run_info(run_dir, info.classes, info.input_size, lite=lite_entry(path, run_dir / MODEL_FILE))
    return path
