"""Predict on collections too large for one process: Ray Data reads, prepares and classifies.

The pipeline is the dashboard's, cut where its costs differ. Decoding, face detection and
cropping (:func:`ferdash.inference.prepare_file`) is the expensive, stateless part, so it
runs in Ray tasks that scale with the CPUs. The model is loaded once per process and is
cheap per face, so it runs in a small pool of actors (:class:`_ModelActor`), which feed
each batch through :func:`ferdash.inference.classify` (the model step of
:func:`ferdash.inference.analyse`) and :func:`ferdash.prediction.results_frame`: the
calls behind the Predict table, so a file gives the same rows here as in the dashboard,
errors included.

Ray is imported here only; ``import ferdash`` stays free of it (``pip install
'ferdash[ray]'`` adds it). See ``docs/ray.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from . import prediction
from .inference import Prepared, classify, prepare_file
from .runs.model_store import get_loaded_run
from .runs.rundir import LITE_FILE, MODEL_FILE, RUN_FILE, RunInfo, read_run_info

logger = logging.getLogger(__name__)

#: Output formats by the extension of ``out``.
FORMATS = {".parquet": "parquet", ".csv": "csv"}

#: A fault drill: when this names a folder, a prepare task that finds ``crash-prepare``
#: in it (a model actor: ``crash-model``) removes the file and ends its own process, once,
#: in the batch after as many as the number in the file (empty: the first). It leaves
#: ``crashed-<stage>-<pid>`` behind.
#: The tests use it to show that a lost worker loses no rows; on a cluster it can be
#: set through ``runtime_env={"env_vars": ...}`` to try a deployment's recovery.
FAULT_DIR_ENV = "FERDASH_RAY_FAULT_DIR"

#: CPUs a prepare task reserves.
PREPARE_TASK_CPUS = 1.0
#: CPUs a model actor reserves when no GPU is used. Not a prepare task's 1: Ray Data
#: fuses consecutive stages of equal resources, and would run every prepare inside the
#: actors, as many at a time as there are actors (ray-project/ray#54433).
CPU_MODEL_ACTOR_CPUS = 0.0
#: An actor pool on CPUs scales up to one actor per this many CPUs of the cluster.
CPUS_PER_MODEL_ACTOR_SHARE = 8


@dataclass(frozen=True)
class RaySummary:
    """What :func:`predict_paths` did."""

    out: str  # the folder of part files
    format: str  # "parquet" or "csv"
    files: int
    rows: int  # one per face; a file without a face (or unreadable) keeps one
    faces: int  # rows with a face box
    unreadable: int  # files that could not be decoded (their row's message says why)
    seconds: float  # from the first read to the last part written (not Ray's start-up)
    model_actors: int | tuple[int, int]  # a fixed pool, or (min, max) when it scales
    num_gpus_per_actor: float
    num_cpus_per_actor: float
    cluster: str  # the address connected to, or "local"

    @property
    def images_per_second(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else float("nan")


def predict_paths(
    paths: str | Sequence[str],
    run_dir: str | os.PathLike[str],
    out: str,
    batch_size: int = 256,
    prepare_batch_size: int = 32,
    model_actors: int | None = None,
    num_gpus_per_actor: float | None = None,
    address: str | None = None,
    *,
    num_cpus_per_actor: float | None = None,
    num_cpus: int | None = None,
    overwrite: bool = False,
    every_face: bool = True,
) -> RaySummary:
    """Classify every face of every file under ``paths`` with the run in ``run_dir``
    (``every_face`` False: each photo's largest face only, skipping the small-face search).

    ``paths``: files or folders (read recursively), local or any URI pyarrow reads
    (``s3://...``); on a cluster every node must see them. ``out`` ends in ``.parquet``
    or ``.csv`` and becomes a folder of part files, one or more per block, with the
    columns of :func:`ferdash.prediction.results_frame` (read it back whole with
    :func:`read_results`). An ``out`` that holds files is refused unless ``overwrite``.

    ``batch_size`` files go to a model actor at a time (all their faces in one model call),
    ``prepare_batch_size`` to a prepare task. ``model_actors`` fixes the pool's size;
    None picks one per GPU when GPUs are used, else a pool that scales from 1 to one per
    ``CPUS_PER_MODEL_ACTOR_SHARE`` CPUs. ``num_gpus_per_actor`` None uses one GPU per
    actor when the cluster has GPUs and none otherwise; 0 keeps the model on CPUs.
    ``num_cpus_per_actor`` None reserves 1 CPU beside a GPU and none without one (see
    :data:`CPU_MODEL_ACTOR_CPUS`).

    Connects to the cluster at ``address`` (else ``$RAY_ADDRESS``), or uses the Ray
    session this process already holds, or starts a local one with ``num_cpus`` (None:
    all of them); a session started here is shut down at the end.
    """
    fmt = output_format(out)
    if "://" not in out:
        # Ray's writers run in worker processes: a relative path would follow their
        # working directory, not the caller's.
        out = os.path.abspath(out)
    info = read_run_info(run_dir)  # a malformed run fails here, before any cluster starts
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("no paths to predict")

    _make_room(out, overwrite)

    import ray

    started, cluster = _connect(ray, address, num_cpus)
    try:
        resources = ray.cluster_resources()
        gpus = _gpus_per_actor(num_gpus_per_actor, float(resources.get("GPU", 0)))
        pool = _pool_size(model_actors, gpus, resources)
        actor_cpus = _cpus_per_actor(num_cpus_per_actor, gpus)
        start = time.perf_counter()
        rows = build_dataset(
            paths, info, batch_size, prepare_batch_size, pool, gpus, actor_cpus, ray, every_face
        )
        if fmt == "csv":
            rows = rows.map_batches(_spreadsheet_safe, batch_format="pyarrow")
        # Held once computed: the counts below and the write read the same blocks, and
        # the model runs once. Ray spills them to disk when they outgrow memory.
        rows = rows.materialize()
        counts = rows.select_columns(["face", "face found"]).to_pandas()
        if fmt == "parquet":
            rows.write_parquet(out)
        else:
            rows.write_csv(out)
        seconds = time.perf_counter() - start
    finally:
        if started:
            ray.shutdown()
    face = counts["face"]
    return RaySummary(
        out=out,
        format=fmt,
        files=int((face.isna() | (face == 1)).sum()),
        rows=len(counts),
        faces=int(face.notna().sum()),
        unreadable=int((counts["face found"] == "").sum()),
        seconds=seconds,
        model_actors=pool,
        num_gpus_per_actor=gpus,
        num_cpus_per_actor=actor_cpus,
        cluster=cluster,
    )


def build_dataset(
    paths: list[str],
    info: RunInfo,
    batch_size: int,
    prepare_batch_size: int,
    model_actors: int | tuple[int, int],
    num_gpus_per_actor: float,
    num_cpus_per_actor: float,
    ray: Any,
    every_face: bool = True,
) -> Any:
    """The lazy Dataset of result rows (nothing runs until it is consumed)."""
    # Shipped through the object store rather than named by path: the nodes of a
    # cluster need not share the driver's disk, and every actor loads the same bytes.
    run_files = ray.put(_run_files(info))
    files = ray.data.read_binary_files(paths, include_paths=True)
    prepared = files.map_batches(
        _prepare_batch,
        batch_size=prepare_batch_size,
        batch_format="pyarrow",
        fn_kwargs={"input_size": info.input_size, "every_face": every_face},
        num_cpus=PREPARE_TASK_CPUS,
    )
    if isinstance(model_actors, tuple):
        pool = ray.data.ActorPoolStrategy(min_size=model_actors[0], max_size=model_actors[1])
    else:
        pool = ray.data.ActorPoolStrategy(size=model_actors)
    # No max_restarts / max_task_retries: Ray Data's actor pools restart a dead actor and
    # retry the batch it held without limit by default, which is what a lost worker
    # needs, and Ray 2.60 deprecates passing them (removed in 2.64).
    return prepared.map_batches(
        _ModelActor,
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=pool,
        num_gpus=num_gpus_per_actor,
        num_cpus=num_cpus_per_actor,
        fn_constructor_kwargs={
            "run_files": run_files,
            "run_name": info.name,
            "use_gpu": num_gpus_per_actor > 0,
        },
    )


def output_format(out: str) -> str:
    """"parquet" or "csv" from ``out``'s extension; ValueError for any other."""
    suffix = Path(out.rstrip("/")).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"the output must end in .parquet or .csv (a folder of part files), not {out!r}")
    return FORMATS[suffix]


def read_results(out: str) -> pd.DataFrame:
    """A results folder written by :func:`predict_paths` as one frame, in file and face order.

    Small collections only: every row comes into this process.
    """
    import pyarrow.csv as pa_csv
    import pyarrow.dataset as pa_ds
    import pyarrow.parquet as pa_pq

    fmt = output_format(out)
    if fmt == "parquet":
        table = pa_pq.read_table(out)
    else:
        # Each part infers its own types (a part of unreadable files only has no number
        # in a probability column); the permissive concat unifies them.
        parts = sorted(pa_ds.dataset(out, format="csv").files)
        tables = [pa_csv.read_csv(part) for part in parts]
        table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    if frame.empty:
        return frame
    return frame.sort_values(["file", "face"], na_position="first", kind="stable").reset_index(drop=True)


# --- on the cluster ------------------------------------------------------------------


def _prepare_batch(batch: pa.Table, input_size: tuple[int, int], every_face: bool = True) -> pa.Table:
    """Decode, detect and crop each file of the batch; a bad file keeps its message."""
    _crash_if_marked("prepare")
    prepared: list[bytes | None] = []
    errors: list[str | None] = []
    for data in batch.column("bytes").to_pylist():
        one, error = prepare_file(data, tuple(input_size), every_face)
        # The display copy is for the dashboard's card only; the rows never read it, and
        # it would be most of what travels to the model actors.
        prepared.append(None if one is None else pickle.dumps(_without_preview(one), protocol=5))
        errors.append(error)
    return pa.table(
        {
            "path": pa.array(batch.column("path").to_pylist(), pa.string()),
            "prepared": pa.array(prepared, pa.binary()),
            "error": pa.array(errors, pa.string()),
        }
    )


class _ModelActor:
    """One process's model: loaded once, then every batch sent to it is classified."""

    def __init__(self, run_files: Any, run_name: str, use_gpu: bool) -> None:
        import ray

        if use_gpu:
            _gpu_memory_growth()
        folder = tempfile.mkdtemp(prefix="ferdash-run-")
        try:
            # Under the run's own name: the rows' run column comes from the folder name.
            run_dir = Path(folder) / run_name
            run_dir.mkdir()
            for name, data in ray.get(run_files).items():
                (run_dir / name).write_bytes(data)
            self.loaded = get_loaded_run(read_run_info(run_dir))
        finally:
            # The model is in memory now; nothing reads the files again.
            shutil.rmtree(folder, ignore_errors=True)
        self.input_size = self.loaded.input_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        _crash_if_marked("model")
        paths = batch.column("path").to_pylist()
        # The prepare tasks did analyse's first step; classify is its second, so the rows
        # are the dashboard's to the letter.
        prepared = [
            (None if blob is None else pickle.loads(blob), error)
            for blob, error in zip(
                batch.column("prepared").to_pylist(), batch.column("error").to_pylist()
            )
        ]
        results = classify(paths, prepared, self.loaded)
        frame = prediction.results_frame(results, as_percent=False, run=self.loaded.info.name)
        return _to_arrow(frame, self.loaded.classes)


def _without_preview(prepared: Prepared) -> Prepared:
    return dataclasses.replace(prepared, preview=np.zeros((0, 0), np.uint8))


def _to_arrow(frame: pd.DataFrame, classes: Sequence[str]) -> pa.Table:
    """``frame`` with fixed column types, whatever a batch holds.

    A batch of unreadable files only has no value in its probability columns: inferred,
    they would be of Arrow's null type there and doubles elsewhere, and the parts would
    not read back as one table.
    """
    floats = {"top probability", *classes}
    fields = []
    for column in frame.columns:
        if column in floats:
            kind = pa.float64()
        elif isinstance(frame[column].dtype, pd.Int64Dtype):
            kind = pa.int64()
        else:
            # Every other column of results_frame is text; a new numeric one would fail
            # the conversion here, loudly, rather than be written as text.
            kind = pa.string()
        fields.append(pa.field(column, kind))
    return pa.Table.from_pandas(frame, schema=pa.schema(fields), preserve_index=False)


def _spreadsheet_safe(batch: pa.Table) -> pa.Table:
    """The file names of a CSV part defused as the dashboard's CSV download does."""
    # On the file column alone: through pandas, the counts' blanks would turn them to floats.
    names = pd.DataFrame({"file": batch.column("file").to_pylist()})
    safe = prediction.spreadsheet_safe(names)["file"].tolist()
    index = batch.schema.get_field_index("file")
    return batch.set_column(index, "file", pa.array(safe, pa.string()))


_batches_done: dict[str, int] = {}


def _crash_if_marked(stage: str) -> None:
    folder = os.environ.get(FAULT_DIR_ENV)
    if not folder:
        return
    marker = Path(folder) / f"crash-{stage}"
    try:
        # The marker holds how many batches this process finishes first: a crash in
        # the middle of a job, after some rows are out, not before the first.
        after = int(marker.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return
    done = _batches_done.get(stage, 0)
    if done < after:
        _batches_done[stage] = done + 1
        return
    try:
        marker.unlink()  # atomic: of several processes, one wins and crashes
    except FileNotFoundError:
        return
    (Path(folder) / f"crashed-{stage}-{os.getpid()}").touch()
    os._exit(1)


def _gpu_memory_growth() -> None:
    # TensorFlow takes nearly all of a GPU's memory by default; two actors on one GPU
    # (num_gpus_per_actor=0.5) would then fail to start the second.
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process: keep its setting
            pass


# --- on the driver -------------------------------------------------------------------


def _connect(ray: Any, address: str | None, num_cpus: int | None) -> tuple[bool, str]:
    """(whether this call started the session, where it runs)."""
    if ray.is_initialized():
        if address:
            logger.warning("Ray is already initialised in this process; %s is not used", address)
        return False, _describe(ray)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        import ferdash

        # The cluster's Python may lack ferdash, or have another version of it: this
        # process's copy travels with the job, so the rows are computed by this code.
        ray.init(address=address, runtime_env={"py_modules": [ferdash]})
        return True, address
    ray.init(num_cpus=num_cpus)
    return True, "local"


def _describe(ray: Any) -> str:
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:
        return "existing session"


def _gpus_per_actor(asked: float | None, cluster_gpus: float) -> float:
    if asked is None:
        return 1.0 if cluster_gpus >= 1 else 0.0
    if asked < 0:
        raise ValueError("num_gpus_per_actor must be 0 or more")
    # Ray would wait for a GPU that never comes; say so instead.
    if asked > 0 and cluster_gpus == 0:
        raise ValueError(f"num_gpus_per_actor={asked} but the Ray cluster has no GPU")
    if asked > cluster_gpus:
        raise ValueError(f"num_gpus_per_actor={asked} asks for more GPUs than the cluster's {cluster_gpus:g}")
    return float(asked)


def _cpus_per_actor(asked: float | None, gpus_per_actor: float) -> float:
    if asked is not None:
        if asked < 0:
            raise ValueError("num_cpus_per_actor must be 0 or more")
        return float(asked)
    return 1.0 if gpus_per_actor > 0 else CPU_MODEL_ACTOR_CPUS


def _pool_size(
    asked: int | None, gpus_per_actor: float, resources: dict[str, float]
) -> int | tuple[int, int]:
    if asked is not None:
        if asked < 1:
            raise ValueError("model_actors must be 1 or more")
        return asked
    if gpus_per_actor > 0:
        return max(1, int(resources.get("GPU", 0) // gpus_per_actor))
    most = max(1, int(resources.get("CPU", 1) // CPUS_PER_MODEL_ACTOR_SHARE))
    return 1 if most == 1 else (1, most)


def _run_files(info: RunInfo) -> dict[str, bytes]:
    """The files a model load reads (the TF Lite copy is checked against run.json)."""
    files = {RUN_FILE: (info.path / RUN_FILE).read_bytes(), MODEL_FILE: info.model_path.read_bytes()}
    if info.lite_path.is_file():
        files[LITE_FILE] = info.lite_path.read_bytes()
    return files


def _make_room(out: str, overwrite: bool) -> None:
    """Refuse to mix a new job's parts with an old one's, or clear them when asked."""
    import pyarrow.fs as pa_fs

    fs, path = pa_fs.FileSystem.from_uri(out)
    found = fs.get_file_info(path)
    if found.type == pa_fs.FileType.NotFound:
        return
    if found.type == pa_fs.FileType.File:
        raise FileExistsError(f"{out} is a file; the results are a folder of part files")
    if not fs.get_file_info(pa_fs.FileSelector(path)):
        return
    if not overwrite:
        raise FileExistsError(f"{out} already holds files (overwrite=True replaces them)")
    fs.delete_dir_contents(path)
