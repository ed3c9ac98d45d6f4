"""Grad-CAM: where in the face the model found the evidence for the class it chose.

The map is HiResCAM (Draelos & Carin, 2020), the Grad-CAM variant that multiplies a
convolutional feature map by its gradient element by element instead of weighting each
channel by its mean gradient (Selvaraju et al., 2017), taken against a blank: summed
over channels and kept where positive, ``gradient * (features - features of a flat image
of the face's mean grey)`` is each region's first-order contribution to the answer,
compared with a face-less image. Each choice was measured on scikit-image's LFW sample by
``benchmarks/bench_saliency.py`` (figures in ``docs/predict-pipeline.md``):

* Element-wise weights: the registry's nets read the last feature map through
  ``Flatten`` and ``Dense``, so a channel can argue for the class in one place and against
  it in another; its mean gradient cancels the two, and for one face in seven of the
  sample (``fer7``) every region came out negative: an empty map.
* Against a blank: a flat area's features are not zero (the normalisations' shifts), and
  gradient times features lit up plain background around a pasted face; compared with
  the blank's features a flat area contributes nothing, and so does a constant image,
  which is left without a map.
* The last block at twice the last one's resolution (12x12 for a 48x48 face in
  ``fernet``), not the coarsest map (6x6): it still sees eyes and mouths as parts, and its
  map shows which ones.
* The gradient of the class's log-odds (its logit against the log-sum-exp of the others),
  not of its probability: the two point the same way, but the probability's gradient
  vanishes as the probability nears 1, and a certain answer would have no map.

When the run averages each face with its mirror image (``"tta": "hflip"``), so does the
map: it explains the answer the card shows. It is computed on the loaded Keras model
itself, so it works for every architecture of ``training/architectures.py``
(augmentation layers at the start are identity at inference and are traversed as such),
and resized to the face crop the model was given.

TensorFlow is imported only when a map is first asked for.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

#: Layers that transform a convolution's output element by element (or per channel),
#: keeping its grid: what a convolution's "activation" may be.
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


#: Largest batch given to the traced function at once (a mirrored batch counts twice):
#: the gradient's memory grows with it.
MAX_BATCH = 128


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


def conv_blocks(model: Any) -> list[Any]:
    """Each 2-D convolution of ``model``, or the activation/normalisation right after it,
    in data-flow order (functional models list their layers topologically).

    Taking the activation (when the convolution is followed by one) explains the map the
    rest of the net actually reads.
    """
    blocks: list[Any] = []
    follow = False
    for layer in model.layers:
        if _rank(layer) != 4:
            follow = False
        elif _is_conv(layer):
            blocks.append(layer)
            follow = True
        elif follow and type(layer).__name__ in _ELEMENTWISE:
            blocks[-1] = layer
        else:
            follow = False
    if not blocks:
        raise SaliencyError(f"model {model.name!r} has no 2-D convolution to explain")
    return blocks


def last_conv_layer(model: Any) -> Any:
    """The last convolution of ``model``, or the activation/normalisation right after it."""
    return conv_blocks(model)[-1]


def explained_layer(model: Any) -> Any:
    """The feature map the saliency map is computed on: the last block whose grid is at
    least twice as fine as the last convolution's, else the last convolution.

    Never the first convolution: its filters see pixels (edges), not parts of a face.
    """
    blocks = conv_blocks(model)
    coarsest = _grid(blocks[-1])
    for block in reversed(blocks[1:-1]):
        grid = _grid(block)
        if grid is not None and coarsest is not None and min(grid) >= 2 * max(coarsest):
            return block
    return blocks[-1]


def _grid(layer: Any) -> tuple[int, int] | None:
    height, width = layer.output.shape[1:3]
    return None if height is None or width is None else (int(height), int(width))


def _logit_head(model: Any) -> tuple[Any, Any]:
    """(tensor, f): ``f(tensor)`` gives the model's logits, float32.

    The registry's nets end in ``Dense(activation="softmax")``: a linear twin of that
    layer, with its weights, turns its input into logits. A separate softmax layer's input
    is the logits. Any other head: log-probabilities, which differ from the logits by a
    constant per face (the log-odds are the same) but underflow when a class nears 1.
    """
    import tensorflow as tf

    out = model.layers[-1]
    activation = getattr(getattr(out, "activation", None), "__name__", None)
    kind = type(out).__name__
    if kind in ("Softmax", "Activation") and (kind == "Softmax" or activation == "softmax"):
        return out.input, lambda t: tf.cast(t, tf.float32)
    if activation == "softmax":
        config = out.get_config()
        config["activation"] = "linear"
        twin = type(out).from_config(config)
        twin.build(out.input.shape)
        twin.set_weights(out.get_weights())
        return out.input, lambda t: tf.cast(twin(t), tf.float32)
    tiny = float(np.finfo(np.float32).tiny)
    return model.outputs[0], lambda t: tf.math.log(tf.maximum(tf.cast(t, tf.float32), tiny))


class GradCam:
    """The saliency maps of one Keras model: two sub-models and one traced function, built
    once. (HiResCAM against a blank on :func:`explained_layer`; see the module's docstring.)"""

    def __init__(self, model: Any) -> None:
        import keras
        import tensorflow as tf

        self.layer = explained_layer(model)
        head, to_logits = _logit_head(model)
        self._sub = keras.Model(model.inputs, [self.layer.output, head])
        self._features = keras.Model(model.inputs, self.layer.output)
        in_shape = tuple(model.input_shape)
        spec = tf.TensorSpec((None, *in_shape[1:]), tf.float32)
        per_face = tf.TensorSpec((None,), tf.float32)

        @tf.function(
            input_signature=[spec, per_face, tf.TensorSpec((None,), tf.int32)],
            reduce_retracing=True,
        )
        def _cam(x: tf.Tensor, grey: tf.Tensor, class_index: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                features, head_out = self._sub(x, training=False)
                logits = to_logits(head_out)
                top = tf.argmax(logits, axis=-1, output_type=tf.int32)
                # A negative index asks for the model's own top class.
                chosen = tf.where(class_index < 0, top, class_index)
                onehot = tf.one_hot(chosen, tf.shape(logits)[-1], dtype=tf.float32)
                # Log-odds: the chosen logit against the others' log-sum-exp (the others
                # weighted by how likely each is); unlike the probability it keeps its
                # gradient when the answer is certain.
                own = tf.reduce_sum(logits * onehot, axis=-1)
                score = own - tf.reduce_logsumexp(logits - 1e9 * onehot, axis=-1)
            grads = tf.cast(tape.gradient(score, features), tf.float32)
            blank = tf.ones_like(x) * grey[:, None, None, None]
            # float32: float16 under mixed precision.
            change = tf.cast(features, tf.float32) - tf.cast(
                self._features(blank, training=False), tf.float32
            )
            return tf.nn.relu(tf.reduce_sum(change * grads, axis=-1))

        self._cam = _cam

    def __call__(
        self,
        crops: np.ndarray,
        class_indices: np.ndarray | list[int] | None = None,
        mirror: bool = False,
    ) -> np.ndarray:
        """Maps for ``crops`` (uint8 or float 0-255, ``(N, H, W)`` or ``(N, H, W, 1)``).

        ``class_indices``: the class to explain per crop; default: the model's top class.
        ``mirror``: average each map with that of the mirrored crop (flipped back), for a
        run whose answer averages the two. Returns float32 ``(N, H, W)`` in [0, 1], each
        map the size of its crop, its peak 1; all zeros where no region argues for the class.
        """
        batch = np.asarray(crops, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[..., None]
        if batch.ndim != 4 or batch.shape[-1] != 1:
            raise ValueError(f"expected crops of shape (N, H, W[, 1]), got {np.shape(crops)}")
        n = len(batch)
        if n == 0:
            return np.zeros(batch.shape[:3], dtype=np.float32)
        if class_indices is None:
            indices = np.full(n, -1, dtype=np.int32)
        else:
            indices = np.asarray(class_indices, dtype=np.int32).reshape(-1)
        if len(indices) != n:
            raise ValueError(f"{len(indices)} class indices for {n} crops")
        # In float64, the mean of a constant crop is that constant exactly: its blank is
        # itself and its map all zeros, not rounding noise scaled up to a peak of 1.
        greys = batch.mean(axis=(1, 2, 3), dtype=np.float64).astype(np.float32)
        if mirror:
            batch = np.concatenate([batch, batch[:, :, ::-1]])
            indices = np.concatenate([indices, indices])
            greys = np.concatenate([greys, greys])
        try:
            cams = np.concatenate([
                self._cam(
                    batch[i : i + MAX_BATCH], greys[i : i + MAX_BATCH], indices[i : i + MAX_BATCH]
                ).numpy()
                for i in range(0, len(batch), MAX_BATCH)
            ])
        except Exception as exc:
            raise SaliencyError(f"Grad-CAM failed on this model: {exc}") from exc
        height, width = batch.shape[1:3]
        # Resized before the mirror is undone: a feature grid need not be symmetric
        # (valid convolutions, odd sizes pooled), the crop is.
        maps = np.stack([resize_map(cam, (height, width), normalise=False) for cam in cams])
        if mirror:
            maps = (maps[:n] + maps[n:, :, ::-1]) / 2
        peaks = maps.max(axis=(1, 2), keepdims=True)
        # A map with no positive evidence stays all zeros instead of 0/0 = NaN.
        maps = np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0)
        return np.clip(maps, 0.0, 1.0).astype(np.float32)


def resize_map(cam: np.ndarray, size: tuple[int, int], normalise: bool = True) -> np.ndarray:
    """``cam`` bilinearly resized to ``size`` = (H, W), NaN-free; clipped to [0, 1] unless
    ``normalise`` is false (then only negative values go)."""
    import cv2

    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    height, width = size
    if cam.shape != (height, width):
        cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(cam, 0.0, 1.0 if normalise else None).astype(np.float32)


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
    """Maps of a loaded run (``ferdash.runs.model_store.LoadedRun``) for its crops, one per
    crop, each explaining ``class_indices[i]`` (default: the model's top class).

    The sub-model is built on the first call for that run and kept with it. A run with
    flip test-time augmentation gets maps averaged over each crop and its mirror image.
    """
    if getattr(loaded, "model", None) is None:
        raise SaliencyError("this run's model is not available for Grad-CAM")
    mirror = getattr(loaded, "tta", None) == "hflip"
    return gradcam_for(loaded.model)(crops, class_indices, mirror=mirror)
