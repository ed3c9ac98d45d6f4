"""The process-wide model cache: loading once, reloading on change, failing clearly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from ferdash.runs import model_store
from ferdash.runs.predictor import ModelLoadError
from ferdash.runs.rundir import FER2013_CLASSES, read_run_info, write_run_info

from tiny_runs import empty_cache, runs_root  # noqa: F401 (fixtures)
from tiny_runs import HAPPY_SAD_CLASSES, build_tiny_model, make_default_runs, make_tiny_run

REPO_ROOT = Path(__file__).resolve().parent.parent



def copy_run(runs_root: Path, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(runs_root / name, tmp_path / name))


def test_loads_once_and_predicts(runs_root: Path) -> None:
    info = read_run_info(runs_root / "fer7")
    loaded = model_store.get_loaded_run(info)
    assert model_store.get_loaded_run(info) is loaded
    assert loaded.classes == FER2013_CLASSES
    probs = loaded.predict(np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 1)))
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_compiled_predictor_matches_the_model(runs_root: Path) -> None:
    import keras

    info = read_run_info(runs_root / "happy_sad")
    loaded = model_store.get_loaded_run(info)
    batch = np.random.default_rng(1).uniform(0, 255, (4, 48, 48, 1)).astype(np.float32)
    model = keras.saving.load_model(info.model_path, compile=False)
    np.testing.assert_allclose(loaded.predict(batch), model.predict(batch, verbose=0), atol=1e-5)


def test_reloads_when_the_file_changes(runs_root: Path, tmp_path: Path) -> None:
    run_dir = copy_run(runs_root, "happy_sad", tmp_path)
    info = read_run_info(run_dir)
    first = model_store.get_loaded_run(info)
    build_tiny_model(2, seed=7).save(run_dir / "model.keras")
    st = (run_dir / "model.keras").stat()
    os.utime(run_dir / "model.keras", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = model_store.get_loaded_run(info)
    assert second is not first
    assert model_store.cached_count() == 1  # the old version was dropped


def test_concurrent_callers_share_one_load(runs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_load = model_store.load_keras_model

    def counting_load(path):
        calls.append(path)
        return real_load(path)

    monkeypatch.setattr(model_store, "load_keras_model", counting_load)
    info = read_run_info(runs_root / "fer7")
    got = []
    threads = [threading.Thread(target=lambda: got.append(model_store.get_loaded_run(info))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(got) == 4 and all(g is got[0] for g in got)


@pytest.mark.parametrize(
    "content", [b"", b"not a zip at all", b"PK\x03\x04" + b"\x00" * 100], ids=["empty", "text", "bad-zip"]
)
def test_corrupt_model_fails_clearly_and_others_still_work(
    runs_root: Path, tmp_path: Path, content: bytes
) -> None:
    run_dir = copy_run(runs_root, "fer7", tmp_path)
    (run_dir / "model.keras").write_bytes(content)
    with pytest.raises(ModelLoadError, match="cannot load.*(corrupt|truncated|zip)"):
        model_store.get_loaded_run(read_run_info(run_dir))
    # Cached failure: asked again, the same clear error without re-reading.
    with pytest.raises(ModelLoadError):
        model_store.get_loaded_run(read_run_info(run_dir))
    assert model_store.get_loaded_run(read_run_info(runs_root / "happy_sad")).classes == HAPPY_SAD_CLASSES


def test_missing_model(runs_root: Path, tmp_path: Path) -> None:
    run_dir = copy_run(runs_root, "fer7", tmp_path)
    (run_dir / "model.keras").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        model_store.get_loaded_run(read_run_info(run_dir))


def test_lambda_model_is_refused(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    run_dir = tmp_path / "unsafe"
    run_dir.mkdir()
    keras.Model(inputs, outputs).save(run_dir / "model.keras")
    write_run_info(run_dir, list(HAPPY_SAD_CLASSES), (48, 48))
    with pytest.raises(ModelLoadError, match="unsafe"):
        model_store.get_loaded_run(read_run_info(run_dir))


def test_run_json_that_does_not_fit_the_model(tmp_path: Path) -> None:
    make_tiny_run(tmp_path, "wrong", HAPPY_SAD_CLASSES)
    write_run_info(tmp_path / "wrong", list(FER2013_CLASSES), (48, 48))
    with pytest.raises(ModelLoadError, match="7 classes"):
        model_store.get_loaded_run(read_run_info(tmp_path / "wrong"))
    write_run_info(tmp_path / "wrong", list(HAPPY_SAD_CLASSES), (64, 64))
    with pytest.raises(ModelLoadError, match="input_size"):
        model_store.get_loaded_run(read_run_info(tmp_path / "wrong"))


def test_tta_from_run_json(runs_root: Path, tmp_path: Path) -> None:
    run_dir = copy_run(runs_root, "happy_sad", tmp_path)
    write_run_info(run_dir, list(HAPPY_SAD_CLASSES), (48, 48), tta="hflip")
    loaded = model_store.get_loaded_run(read_run_info(run_dir))
    assert loaded.tta == "hflip"
    image = np.random.default_rng(2).uniform(0, 255, (1, 48, 48, 1)).astype(np.float32)
    # With flip averaging, an image and its mirror get the same answer.
    np.testing.assert_allclose(loaded.predict(image), loaded.predict(image[:, :, ::-1]), atol=1e-5)
    write_run_info(run_dir, list(HAPPY_SAD_CLASSES), (48, 48), tta="rotate")
    with pytest.raises(ModelLoadError, match="test-time augmentation"):
        model_store.get_loaded_run(read_run_info(run_dir))


def test_app_starts_without_tensorflow(tmp_path: Path) -> None:
    code = (
        "import sys; from ferdash.app import build_app; build_app(); "
        "import ferdash.inference, ferdash.runs.model_store; "
        "sys.exit(1 if 'tensorflow' in sys.modules or 'keras' in sys.modules else 0)"
    )
    env = {**os.environ, "FERDASH_MODELS_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, timeout=120)
    assert result.returncode == 0, "importing the app imported TensorFlow"


def _counting_loads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every model file that is actually read from disk."""
    calls: list[Path] = []
    real_load = model_store.load_keras_model

    def counting_load(path):
        calls.append(Path(path))
        return real_load(path)

    monkeypatch.setattr(model_store, "load_keras_model", counting_load)
    return calls


