"""Face detection: how many faces are found, and how fast, for the current detectors
(BlazeFace first, the Haar cascade when it finds nothing) against the cascade alone with
the same settings (the detector before BlazeFace), side by side in one run.

    python benchmarks/bench_detection.py [--scenes 150] [--data ../shared/data/fer2013]

Test images: FER2013 PublicTest faces (``val/``, read in place when the folder exists,
never copied) enlarged to 70-200 px and pasted at random places on generated 640x480
scenes; five copies of scikit-image's astronaut face in a 3+2 grid and in a row, at four
sizes; the photos of ``bench_vs_fer.py``; and four images without a face (noise, and
scikit-image's coffee, cat and rocket) for false detections.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from ferdash import faces, imaging  # noqa: E402

CURRENT = dict(
    DETECTORS=faces.DETECTORS,
    CASCADE_FILE=faces.CASCADE_FILE,
    COARSE_MAX_SIDE=faces.COARSE_MAX_SIDE,
    _MIN_FACE=faces._MIN_FACE,
    _SCALE_FACTOR=faces._SCALE_FACTOR,
    _MIN_NEIGHBORS=faces._MIN_NEIGHBORS,
    max_side=faces.DETECT_MAX_SIDE,
)
PREVIOUS = {**CURRENT, "DETECTORS": ("haar",)}
LABELS = {"current": "BlazeFace, then the Haar cascade", "previous": "the Haar cascade alone"}


def use(settings: dict) -> int:
    """Switch ``ferdash.faces`` to ``settings``; returns the max_side to call it with."""
    for name, value in settings.items():
        if name != "max_side":
            setattr(faces, name, value)
    faces._xml_path = None
    faces._local = threading.local()  # reload the cascade file
    return settings["max_side"]


def iou(a: tuple, b: tuple) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter)


def fer_scenes(folder: Path, count: int) -> list[tuple[np.ndarray, tuple]]:
    files = sorted(folder.glob("*/*.png"))
    rng = random.Random(0)
    rng.shuffle(files)
    noise = np.random.default_rng(0)
    scenes = []
    for path in files[:count]:
        scene = np.linspace(60, 190, 640)[None, :] + np.linspace(-30, 30, 480)[:, None]
        scene = (scene + noise.normal(0, 12, (480, 640))).clip(0, 255).astype(np.uint8)
        side = rng.randint(70, 200)
        face = cv2.resize(np.asarray(Image.open(path).convert("L")), (side, side), interpolation=cv2.INTER_CUBIC)
        x, y = rng.randint(0, 640 - side), rng.randint(0, 480 - side)
        scene[y : y + side, x : x + side] = face
        scenes.append((scene, (x, y, side, side)))
    return scenes


def five_faces(tile: int, cols: int) -> np.ndarray:
    astronaut = Image.fromarray(data.astronaut()).convert("L")
    face = astronaut.crop((110, 0, 370, 260)).resize((tile, tile))
    rows = (5 + cols - 1) // cols
    canvas = Image.new("L", (cols * (tile + 10) + 10, rows * (tile + 10) + 10), 120)
    for i in range(5):
        canvas.paste(face, (10 + (i % cols) * (tile + 10), 10 + (i // cols) * (tile + 10)))
    return np.asarray(canvas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=150)
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "fer2013")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per photo (median)")
    args = parser.parse_args()

    from bench_vs_fer import photos

    scenes = fer_scenes(args.data / "val", args.scenes) if (args.data / "val").is_dir() else []
    grids = {f"{tile}px {'3+2' if cols == 3 else 'row'}": five_faces(tile, cols) for tile in (180, 210, 240, 280) for cols in (3, 5)}
    bench = {name: imaging.decode_image(blob).grey for name, blob in photos().items()}
    rng = np.random.default_rng(1)
    no_face = {
        "noise 640x480": rng.integers(0, 256, (480, 640), dtype=np.uint8),
        "coffee": np.asarray(Image.fromarray(data.coffee()).convert("L")),
        "cat": np.asarray(Image.fromarray(data.chelsea()).convert("L")),
        "rocket": np.asarray(Image.fromarray(data.rocket()).convert("L")),
    }
    timed = {**bench, "noise 640x480 (no face)": no_face["noise 640x480"]}

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPU cores, load average {load}; detection only, medians of {args.runs}")
    if not scenes:
        print(f"(FER2013 not found under {args.data}: the pasted-face recall is skipped)")
    results: dict[str, dict] = {}
    times: dict[str, dict[str, list[float]]] = {"current": {k: [] for k in timed}, "previous": {k: [] for k in timed}}
    for label, settings in (("current", CURRENT), ("previous", PREVIOUS)):
        side = use(settings)
        found = lambda g: [(b.x, b.y, b.w, b.h) for b in faces.detect_faces(g, side)]  # noqa: E731
        results[label] = {
            "scenes": sum(any(iou(b, truth) > 0.3 for b in found(img)) for img, truth in scenes),
            "grids": [len(found(g)) for g in grids.values()],
            "false": sum(len(found(g)) for g in no_face.values()),
            "photos": [len(found(g)) for g in bench.values()],
        }
    for _ in range(args.runs):  # interleaved: both settings see the same load
        for label, settings in (("current", CURRENT), ("previous", PREVIOUS)):
            side = use(settings)
            for name, grey in timed.items():
                start = time.perf_counter()
                faces.detect_faces(grey, side)
                times[label][name].append(time.perf_counter() - start)
    use(CURRENT)
    for label in ("current", "previous"):
        r = results[label]
        print(f"\n{LABELS[label]}:")
        if scenes:
            print(f"  FER2013 faces pasted on scenes found: {r['scenes']}/{len(scenes)}")
        print(f"  five-face images ({', '.join(grids)}): {r['grids']} faces found")
        print(f"  faces found in images without one: {r['false']}")
        print(f"  bench_vs_fer photos ({', '.join(bench)}): {r['photos']} faces found")
        print("  " + " | ".join(f"{name} {statistics.median(v) * 1e3:.1f} ms" for name, v in times[label].items()))


if __name__ == "__main__":
    main()
