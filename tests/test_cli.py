"""``python -m ferdash`` (predict, evaluate), the paths it reads, and ``ferdash.Predictor``.

On a folder generated here (the astronaut photo, a 48x48 crop, a corrupt JPEG, a text
file named .png, a note that is no image, a sub-folder) and the tiny untrained runs: the
rows must be exactly those of the Predict table for the same files.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data

import ferdash
from ferdash import batch
from ferdash.cli import main
from ferdash.inference import analyse
from ferdash.labelled_set import read_folder, read_zip
from ferdash.paths import NoSuchPath, iter_image_paths
from ferdash.prediction import csv_text, results_frame
from ferdash.runs import model_store
from ferdash.runs.rundir import read_run_info
from ferdash.set_evaluation import evaluate_set

from tiny_runs import make_default_runs

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
ASTRONAUT = Image.fromarray(data.astronaut())
FACE = ASTRONAUT.convert("L").crop((176, 75, 274, 173)).resize((48, 48))


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_default_runs(root)
    return root


@pytest.fixture(scope="module")
def fer7(runs: Path) -> model_store.LoadedRun:
    return model_store.get_loaded_run(read_run_info(runs / "fer7"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    ASTRONAUT.save(folder / "astronaut.png")
    FACE.save(folder / "crop48.png")
    FACE.rotate(10).save(folder / "=formula.png")  # a name a spreadsheet would run
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"broken" * 50)
    (folder / "fake.png").write_text("not an image at all")
    (folder / "notes.txt").write_text("no image extension: a folder does not give it")
    (folder / "sub").mkdir()
    Image.fromarray(data.chelsea()).save(folder / "sub" / "chelsea.jpg")
    return folder


def expected_frame(
    paths: list[Path], loaded: model_store.LoadedRun, every_face: bool = False
) -> pd.DataFrame:
    """The Predict table of the same files, read as an upload of them (each photo's
    largest face only, as the command's default, unless ``every_face``)."""
    files = [(str(p), p.read_bytes()) for p in paths]
    return results_frame(analyse(files, loaded, every_face=every_face), False, run=loaded.info.name)


def assert_same_rows(csv: str, expected: pd.DataFrame) -> None:
    """Rows computed in other model batches than ``expected``'s: equal up to the last
    digit written (a batch of another size may round a probability the other way)."""
    got = pd.read_csv(io.StringIO(csv))
    want = pd.read_csv(io.StringIO(csv_text(expected)))
    pd.testing.assert_frame_equal(got, want, check_exact=False, atol=2e-4, rtol=0)


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --- paths ---------------------------------------------------------------------------


def test_paths_folders_globs_and_files(photos: Path) -> None:
    top = ["=formula.png", "astronaut.png", "corrupt.jpg", "crop48.png", "fake.png"]
    assert [p.name for p in iter_image_paths([photos])] == top
    assert [p.name for p in iter_image_paths([photos], recursive=True)] == [*top, "chelsea.jpg"]
    # A file named is taken whatever its extension; one reached twice is listed once.
    named = iter_image_paths([photos / "notes.txt", photos / "crop48.png", str(photos / "crop*.png")])
    assert [p.name for p in named] == ["notes.txt", "crop48.png"]
    assert [p.name for p in iter_image_paths([str(photos / "**" / "*.jpg")])] == [
        "corrupt.jpg",
        "chelsea.jpg",
    ]
    with pytest.raises(NoSuchPath, match="nowhere"):
        iter_image_paths([photos, photos / "nowhere", str(photos / "*.gif")])


def test_a_file_reached_through_links_or_two_spellings_is_listed_once(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "sub/c.png"):
        (real / name).write_bytes(b"x")
    (real / "link-to-a.png").symlink_to(real / "a.png")
    (tmp_path / "alias").symlink_to(real)
    dangling = real / "gone.png"
    dangling.symlink_to(tmp_path / "nothing.png")
    listed = iter_image_paths([real, tmp_path / "alias", tmp_path / "alias" / "b.png", real / "sub" / ".." / "a.png"])
    # The link to a.png is a.png; the folder's alias and the other spellings add nothing;
    # a dangling link is no file.
    assert [p.relative_to(tmp_path).as_posix() for p in listed] == ["real/a.png", "real/b.png"]
    deep = iter_image_paths([real, tmp_path / "alias"], recursive=True)
    assert [p.relative_to(tmp_path).as_posix() for p in deep] == ["real/a.png", "real/b.png", "real/sub/c.png"]


# --- predict ---------------------------------------------------------------------------


def test_csv_rows_are_the_predict_tables(photos, runs, fer7, tmp_path, capsys) -> None:
    out = tmp_path / "rows.csv"
    code, stdout, err = run_main(
        ["predict", str(photos), "-r", "--run", str(runs / "fer7"), "--out", str(out)], capsys
    )
    assert code == 0 and stdout == ""
    paths = iter_image_paths([photos], recursive=True)
    expected = expected_frame(paths, fer7)
    assert out.read_text(encoding="utf-8") == csv_text(expected)
    lines = err.strip().splitlines()
    assert lines[0] == (
        "6 files: 3 faces in 3 files (small images taken as face crops: 2), "
        "1 without a face, 2 unreadable."
    )
    assert "  unreadable: 1 × The file is corrupt: its image header cannot be read." in lines
    assert any(line.startswith("  unreadable: 1 × This is not an image format") for line in lines)


def test_every_face_and_jsonl(photos, runs, fer7, tmp_path, capsys) -> None:
    out = tmp_path / "rows.jsonl"
    argv = ["predict", str(photos), "--run", str(runs / "fer7"), "--out", str(out), "--every-face"]
    assert run_main(argv, capsys)[0] == 0
    expected = expected_frame(iter_image_paths([photos]), fer7, every_face=True)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    want = expected.astype(object).where(expected.notna(), None).to_dict(orient="records")
    assert rows == want
    # The default: one row per file, its largest face, the same as face 1 of every face.
    default = tmp_path / "largest.jsonl"
    assert run_main(["predict", str(photos), "--run", str(runs / "fer7"), "--out", str(default)], capsys)[0] == 0
    largest = [json.loads(line) for line in default.read_text(encoding="utf-8").splitlines()]
    assert [row["file"] for row in largest] == [str(p) for p in iter_image_paths([photos])]
    first = {row["file"]: row for row in rows if row["face"] in (None, 1)}
    for row in largest:
        assert row["answer"] == first[row["file"]]["answer"]


def test_a_group_photo_is_one_row_or_a_row_per_face(runs, tmp_path, capsys) -> None:
    from skimage import data as skdata

    photo = Image.fromarray(skdata.astronaut())
    canvas = Image.new("RGB", (1000, 600), (120, 120, 120))
    canvas.paste(photo.resize((440, 440)), (0, 160))
    canvas.paste(photo.transpose(Image.FLIP_LEFT_RIGHT).resize((260, 260)), (460, 340))
    group = tmp_path / "group.jpg"
    canvas.save(group, quality=90)
    run = ["--run", str(runs / "fer7")]
    code, stdout, _ = run_main(["predict", str(group), *run], capsys)
    assert code == 0 and len(pd.read_csv(io.StringIO(stdout))) == 1
    code, stdout, _ = run_main(["predict", str(group), *run, "--every-face"], capsys)
    rows = pd.read_csv(io.StringIO(stdout))
    assert code == 0 and list(rows["face"]) == [1, 2] and list(rows["detector"]) == ["blazeface", "haar"]


def test_parquet(photos, runs, fer7, tmp_path, capsys) -> None:
    pytest.importorskip("pyarrow")
    out = tmp_path / "rows.parquet"
    first = [str(photos / "corrupt.jpg"), str(photos / "fake.png")]  # a chunk without numbers
    argv = ["predict", *first, "--run", str(runs / "fer7"), "--out", str(out)]
    assert run_main(argv, capsys)[0] == 0
    argv = ["predict", str(photos), "--run", str(runs / "fer7"), "--out", str(out), "--resume"]
    assert run_main([*argv, "--batch-files", "2"], capsys)[0] == 0
    got = pd.read_parquet(out)
    assert str(got["face"].dtype) == "Int64" and got["happy"].dtype == np.float64
    names = ("corrupt.jpg", "fake.png", "=formula.png", "astronaut.png", "crop48.png")
    assert_same_rows(csv_text(got), expected_frame([photos / n for n in names], fer7))


def test_parquet_without_pyarrow_says_how_to_get_it(photos, runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    argv = ["predict", str(photos), "--run", str(runs / "fer7"), "--out", str(tmp_path / "x.parquet")]
    code, _, err = run_main(argv, capsys)
    assert code == 2 and "pip install 'ferdash[parquet]'" in err
    assert not (tmp_path / "x.parquet").exists()


def test_resume_skips_the_files_done_and_redoes_a_cut_row(
    photos, runs, fer7, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(photos)  # relative names: "=formula.png" is written defused
    out = tmp_path / "rows.csv"
    run = ["--run", str(runs / "fer7"), "--out", str(out)]
    assert run_main(["predict", "=formula.png", "astronaut.png", "crop48.png", *run], capsys)[0] == 0
    assert "\n'=formula.png," in out.read_text(encoding="utf-8")
    # A process killed while writing leaves half a row: it is dropped and done again.
    text = out.read_text(encoding="utf-8")
    out.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 10], encoding="utf-8")

    code, _, err = run_main(["predict", ".", *run, "--resume"], capsys)
    assert code == 0
    assert err.splitlines()[0].startswith("3 files:")  # crop48 (cut), corrupt, fake
    assert "2 files already there skipped" in err
    order = [Path(n) for n in ("=formula.png", "astronaut.png", "corrupt.jpg", "crop48.png", "fake.png")]
    assert_same_rows(out.read_text(encoding="utf-8"), expected_frame(order, fer7))

    code, _, err = run_main(["predict", ".", *run, "--resume"], capsys)
    assert code == 0 and "Nothing to do: all 5 files" in err
    # Rows of another run are not mixed in.
    other = ["--run", str(runs / "happy_sad"), "--out", str(out), "--resume"]
    code, _, err = run_main(["predict", ".", *other], capsys)
    assert code == 2 and "holds rows of run fer7, not happy_sad" in err


def test_an_interrupt_leaves_the_chunks_written(photos, runs, fer7, tmp_path, capsys, monkeypatch):
    calls = []
    classify = batch.classify

    def interrupted_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the model runs on the second chunk
        return classify(*args, **kwargs)

    monkeypatch.setattr(batch, "classify", interrupted_second_time)
    out = tmp_path / "rows.csv"
    argv = ["predict", str(photos), "--run", str(runs / "fer7"), "--out", str(out)]
    code, _, err = run_main([*argv, "--batch-files", "2"], capsys)
    assert code == 130 and "Interrupted: 3 files not done" in err and "--resume" in err
    paths = iter_image_paths([photos])
    assert out.read_text(encoding="utf-8") == csv_text(expected_frame(paths[:2], fer7))

    monkeypatch.setattr(batch, "classify", classify)
    assert run_main([*argv, "--resume"], capsys)[0] == 0
    assert_same_rows(out.read_text(encoding="utf-8"), expected_frame(paths, fer7))


def test_refused_invocations(photos, runs, tmp_path, capsys) -> None:
    run = ["--run", str(runs / "fer7")]
    code, _, err = run_main(["predict", str(photos / "nowhere"), *run], capsys)
    assert code == 2 and "no such file or folder" in err
    code, _, err = run_main(["predict", str(photos), *run, "--out", str(tmp_path / "x.xlsx")], capsys)
    assert code == 2 and "--out must end in .csv" in err
    code, _, err = run_main(["predict", str(photos), "--run", str(tmp_path / "norun")], capsys)
    assert code == 2 and "no run folder" in err
    code, _, err = run_main(["predict", str(photos), *run, "--resume"], capsys)
    assert code == 2 and "--resume needs --out" in err


def test_ray_engine_is_imported_only_when_asked(photos, runs, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "rows.parquet")
    argv = ["predict", str(photos), "--run", str(runs / "fer7"), "--engine", "ray", "--out", out]
    monkeypatch.setitem(sys.modules, "ferdash.ray_engine", None)
    code, _, err = run_main(argv, capsys)
    assert code == 2 and "install ferdash[ray]" in err

    called = {}
    fake = types.ModuleType("ferdash.ray_engine")
    fake.predict_paths = lambda paths, run_dir, out, batch_size, every_face: called.update(
        paths=paths, run_dir=run_dir, out=out, batch_size=batch_size, every_face=every_face
    )
    monkeypatch.setitem(sys.modules, "ferdash.ray_engine", fake)
    assert run_main(argv, capsys)[0] == 0
    assert called == {
        "paths": [str(p) for p in iter_image_paths([photos])],
        "run_dir": str(runs / "fer7"),
        "out": out,
        "batch_size": batch.DEFAULT_BATCH_FILES,
        "every_face": False,  # the command's default, the largest face
    }


def test_the_command_as_a_process_writes_csv_to_stdout(photos, runs, fer7) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferdash", "predict", str(photos), "-r", "--run", str(runs / "fer7")],
        capture_output=True, text=True, env=ENV, cwd=REPO_ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == csv_text(expected_frame(iter_image_paths([photos], recursive=True), fer7))
    # TensorFlow's start-up lines are held back: the summary is what standard error says.
    assert done.stderr.splitlines()[0].startswith("6 files: 3 faces in 3 files")
    assert "oneDNN" not in done.stderr


def test_sigint_leaves_a_valid_partial_csv(runs, tmp_path) -> None:
    # Face-less noise photos: every detector searches each, so 120 of them take seconds.
    folder = tmp_path / "noise"
    folder.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (480, 640), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG")
    for i in range(120):
        (folder / f"noise_{i:03d}.jpg").write_bytes(buf.getvalue())
    out = tmp_path / "rows.csv"
    command = [sys.executable, "-m", "ferdash", "predict", str(folder), "--run", str(runs / "fer7"),
               "--out", str(out), "--batch-files", "4"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO_ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_text(encoding="utf-8").count("\n") >= 5:  # header + a chunk
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    rows = pd.read_csv(out)
    assert 4 <= len(rows) < 120 and len(rows) % 4 == 0  # whole chunks only
    assert list(rows["file"]) == [str(folder / f"noise_{i:03d}.jpg") for i in range(len(rows))]
    assert "Interrupted" in err


def test_summary_counts() -> None:
    summary = batch.Summary()
    assert summary.lines() == ["0 files: 0 faces in 0 files, 0 without a face, 0 unreadable."]


# --- evaluate ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same set as a folder and a zip: class folders, a synonym, a note, a non-image."""
    folder = tmp_path_factory.mktemp("labelled") / "set"  # a wrapper folder, dropped
    files = {
        "happy/a.png": png(FACE),
        "happy/b.png": png(FACE.rotate(8)),
        "sadness/c.png": png(FACE.transpose(Image.FLIP_LEFT_RIGHT)),
        "surprise/d.png": png(Image.fromarray(data.coffee())),  # no face: no answer
        "contempt/e.png": png(FACE),  # an expression the run lacks: ignored, noted
        "happy/readme.txt": b"not an image",
    }
    archive = folder.parent / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, blob in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(blob)
            zf.writestr(f"set/{name}", blob)
    return folder, archive


def test_read_folder_labels_as_read_zip(labelled) -> None:
    folder, archive = labelled
    classes = read_run_info(REPO_ROOT / "models" / "fer7").classes
    from_folder, from_zip = read_folder(folder, classes), read_zip(archive, classes)
    assert [(i.name, i.label, i.data) for i in from_folder.images] == [
        (i.name.removeprefix("set/"), i.label, i.data) for i in from_zip.images
    ]
    assert [i.label for i in from_folder.images] == ["happy", "happy", "sad", "surprise"]
    assert from_folder.non_images == from_zip.non_images == 1
    assert len(from_folder.notes) == len(from_zip.notes) == 2


@pytest.mark.parametrize("which", ["folder", "zip"])
def test_evaluate(labelled, runs, fer7, tmp_path, capsys, which) -> None:
    folder, archive = labelled
    source = folder if which == "folder" else archive
    out_dir = tmp_path / "report"
    argv = ["evaluate", str(source), "--run", str(runs / "fer7"), "--out-dir", str(out_dir)]
    code, out, err = run_main(argv, capsys)
    assert code == 0, err
    reader = read_folder if which == "folder" else read_zip
    report = evaluate_set(reader(source, fer7.classes), fer7, "fer7")
    assert f"accuracy   {report.score.accuracy:.4f}" in out
    assert f"macro-F1   {report.score.macro_f1:.4f}" in out
    assert "4 labelled images (0 angry, 0 disgust, 0 fear, 2 happy, 0 neutral, 1 sad, 1 surprise)" in err
    assert (out_dir / "per-image.csv").read_text(encoding="utf-8") == csv_text(report.frame())
    confusion = pd.read_csv(out_dir / "confusion.csv", index_col=0)
    assert list(confusion.columns) == [*fer7.classes, "no answer"]
    assert confusion.to_numpy()[:, :-1].tolist() == report.score.confusion.tolist()
    assert confusion["no answer"].sum() == 1  # the cup: no face found
    assert len(pd.read_csv(out_dir / "per-class.csv")) == len(fer7.classes)
    assert (out_dir / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the Python API --------------------------------------------------------------------


def test_import_ferdash_stays_light() -> None:
    code = "import sys, ferdash; print(sorted({'cv2', 'pandas', 'tensorflow'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                          cwd=REPO_ROOT, timeout=60)
    assert done.stdout.strip() == "[]"


def test_predictor(photos, runs, fer7, capsys) -> None:
    predictor = ferdash.Predictor(runs / "fer7")
    faces = predictor.predict(photos / "astronaut.png")
    row = expected_frame([photos / "astronaut.png"], fer7).iloc[0]
    (face,) = faces
    assert face.number == 1 and face.is_face and face.detector == row["detector"]
    assert face.box == tuple(int(row[k]) for k in "xywh")
    assert face.top_class == row["top class"] and face.answer == row["answer"]
    assert round(face.probabilities["happy"], 4) == row["happy"]
    assert set(face.probabilities) == set(fer7.classes)
    # Bytes, a Pillow image and an array go through the same decoding.
    assert predictor.predict(np.asarray(ASTRONAUT))[0].box == face.box
    assert predictor.predict(png(ASTRONAUT))[0].probabilities == face.probabilities
    crop = predictor.predict(FACE)
    assert len(crop) == 1 and crop[0].number is None and crop[0].box is None and crop[0].is_face
    with pytest.raises(ValueError, match="corrupt"):
        predictor.predict(photos / "corrupt.jpg")

    table = predictor.predict_many([photos], recursive=True)
    code, stdout, _ = run_main(["predict", str(photos), "-r", "--run", str(runs / "fer7")], capsys)
    assert csv_text(table) == stdout
    largest = predictor.predict_many([photos])
    assert list(largest["file"]) == [str(p) for p in iter_image_paths([photos])]
    every = predictor.predict_many([photos], largest_face=False)
    assert set(every["file"]) == set(largest["file"])
