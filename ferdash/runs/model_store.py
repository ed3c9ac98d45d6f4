"""A process-wide cache of loaded runs: each model file is loaded and traced once.

Keyed by the model file's resolved path plus its modification time and size (and what
run.json says about calling it), so a run that is retrained in place is reloaded, while every session of the app shares one copy
otherwise. Failures are cached under the same key too: a broken file is not re-read on
every upload, and is retried as soon as it changes.

The cache is bounded: it keeps at most ``FERDASH_MAX_LOADED_MODELS`` (default 8) loaded
models and drops the least recently used beyond that, so a long-lived server to which
people keep adding runs folders does not grow without end; a dropped run is simply
loaded again when next asked for. A session that still holds a dropped
:class:`LoadedRun` keeps using it (its reference keeps the model alive). Cached failures
are cheap and bounded separately (:data:`MAX_CACHED_FAILURES`).

TensorFlow is imported only when the first model is loaded (inside
:func:`ferdash.runs.predictor.load_keras_model`), so the app starts without it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from .. import config

from . import lite_engine
from .calibration import apply_temperature
from .predictor import (
    TTA_MODES,
    ModelLoadError,
    compiled_predictor,
    computes_in_float32,
    float32_twin,
    gpu_present,
    load_keras_model,
)
from .rundir import RunInfo, file_stamp

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedRun:
    """A run ready to predict: ``predict(batch (N, H, W, 1) float 0-255) -> (N, classes)``."""

    info: RunInfo
    #: The network's probabilities (TTA included), before the run's temperature.
    raw_predict: Callable[[np.ndarray], np.ndarray]
    tta: str | None
    #: "tflite" when the run's checked model.tflite runs its batches (all of them if
    #: quantised, else the small ones), else "tensorflow".
    engine: str = "tensorflow"
    #: Whether that copy is dynamic-range quantised (int8 weights).
    quantized: bool = False
    #: The Keras model itself: Grad-CAM (ferdash.saliency) needs its layers.
    model: Any = field(default=None, compare=False, repr=False)
    #: run.json's temperature (None: the probabilities are used as the network gives them).
    temperature: float | None = None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated probabilities: :attr:`raw_predict` scaled by the run's temperature."""
        return apply_temperature(self.raw_predict(batch), self.temperature)

    @property
    def engine_name(self) -> str:
        """What computes the probabilities, in words, e.g. for ``evaluation.json``."""
        if isinstance(self.raw_predict, lite_engine.LiteFirst) and self.raw_predict.failed:
            return "tensorflow (TF Lite failed)"
        if self.engine == "tflite" and self.quantized:
            return "tflite (dynamic-range int8 weights)"
        return self.engine

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def input_size(self) -> tuple[int, int]:
        return self.info.input_size


_Key = tuple[
    str, int, int, tuple[str, ...], tuple[int, int], str, tuple[str, tuple[int, int] | None, str]
]

#: Failures kept at most (least recently used dropped): a message each, but not unbounded.
MAX_CACHED_FAILURES = 64

_lock = threading.Lock()
#: Least recently used first.
_entries: OrderedDict[_Key, LoadedRun | ModelLoadError] = OrderedDict()
_key_locks: dict[_Key, threading.Lock] = {}


def _key(info: RunInfo) -> _Key:
    path = info.model_path
    stamp = file_stamp(path)
    if stamp is None:
        raise ModelLoadError(f"model.keras is missing in {info.path}")
    # What run.json says about the model is part of the key too: editing classes,
    # input_size or tta changes how the same file must be called. (Not the temperature:
    # it scales the output, so a new one needs no reload; see get_loaded_run.)
    tta = repr(info.meta.get("tta"))
    # And the TF Lite copy: re-exported or removed, it is checked again.
    lite = (repr(info.meta.get("lite")), file_stamp(info.lite_path), config.engine())
    return (str(path.resolve()), *stamp, info.classes, info.input_size, tta, lite)


def get_loaded_run(info: RunInfo) -> LoadedRun:
    """The loaded model of ``info``; raises :class:`ModelLoadError` with a readable reason.

    Thread-safe: concurrent callers for the same file wait for one load; different files
    load in parallel.
    """
    key = _key(info)
    with _lock:
        entry = _lookup(key)
        if entry is None:
            key_lock = _key_locks.setdefault(key, threading.Lock())
    if entry is None:
        with key_lock:
            with _lock:
                entry = _lookup(key)
            if entry is None:
                try:
                    entry = _load(info)
                except ModelLoadError as exc:
                    entry = exc
                with _lock:
                    # Drop older versions of the same file: they can never be asked for again.
                    for old in [k for k in _entries if k[0] == key[0] and k != key]:
                        _forget(old)
                    _entries[key] = entry
                    _evict(config.max_loaded_models())
    if isinstance(entry, ModelLoadError):
        raise entry
    if entry.temperature != info.temperature:
        # run.json's temperature changed (a run just calibrated): same model, new scale.
        return replace(entry, info=info, temperature=info.temperature)
    return entry


