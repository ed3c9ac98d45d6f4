"""Time the Predict pipeline for one 640x480 photo, warm, and compare the compiled call
with ``model.predict`` for a single face, side by side in one run; then the engines over
batch sizes, interleaved: the run's TF Lite copy, a float32 copy converted on the spot and
TensorFlow's traced function, which is why a quantised copy runs every batch and a
float32 one at most ``ferdash.runs.lite_engine.LITE_MAX_ROWS`` rows.

    python benchmarks/bench_predict.py [--runs 200] [--model models/fer7]

Uses the shipped ``models/fer7`` when present, else another shipped run, else a tiny
untrained model built in a temporary folder (the output says which): the pipeline's cost outside the model is the
same either way, the model's share is not.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))  # tiny_runs, for the fallback model

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from ferdash import faces, imaging, inference  # noqa: E402

from ferdash.runs import model_store  # noqa: E402
from ferdash.runs.rundir import RunInfo, read_run_info  # noqa: E402


def photo_640x480_jpeg() -> bytes:
    """scikit-image's astronaut (a real face), resized to 480x480 and centred on a 640x480 frame."""
    canvas = Image.new("RGB", (640, 480), (110, 110, 110))
    canvas.paste(Image.fromarray(data.astronaut()).resize((480, 480)), (80, 0))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def pick_run(preferred: Path) -> tuple[Path, str]:
    """``preferred`` when shipped, else any shipped run, else a tiny untrained model."""
    from ferdash.runs.rundir import FER2013_CLASSES, discover_runs

    if (preferred / "model.keras").is_file():
        return preferred, f"shipped model {preferred.name}"
    shipped = [r for r in discover_runs(REPO_ROOT / "models") if r.info and not r.problems]
    if shipped:
        return shipped[0].path, f"shipped model {shipped[0].name} ({preferred.name} is not shipped)"
    from tiny_runs import make_tiny_run

    run_dir = make_tiny_run(tempfile.mkdtemp(prefix="bench-predict-"), "fer7", FER2013_CLASSES)
    return run_dir, "tiny untrained test model (no shipped model)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed repetitions (median reported)")
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "fer7")
    args = parser.parse_args()

    run_dir, which = pick_run(args.model)
    info = read_run_info(run_dir)
    loaded = model_store.get_loaded_run(info)
    photo = photo_640x480_jpeg()

    result = inference.analyse_bytes(photo, loaded)
    assert result.ok and result.prepared.box is not None, "the benchmark photo must have a detected face"
    for _ in range(10):  # warm: caches, allocator, traced function
        inference.analyse_bytes(photo, loaded)

    runs = args.runs
    decoded = imaging.decode_image(photo)
    grey = decoded.grey
    box = faces.detect_faces(grey)[0]
    batch = faces.crop_face(grey, box, info.input_size)[None, ..., None].astype(np.float32)
    # Each round times the whole pipeline and then each stage, so that all medians see
    # the same machine load (the CPU may be shared).
    stages = {
        "total": lambda: inference.analyse_bytes(photo, loaded),
        "decode+grey": lambda: imaging.decode_image(photo),
        "detect": lambda: faces.detect_faces(grey),
        "crop": lambda: faces.crop_face(grey, box, info.input_size),
        "model": lambda: loaded.predict(batch),
    }
    times: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(runs):
        for name, fn in stages.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(values) * 1e3 for name, values in times.items()}

    # Side by side, interleaved so both see the same machine load.
    from ferdash.runs.predictor import load_keras_model

    model = load_keras_model(info.model_path)
    model.predict(batch, verbose=0)
    compiled_times, predict_times = [], []
    pairs = max(20, runs // 4)  # model.predict is slow; fewer pairs keep the run short
    for _ in range(pairs):
        start = time.perf_counter()
        loaded.predict(batch)
        compiled_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.predict(batch, verbose=0)
        predict_times.append(time.perf_counter() - start)
    compiled_ms = statistics.median(compiled_times) * 1e3
    predict_ms = statistics.median(predict_times) * 1e3

    engines = engine_comparison(loaded, info, max(10, runs // 10))

    print(f"model: {which}; input {info.input_size[0]}x{info.input_size[1]}, tta={loaded.tta}, "
          f"engine: {loaded.engine_name}")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPU cores, load average {load}; {runs} timed runs, medians")
    print(f"upload to result, one 640x480 JPEG photo (warm): {med['total']:.2f} ms")
    print(
        f"  decode+grey {med['decode+grey']:.2f} ms | detect {med['detect']:.2f} ms | "
        f"crop {med['crop']:.3f} ms | model {med['model']:.2f} ms"
    )
    print(
        f"single face: the app's call ({loaded.engine}) {compiled_ms:.2f} ms vs model.predict {predict_ms:.2f} ms "
        f"-> model.predict is {predict_ms / compiled_ms:.1f}x slower ({pairs} interleaved pairs)"
    )
    if engines:
        kind = "quantised" if loaded.quantized else "float32"
        print(
            f"engines, faces per call -> ms per call (the run's {kind} TF Lite copy | a float32 "
            "copy | TensorFlow), interleaved:"
        )
        for n, ms in engines.items():
            copy, float32, tf = ms["run's copy"], ms["float32 copy"], ms["TensorFlow"]
            print(
                f"  {n:4d} faces: {copy:8.2f} | {float32:8.2f} | {tf:8.2f}  the run's copy "
                f"{float32 / copy:.2f}x as fast as float32, {tf / copy:.2f}x as TensorFlow"
            )
    else:
        print("engines: the run has no usable model.tflite (python -m training export-lite)")


def engine_comparison(
    loaded: model_store.LoadedRun, info: RunInfo, rounds: int
) -> dict[int, dict[str, float]]:
    """Median ms per call of each engine alone for several batch sizes, interleaved: the
    run's TF Lite copy as the app checks it, a float32 copy converted here (what the
    copy was before quantisation), and TensorFlow's traced function."""
    from ferdash.runs import lite_engine
    from ferdash.runs.predictor import compiled_predictor, float32_twin
    from training.export_lite import convert_keras_model

    tensorflow = compiled_predictor(loaded.model, info.input_size, tta=loaded.tta)
    try:
        tolerance = lite_engine.probe_tolerance(loaded.model, info.meta.get("lite"))
        lite = lite_engine.load_for_run(info, tensorflow, loaded.tta, tolerance)
    except lite_engine.LiteUnavailable:
        return {}
    float32 = lite_engine.LitePredictor(
        convert_keras_model(float32_twin(loaded.model), quantization=None),
        info.input_size,
        len(info.classes),
        tta=loaded.tta,
    )
    engines = {"run's copy": lite, "float32 copy": float32, "TensorFlow": tensorflow}
    rng = np.random.default_rng(0)
    results = {}
    for n in (1, 2, 4, 8, 16, 32, 64, 256):
        batch = rng.uniform(0, 255, (n, *info.input_size, 1)).astype(np.float32)
        for fn in engines.values():
            fn(batch)  # warm: interpreter resized, allocator
        times: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(rounds if n < 64 else max(3, rounds // 4)):
            for name, fn in engines.items():
                start = time.perf_counter()
                fn(batch)
                times[name].append(time.perf_counter() - start)
        results[n] = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return results


if __name__ == "__main__":
    main()
