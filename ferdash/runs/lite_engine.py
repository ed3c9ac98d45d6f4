"""A run's batches through TensorFlow Lite: the run's own model, converted when it was trained.

Why: for one face, TensorFlow's traced function costs ~5-8 ms for ``fer7`` with flip
TTA on the 2-core development machine (per-call overhead and small single-image
convolutions); the float32 TF Lite copy with its XNNPACK kernels ~2.9 ms, and the
dynamic-range quantised copy that ``training`` now writes ~0.6 ms. The quantised copy is
the fastest at every batch size, so it runs every batch (:class:`LiteFirst`
with no limit); an older float32 copy only batches of up to :data:`LITE_MAX_ROWS` rows,
above which TensorFlow is the faster.

Trust: TF Lite does not validate a model file, and a damaged one crashes the process
instead of raising. A run's ``model.tflite`` is therefore used only when ``run.json``'s
``lite`` entry (written by ``training``) gives the SHA-256 it has now and the SHA-256 of
the ``model.keras`` it was converted from (a run retrained in place leaves a stale copy
behind), and when, on a probe batch, it returns TensorFlow's probabilities to within
:func:`probe_tolerance`. Otherwise the app says why in its log and uses TensorFlow alone.
The hashes catch damage and staleness, not tampering: whoever can edit ``run.json`` can
name any copy, as they could replace ``model.keras`` itself; the probe still catches a
copy of another network.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .predictor import computes_in_float32
from .rundir import DYNAMIC_RANGE, LITE_FILE, RunInfo, sha256_file

logger = logging.getLogger(__name__)

# TensorFlow's interpreter warns that it is deprecated (in favour of LiteRT) each time one
# is made, i.e. once per worker thread. One narrow process-wide filter, set here: a
# catch_warnings() block around the call is not thread-safe, and uploads decode in
# parallel threads that use catch_warnings() themselves.
warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated")

#: Network rows per call up to which TF Lite runs them; above, TensorFlow. A row is one
#: face, or one of its two images under flip TTA. bench_predict.py, fer7 with flip TTA,
#: two runs: TF Lite 1.4-2.6x as fast for 1 face (2 rows), 1.5x for 2, 1.1-1.2x for 4
#: (8 rows), 0.9-1.0x for 8 (16 rows), 0.8x from 16 faces on.
LITE_MAX_ROWS = 8
#: Largest difference in any probability, on the probe batch, still taken as "the same model".
PROBE_TOLERANCE = 1e-4
#: The same for a model that computes in float16 (trained with mixed precision): its TF
#: Lite copy computes in float32, so float16 rounding separates the two.
MIXED_PROBE_TOLERANCE = 5e-3
#: The same for a dynamic-range quantised copy (int8 weights): the shipped runs differ
#: from their Keras models by ~0.005 on the probe and at most 0.015-0.026 on FER2013
#: PublicTest; another trained network differs by far more.
QUANTIZED_PROBE_TOLERANCE = 5e-2
#: Faces per interpreter call: bounds the activation memory of a large batch (an
#: evaluation's 256 faces are 512 rows under flip TTA) and the re-allocations.
LITE_CHUNK = 64
#: A model.tflite larger than this is not read (shipped ones are 1.6-1.8 MB).
MAX_LITE_BYTES = 256 * 1024 * 1024


class LiteUnavailable(RuntimeError):
    """No usable TF Lite copy of a model: the caller stays with TensorFlow."""


def interpreter_class() -> Any:
    """TF Lite's ``Interpreter``: LiteRT's (``ai-edge-litert``) when installed, else TensorFlow's.

    TensorFlow 2.21 still carries the old interpreter, deprecated in favour of LiteRT,
    and TensorFlow is a dependency anyway.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter  # lazily loaded: not importable by name
        except (ImportError, AttributeError) as exc:
            raise LiteUnavailable(f"no TensorFlow Lite interpreter: {exc}") from exc
    return Interpreter


def default_threads() -> int:
    """Threads each interpreter uses: the CPU count, at most 4."""
    # Two threads halve one face's time on two cores; beyond four, XNNPACK gains little
    # on 48x48 inputs while parallel sessions each run their own interpreter.
    return max(1, min(4, os.cpu_count() or 1))


