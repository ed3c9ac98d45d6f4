"""Throughput of ``python -m ferdash predict`` on folders: 48x48 face crops/s and 640x480 photos/s.

    python benchmarks/bench_cli.py [--crops 3000] [--photos 200] [--model RUN ...] [--rounds 3]

Generated folders in a temporary directory (never FER2013): 48x48 greyscale PNG crops
cut around the astronaut's face with jitter and noise, and 640x480 JPEGs with the
astronaut pasted at a random place on a generated scene (as ``bench_vs_fer.py``'s
photos). What is timed is the command's own loop (:func:`ferdash.cli.predict.run`, in
this process, the model already loaded): listing the folder, reading, decoding,
detecting, cropping, the model, the table and the CSV written. Rounds alternate between
the variants so that a shared CPU loads them alike; medians are printed.

Runs: each ``--model`` given, by default the shipped ``fer7`` and ``fer7_fast`` (the
quarter-width network taught by fer7 for batch scoring), side by side in the same rounds.
Variants: ``--workers`` 1 and the default (one per core), and the ceilings on this
machine: the model alone on ready-cut crops (one big batch), and the preparation alone
(decode + detect + crop, every core, no model); for photos, ``--every-face`` too (the
cascade's search for faces smaller than BlazeFace's range, which the default, each
file's largest face, skips). Where the ``fer`` package is installed
(see ``bench_vs_fer.py``), the same files through fer, one after another as its API
takes them: crops with the whole image as the face box, photos with its Haar detector.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
sys.path.insert(1, str(REPO_ROOT / ".bench-deps" / "fer"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from ferdash import batch  # noqa: E402
from ferdash.cli import build_parser  # noqa: E402
from ferdash.paths import iter_image_paths  # noqa: E402
from ferdash.runs import model_store  # noqa: E402
from ferdash.runs.rundir import read_run_info  # noqa: E402

#: The astronaut's face in scikit-image's 512x512 photo (x, y, side), found by BlazeFace.
FACE = (176, 75, 98)


def make_crops(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` 48x48 greyscale PNGs of the astronaut's face, each shifted, scaled and noised."""
    rng = np.random.default_rng(seed)
    grey = Image.fromarray(data.astronaut()).convert("L")
    x, y, side = FACE
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = side * rng.uniform(1.0, 1.3)
        dx, dy = rng.uniform(-0.1, 0.1, 2) * side
        box = (x + dx - (s - side) / 2, y + dy - (s - side) / 2)
        crop = grey.crop((*box, box[0] + s, box[1] + s)).resize((48, 48), Image.BILINEAR)
        noisy = np.asarray(crop, np.float32) + rng.normal(0, 6, (48, 48))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"crop_{i:05d}.png")


def make_photos(folder: Path, n: int, seed: int = 1) -> None:
    """``n`` 640x480 JPEGs, portraits: the astronaut (400-480 px, a face of 75-90 px) at a
    random place on a generated scene, as in ``bench_vs_fer.py``."""
    from bench_vs_fer import background

    rng = np.random.default_rng(seed)
    astronaut = Image.fromarray(data.astronaut())
    folder.mkdir(parents=True, exist_ok=True)
    scenes = [background(640, 480, seed=s) for s in range(4)]
    for i in range(n):
        photo = scenes[i % len(scenes)].copy()
        side = int(rng.integers(400, 481))
        at = (int(rng.integers(0, 640 - side + 1)), int(rng.integers(0, 480 - side + 1)))
        photo.paste(astronaut.resize((side, side)), at)
        photo.save(folder / f"photo_{i:05d}.jpg", quality=90)


def cli_once(
    folder: Path, run_dir: Path, out: Path, workers: int | None, *flags: str
) -> float:
    """Seconds for the predict command's loop over ``folder`` (CSV to ``out``), model warm."""
    argv = ["predict", str(folder), "--run", str(run_dir), "--out", str(out), *flags]
    if workers:
        argv += ["--workers", str(workers)]
    args = build_parser().parse_args(argv)
    devnull = open(os.devnull, "w")
    stderr, sys.stderr = sys.stderr, devnull  # the summary lines
    try:
        start = time.perf_counter()
        args.handler(args)
        return time.perf_counter() - start
    finally:
        sys.stderr = stderr
        devnull.close()


