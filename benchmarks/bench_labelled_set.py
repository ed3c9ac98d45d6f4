"""Time scoring a labelled set end to end (zip read, decode, detect, crop, model, score),
as the Predict tab's "Labelled set" input does, on generated images:

    python benchmarks/bench_labelled_set.py [--faces 1000] [--photos 200] [--model models/fer7]

1,000 48x48 face crops in a zip of class folders (no detection: they are crops already),
and 200 640x480 photos with a face to find. Targets on the 2-core CPU: <= 5 s and <= 20 s.
Each is measured warm (the model loaded and traced first), and every-face detection
against largest-face-only is printed side by side for the photos.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from ferdash import inference  # noqa: E402
from ferdash.labelled_set import read_zip  # noqa: E402
from ferdash.runs import model_store  # noqa: E402
from ferdash.runs.rundir import read_run_info  # noqa: E402
from ferdash.set_evaluation import evaluate_set  # noqa: E402


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def crops_zip(n: int, classes: tuple[str, ...]) -> bytes:
    face = Image.fromarray(data.astronaut()).convert("L").crop((150, 40, 290, 180)).resize((48, 48))
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for i in range(n):
            noisy = np.clip(np.asarray(face, int) + rng.integers(-15, 15, (48, 48)), 0, 255)
            archive.writestr(f"{classes[i % len(classes)]}/{i}.png", encode(Image.fromarray(noisy.astype(np.uint8)), "PNG"))
    return buf.getvalue()


def photos_zip(n: int, classes: tuple[str, ...]) -> bytes:
    astronaut = Image.fromarray(data.astronaut())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for i in range(n):
            canvas = Image.new("RGB", (640, 480), (100 + i % 50, 110, 120))
            canvas.paste(astronaut.resize((400, 400)), (40 + i % 200, 40))
            archive.writestr(f"{classes[i % len(classes)]}/{i}.jpg", encode(canvas, "JPEG"))
    return buf.getvalue()


def timed(archive: bytes, model: model_store.LoadedRun) -> tuple[float, int]:
    start = time.perf_counter()
    report = evaluate_set(read_zip(archive, model.classes), model, "bench")
    return time.perf_counter() - start, report.score.images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=1000)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--model", default=str(REPO_ROOT / "models" / "fer7"))
    args = parser.parse_args()
    model = model_store.get_loaded_run(read_run_info(args.model))
    model.predict(np.zeros((1, *model.input_size, 1), np.float32))
    faces = crops_zip(args.faces, model.classes)
    photos = photos_zip(args.photos, model.classes)
    timed(crops_zip(64, model.classes), model)  # warm: first batches, threads, caches

    seconds, n = timed(faces, model)
    print(f"{n} 48x48 faces: {seconds:.2f} s end to end ({n / seconds:,.0f} faces/s; target <= 5 s)")
    seconds, n = timed(photos, model)
    print(f"{n} 640x480 photos, every face: {seconds:.2f} s ({n / seconds:,.0f} photos/s; target <= 20 s)")
    original = inference.analyse
    inference_largest = lambda files, loaded, *a, **k: original(files, loaded, *a, every_face=False, **k)  # noqa: E731
    import ferdash.set_evaluation as set_evaluation

    set_evaluation.analyse = inference_largest
    try:
        seconds_largest, _ = timed(photos, model)
    finally:
        set_evaluation.analyse = original
    print(f"{n} 640x480 photos, largest face only: {seconds_largest:.2f} s "
          f"(every face costs {seconds / seconds_largest:.2f}x)")


if __name__ == "__main__":
    main()