class LitePredictor:
    """``predict(batch (N, H, W, 1) float 0-255) -> (N, classes)`` on TF Lite.

    One interpreter per thread (an interpreter's tensors are not safe to share, and
    uploads of different sessions are analysed in parallel worker threads), resized
    when the batch size changes. Flip TTA runs the faces and their mirror images as one
    batch of 2N and averages the halves, as :func:`ferdash.runs.predictor.compiled_predictor`
    does with two calls.
    """

    def __init__(
        self,
        content: bytes,
        input_size: tuple[int, int],
        n_classes: int,
        tta: str | None = None,
        num_threads: int | None = None,
    ) -> None:
        self._content = content
        self._input_size = input_size
        self._n_classes = n_classes
        self._tta = tta
        self._threads = num_threads or default_threads()
        self._local = threading.local()
        interpreter = self._new_interpreter()
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        height, width = input_size
        if (
            len(inputs) != 1
            or len(outputs) != 1
            or list(inputs[0]["shape"][1:]) != [height, width, 1]
            or inputs[0]["dtype"] != np.float32
            or len(outputs[0]["shape"]) != 2
            or int(outputs[0]["shape"][-1]) != n_classes
        ):
            raise LiteUnavailable(
                f"{LITE_FILE} does not take ({height}, {width}, 1) float32 and return "
                f"{n_classes} probabilities"
            )
        self._io = (inputs[0]["index"], outputs[0]["index"])
        # This thread's interpreter from now on (the probe runs on it).
        self._local.interpreter, self._local.rows = interpreter, None

    def _new_interpreter(self) -> Any:
        try:
            return interpreter_class()(model_content=self._content, num_threads=self._threads)
        except LiteUnavailable:
            raise
        except Exception as exc:  # an interpreter that refuses the model
            raise LiteUnavailable(f"{LITE_FILE} cannot be loaded: {exc}") from exc

    def _interpreter(self, rows: int) -> Any:
        local = self._local
        if getattr(local, "interpreter", None) is None:
            local.interpreter, local.rows = self._new_interpreter(), None
        if local.rows != rows:
            height, width = self._input_size
            local.interpreter.resize_tensor_input(self._io[0], [rows, height, width, 1])
            local.interpreter.allocate_tensors()
            local.rows = rows
        return local.interpreter

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        height, width = self._input_size
        if batch.ndim != 4 or batch.shape[1:] != (height, width, 1):
            raise ValueError(f"expected a batch of shape (N, {height}, {width}, 1), got {batch.shape}")
        n = len(batch)
        if n == 0:
            return np.zeros((0, self._n_classes), dtype=np.float32)
        if n > LITE_CHUNK:
            return np.concatenate(
                [self._run(batch[i : i + LITE_CHUNK]) for i in range(0, n, LITE_CHUNK)]
            )
        return self._run(batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        rows = np.concatenate([batch, batch[:, :, ::-1]]) if self._tta == "hflip" else batch
        interpreter = self._interpreter(len(rows))
        interpreter.set_tensor(self._io[0], np.ascontiguousarray(rows))
        interpreter.invoke()
        out = interpreter.get_tensor(self._io[1]).astype(np.float32)
        return (out[:n] + out[n:]) / 2.0 if self._tta == "hflip" else out


def is_quantized(entry: Any) -> bool:
    """Whether a ``run.json`` ``lite`` entry describes a dynamic-range quantised copy."""
    return isinstance(entry, dict) and entry.get("quantization") == DYNAMIC_RANGE


def probe_tolerance(model: Any | None, entry: Any = None) -> float:
    """How far the TF Lite copy (``lite`` entry ``entry``) of ``model`` may differ on the
    probe (see the constants); ``model`` None: a float32 one."""
    if is_quantized(entry):
        return QUANTIZED_PROBE_TOLERANCE
    if model is None or computes_in_float32(model):
        return PROBE_TOLERANCE
    return MIXED_PROBE_TOLERANCE


def load_for_run(
    info: RunInfo,
    reference: Callable[[np.ndarray], np.ndarray],
    tta: str | None,
    tolerance: float | None = None,
) -> LitePredictor:
    """The run's checked TF Lite copy; raises :class:`LiteUnavailable` saying why not.

    ``reference`` is the TensorFlow predictor of the same run, for the probe, which the
    copy must match to within ``tolerance``: by default what the ``lite`` entry calls for
    (a quantised copy's, else float32's); a caller holding a mixed-precision model passes
    :func:`probe_tolerance` of it.
    """
    entry = info.meta.get("lite")
    if tolerance is None:
        tolerance = probe_tolerance(None, entry)
    if entry is None:
        raise LiteUnavailable(f"run {info.name} has no {LITE_FILE} (python -m training export-lite)")
    if (
        not isinstance(entry, dict)
        or entry.get("file") != LITE_FILE
        or entry.get("quantization") not in (None, DYNAMIC_RANGE)
    ):
        raise LiteUnavailable(f"run.json of {info.name} has a malformed 'lite' entry")
    try:
        content = _read_regular_file(info.lite_path, MAX_LITE_BYTES)
        keras_sha = sha256_file(info.model_path)
    except OSError as exc:
        raise LiteUnavailable(f"{LITE_FILE} of {info.name} cannot be read: {exc}") from exc
    if content is None:
        raise LiteUnavailable(
            f"{LITE_FILE} of {info.name} is not a regular file of at most {MAX_LITE_BYTES >> 20} MB"
        )
    if hashlib.sha256(content).hexdigest() != entry.get("sha256"):
        raise LiteUnavailable(
            f"{LITE_FILE} of {info.name} is damaged or was replaced (its SHA-256 is not run.json's)"
        )
    if keras_sha != entry.get("model_sha256"):
        raise LiteUnavailable(
            f"{LITE_FILE} of {info.name} was converted from another model.keras "
            "(the run was retrained or its model replaced)"
        )
    height, width = info.input_size
    rng = np.random.default_rng(0)
    probe = np.concatenate(
        [rng.uniform(0, 255, (3, height, width, 1)), np.zeros((1, height, width, 1))]
    ).astype(np.float32)
    try:
        # The bytes that were checked, not the path: the file could change meanwhile.
        lite = LitePredictor(content, info.input_size, len(info.classes), tta=tta)
        got = lite(probe)
        gap = float(np.max(np.abs(got - reference(probe))))
    except LiteUnavailable:
        raise
    except Exception as exc:  # anything the interpreter raises: the run stays on TensorFlow
        raise LiteUnavailable(f"{LITE_FILE} of {info.name} fails on a test input: {exc}") from exc
    if not gap <= tolerance:  # also catches NaN
        raise LiteUnavailable(
            f"{LITE_FILE} of {info.name} disagrees with model.keras by {gap:.2g} on a test input"
        )
    return lite


def _read_regular_file(path: Path, limit: int) -> bytes | None:
    """The bytes of ``path``, or None when it is not a regular file or exceeds ``limit``.

    One open file for the check and the read: a FIFO or a link to /dev/zero named
    model.tflite would otherwise block or read forever.
    """
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer (regular
    # files ignore the flag).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        content = f.read(limit + 1)
    return content if len(content) <= limit else None


def max_lite_faces(tta: str | None) -> int:
    """Faces per call that TF Lite runs: :data:`LITE_MAX_ROWS` rows, two per face under flip TTA."""
    return LITE_MAX_ROWS // 2 if tta == "hflip" else LITE_MAX_ROWS


class LiteFirst:
    """One predictor: ``lite`` for up to ``max_faces`` faces (:func:`max_lite_faces`; None:
    every batch, as for a quantised copy, faster at every size), ``tensorflow`` above.

    Should TF Lite fail later (e.g. a new worker thread's interpreter cannot be made),
    TensorFlow answers that call and every later one (:attr:`failed`): the person still
    gets a result.
    """

    def __init__(
        self,
        lite: Callable[[np.ndarray], np.ndarray],
        tensorflow: Callable[[np.ndarray], np.ndarray],
        name: str = "",
        max_faces: int | None = None,
    ) -> None:
        self._lite, self._tensorflow = lite, tensorflow
        self._name, self._max_faces = name, max_faces
        self._failed = threading.Event()

    @property
    def failed(self) -> bool:
        """Whether TF Lite failed once, so that TensorFlow runs every batch now."""
        return self._failed.is_set()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.failed or (self._max_faces is not None and len(batch) > self._max_faces):
            return self._tensorflow(batch)
        try:
            return self._lite(batch)
        except ValueError:
            raise  # a batch of the wrong shape: TensorFlow would refuse it too
        except Exception:
            self._failed.set()
            logger.exception(
                "TF Lite failed for run %s; TensorFlow runs all its batches now", self._name
            )
            return self._tensorflow(batch)
