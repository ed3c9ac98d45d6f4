"""Loading a run's model safely and calling it through one compiled function.

Shared by the app and by ``training evaluate`` so that the figures a run reports are
produced by exactly the computation the dashboard performs (test-time augmentation
included).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: Test-time augmentations a run may declare in run.json under "tta".
TTA_MODES = (None, "hflip")

#: Largest batch handed to the compiled function at once; bounds memory for big uploads.
MAX_BATCH = 256


class ModelLoadError(RuntimeError):
    """A model file is missing, truncated, not Keras, or needs unsafe deserialisation."""


def load_keras_model(path: str | Path) -> Any:
    """Load ``model.keras`` for inference with Keras ``safe_mode`` (no Lambda code is run)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path.name} is missing in {path.parent}")
    check_keras_archive(path)
    import keras  # Deferred: importing TensorFlow costs seconds the UI need not wait for.

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for bad files; all mean "refused".
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            reason = "it needs unsafe deserialisation (e.g. a Lambda layer), which is refused"
        raise ModelLoadError(f"cannot load {path}: {reason}") from exc


def check_keras_archive(path: Path) -> None:
    """Raise :class:`ModelLoadError` unless ``path`` is a zip file, as every ``.keras`` is.

    Cheap (no TensorFlow import), so callers can refuse a bad file before costly work;
    and Keras itself reports a non-zip file as "File not found", which misleads.
    """
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"cannot load {path}: the file is corrupt or truncated (not a Keras .keras archive)"
        )


def computes_in_float32(model: Any) -> bool:
    """Whether every layer of a Keras model computes in float32 (not mixed precision)."""
    return all(
        getattr(layer.dtype_policy, "compute_dtype", "float32") == "float32"
        for layer in getattr(model, "layers", [])
    )


def float32_twin(model: Any) -> Any:
    """``model`` computing in float32: itself, or a copy with its weights if it computed in
    float16 (a run trained with ``mixed_float16`` on a GPU). TF Lite cannot convert the
    float16 graph ("'tf.Mul' op is neither a custom op nor a flex op"), and a CPU has no
    fast float16 kernels."""
    if computes_in_float32(model):
        return model
    import keras

    def in_float32(layer: Any) -> Any:
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    twin = keras.models.clone_model(model, clone_function=in_float32)
    twin.set_weights(model.get_weights())
    return twin


def gpu_present() -> bool:
    """Whether TensorFlow sees a GPU in this process."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def compiled_predictor(
    model: Any, input_size: tuple[int, int], tta: str | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """Return ``f(batch) -> probabilities`` backed by one traced ``tf.function``.

    ``batch`` is float 0-255 of shape ``(N, H, W, 1)``. A fixed input signature means
    one trace per model, whatever N is, instead of ``model.predict``'s per-call set-up.
    """
    if tta not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {tta!r}; known: {TTA_MODES}")
    import tensorflow as tf

    height, width = input_size
    spec = tf.TensorSpec((None, height, width, 1), tf.float32)

    @tf.function(input_signature=[spec], reduce_retracing=True)
    def _call(x: tf.Tensor) -> tf.Tensor:
        probs = tf.cast(model(x, training=False), tf.float32)
        if tta == "hflip":
            flipped = tf.cast(model(tf.reverse(x, axis=[2]), training=False), tf.float32)
            probs = (probs + flipped) / 2.0
        return probs

    def predict(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != (height, width, 1):
            raise ValueError(f"expected a batch of shape (N, {height}, {width}, 1), got {batch.shape}")
        if len(batch) == 0:
            return np.zeros((0, int(model.output_shape[-1])), dtype=np.float32)
        parts = [_call(batch[i : i + MAX_BATCH]).numpy() for i in range(0, len(batch), MAX_BATCH)]
        return np.concatenate(parts, axis=0)

    return predict
