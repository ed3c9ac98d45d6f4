"""Saliency methods for Predict's "where the model looked", side by side in one run: how
often each leaves a face without a map, whether it points at the face and at what the
named class rests on, and its cost per face.

    python benchmarks/bench_saliency.py [--runs fer7 happy_sad] [--repeats 5]
        [--methods today shipped ...] [--figure /tmp/maps.png]

Inputs: scikit-image's LFW sample, resized from 25x25 to the run's input size as a face
crop is: its first 100 images are faces, the other 100 patches of the photos'
backgrounds. Each method explains the class the card would name (the top of the run's
calibrated, TTA-averaged probabilities). Columns:

* ``faces``, ``backgr``: maps with no positive value (the card's "no region arguing
  for ..." note) among the 100 faces, the 100 background patches;
* ``changed``: the same among 500 changed faces (mirrored, darker, harsher contrast,
  turned 10 degrees, grainy), as uploads differ from the sample;
* ``pasted``, ``peak in face``, ``mass``: the faces shrunk to half size at a random place
  on a flat canvas of their mean grey: empty maps, the share of maps whose maximum lies
  on the face, the map's share on the face (the face is a quarter of the canvas: a map
  that ignored the image would score about 25%);
* ``hot area``: share of a face's pixels at half the peak or more (a wash is near 100%);
* ``drop hot``: the card's probability lost, in points, when the map's hottest 20% of
  pixels show a blurred copy of the face instead (the header gives the loss for a random
  20% of blurred noise blobs): the larger, the more the map shows what the answer rests on;
* ``r(2nd)``: correlation between the map of the named class and that of the runner-up
  class; near 1 means the map hardly depends on the class it is said to explain;
* ``ms/face``: median over ``--repeats`` of one call for a 20-face upload, divided by 20.

Score-CAM runs the network once per channel of the last block (256 times per face): its
columns are on the first 20 faces only, the costly methods (over 10 ms per face) skip
the background and changed columns, and Score-CAM is timed once.

Methods: ``today`` is the Grad-CAM shipped before this benchmark (last convolution,
channels weighted by their mean gradient of the probability). The others take the
gradient of the class's log-odds (its logit against the log-sum-exp of the others': the
probability's direction, without its saturation near 1), on the ``last`` convolution or
the ``early`` block (``ferdash.saliency.explained_layer``: twice the last one's
resolution), weighted as Grad-CAM, Grad-CAM++, LayerCAM or HiResCAM (element-wise);
``vsflat``: the features taken against those of a flat image of the face's mean grey;
``+flip``: averaged with the mirrored face's map, as the runs' answers are; then
SmoothGrad (16 noisy copies, input gradients) and Score-CAM. ``shipped`` is
``ferdash.saliency.run_saliency`` as it is now.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from skimage.data import lfw_subset  # noqa: E402

from ferdash import saliency  # noqa: E402
from ferdash.runs import model_store  # noqa: E402
from ferdash.runs.rundir import read_run_info  # noqa: E402

UPLOAD = 20  # faces in the timed call: a 20-face upload
HOT = 0.2  # share of pixels deleted by the deletion test
SCORECAM_FACES = 20
SMOOTHGRAD_SAMPLES = 16
SMOOTHGRAD_SIGMA = 0.1 * 255

Maps = Callable[[np.ndarray, np.ndarray], np.ndarray]


def lfw_crops(size: tuple[int, int]) -> np.ndarray:
    """scikit-image's LFW sample as uint8 crops of ``size`` (H, W): 100 faces, then 100
    patches of the photos' backgrounds."""
    height, width = size
    faces = [cv2.resize(f.astype(np.float32) * 255, (width, height), interpolation=cv2.INTER_LINEAR)
             for f in lfw_subset()]
    return np.clip(np.round(np.stack(faces)), 0, 255).astype(np.uint8)


