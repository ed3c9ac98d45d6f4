"""ferdash against the ``fer`` package (Haar cascade + its bundled mini-Xception), side by side.

    pip install --no-deps --target .bench-deps/fer fer     # once; .bench-deps/ is git-ignored
    pip install "opencv-python-headless<5" requests setuptools  # fer's light dependencies
    python benchmarks/bench_vs_fer.py [--runs 60] [--model models/fer7]

Why ``--no-deps``: fer's declared dependencies pull in PyTorch (for MTCNN) and video tools
(moviepy, ffmpeg) that its Haar-cascade mode never uses. The script finds fer in
``.bench-deps/fer`` or anywhere on ``sys.path`` and says how to install it when absent.

Two measurements, each interleaved round by round so both sides see the same machine
load (the CPU may be shared; compare the ratios, not the milliseconds):

1. One photo in memory (encoded bytes) to probabilities, warm: ferdash's
   ``inference.analyse_bytes`` (decode, greyscale, detect, crop, model) against
   ``cv2.imdecode`` + ``FER(mtcnn=False).detect_emotions``. Photos: scikit-image's
   astronaut (a real photo), and 640x480 / 1920x1080 JPEGs with the astronaut on a
   generated background. Both sides must find the face (checked, printed). In the same
   rounds, the decoding alone that each side does (ferdash's ``imaging.decode_image``,
   bytes to greyscale; fer's ``cv2.imdecode``), and the ceiling: fer's total over
   ferdash's decode, the best fer/ferdash ratio reachable were everything after decoding
   free (compare it with the goal of 5x: a floor both sides pay bounds the ratio).
2. Batch throughput: 1,000 faces classified in one call, ferdash's compiled model
   (48x48 input) against fer's models (64x64 input): the quantised TFLite model fer uses
   by default, and the Keras mini-Xception (``use_tflite=False``).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
sys.path.insert(1, str(REPO_ROOT / ".bench-deps" / "fer"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from ferdash import imaging, inference  # noqa: E402

from ferdash.runs import model_store  # noqa: E402
from ferdash.runs.rundir import read_run_info  # noqa: E402

INSTALL_HINT = (
    "fer is not installed. Install it outside the project's dependencies:\n"
    "    pip install --no-deps --target .bench-deps/fer fer\n"
    '    pip install "opencv-python-headless<5" requests setuptools'
)


def import_fer() -> type | None:
    """fer's ``FER`` class, or None when fer (or a module it imports) is missing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources deprecation noise on import
            from fer.fer import FER
    except ImportError as exc:
        print(f"{INSTALL_HINT}\n({exc})")
        return None
    return FER


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def background(width: int, height: int, seed: int = 0) -> Image.Image:
    """A generated scene: smooth colour gradients plus sensor-like noise (no face)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, width)[None, :, None]
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    base = 70 + 90 * x * np.array([1.0, 0.6, 0.3]) + 60 * y * np.array([0.2, 0.5, 1.0])
    noisy = base + rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def photos() -> dict[str, bytes]:
    astronaut = Image.fromarray(data.astronaut())
    p640 = background(640, 480)
    p640.paste(astronaut.resize((480, 480)), (80, 0))
    p1080 = background(1920, 1080, seed=1)
    p1080.paste(astronaut.resize((1080, 1080)), (420, 0))
    return {
        "astronaut 512x512 PNG": png(astronaut),
        "640x480 JPEG": jpeg(p640),
        "1920x1080 JPEG": jpeg(p1080),
    }


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each function, timed one after another in every round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="timed rounds per photo (median reported)")
    # The app's default seven-class model, with its flip TTA: fer answers seven classes too.
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "fer7")
    parser.add_argument("--faces", type=int, default=1000, help="faces in the batch measurement")
    args = parser.parse_args()

    FER = import_fer()
    if FER is None:
        sys.exit(0)  # a clear skip, not a failure: fer is an optional comparison

    from bench_predict import pick_run

    run_dir, which = pick_run(args.model)
    loaded = model_store.get_loaded_run(read_run_info(run_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fer_default = FER(mtcnn=False)  # fer's default: quantised TFLite mini-Xception
        fer_keras = FER(mtcnn=False, use_tflite=False)  # the Keras mini-Xception (.hdf5)

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"ferdash model: {which}; input {loaded.input_size}; fer {sys.modules['fer'].__version__}")
    print(f"machine: {os.cpu_count()} CPU cores, load average {load} (before); {args.runs} rounds, medians")
    print()
    print("1. One photo (encoded bytes in memory) to probabilities, warm")
    print("   decode: the decoding alone, same rounds (ferdash imaging.decode_image, fer cv2.imdecode)")
    print("   ceiling: fer / ferdash's decode, the best fer/ferdash were all after decoding free")
    print(
        f"{'photo':24} {'ferdash':>9} {'fer':>9} {'fer/ferdash':>12}"
        f"  {'decode: ferdash':>15} {'fer':>8} {'ceiling':>8}  faces found (ferdash, fer)"
    )
    for name, blob in photos().items():
        def ferdash_once(blob: bytes = blob) -> inference.ImageResult:
            return inference.analyse_bytes(blob, loaded)

        def fer_decode(blob: bytes = blob) -> np.ndarray:
            return cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)

        def fer_once(blob: bytes = blob) -> list:
            return fer_default.detect_emotions(fer_decode(blob))

        ours, theirs = ferdash_once(), fer_once()
        found = (ours.prepared.faces_found if ours.prepared else 0, len(theirs))
        fns = {
            "ferdash": ferdash_once,
            "fer": fer_once,
            "ferdash decode": lambda blob=blob: imaging.decode_image(blob),
            "fer decode": fer_decode,
        }
        for _ in range(5):  # warm caches, allocators, traced functions
            for fn in fns.values():
                fn()
        med = {k: v * 1e3 for k, v in interleaved(fns, args.runs).items()}
        print(
            f"{name:24} {med['ferdash']:7.2f}ms {med['fer']:7.2f}ms {med['fer'] / med['ferdash']:11.1f}x"
            f"  {med['ferdash decode']:13.2f}ms {med['fer decode']:6.2f}ms"
            f" {med['fer'] / med['ferdash decode']:7.1f}x  {found}"
        )

    print()
    n = args.faces
    print(f"2. Batch throughput: {n} faces in one call (faces/s; each model at its own input size)")
    rng = np.random.default_rng(0)
    height, width = loaded.input_size
    ours_batch = rng.integers(0, 256, (n, height, width, 1)).astype(np.float32)
    theirs_batch = (rng.random((n, 64, 64), dtype=np.float32) - 0.5) * 2.0  # fer's preprocessing
    classify = fer_default._classify_emotions  # fer's own batch entry point (detect_emotions uses it)
    classify_keras = fer_keras._classify_emotions
    fns = {
        "ferdash": lambda: loaded.predict(ours_batch),
        "fer (TFLite, default)": lambda: classify(theirs_batch),
        "fer (Keras mini-Xception)": lambda: classify_keras(theirs_batch),
    }
    for fn in fns.values():
        fn()  # warm
    rounds = max(3, args.runs // 10)
    med = interleaved(fns, rounds)
    base = med["ferdash"]
    for name, seconds in med.items():
        ratio = "" if name == "ferdash" else f"  ferdash is {seconds / base:.1f}x faster"
        print(f"   {name:28} {n / seconds:9.0f} faces/s{ratio}")
    print(f"({rounds} rounds)")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"load average after: {load}")


if __name__ == "__main__":
    main()
