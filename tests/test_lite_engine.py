"""The TF Lite copy of a run: written by training, checked before use, same probabilities."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ferdash.runs import lite_engine, model_store
from ferdash.runs.predictor import compiled_predictor, computes_in_float32, gpu_present, load_keras_model
from ferdash.runs.rundir import DYNAMIC_RANGE, LITE_FILE, MODEL_FILE, read_run_info, write_run_info
from tiny_runs import build_tiny_model, empty_cache, make_tiny_run  # noqa: F401 (fixture)
from training.export_lite import ExportError, export_lite

REPO_ROOT = Path(__file__).resolve().parent.parent


def _faces(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, 48, 48, 1)).astype(np.float32)


def _loaded(run_dir: Path) -> model_store.LoadedRun:
    return model_store.get_loaded_run(read_run_info(run_dir))


@pytest.fixture()
def exported(tmp_path: Path) -> Path:
    run_dir = make_tiny_run(tmp_path, "tiny7", [f"c{i}" for i in range(7)], seed=5, tta="hflip")
    export_lite(run_dir)
    return run_dir


def test_export_writes_the_copy_and_records_both_hashes(exported: Path) -> None:
    import hashlib

    entry = read_run_info(exported).meta["lite"]
    lite = exported / LITE_FILE
    assert entry == {
        "file": LITE_FILE,
        "sha256": hashlib.sha256(lite.read_bytes()).hexdigest(),
        "model_sha256": hashlib.sha256((exported / MODEL_FILE).read_bytes()).hexdigest(),
        "quantization": DYNAMIC_RANGE,
    }
    assert not list(exported.glob("*.tmp.*"))  # written atomically, nothing left behind
    export_lite(exported, quantization=None)
    assert "quantization" not in read_run_info(exported).meta["lite"]


def _quantisable_run(root: Path, tta: str | None = "hflip") -> Path:
    """A run whose model has layers of over 1,024 weights, which TF Lite quantises (the
    tiny model's are all smaller and stay float)."""
    import keras

    run_dir = make_tiny_run(root, "wider", ["a", "b", "c"], seed=2, tta=tta)
    keras.utils.set_random_seed(2)
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(run_dir / MODEL_FILE)
    return run_dir


def test_the_copy_is_dynamic_range_quantised_and_each_face_independent_of_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _quantisable_run(tmp_path)
    export_lite(run_dir)
    interpreter = lite_engine.interpreter_class()(model_path=str(run_dir / LITE_FILE))
    assert any(t["dtype"] == np.int8 for t in interpreter.get_tensor_details())  # int8 weights
    float_bytes = len(_float32_copy(tmp_path, run_dir))
    assert (run_dir / LITE_FILE).stat().st_size < float_bytes / 2
    fast = _loaded(run_dir)
    assert fast.engine == "tflite" and fast.quantized
    assert fast.engine_name == "tflite (dynamic-range int8 weights)"
    faces = _faces(70)  # more than one LITE_CHUNK
    together = fast.predict(faces)
    # Activations are quantised face by face: the same face, the same probabilities,
    # alone or in any batch, and every batch size runs on the copy.
    alone = np.concatenate([fast.predict(faces[i : i + 1]) for i in range(len(faces))])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(fast.predict(faces[::-1])[::-1], together)
    monkeypatch.setenv("FERDASH_ENGINE", "tensorflow")
    model_store.clear_cache()
    exact = _loaded(run_dir).predict(faces)
    gap = np.abs(together - exact).max()
    assert 0 < gap <= lite_engine.QUANTIZED_PROBE_TOLERANCE
    assert np.mean(together.argmax(1) == exact.argmax(1)) >= 0.9
    # Loaded without a tolerance, the copy is held to what its run.json entry calls for
    # (float32's would do for this small model too); a tolerance given is honoured.
    from ferdash.runs.predictor import compiled_predictor

    info = read_run_info(run_dir)
    reference = compiled_predictor(_loaded(run_dir).model, info.input_size, tta="hflip")
    monkeypatch.setattr(lite_engine, "PROBE_TOLERANCE", 0.0)
    assert lite_engine.load_for_run(info, reference, "hflip") is not None
    with pytest.raises(lite_engine.LiteUnavailable, match="disagrees with model.keras"):
        lite_engine.load_for_run(info, reference, "hflip", 0.0)


def _float32_copy(tmp_path: Path, run_dir: Path) -> bytes:
    import shutil

    twin = tmp_path / "float32"
    shutil.copytree(run_dir, twin)
    return export_lite(twin, quantization=None).read_bytes()


@pytest.mark.parametrize("tta", [None, "hflip"])
def test_small_batches_run_on_a_float32_copy_with_tensorflow_s_probabilities(
    tmp_path: Path, tta: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _quantisable_run(tmp_path, tta=tta)
    export_lite(run_dir, quantization=None)
    fast = _loaded(run_dir)
    assert not fast.quantized and fast.engine_name == "tflite"
    assert fast.engine == "tflite"
    monkeypatch.setenv("FERDASH_ENGINE", "tensorflow")
    model_store.clear_cache()
    slow = _loaded(run_dir)
    assert slow.engine == "tensorflow"
    faces = _faces(40)
    expected = slow.predict(faces)
    # One face, a few, the largest batch lite takes, then one TensorFlow takes again.
    most = lite_engine.max_lite_faces(tta)
    for n in (1, 3, most, most + 1, 40):
        np.testing.assert_allclose(fast.predict(faces[:n]), expected[:n], atol=1e-5)
    assert fast.predict(faces[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="shape"):
        fast.predict(np.zeros((2, 32, 32, 1), np.float32))


@pytest.mark.parametrize(("tta", "most"), [(None, 8), ("hflip", 4), (None, None)])
def test_batches_go_to_lite_up_to_a_number_of_network_rows(
    tta: str | None, most: int | None
) -> None:
    # Flip TTA doubles the rows of each face, so half as many faces fit under the crossover.
    calls: list[tuple[str, int]] = []

    def engine(label: str):
        def run(batch: np.ndarray) -> np.ndarray:
            calls.append((label, len(batch)))
            return np.zeros((len(batch), 3), np.float32)

        return run

    if most is None:  # a quantised copy: every batch
        predict = lite_engine.LiteFirst(engine("lite"), engine("tensorflow"), "r", None)
        for n in (1, 9, 300):
            predict(_faces(n))
        assert calls == [("lite", 1), ("lite", 9), ("lite", 300)]
        return
    predict = lite_engine.LiteFirst(
        engine("lite"), engine("tensorflow"), "r", lite_engine.max_lite_faces(tta)
    )
    for n in (1, most, most + 1):
        predict(_faces(n))
    assert lite_engine.max_lite_faces(tta) == most
    assert calls == [("lite", 1), ("lite", most), ("tensorflow", most + 1)]


def test_flip_tta_averages_the_mirror_image(exported: Path) -> None:
    loaded = _loaded(exported)
    assert loaded.engine == "tflite"
    faces = _faces(3)
    np.testing.assert_allclose(
        loaded.predict(faces), loaded.predict(faces[:, :, ::-1]), atol=1e-5
    )


def _damage(run_dir: Path, how: str) -> None:
    lite = run_dir / LITE_FILE
    content = lite.read_bytes()
    if how == "truncated":
        lite.write_bytes(content[: len(content) // 3])
    elif how == "bit flipped":
        middle = len(content) // 2
        lite.write_bytes(content[:middle] + bytes([content[middle] ^ 0xFF]) + content[middle + 1 :])
    elif how == "missing":
        lite.unlink()
    elif how == "garbage":
        lite.write_bytes(b"TFL3" + bytes(1000))


@pytest.mark.parametrize("how", ["truncated", "bit flipped", "missing", "garbage"])
def test_a_damaged_copy_is_never_run_and_tensorflow_serves(
    exported: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A damaged flatbuffer would crash the process inside TF Lite: the hash refuses it first.
    _damage(exported, how)
    with caplog.at_level("WARNING", logger="ferdash.runs.model_store"):
        loaded = _loaded(exported)
    assert loaded.engine == "tensorflow"
    reason = "cannot be read" if how == "missing" else "damaged or was replaced"
    assert reason in caplog.text
    assert loaded.predict(_faces(2)).shape == (2, 7)


def test_a_stale_copy_of_a_retrained_model_is_not_used(
    exported: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build_tiny_model(7, seed=99).save(exported / MODEL_FILE)  # retrained in place
    with caplog.at_level("WARNING", logger="ferdash.runs.model_store"):
        loaded = _loaded(exported)
    assert loaded.engine == "tensorflow"
    assert "converted from another model.keras" in caplog.text


def test_a_copy_of_another_model_is_caught_by_the_probe(
    tmp_path: Path, exported: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Hashes that match the files (as a hand-edited run.json would) but a different network.
    other = make_tiny_run(tmp_path, "other", [f"c{i}" for i in range(7)], seed=11)
    export_lite(other)
    (exported / LITE_FILE).write_bytes((other / LITE_FILE).read_bytes())
    info = read_run_info(exported)
    from ferdash.runs.rundir import lite_entry, sha256_file

    entry = lite_entry(exported / LITE_FILE, sha256_file(exported / MODEL_FILE))
    write_run_info(exported, info.classes, info.input_size, lite=entry)
    with caplog.at_level("WARNING", logger="ferdash.runs.model_store"):
        loaded = _loaded(exported)
    assert loaded.engine == "tensorflow"
    assert "disagrees with model.keras" in caplog.text


@pytest.mark.parametrize(
    "entry", [{"file": "../../etc/passwd", "sha256": "x", "model_sha256": "y"}, "model.tflite", 7]
)
def test_a_malformed_entry_is_refused_without_touching_any_path(
    exported: Path, entry: object, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_reading(*args: object) -> None:
        raise AssertionError("a malformed entry must not lead to reading any file")

    monkeypatch.setattr(lite_engine, "_read_regular_file", no_reading)
    meta = json.loads((exported / "run.json").read_text())
    meta["lite"] = entry
    (exported / "run.json").write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="ferdash.runs.model_store"):
        loaded = _loaded(exported)
    assert loaded.engine == "tensorflow"
    assert "malformed 'lite' entry" in caplog.text


def test_a_run_without_a_copy_works_on_tensorflow(tmp_path: Path) -> None:
    run_dir = make_tiny_run(tmp_path, "plain", ["a", "b"])
    loaded = _loaded(run_dir)
    assert loaded.engine == "tensorflow" and loaded.predict(_faces(1)).shape == (1, 2)


def test_engine_tensorflow_from_the_environment(
    exported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERDASH_ENGINE", "tensorflow")
    assert _loaded(exported).engine == "tensorflow"
    monkeypatch.setenv("FERDASH_ENGINE", "no-such-engine")  # unknown: the default
    assert _loaded(exported).engine == "tflite"


def test_parallel_threads_each_get_their_own_interpreter(exported: Path) -> None:
    info = read_run_info(exported)
    tensorflow = _loaded(exported).model
    from ferdash.runs.predictor import compiled_predictor

    reference = compiled_predictor(tensorflow, info.input_size, tta="hflip")
    lite = lite_engine.load_for_run(info, reference, "hflip")
    faces = [_faces(n, seed=n) for n in (1, 2, 3, 4) * 6]
    expected = [reference(f) for f in faces]
    interpreters: dict[int, int] = {}
    barrier = threading.Barrier(4)

    def run(f: np.ndarray) -> np.ndarray:
        out = lite(f)
        interpreters[threading.get_ident()] = id(lite._local.interpreter)
        return out

    def first(f: np.ndarray) -> np.ndarray:
        barrier.wait(timeout=30)  # four threads at once, so four workers take part
        return run(f)

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert len(list(pool.map(first, faces[:4]))) == 4
        for got, want in zip(pool.map(run, faces), expected):
            np.testing.assert_allclose(got, want, atol=1e-5)
    assert len(interpreters) == 4
    assert len(set(interpreters.values())) == 4  # one interpreter per thread, none shared


def test_a_failure_of_lite_after_loading_falls_back_to_tensorflow(
    exported: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = _loaded(exported)
    faces = _faces(2)
    before = loaded.predict(faces)

    def broken(self, batch):
        raise RuntimeError("interpreter gone")

    monkeypatch.setattr(lite_engine.LitePredictor, "__call__", broken)
    with caplog.at_level("ERROR", logger="ferdash.runs.lite_engine"):
        np.testing.assert_allclose(loaded.predict(faces), before, atol=1e-5)
        np.testing.assert_allclose(loaded.predict(faces), before, atol=1e-5)
    assert caplog.text.count("TF Lite failed for run tiny7") == 1  # then TensorFlow only
    assert loaded.engine_name == "tensorflow (TF Lite failed)"


def test_a_copy_removed_while_the_app_runs_is_dropped_on_the_next_load(exported: Path) -> None:
    assert _loaded(exported).engine == "tflite"
    (exported / LITE_FILE).unlink()
    assert _loaded(exported).engine == "tensorflow"


def test_a_fifo_named_model_tflite_is_refused_without_blocking(
    exported: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import os

    (exported / LITE_FILE).unlink()
    os.mkfifo(exported / LITE_FILE)
    with caplog.at_level("WARNING", logger="ferdash.runs.model_store"):
        assert _loaded(exported).engine == "tensorflow"
    assert "not a regular file" in caplog.text


def test_export_of_a_broken_model_fails_clearly_and_drops_the_old_copy(tmp_path: Path) -> None:
    run_dir = make_tiny_run(tmp_path, "broken", ["a", "b"])
    export_lite(run_dir)
    (run_dir / MODEL_FILE).write_bytes(b"not a zip")  # the model replaced by a bad file
    with pytest.raises(ExportError, match="corrupt"):
        export_lite(run_dir)
    assert not (run_dir / LITE_FILE).exists()
    assert read_run_info(run_dir).meta.get("lite") is None


def test_export_on_a_full_disk_fails_clearly_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import tempfile

    run_dir = make_tiny_run(tmp_path, "full", ["a", "b"])
    real_fdopen = __import__("os").fdopen

    class FullDisk:
        def __init__(self, fd: int, mode: str) -> None:
            self._f = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc: object) -> None:
            self._f.close()

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("training.export_lite.os.fdopen", FullDisk)
    with pytest.raises(ExportError, match="No space left"):
        export_lite(run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "evaluation.json", "history.csv", "model.keras", "run.json"
    ]
    assert tempfile.gettempdir()  # nothing else to clean: the temporary file was in the run


def test_export_lite_command(tmp_path: Path) -> None:
    run_dir = make_tiny_run(tmp_path, "cli", ["a", "b"])
    cmd = [sys.executable, "-m", "training", "export-lite", "--run"]
    done = subprocess.run([*cmd, str(run_dir)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"wrote {run_dir / LITE_FILE}" in done.stdout
    assert "Saved artifact" not in done.stdout  # the converter's chatter stays out
    missing = subprocess.run([*cmd, str(tmp_path / "nope")], cwd=REPO_ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and "run.json is missing" in missing.stderr


def test_a_mixed_precision_run_gets_a_float32_copy(tmp_path: Path) -> None:
    # What a GPU run writes by default: layers computing in float16, which TF Lite cannot
    # convert as they are.
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        run_dir = make_tiny_run(tmp_path, "mixed", ["a", "b", "c"], seed=4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # A float32 copy, so that small batches run on TF Lite and large ones on TensorFlow.
    export_lite(run_dir, quantization=None)
    stored = load_keras_model(run_dir / "model.keras")
    assert not computes_in_float32(stored)
    loaded = _loaded(run_dir)
    assert loaded.engine == "tflite"
    faces = _faces(12)
    float16 = compiled_predictor(stored, (48, 48))(faces)
    if gpu_present():
        assert not computes_in_float32(loaded.model)
    else:
        # On a CPU the app computes in float32 (faster there), so TensorFlow and TF Lite
        # agree as closely as for any float32 run; both stay within float16's rounding
        # of the stored model.
        assert computes_in_float32(loaded.model)
        tensorflow = compiled_predictor(loaded.model, (48, 48))(faces)
        np.testing.assert_allclose(loaded.predict(faces), tensorflow, atol=1e-6)  # 12 faces: TF
        np.testing.assert_allclose(
            loaded.predict(faces[:1]), tensorflow[:1], atol=lite_engine.PROBE_TOLERANCE
        )
    np.testing.assert_allclose(loaded.predict(faces[:1]), float16[:1], atol=lite_engine.MIXED_PROBE_TOLERANCE)
    np.testing.assert_allclose(loaded.predict(faces), float16, atol=lite_engine.MIXED_PROBE_TOLERANCE)


def test_export_lite_re_evaluates_through_the_copy_on_the_same_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainingdata import make_image_folder
    from training.__main__ import main
    from training.evaluate import evaluate_folder
    from ferdash.runs.rundir import read_evaluation

    run_dir = _quantisable_run(tmp_path, tta="hflip")
    val = make_image_folder(tmp_path / "val", per_class=5, size=48, classes=("a", "b", "c"))
    monkeypatch.setenv("FERDASH_ENGINE", "tensorflow")  # evaluated before the run had a copy
    first = evaluate_folder(run_dir, val, split="val", log=lambda *_: None)
    assert first["engine"] == "tensorflow" and first["tta"] == "hflip"
    info = read_run_info(run_dir)
    write_run_info(run_dir, info.classes, info.input_size, val_accuracy=first["accuracy"])
    monkeypatch.delenv("FERDASH_ENGINE")
    assert main(["export-lite", "--run", str(run_dir)]) == 0
    again = read_evaluation(run_dir)
    assert again.meta["engine"] == "tflite (dynamic-range int8 weights)"
    assert again.meta["tta"] == "hflip" and again.split == "val"
    assert again.image_count == first["image_count"] == 15
    assert read_run_info(run_dir).meta["val_accuracy"] == again.accuracy
    # An evaluation made with another TTA than the run's keeps it (and TensorFlow, which
    # is what computes that case).
    evaluate_folder(run_dir, val, split="val", tta=None, log=lambda *_: None)
    assert main(["export-lite", "--run", str(run_dir)]) == 0
    kept = read_evaluation(run_dir)
    assert kept.meta["tta"] is None and kept.meta["engine"] == "tensorflow"


def test_export_lite_leaves_an_evaluation_on_part_of_a_folder_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from training.__main__ import main

    run_dir = make_tiny_run(tmp_path, "split", ["a", "b"])
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    evaluation.update(split="validation_split", data_dir=str(tmp_path))
    (run_dir / "evaluation.json").write_text(json.dumps(evaluation))
    before = (run_dir / "evaluation.json").read_text()
    assert main(["export-lite", "--run", str(run_dir)]) == 0
    # The training folder holds the images the model learnt from: not a validation set.
    assert (run_dir / "evaluation.json").read_text() == before
    assert "not recomputed: it is on part of a folder (a validation split)" in capsys.readouterr().out


def test_export_lite_fails_when_the_app_would_not_use_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from training.__main__ import main

    run_dir = _quantisable_run(tmp_path)
    monkeypatch.setattr(lite_engine, "QUANTIZED_PROBE_TOLERANCE", -1.0)  # every probe fails
    assert main(["export-lite", "--run", str(run_dir)]) == 2
    assert "the app would not use" in capsys.readouterr().err