def test_cache_keeps_at_most_n_models_dropping_the_least_recently_used(
    runs_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERDASH_MAX_LOADED_MODELS", "2")
    calls = _counting_loads(monkeypatch)
    a, b, c = (read_run_info(Path(shutil.copytree(runs_root / "happy_sad", tmp_path / n))) for n in "abc")
    loaded_a = model_store.get_loaded_run(a)
    loaded_b = model_store.get_loaded_run(b)
    assert model_store.get_loaded_run(a) is loaded_a  # a is now the most recently used
    assert model_store.cached_count() == 2 and len(calls) == 2

    loaded_c = model_store.get_loaded_run(c)  # N + 1 distinct runs: b, least recently used, goes
    assert model_store.cached_count() == 2
    assert model_store.get_loaded_run(a) is loaded_a
    assert model_store.get_loaded_run(c) is loaded_c
    assert len(calls) == 3  # a and c came from the cache

    # A session still holding b's LoadedRun keeps a working model.
    probs = loaded_b.predict(np.full((1, 48, 48, 1), 128.0, dtype=np.float32))
    assert probs.shape == (1, 2)

    # Asked for again, b is loaded again (and a, now least recently used, makes room).
    reloaded_b = model_store.get_loaded_run(b)
    assert reloaded_b is not loaded_b
    assert calls[-1] == b.model_path and len(calls) == 4
    assert model_store.cached_count() == 2
    assert model_store.get_loaded_run(c) is loaded_c
    assert model_store.get_loaded_run(b) is reloaded_b
    assert len(calls) == 4


def test_failures_do_not_push_models_out_and_are_bounded_too(
    runs_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERDASH_MAX_LOADED_MODELS", "1")
    monkeypatch.setattr(model_store, "MAX_CACHED_FAILURES", 2)
    good = model_store.get_loaded_run(read_run_info(runs_root / "fer7"))
    broken = []
    for name in ("x", "y", "z"):
        run_dir = copy_run(runs_root, "happy_sad", tmp_path / name)
        (run_dir / "model.keras").write_bytes(b"not a zip at all")
        broken.append(read_run_info(run_dir))
        with pytest.raises(ModelLoadError):
            model_store.get_loaded_run(broken[-1])
    assert model_store.get_loaded_run(read_run_info(runs_root / "fer7")) is good
    with model_store._lock:
        failures = [k for k, e in model_store._entries.items() if isinstance(e, ModelLoadError)]
    assert [Path(k[0]).parent.parent.name for k in failures] == ["y", "z"]  # x, the oldest, dropped


@pytest.mark.parametrize(
    "raw, expected", [(None, 8), ("3", 3), (" 12 ", 12), ("0", 1), ("-4", 1), ("many", 8), ("", 8)]
)
def test_max_loaded_models_from_the_environment(
    raw: str | None, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ferdash import config

    if raw is None:
        monkeypatch.delenv("FERDASH_MAX_LOADED_MODELS", raising=False)
    else:
        monkeypatch.setenv("FERDASH_MAX_LOADED_MODELS", raw)
    assert config.max_loaded_models() == expected