def _lookup(key: _Key) -> LoadedRun | ModelLoadError | None:
    """The entry under ``key``, marked most recently used (call with ``_lock`` held)."""
    entry = _entries.get(key)
    if entry is not None:
        _entries.move_to_end(key)
    return entry


def _forget(key: _Key) -> None:
    del _entries[key]
    _key_locks.pop(key, None)


def _evict(max_loaded: int) -> None:
    """Drop the least recently used entries beyond the bounds (call with ``_lock`` held).

    Only the cache's reference goes: a caller holding the LoadedRun keeps a working model.
    """
    for kind, bound in ((LoadedRun, max_loaded), (ModelLoadError, MAX_CACHED_FAILURES)):
        keys = [k for k, e in _entries.items() if isinstance(e, kind)]  # oldest first
        for old in keys[: max(0, len(keys) - bound)]:
            _forget(old)


def clear_cache() -> None:
    """Forget every loaded model (tests; a long-lived process that wants memory back)."""
    with _lock:
        _entries.clear()
        _key_locks.clear()


def cached_count() -> int:
    with _lock:
        return sum(isinstance(e, LoadedRun) for e in _entries.values())


def _load(info: RunInfo) -> LoadedRun:
    tta = info.meta.get("tta")
    if tta not in TTA_MODES:
        raise ModelLoadError(
            f"run.json of {info.name} asks for test-time augmentation {tta!r}; "
            f"known: {', '.join(str(m) for m in TTA_MODES if m)} or none"
        )
    model = load_keras_model(info.model_path)
    if not computes_in_float32(model) and not gpu_present():
        # A run trained in mixed precision on a GPU: TensorFlow's CPU kernels are slower
        # in float16 (fernet, 64 faces with flip TTA: 1.5-1.8x the float32 time on the
        # 2-core development machine), and float32 only drops float16's rounding.
        model = float32_twin(model)
    height, width = info.input_size
    try:
        in_shape = tuple(model.input_shape)
        out_units = int(model.output_shape[-1])
    except Exception as exc:  # a model without a single defined input/output
        raise ModelLoadError(f"model of {info.name} has no single input and output") from exc
    expected = (height, width, 1)
    # None means "any size" (a fully convolutional model), which fits every input_size.
    if len(in_shape) != 4 or any(d is not None and d != e for d, e in zip(in_shape[1:], expected)):
        raise ModelLoadError(
            f"model of {info.name} takes {in_shape[1:]}, but run.json says "
            f"input_size {[height, width]} with one grey channel"
        )
    if out_units != len(info.classes):
        raise ModelLoadError(
            f"model of {info.name} returns {out_units} probabilities for "
            f"{len(info.classes)} classes in run.json"
        )
    predict = compiled_predictor(model, (height, width), tta=tta)
    try:
        # Trace now, while the person already waits for the load, not on the first image.
        predict(np.zeros((1, height, width, 1), dtype=np.float32))
    except Exception as exc:
        raise ModelLoadError(f"model of {info.name} fails on a test input: {exc}") from exc
    engine, quantized = "tensorflow", False
    entry = info.meta.get("lite")
    if config.engine() == "auto":
        try:
            tolerance = lite_engine.probe_tolerance(model, entry)
            lite = lite_engine.load_for_run(info, predict, tta, tolerance)
        except lite_engine.LiteUnavailable as exc:
            # Not an error: the run works on TensorFlow alone, only slower per face.
            log = logger.info if entry is None else logger.warning
            log("%s; TensorFlow runs all its batches", exc)
        except Exception:
            logger.exception("TF Lite copy of %s unusable; TensorFlow runs all its batches", info.name)
        else:
            quantized = lite_engine.is_quantized(entry)
            # A quantised copy is the faster at every batch size (and one engine gives a
            # face the same probabilities in any batch); a float32 one only for a few rows.
            most = None if quantized else lite_engine.max_lite_faces(tta)
            predict = lite_engine.LiteFirst(lite, predict, info.name, most)
            engine = "tflite"
    return LoadedRun(
        info=info,
        raw_predict=predict,
        tta=tta,
        engine=engine,
        quantized=quantized,
        model=model,
        temperature=info.temperature,
    )