def pasted_faces(crops: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each crop at half size at a random place on a flat canvas of its mean grey; and
    each face's mask."""
    rng = np.random.default_rng(seed)
    n, height, width = crops.shape
    fh, fw = height // 2, width // 2
    canvases = np.empty_like(crops)
    masks = np.zeros(crops.shape, bool)
    for i, crop in enumerate(crops):
        canvases[i] = int(round(crop.mean()))
        y0, x0 = int(rng.integers(0, height - fh + 1)), int(rng.integers(0, width - fw + 1))
        small = cv2.resize(crop, (fw, fh), interpolation=cv2.INTER_AREA)
        canvases[i, y0 : y0 + fh, x0 : x0 + fw] = small
        masks[i, y0 : y0 + fh, x0 : x0 + fw] = True
    return canvases, masks


def variants(crops: np.ndarray, seed: int = 0) -> np.ndarray:
    """Five changed copies of each crop, as uploads differ from the sample: mirrored,
    darker, harsher contrast, turned 10 degrees either way, grainy."""
    rng = np.random.default_rng(seed)
    height, width = crops.shape[1:]
    out = []
    for crop in crops.astype(np.float32):
        turn = cv2.getRotationMatrix2D((width / 2, height / 2), float(rng.choice([-10, 10])), 1.0)
        out += [
            crop[:, ::-1],
            crop * 0.6,
            (crop - crop.mean()) * 1.6 + crop.mean(),
            cv2.warpAffine(crop, turn, (width, height), borderMode=cv2.BORDER_REPLICATE),
            crop + rng.normal(0, 12, crop.shape),
        ]
    return np.clip(np.round(np.stack(out)), 0, 255).astype(np.uint8)


# -- the candidates ---------------------------------------------------------------------


class Candidates:
    """Every candidate of one model on one sub-model: the feature maps of the last and the
    earlier convolution block, the logits and the probabilities."""

    def __init__(self, model: Any) -> None:
        import keras
        import tensorflow as tf

        self.last = saliency.last_conv_layer(model)
        self.early = saliency.explained_layer(model)
        dense = model.layers[-1]
        assert type(dense).__name__ == "Dense", "the registry's nets end in a softmax Dense"
        self.sub = keras.Model(model.inputs, [self.last.output, self.early.output, dense.input,
                                              model.outputs[0]])
        kernel, bias = dense.kernel, dense.bias
        self.input_shape = tuple(model.input_shape[1:])
        spec = tf.TensorSpec((None, *self.input_shape), tf.float32)
        ispec = tf.TensorSpec((None,), tf.int32)

        def target(h: tf.Tensor, probs: tf.Tensor, c: tf.Tensor, kind: str) -> tf.Tensor:
            if kind == "prob":
                return tf.gather(tf.cast(probs, tf.float32), c, axis=1, batch_dims=1)
            logits = tf.matmul(tf.cast(h, tf.float32), tf.cast(kernel, tf.float32))
            logits += tf.cast(bias, tf.float32)
            onehot = tf.one_hot(c, tf.shape(logits)[1])
            chosen = tf.reduce_sum(logits * onehot, axis=1)
            return chosen - tf.reduce_logsumexp(logits - 1e9 * onehot, axis=1)

        self._fns: dict[str, Any] = {}

        def make_cam(layer: str, kind: str, weighting: str, flat: bool = False) -> Any:
            @tf.function(input_signature=[spec, ispec])
            def cam(x: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
                with tf.GradientTape() as tape:
                    last, early, h, probs = self.sub(x, training=False)
                    feats = last if layer == "last" else early
                    score = target(h, probs, c, kind)
                g = tf.cast(tape.gradient(score, feats), tf.float32)
                a = tf.cast(feats, tf.float32)
                if flat:
                    # Against the features of a blank of the face's mean grey.
                    blank = tf.ones_like(x) * tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True)
                    b_last, b_early, _, _ = self.sub(blank, training=False)
                    a -= tf.cast(b_last if layer == "last" else b_early, tf.float32)
                if weighting == "gradcam":
                    m = tf.reduce_sum(a * tf.reduce_mean(g, axis=(1, 2), keepdims=True), -1)
                elif weighting == "gradcam++":
                    g2 = g * g
                    alpha = tf.math.divide_no_nan(
                        g2, 2 * g2 + tf.reduce_sum(a, axis=(1, 2), keepdims=True) * g2 * g
                    )
                    w = tf.reduce_sum(alpha * tf.nn.relu(g), axis=(1, 2), keepdims=True)
                    m = tf.reduce_sum(a * w, -1)
                elif weighting == "layercam":
                    m = tf.reduce_sum(a * tf.nn.relu(g), -1)
                else:  # hirescam
                    m = tf.reduce_sum(a * g, -1)
                return tf.nn.relu(m)

            return cam

        self._fns["today"] = make_cam("last", "prob", "gradcam")
        for layer in ("last", "early"):
            for weighting in ("gradcam", "gradcam++", "layercam", "hirescam"):
                self._fns[f"{weighting}-{layer}"] = make_cam(layer, "logodds", weighting)
            for weighting in ("gradcam", "hirescam"):
                name = f"{weighting}-{layer}-vsflat"
                self._fns[name] = make_cam(layer, "logodds", weighting, flat=True)

        def with_flip(fn: Any) -> Any:
            def both(x: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
                # The card's answer averages the face and its mirror image: so does the map.
                mirrored = tf.reverse(fn(tf.reverse(x, axis=[2]), c), axis=[2])
                return (fn(x, c) + mirrored) / 2

            return tf.function(both, input_signature=[spec, ispec])

        for name in ("hirescam-early", "hirescam-early-vsflat"):
            self._fns[f"{name}+flip"] = with_flip(self._fns[name])

        @tf.function(input_signature=[spec, ispec])
        def smoothgrad(x: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
            n = tf.shape(x)[0]
            noisy = tf.repeat(x, SMOOTHGRAD_SAMPLES, axis=0)
            noisy += tf.random.normal(tf.shape(noisy), stddev=SMOOTHGRAD_SIGMA, seed=0)
            cc = tf.repeat(c, SMOOTHGRAD_SAMPLES, axis=0)
            with tf.GradientTape() as tape:
                tape.watch(noisy)
                _, _, h, probs = self.sub(noisy, training=False)
                score = target(h, probs, cc, "logodds")
            g = tape.gradient(score, noisy)
            g = tf.reshape(g, (n, SMOOTHGRAD_SAMPLES, *self.input_shape))
            return tf.abs(tf.reduce_mean(g, axis=1))[..., 0]

        self._fns["smoothgrad"] = smoothgrad

        @tf.function(input_signature=[spec, ispec])
        def scorecam_one(x: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
            # One face (batch of 1): each last-block channel, upsampled and scaled to
            # [0, 1], masks the face; the masked face's probability weighs the channel.
            last, _, _, _ = self.sub(x, training=False)
            a = tf.cast(last, tf.float32)[0]  # (h, w, k)
            up = tf.image.resize(a[None], self.input_shape[:2])[0]
            lo = tf.reduce_min(up, axis=(0, 1), keepdims=True)
            hi = tf.reduce_max(up, axis=(0, 1), keepdims=True)
            masks = tf.math.divide_no_nan(up - lo, hi - lo)  # (H, W, k)
            masked = tf.transpose(masks, (2, 0, 1))[..., None] * x  # (k, H, W, 1)
            _, _, _, probs = self.sub(masked, training=False)
            k = tf.shape(masked)[0]
            w = tf.gather(tf.cast(probs, tf.float32), tf.repeat(c, k), axis=1, batch_dims=1)
            return tf.nn.relu(tf.reduce_sum(a * w, -1))[None]

        def scorecam(x: np.ndarray, c: np.ndarray) -> np.ndarray:
            return np.concatenate([scorecam_one(x[i : i + 1], c[i : i + 1]).numpy()
                                   for i in range(len(x))])

        self._fns["scorecam-last"] = scorecam

    def method(self, name: str) -> Maps:
        fn = self._fns[name]
        height, width = self.input_shape[:2]

        def maps(crops: np.ndarray, chosen: np.ndarray) -> np.ndarray:
            x = crops[..., None].astype(np.float32)
            raw = np.asarray(fn(x, np.asarray(chosen, np.int32)))
            return normalise(raw, (height, width))

        return maps


def normalise(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Maps scaled to a peak of 1 (all zeros when nothing is positive), at ``size``."""
    out = []
    for m in np.nan_to_num(raw.astype(np.float32)):
        peak = m.max()
        m = m / peak if peak > 0 else np.zeros_like(m)
        out.append(saliency.resize_map(m, size))
    return np.stack(out)


# -- the measures -----------------------------------------------------------------------


def noise_maps(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Blurred uniform noise: maps of random blobs, the deletion test's baseline."""
    rng = np.random.default_rng(seed)
    return np.stack([cv2.GaussianBlur(rng.random(shape[1:]).astype(np.float32), (0, 0), 4)
                     for _ in range(shape[0])])


def deletion_drop(loaded: Any, crops: np.ndarray, maps: np.ndarray, chosen: np.ndarray) -> float:
    """Points of the chosen class's probability lost when the hottest :data:`HOT` of each
    map's pixels show a blurred copy of the face instead."""
    blurred = np.stack([cv2.GaussianBlur(c, (0, 0), 4) for c in crops]).astype(np.float32)
    jitter = np.random.default_rng(1).random(maps.shape) * 1e-6  # ties: flat maps
    flat = (maps + jitter).reshape(len(maps), -1)
    cut = np.quantile(flat, 1 - HOT, axis=1)[:, None]
    hot = (flat >= cut).reshape(maps.shape)
    edited = np.where(hot, blurred, crops.astype(np.float32))
    before = loaded.predict(crops[..., None].astype(np.float32))
    after = loaded.predict(edited[..., None])
    rows = np.arange(len(crops))
    return float(100 * (before[rows, chosen] - after[rows, chosen]).mean())


def runner_up_correlation(method: Maps, crops: np.ndarray, probs: np.ndarray,
                          maps: np.ndarray) -> float:
    second = np.argsort(probs, axis=1)[:, -2].astype(np.int32)
    other = method(crops, second)
    rs = []
    for a, b in zip(maps, other):
        if a.std() > 0 and b.std() > 0:
            rs.append(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return float(np.mean(rs)) if rs else float("nan")


def ms_per_face(method: Maps, crops: np.ndarray, chosen: np.ndarray) -> float:
    start = time.perf_counter()
    method(crops, chosen)
    return 1000 * (time.perf_counter() - start) / len(crops)


def figure(path: Path, crops: np.ndarray, methods: dict[str, Maps], chosen: np.ndarray) -> None:
    """One row per method, its overlays of the first 10 crops side by side."""
    from PIL import Image

    n = min(10, len(crops))
    rows = [np.concatenate([np.repeat(c[..., None], 3, axis=-1) for c in crops[:n]], axis=1)]
    for method in methods.values():
        maps = method(crops[:n], chosen[:n])
        overlays = [saliency.overlay(c, m) for c, m in zip(crops[:n], maps)]
        rows.append(np.concatenate(overlays, axis=1))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)
    print(f"figure: {path} (rows: the crops, then {', '.join(methods)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=["fer7", "happy_sad"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", nargs="*", default=None, help="a subset (default: all)")
    parser.add_argument("--figure", type=Path, default=None,
                        help="also save overlays of the first faces, per method, to this PNG "
                             "(one per run: the run's name is added)")
    args = parser.parse_args()
    import tensorflow as tf

    # Each candidate is its own traced function: TensorFlow's "retracing" warning is noise.
    tf.get_logger().setLevel("ERROR")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    for run in args.runs:
        loaded = model_store.get_loaded_run(read_run_info(REPO_ROOT / "models" / run))

        def top(x: np.ndarray) -> np.ndarray:
            return loaded.predict(x[..., None].astype(np.float32)).argmax(axis=1).astype(np.int32)

        sample = lfw_crops(loaded.input_size)
        crops, backgrounds = sample[:100], sample[100:]
        probs = loaded.predict(crops[..., None].astype(np.float32))
        chosen = probs.argmax(axis=1).astype(np.int32)
        pasted, masks = pasted_faces(crops)
        changed = variants(crops)
        chosen_for = {"backgrounds": top(backgrounds), "pasted": top(pasted),
                      "changed": top(changed)}

        cands = Candidates(loaded.model)
        methods: dict[str, Maps] = {name: cands.method(name) for name in cands._fns}
        methods["shipped"] = lambda c, k: saliency.run_saliency(loaded, c, k)
        if args.methods:
            methods = {k: v for k, v in methods.items() if k in args.methods}
        print(f"\n{run}: LFW sample at {loaded.input_size[0]}x{loaded.input_size[1]}; layers: "
              f"last {cands.last.name} {tuple(cands.last.output.shape[1:3])}, "
              f"early {cands.early.name} {tuple(cands.early.output.shape[1:3])}")

        # Timing first, interleaved, so that every method sees the same machine load.
        upload, upload_chosen = crops[:UPLOAD], chosen[:UPLOAD]
        times: dict[str, list[float]] = {name: [] for name in methods}
        for name, method in methods.items():
            method(upload, upload_chosen)  # trace
        for _ in range(args.repeats):
            for name, method in methods.items():
                if name.startswith("scorecam") and times[name]:
                    continue
                times[name].append(ms_per_face(method, upload, upload_chosen))

        random_drop = deletion_drop(loaded, crops, noise_maps(crops.shape), chosen)
        print(f"empty maps among {len(crops)} faces, {len(backgrounds)} background patches, "
              f"{len(changed)} changed faces, {len(pasted)} pasted faces; deleting a random "
              f"{HOT:.0%} of a face (blurred noise blobs) costs {random_drop:.1f} points")
        print(f"{'method':26s} {'faces':>5s} {'backgr':>6s} {'changed':>7s} {'pasted':>6s} "
              f"{'peak in face':>12s} {'mass':>4s} {'hot area':>8s} {'drop hot':>8s} "
              f"{'r(2nd)':>6s} {'ms/face':>8s}")

        def empty(maps: np.ndarray) -> int:
            return int((maps.max(axis=(1, 2)) <= 0).sum())

        for name, method in methods.items():
            cost = statistics.median(times[name])
            n = SCORECAM_FACES if name.startswith("scorecam") else len(crops)
            maps = method(crops[:n], chosen[:n])
            pmaps = method(pasted[:n], chosen_for["pasted"][:n])
            peaks = [np.unravel_index(int(m.argmax()), m.shape) for m in pmaps]
            inside = np.mean([m.max() > 0 and mask[p] for m, mask, p in zip(pmaps, masks, peaks)])
            mass = np.mean([m[mask].sum() / m.sum() if m.max() > 0 else 0.0
                            for m, mask in zip(pmaps, masks)])
            drop = deletion_drop(loaded, crops[:n], maps, chosen[:n])
            r2 = runner_up_correlation(method, crops[:n], probs[:n], maps)
            if cost < 10:  # the costly ones would take minutes on 500 faces
                bg_empty = str(empty(method(backgrounds, chosen_for["backgrounds"])))
                changed_empty = str(empty(method(changed, chosen_for["changed"])))
            else:
                bg_empty = changed_empty = "-"
            hot_area = float((maps >= 0.5).mean())
            note = f" (first {n} faces)" if n < len(crops) else ""
            print(f"{name:26s} {empty(maps):5d} {bg_empty:>6s} {changed_empty:>7s} "
                  f"{empty(pmaps):6d} {inside:12.0%} {mass:4.0%} {hot_area:8.0%} "
                  f"{drop:8.1f} {r2:6.2f} {cost:8.2f}{note}")
        if args.figure is not None:
            path = args.figure.with_name(f"{args.figure.stem}-{run}{args.figure.suffix}")
            figure(path, crops, methods, chosen)


if __name__ == "__main__":
    main()
