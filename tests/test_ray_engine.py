"""The Ray engine (ferdash.ray_engine) on a local two-CPU Ray.

The same files give the same rows as the dashboard's path (``results_frame(analyse(...))``),
bad files become rows with their message, and a prepare task or a model actor that dies
in the middle of a job costs no row and duplicates none. One Ray session serves the
module (starting one costs seconds); tiny untrained runs stand in for real models.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image
from skimage import data as skdata

import ray

from ferdash import ray_engine
from ferdash.inference import analyse
from ferdash.prediction import results_frame
from ferdash.runs import model_store
from ferdash.runs.rundir import read_run_info
from hostile_corpus import astronaut_face, five_faces, jpeg_with_huge_header
from tiny_runs import make_default_runs

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fault_dir(tmp_path_factory: pytest.TempPathFactory):
    """The Ray session of the module, its workers told where the fault drill's markers go.

    It claims a GPU it does not have: a model actor asked to use one is scheduled on it
    and, TensorFlow finding none, computes on the CPU, which shows the GPU plumbing
    without a GPU. The other tests keep their actors on CPUs (num_gpus_per_actor=0).
    """
    folder = tmp_path_factory.mktemp("faults")
    ray.init(
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        runtime_env={
            "env_vars": {ray_engine.FAULT_DIR_ENV: str(folder), "TF_CPP_MIN_LOG_LEVEL": "2"}
        },
    )
    yield folder
    ray.shutdown()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_default_runs(root)
    return root / "fer7"


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photos with one face and with five, 48x48 crops (taken as face crops), a photo
    without a face, and files the app refuses: 16 files, one in a subfolder."""
    folder = tmp_path_factory.mktemp("images")
    photo = Image.fromarray(skdata.astronaut())
    grey = np.asarray(photo.convert("L"))
    rng = np.random.default_rng(7)
    files: dict[str, bytes] = {
        "astronaut.png": _png(photo),
        "astronaut_small.jpg": _jpeg(photo.resize((256, 256))),
        "five_faces.png": five_faces(),
        "face_48.png": _png(astronaut_face(48).convert("L")),
        "noise.png": _png(Image.fromarray(rng.integers(0, 256, (160, 160), dtype=np.uint8))),
        "corrupt.jpg": _jpeg(photo)[:300],  # cut inside the first scan
        "huge_header.jpg": jpeg_with_huge_header(),
        "notes.txt": b"not an image",
        "empty.png": b"",
        "sub/astronaut_flipped.png": _png(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    }
    for i in range(6):
        y, x = rng.integers(0, 512 - 48, 2)
        files[f"crop_{i}.png"] = _png(Image.fromarray(grey[y : y + 48, x : x + 48]))
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def _all_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def local_rows(images: Path, run_dir: Path) -> pd.DataFrame:
    """The dashboard's rows for the same files, each named by the path Ray reports."""
    info = read_run_info(run_dir)
    loaded = model_store.get_loaded_run(info)
    files = [(path, Path(path).read_bytes()) for path in _all_files(images)]
    frame = results_frame(analyse(files, loaded), as_percent=False, run=info.name)
    return frame.sort_values(["file", "face"], na_position="first", kind="stable").reset_index(drop=True)


def assert_same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for column in want.columns:
        g, w = got[column], want[column]
        if pd.api.types.is_float_dtype(w):
            assert np.array_equal(g.isna().to_numpy(), w.isna().to_numpy()), column
            assert np.allclose(g.fillna(0).to_numpy(float), w.fillna(0).to_numpy(float), atol=1e-5, rtol=0), column
        else:
            assert g.astype(object).where(g.notna(), None).tolist() == w.astype(object).where(
                w.notna(), None
            ).tolist(), column


def test_rows_equal_the_dashboards_and_bad_files_are_rows(fault_dir, images, run_dir, local_rows, tmp_path):
    out = str(tmp_path / "rows.parquet")
    summary = ray_engine.predict_paths(
        [str(images)], str(run_dir), out, batch_size=5, prepare_batch_size=3, num_gpus_per_actor=0
    )
    got = ray_engine.read_results(out)
    assert_same_rows(got, local_rows)

    files = _all_files(images)
    assert summary.files == len(files) == 16
    assert summary.rows == len(local_rows)
    assert summary.faces == int(local_rows["face"].notna().sum())
    by_file = got.set_index("file")
    # Five faces: five rows, numbered; unreadable files: one row each, with the reason.
    assert got["file"].value_counts()[str(images / "five_faces.png")] == 5
    for name in ("corrupt.jpg", "huge_header.jpg", "notes.txt", "empty.png"):
        row = by_file.loc[str(images / name)]
        assert row["message"] and pd.isna(row["top probability"]), name
    assert summary.unreadable == 4
    assert by_file.loc[str(images / "face_48.png"), "face found"] == "small image"
    assert (got["run"] == "fer7").all()
    assert Path(out).is_dir() and any(p.suffix == ".parquet" for p in Path(out).iterdir())
    # No GPU asked for: the actor reserves no CPU either, so that Ray does not fuse the
    # prepare step into it, and both CPUs go to prepare tasks.
    assert (summary.num_gpus_per_actor, summary.num_cpus_per_actor, summary.model_actors) == (0, 0, 1)


def test_csv_output_on_the_clusters_gpu_and_refusals(fault_dir, images, run_dir, local_rows, tmp_path):
    out = tmp_path / "rows.csv"
    summary = ray_engine.predict_paths([str(images)], str(run_dir), str(out), batch_size=64)
    # The cluster has a GPU: by default one actor per GPU, each with one.
    assert (summary.num_gpus_per_actor, summary.num_cpus_per_actor, summary.model_actors) == (1, 1, 1)
    assert_same_rows(ray_engine.read_results(str(out)), local_rows)
    assert all(p.suffix == ".csv" for p in out.iterdir())

    with pytest.raises(FileExistsError, match="overwrite"):
        ray_engine.predict_paths([str(images)], str(run_dir), str(out))
    with pytest.raises(ValueError, match=r"\.parquet or \.csv"):
        ray_engine.predict_paths([str(images)], str(run_dir), str(tmp_path / "rows.json"))
    with pytest.raises(ValueError, match="more GPUs"):
        ray_engine.predict_paths([str(images)], str(run_dir), str(tmp_path / "g.csv"), num_gpus_per_actor=2)


def test_resource_choices():
    assert ray_engine._gpus_per_actor(None, 0) == 0
    assert ray_engine._gpus_per_actor(None, 4) == 1
    assert ray_engine._gpus_per_actor(0.5, 1) == 0.5
    with pytest.raises(ValueError, match="no GPU"):
        ray_engine._gpus_per_actor(1, 0)
    assert ray_engine._pool_size(None, 1, {"GPU": 4, "CPU": 64}) == 4
    assert ray_engine._pool_size(None, 0.5, {"GPU": 2, "CPU": 64}) == 4
    assert ray_engine._pool_size(None, 0, {"CPU": 2}) == 1
    assert ray_engine._pool_size(None, 0, {"CPU": 64}) == (1, 64 // ray_engine.CPUS_PER_MODEL_ACTOR_SHARE)
    assert ray_engine._pool_size(3, 0, {"CPU": 2}) == 3


def test_killed_workers_lose_and_duplicate_no_row(fault_dir, images, run_dir, local_rows, tmp_path):
    # The model actor ends its process in its third batch, a prepare worker in its second:
    # rows of earlier batches are out by then, and the batches they held are lost.
    (fault_dir / "crash-model").write_text("2")
    (fault_dir / "crash-prepare").write_text("1")
    out = str(tmp_path / "rows.parquet")
    summary = ray_engine.predict_paths(
        [str(images)], str(run_dir), out, batch_size=2, prepare_batch_size=2, num_gpus_per_actor=0
    )
    crashed = sorted(p.name.rsplit("-", 1)[0] for p in fault_dir.glob("crashed-*"))
    assert crashed == ["crashed-model", "crashed-prepare"]
    assert not (fault_dir / "crash-model").exists() and not (fault_dir / "crash-prepare").exists()

    got = ray_engine.read_results(out)
    keys = list(zip(got["file"], got["face"].fillna(0)))
    assert len(keys) == len(set(keys)), "a row written twice"
    assert sorted(set(got["file"])) == _all_files(images)
    assert_same_rows(got, local_rows)
    assert summary.files == 16


def test_spreadsheet_safe_names_in_csv_parts():
    table = pa.table({"file": ["=cmd.png", "photo.png"], "face": pa.array([1, None], pa.int64())})
    safe = ray_engine._spreadsheet_safe(table)
    assert safe.column("file").to_pylist() == ["'=cmd.png", "photo.png"]
    assert safe.column("face").type == pa.int64()


def test_import_ferdash_needs_no_ray():
    code = (
        "import sys, ferdash, ferdash.inference, ferdash.prediction, ferdash.runs.model_store;"
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