def prepare_only(folder: Path, input_size: tuple[int, int]) -> float:
    paths = iter_image_paths([folder])
    start = time.perf_counter()
    groups = batch.prepare_groups([str(p) for p in paths])
    with ThreadPoolExecutor(batch.cpu_count()) as pool:
        # As the command: files in groups, each file's largest face.
        list(pool.map(lambda g: batch._prepare_group(g, input_size, False), groups))
    return time.perf_counter() - start


def import_fer() -> type | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from fer.fer import FER
    except ImportError:
        return None
    return FER


def fer_files(detector: object, folder: Path, whole_image: bool) -> float:
    import cv2

    paths = iter_image_paths([folder])
    start = time.perf_counter()
    for path in paths:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if whole_image:
            detector.detect_emotions(img, face_rectangles=[(0, 0, img.shape[1], img.shape[0])])
        else:
            detector.detect_emotions(img)
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median seconds per variant; every round runs each variant once, in turn."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(fn())
    return {name: statistics.median(v) for name, v in times.items()}


#: The throughput goals of the command line (issue "Beyond the dashboard"): files per
#: second on a 2-core CPU, where fer's own TF Lite model read ~2,300 crops/s.
GOALS = {"crops": 2500, "photos": 100}


def default_models() -> list[Path]:
    """The shipped seven-expression runs: fer7, and fer7_fast (for batch scoring) when present."""
    return [p for p in (REPO_ROOT / "models" / n for n in ("fer7", "fer7_fast")) if (p / "run.json").is_file()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=3000)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument(
        "--model", type=Path, action="append",
        help="a run folder; repeat for several (default: models/fer7 and models/fer7_fast)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--no-fer", action="store_true", help="skip the fer package even when installed"
    )
    args = parser.parse_args()
    models = args.model or default_models()

    runs = {}
    for path in models:
        info = read_run_info(path)
        runs[info.name] = (path, info, model_store.get_loaded_run(info))
    FER = None if args.no_fer else import_fer()
    fer = None
    if FER is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fer = FER(mtcnn=False)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    described = "; ".join(
        f"{name} ({loaded.engine_name}, tta={loaded.tta or 'none'})" for name, (_, _, loaded) in runs.items()
    )
    print(
        f"runs: {described}; {batch.cpu_count()} cores; load average {load} (before); "
        f"{args.rounds} rounds, medians"
    )
    if FER is None and not args.no_fer:
        print("(fer not installed: see bench_vs_fer.py to compare with it)")

    input_size = next(iter(runs.values()))[1].input_size
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_crops(root / "crops", args.crops)
        make_photos(root / "photos", args.photos)
        out = root / "out.csv"
        height, width = input_size
        ready = np.random.default_rng(0).integers(0, 256, (args.crops, height, width, 1)).astype(np.float32)
        for path, _, _ in runs.values():  # warm: page cache, per-thread detectors and interpreters
            for folder in ("crops", "photos"):
                cli_once(root / folder, path, out, None)

        for what, n in (("crops", args.crops), ("photos", args.photos)):
            folder = root / what
            fns: dict[str, Callable[[], float]] = {}
            for name, (path, info, loaded) in runs.items():
                fns[f"{name}: predict"] = partial(cli_once, folder, path, out, None)
                fns[f"{name}: predict --workers 1"] = partial(cli_once, folder, path, out, 1)
                if what == "crops":
                    fns[f"{name}: ceiling, model alone"] = partial(_timed, partial(loaded.predict, ready))
                else:
                    fns[f"{name}: predict --every-face"] = partial(
                        cli_once, folder, path, out, None, "--every-face"
                    )
            fns["ceiling: preparation alone"] = partial(prepare_only, folder, input_size)
            if fer is not None:
                fns["fer, one file at a time"] = partial(fer_files, fer, folder, what == "crops")
            med = interleaved(fns, args.rounds)
            label = "48x48 face crops" if what == "crops" else "640x480 photos (detection included)"
            print(f"\n{n:,} {label}, files per second (goal {GOALS[what]:,}/s):")
            fer_rate = n / med["fer, one file at a time"] if fer is not None else None
            for variant, seconds in med.items():
                rate = n / seconds
                notes = []
                if variant.endswith(": predict"):
                    notes.append("goal met" if rate >= GOALS[what] else "goal not met")
                    if fer_rate:
                        notes.append(f"{rate / fer_rate:.2f}x fer's rate")
                print(f"   {variant:38} {rate:9,.0f}/s  {'; '.join(notes)}".rstrip())
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\nload average after: {load}")


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
