"""Images per second of the Ray engine against the local path, on the same files.

    python benchmarks/bench_ray.py [--images 500] [--model models/fer7] [--num-cpus 2]
                                   [--actor-cpus 0 1] [--repeats 2]

Writes ``--images`` small images to a temporary folder (nothing is kept): two in five
are photos of scikit-image's astronaut, 128 to 256 px, shifted, scaled and mirrored at
random (one face each); the rest are 48x48 face crops and patches, which the pipeline
takes as face crops already. The local path is ``analyse`` + ``results_frame`` in one
process, in chunks of ``MAX_FILES_PER_UPLOAD`` as an upload is, reading the files from
disk; it is timed warm (model loaded) and cold (with the load). The Ray engine is
``predict_paths`` to a Parquet folder on a local Ray started once with ``--num-cpus``:
its time covers reading to the last part written, actor start and model load included,
not Ray's own start (printed apart). Local and Ray runs alternate, ``--repeats`` times,
so that a busy machine moves both alike.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from ferdash.inference import MAX_FILES_PER_UPLOAD, analyse  # noqa: E402
from ferdash.prediction import results_frame  # noqa: E402
from ferdash.runs import model_store  # noqa: E402
from ferdash.runs.rundir import read_run_info  # noqa: E402


def write_images(folder: Path, count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    photo = Image.fromarray(data.astronaut())
    grey = np.asarray(photo.convert("L"))
    paths = []
    for i in range(count):
        if i % 5 < 2:
            side = int(rng.integers(128, 257))
            x, y = rng.integers(60, 140), rng.integers(0, 60)
            crop = photo.crop((x, y, x + 300, y + 300)).resize((side, side))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            buf = io.BytesIO()
            crop.save(buf, "JPEG", quality=85)
            name = f"photo_{i:04d}.jpg"
        else:
            y, x = rng.integers(0, 512 - 96, 2)
            patch = Image.fromarray(grey[y : y + 96, x : x + 96]).resize((48, 48))
            buf = io.BytesIO()
            patch.save(buf, "PNG")
            name = f"crop_{i:04d}.png"
        (folder / name).write_bytes(buf.getvalue())
        paths.append(str(folder / name))
    return paths


def run_local(paths: list[str], loaded) -> int:
    results = []
    for start in range(0, len(paths), MAX_FILES_PER_UPLOAD):
        chunk = paths[start : start + MAX_FILES_PER_UPLOAD]
        results += analyse([(p, Path(p).read_bytes()) for p in chunk], loaded)
    return len(results_frame(results, as_percent=False, run=loaded.info.name))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--model", default=str(REPO_ROOT / "models" / "fer7"))
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--actor-cpus", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--prepare-batch-size", type=int, default=32)
    args = parser.parse_args()

    import ray

    from ferdash import ray_engine

    print(f"load before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; model {args.model}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        paths = write_images(folder, args.images)
        info = read_run_info(args.model)
        t = time.perf_counter()
        loaded = model_store.get_loaded_run(info)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        rows = run_local(paths, loaded)
        cold = load_s + time.perf_counter() - t
        print(f"local cold (model load {load_s:.2f} s + first pass): {args.images / cold:.0f} images/s, {rows} rows")
        t = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False)
        print(f"ray.init: {time.perf_counter() - t:.1f} s")
        try:
            for repeat in range(args.repeats):
                t = time.perf_counter()
                run_local(paths, loaded)
                local_s = time.perf_counter() - t
                print(f"[{repeat}] local warm: {args.images / local_s:.0f} images/s ({local_s:.2f} s)")
                for cpus in args.actor_cpus:
                    out = str(Path(tmp) / f"out_{repeat}_{cpus}.parquet")
                    s = ray_engine.predict_paths(
                        paths,
                        args.model,
                        out,
                        batch_size=args.batch_size,
                        prepare_batch_size=args.prepare_batch_size,
                        num_cpus_per_actor=cpus,
                    )
                    print(
                        f"[{repeat}] ray, actor {cpus:g} CPU: {s.images_per_second:.0f} images/s "
                        f"({s.seconds:.2f} s, {s.rows} rows, actors {s.model_actors})"
                    )
        finally:
            ray.shutdown()
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
