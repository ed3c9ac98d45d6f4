"""Convert a run's ``model.keras`` to ``model.tflite``, the engine the app runs it on.

``python -m training train`` does this when a run finishes; ``python -m training
export-lite --run RUN`` does it for a run trained before, or again. The copy is written
atomically and recorded in ``run.json`` (``lite``: its SHA-256 and that of the
``model.keras`` it came from), which is what lets the app trust it (see
``ferdash.runs.lite_engine``).

Dynamic-range quantisation (TF Lite's ``Optimize.DEFAULT`` without a representative
dataset): weights stored in int8, each face's activations quantised when it runs, so a
face gets the same probabilities whatever else is in its batch. For ``fer7`` on
FER2013 PublicTest, with flip TTA: 0.57 against 2.9 ms for one face, the same top class
as the float32 model for 99.3% of the images, accuracy 65.23% against 65.17%, no
probability further than 0.018 from it; the file is a quarter of the size. The
evaluation a run stores is computed through this copy, as the app runs it. A run
trained in mixed precision is converted from a float32 copy of itself.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from ferdash.runs.rundir import (
    DYNAMIC_RANGE,
    LITE_FILE,
    MODEL_FILE,
    RunInfo,
    lite_entry,
    read_run_info,
    sha256_file,
    write_run_info,
)


class ExportError(RuntimeError):
    """The model could not be converted; the run stays usable on TensorFlow."""


def convert_keras_model(model: Any, quantization: str | None = DYNAMIC_RANGE) -> bytes:
    """The TF Lite flatbuffer of a float32 Keras model (TF Lite built-in ops only),
    dynamic-range quantised unless ``quantization`` is None."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == DYNAMIC_RANGE:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization is not None:
        raise ValueError(f"unknown quantization {quantization!r}")
    # Keras's export (which the converter calls) prints "Saved artifact at ..." and the
    # whole signature to stdout: noise in a training log.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def export_lite(
    run_dir: str | Path, quantization: str | None = DYNAMIC_RANGE, model: Any = None
) -> Path:
    """Write ``RUN/model.tflite`` from ``RUN/model.keras`` and record it in ``run.json``.

    ``model``: that file's model when the caller has just written it (training does), so
    it is not loaded again.

    Raises :class:`ExportError` for any failure (a model that does not load or convert, a
    full disk, an unwritable folder), after removing what an earlier export left, so a
    run never keeps a copy of a model it no longer has.
    """
    from ferdash.runs.predictor import ModelLoadError, float32_twin, load_keras_model

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    path, model_path = run_dir / LITE_FILE, run_dir / MODEL_FILE
    tmp: Path | None = None
    try:
        # Hashed before loading: the record names the file that was converted.
        model_sha = sha256_file(model_path)
        if model is None:
            model = load_keras_model(model_path)
        content = convert_keras_model(float32_twin(model), quantization)
        fd, name = tempfile.mkstemp(dir=run_dir, prefix="model.", suffix=".tmp.tflite")
        tmp = Path(name)
        # mkstemp makes the file private (0600): give it model.keras's permissions, so
        # an app running as another user reads the copy wherever it reads the model.
        os.fchmod(fd, stat.S_IMODE(model_path.stat().st_mode))
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        tmp.replace(path)
        tmp = None
        write_run_info(run_dir, info.classes, info.input_size, lite=lite_entry(path, model_sha, quantization))
    except Exception as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        _forget_copy(run_dir, info)
        if isinstance(exc, (ModelLoadError, OSError)):
            raise ExportError(f"no {LITE_FILE} for {run_dir}: {exc}") from exc
        # The converter raises many types for models it does not support.
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExportError(f"TF Lite cannot convert the model of {run_dir}: {first}") from exc
    return path


def _forget_copy(run_dir: Path, info: RunInfo) -> None:
    try:
        (run_dir / LITE_FILE).unlink(missing_ok=True)
        if info.meta.get("lite") is not None:
            write_run_info(run_dir, info.classes, info.input_size, lite=None)
    except OSError:
        pass  # the app refuses a stale copy by its hash anyway
