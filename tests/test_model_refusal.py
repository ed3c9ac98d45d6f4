"""Model files the app must refuse, clearly, while the other runs keep working.

``test_model_store.py`` covers an empty/garbage/bad-zip file, a missing file and a
Lambda layer on its own; these add the cases a real archive can be broken in (cut
short, missing its config, naming code that is not there, another format renamed),
and check the Predict panel's worker path: the images are still read, the error says
which run, and the next run classifies.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferdash.runs import model_store
from ferdash.panels.uploads import checked_upload_list
from ferdash.prediction import analyse_upload
from ferdash.runs.predictor import ModelLoadError
from ferdash.runs.rundir import read_run_info, write_run_info

from tiny_runs import empty_cache, runs_root  # noqa: F401 (fixtures)
from tiny_runs import HAPPY_SAD_CLASSES, make_default_runs



def broken_copy(runs_root: Path, tmp_path: Path, rewrite) -> Path:
    run_dir = Path(shutil.copytree(runs_root / "happy_sad", tmp_path / "broken"))
    model = run_dir / "model.keras"
    model.write_bytes(rewrite(model.read_bytes()))
    return run_dir


def rezip(archive: bytes, change) -> bytes:
    """The .keras archive with its members passed through ``change(name, bytes)`` (None drops)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            content = change(item.filename, src.read(item.filename))
            if content is not None:
                dst.writestr(item.filename, content)
    return out.getvalue()


def unknown_layer(name: str, content: bytes) -> bytes:
    if name != "config.json":
        return content
    config = json.loads(content)
    # A layer from a module this process does not have: what a model saved with custom
    # code looks like to someone without that code.
    config["config"]["layers"][1].update(module="evil_package.layers", class_name="Backdoor", registered_name="evil>Backdoor")
    return json.dumps(config).encode()


CASES = {
    "truncated": lambda data: data[: len(data) // 2],
    "cut-at-the-end": lambda data: data[:-200],
    "no-config": lambda data: rezip(data, lambda name, c: None if name == "config.json" else c),
    "config-not-json": lambda data: rezip(data, lambda name, c: b"{not json" if name == "config.json" else c),
    "unknown-layer": lambda data: rezip(data, unknown_layer),
    "hdf5-renamed": lambda data: b"\x89HDF\r\n\x1a\n" + b"\x00" * 2000,
    "png-renamed": lambda data: _png(),
}


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("how", list(CASES))
def test_a_broken_archive_is_refused_and_the_other_run_still_works(
    runs_root: Path, tmp_path: Path, how: str
) -> None:
    run_dir = broken_copy(runs_root, tmp_path, CASES[how])
    with pytest.raises(ModelLoadError, match=r"cannot load|model of"):
        model_store.get_loaded_run(read_run_info(run_dir))
    good = model_store.get_loaded_run(read_run_info(runs_root / "fer7"))
    assert good.predict(np.zeros((2, 48, 48, 1), np.float32)).shape == (2, 7)


def lambda_run(root: Path) -> Path:
    import keras

    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    run_dir = root / "unsafe"
    run_dir.mkdir()
    keras.Model(inputs, outputs).save(run_dir / "model.keras")
    write_run_info(run_dir, list(HAPPY_SAD_CLASSES), (48, 48))
    return run_dir


def test_the_predict_worker_reports_the_refusal_and_the_next_run_classifies(
    runs_root: Path, tmp_path: Path
) -> None:
    unsafe = read_run_info(lambda_run(tmp_path))
    photo = tmp_path / "0.png"
    photo.write_bytes(_png())
    upload = checked_upload_list(
        [{"name": "face.png", "size": photo.stat().st_size, "datapath": str(photo)}]
    ).sources(tmp_path)

    refused = analyse_upload(upload, unsafe, {})
    assert refused.model_error is not None
    assert "unsafe" in refused.model_error and "unsafe" in refused.model_error.split("“")[1]
    (result,) = refused.results
    assert result.ok and result.probs is None  # the image was read, not classified

    fine = analyse_upload(upload, read_run_info(runs_root / "happy_sad"), {})
    assert fine.model_error is None
    assert fine.results[0].probs is not None and fine.results[0].probs.shape == (2,)
    # The refusal is remembered, not retried on every upload, and still refused.
    assert analyse_upload(upload, unsafe, {}).model_error == refused.model_error
