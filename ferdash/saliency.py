"""Grad-CAM: where in the face the model looked for the class it chose.

For an input, the gradient of the chosen class's probability with respect to the last
convolutional feature map says how much each channel of that map pushed the decision;
the channels weighted by their mean gradient, summed and passed through a ReLU, give a
coarse map of the evidence (Selvaraju et al., 2017). It is computed on the loaded
Keras model itself, so it works for every architecture of ``training/architectures.py``
(augmentation layers at the start are identity at inference and are traversed as
such), and resized to the face crop the model was given.

TensorFlow is imported only when a map is first asked for.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

#: Layers that transform a convolution's output element by element (or per channel),
#: keeping its grid: the "activation of the last convolution" lies among them.
_ELEMENTWISE = {
    "Activation",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Softmax",
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
}


class SaliencyError(RuntimeError):
    """The model has no convolutional feature map to explain, or the map fails."""


def _is_conv(layer: Any) -> bool:
    # Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose...
    name = type(layer).__name__
    return "Conv" in name and "2D" in name


def _rank(layer: Any) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer used more than once, or never called
        return None


def last_conv_layer(model: Any) -> Any:
    """The last convolution of ``model``, or the activation/normalisation right after it.

    Functional models list their layers in topological order, so "last" follows the
    data flow. Taking the activation (when the convolution is followed by one) explains
    the map the rest of the net actually reads.
    """
    chosen = None
    follow = False
    for layer in model.layers:
        if _rank(layer) != 4:
            follow = False
            continue
        if _is_conv(layer):
            chosen, follow = layer, True
        elif follow and type(layer).__name__ in _ELEMENTWISE:
            chosen = layer
        else:
            follow = False
    if chosen is None:
        raise SaliencyError(f"model {model.name!r} has no 2-D convolution to explain")
    return chosen


class GradCam:
    """Grad-CAM of one Keras model: one sub-model and one traced function, built once."""

    def __init__(self, model: Any) -> None:
        import keras
        import tensorflow as tf

        self.layer = last_conv_layer(model)
        self._grads = keras.Model(model.inputs, [self.layer.output, model.outputs[0]])
        in_shape = tuple(model.input_shape)
        spec = tf.TensorSpec((None, *in_shape[1:]), tf.float32)

        @tf.function(
            input_signature=[spec, tf.TensorSpec((None,), tf.int32)], reduce_retracing=True
        )
        def _cam(x: tf.Tensor, class_index: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                features, probs = self._grads(x, training=False)
                probs = tf.cast(probs, tf.float32)
                top = tf.argmax(probs, axis=-1, output_type=tf.int32)
                # A negative index asks for the model's own top class.
                chosen = tf.where(class_index < 0, top, class_index)
                score = tf.gather(probs, chosen, axis=1, batch_dims=1)
            grads = tf.cast(tape.gradient(score, features), tf.float32)
            features = tf.cast(features, tf.float32)  # float16 under mixed precision
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
            cam = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1))
            peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
            # A map with no positive evidence stays all zeros instead of 0/0 = NaN.
            return tf.math.divide_no_nan(cam, peak)

        self._cam = _cam

    def __call__(
        self, crops: np.ndarray, class_indices: np.ndarray | list[int] | None = None
    ) -> np.ndarray:
        """Maps for ``crops`` (uint8 or float 0-255, ``(N, H, W)`` or ``(N, H, W, 1)``).

        ``class_indices``: the class to explain per crop; default: the model's top class.
        Returns float32 ``(N, H, W)`` in [0, 1], each map the size of its crop.
        """
        batch = np.asarray(crops, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[..., None]
        if batch.ndim != 4 or batch.shape[-1] != 1:
            raise ValueError(f"expected crops of shape (N, H, W[, 1]), got {np.shape(crops)}")
        if len(batch) == 0:
            return np.zeros(batch.shape[:3], dtype=np.float32)
        if class_indices is None:
            indices = np.full(len(batch), -1, dtype=np.int32)
        else:
            indices = np.asarray(class_indices, dtype=np.int32).reshape(-1)
        if len(indices) != len(batch):
            raise ValueError(f"{len(indices)} class indices for {len(batch)} crops")
        try:
            cams = self._cam(batch, indices).numpy()
        except Exception as exc:
            raise SaliencyError(f"Grad-CAM failed on this model: {exc}") from exc
        height, width = batch.shape[1:3]
        return np.stack([resize_map(cam, (height, width)) for cam in cams])


def resize_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cam`` bilinearly resized to ``size`` = (H, W), clipped to [0, 1], NaN-free."""
    import cv2

    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    height, width = size
    if cam.shape != (height, width):
        cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(cam, 0.0, 1.0).astype(np.float32)


_cache_lock = threading.Lock()
#: Each loaded model's Grad-CAM sub-model (or why it has none), shared by every session;
#: weakly keyed, so it goes when the model store drops the model.
_cams: weakref.WeakKeyDictionary[Any, GradCam | SaliencyError] = weakref.WeakKeyDictionary()


def gradcam_for(model: Any) -> GradCam:
    """The :class:`GradCam` of ``model``, built on first use and kept while the model lives."""
    cam = _cams.get(model)
    if cam is None:
        with _cache_lock:
            cam = _cams.get(model)
            if cam is None:
                try:
                    cam = GradCam(model)
                except SaliencyError as exc:
                    cam = exc
                _cams[model] = cam
    if isinstance(cam, SaliencyError):
        raise cam
    return cam


def overlay(crop: np.ndarray, cam: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """The greyscale ``crop`` (uint8 HxW) with ``cam`` blended on top as a colour map; RGB uint8.

    The colour's weight grows with the map's value, so areas without evidence keep the
    face's own pixels.
    """
    import matplotlib

    crop = np.asarray(crop)
    if cam.shape != crop.shape[:2]:
        cam = resize_map(cam, crop.shape[:2])
    colours = matplotlib.colormaps[cmap](np.clip(cam, 0.0, 1.0))[..., :3]
    grey = np.repeat((crop.astype(np.float32) / 255.0)[..., None], 3, axis=-1)
    weight = alpha * np.clip(cam, 0.0, 1.0)[..., None] ** 0.5
    blend = grey * (1 - weight) + colours * weight
    return np.clip(np.round(blend * 255), 0, 255).astype(np.uint8)


def run_saliency(
    loaded: Any, crops: np.ndarray, class_indices: np.ndarray | list[int] | None = None
) -> np.ndarray:
    """Grad-CAM maps of a loaded run (``ferdash.runs.model_store.LoadedRun``) for its crops.

    The sub-model is built on the first call for that run and kept with it.
    """
    if getattr(loaded, "model", None) is None:
        raise SaliencyError("this run's model is not available for Grad-CAM")
    return gradcam_for(loaded.model)(crops, class_indices)
