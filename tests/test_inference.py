"""One upload to one result; the sentences; the probability chart; the results table."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from ferdash import inference, plots, wording

from ferdash.runs import model_store
from ferdash.imaging import UploadError
from ferdash.panels.uploads import NOT_RECEIVED, read_shiny_upload, stored_upload
from ferdash.prediction import csv_text, results_frame
from ferdash.runs.rundir import FER2013_CLASSES, read_run_info

from tiny_runs import make_default_runs


def png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def loaded_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, model_store.LoadedRun]:
    root = tmp_path_factory.mktemp("runs")
    make_default_runs(root)
    return {name: model_store.get_loaded_run(read_run_info(root / name)) for name in ("fer7", "happy_sad")}


@pytest.fixture(scope="module")
def astronaut_png() -> bytes:
    return png(Image.fromarray(data.astronaut()))


def test_photo_face_is_found_cropped_and_classified(loaded_runs, astronaut_png: bytes) -> None:
    result = inference.analyse_bytes(astronaut_png, loaded_runs["fer7"], name="astronaut.png")
    assert result.ok and result.error is None
    prepared = result.prepared
    assert prepared.faces_found >= 1 and prepared.box is not None and not prepared.whole_image
    assert prepared.crop.shape == (48, 48) and prepared.crop.dtype == np.uint8
    assert result.probs.shape == (7,)
    assert abs(float(result.probs.sum()) - 1.0) < 1e-5
    assert result.top[0] in FER2013_CLASSES


def test_the_crop_fed_to_the_model_is_what_is_shown(loaded_runs, astronaut_png: bytes) -> None:
    loaded = loaded_runs["happy_sad"]
    result = inference.analyse_bytes(astronaut_png, loaded)
    direct = loaded.predict(result.prepared.crop[None, ..., None].astype(np.float32))[0]
    np.testing.assert_allclose(result.probs, direct, atol=1e-6)


def test_no_face_classifies_the_whole_image(loaded_runs) -> None:
    flat = png(Image.new("L", (300, 200), 120))
    result = inference.analyse_bytes(flat, loaded_runs["fer7"])
    assert result.ok and result.prepared.faces_found == 0 and result.prepared.whole_image
    assert not result.prepared.tight_crop
    assert result.probs is not None


def test_small_image_is_taken_as_a_face_crop(loaded_runs) -> None:
    face = png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)))
    result = inference.analyse_bytes(face, loaded_runs["fer7"])
    assert result.prepared.tight_crop and result.prepared.whole_image
    assert result.probs is not None


def test_bad_files_do_not_stop_the_good_ones(loaded_runs, astronaut_png: bytes) -> None:
    files = [
        ("a.png", astronaut_png),
        ("empty.png", b""),
        ("fake.jpg", b"hello"),
        ("cut.png", astronaut_png[:1000]),
        ("flat.bmp", png(Image.new("RGB", (200, 200), (10, 200, 10)), "BMP")),
    ]
    results = inference.analyse(files, loaded_runs["fer7"])
    assert [r.name for r in results] == [name for name, _ in files]
    assert [r.ok for r in results] == [True, False, False, False, True]
    assert "empty" in results[1].error
    assert results[2].error and results[3].error
    assert results[0].probs is not None and results[4].probs is not None


def test_without_a_model_images_are_still_read(astronaut_png: bytes) -> None:
    result = inference.analyse_bytes(astronaut_png, None)
    assert result.ok and result.probs is None and result.prepared.box is not None
    assert result.prepared.crop.shape == inference.DEFAULT_INPUT_SIZE


def test_shiny_upload_size_is_checked_before_reading(tmp_path: Path) -> None:
    with pytest.raises(UploadError, match="larger than"):
        read_shiny_upload({"name": "x.png", "size": 10**9, "datapath": str(tmp_path / "nope")}, tmp_path)
    path = tmp_path / "0.png"
    path.write_bytes(b"abc")
    assert read_shiny_upload({"name": "../../etc/passwd", "size": 3, "datapath": str(path)}, tmp_path) == b"abc"


def test_the_r_sentence_word_for_word() -> None:
    assert (
        wording.happy_sad_sentence(("happy", "sad"), [0.74, 0.26])
        == "With an expression percentage of 74% ... the image expression is more happy."
    )
    assert (
        wording.happy_sad_sentence(("sad", "happy"), [0.905, 0.095])
        == "With an expression percentage of 91% ... the image expression is more sad."
    )


def test_top_class_and_faces_text() -> None:
    probs = np.array([0.05, 0.05, 0.1, 0.5, 0.1, 0.1, 0.1])
    assert wording.top_class_text(FER2013_CLASSES, probs) == "Top expression: happy (50%)"
    assert wording.faces_text(0, False).startswith("No face found")
    assert wording.faces_text(3, False) == "3 faces found, each classified."
    assert "face crop" in wording.faces_text(0, True)
    assert wording.faces_text(0, False, classified=False) == "No face found: the whole image was used."
    assert wording.faces_text(1, False, detector="blazeface") == "1 face found by BlazeFace."
    assert (
        wording.faces_text(5, False, detector="haar")
        == "5 faces found by the Haar cascade, each classified."
    )
    assert (
        wording.faces_text(31, False, shown=20)
        == "31 faces found: the 20 largest were classified."
    )


@pytest.mark.parametrize(
    ("probs", "answer", "text"),
    [
        # Confident: one class.
        ([0.05, 0.05, 0.05, 0.6, 0.1, 0.1, 0.05], "happy", "Top expression: happy (60%)"),
        # At the threshold (50%) and 20 points ahead: still one class.
        ([0.05, 0.05, 0.05, 0.5, 0.3, 0.05, 0.0], "happy", "Top expression: happy (50%)"),
        # Top below 50%: more often wrong than right.
        ([0.05, 0.05, 0.1, 0.05, 0.31, 0.38, 0.06], "uncertain: sad or neutral",
         "Uncertain: sad (38%) or neutral (31%)"),
        # Top two within 10 points, though the top is over 50%.
        ([0.0, 0.0, 0.0, 0.0, 0.44, 0.56, 0.0], "sad", "Top expression: sad (56%)"),
        ([0.0, 0.0, 0.0, 0.0, 0.47, 0.53, 0.0], "uncertain: sad or neutral",
         "Uncertain: sad (53%) or neutral (47%)"),
    ],
)
def test_uncertain_answers(probs: list[float], answer: str, text: str) -> None:
    assert wording.UNCERTAIN_BELOW == 0.5 and wording.UNCERTAIN_MARGIN == 0.10
    assert wording.answer(FER2013_CLASSES, probs) == answer
    assert wording.answer_text(FER2013_CLASSES, probs) == text
    assert wording.is_uncertain(FER2013_CLASSES, probs) == answer.startswith("uncertain")


def test_happy_sad_second_line() -> None:
    angry = [0.71, 0.02, 0.05, 0.05, 0.1, 0.05, 0.02]
    assert wording.neither_happy_nor_sad_text(FER2013_CLASSES, angry) == (
        "This face looks more angry than happy or sad (seven-expression model: angry 71%)"
    )
    # Happy, or another class not clearly ahead: no second line.
    assert wording.neither_happy_nor_sad_text(FER2013_CLASSES, [0.1, 0, 0, 0.8, 0.1, 0, 0]) is None
    assert wording.neither_happy_nor_sad_text(FER2013_CLASSES, [0.45, 0, 0, 0.3, 0.25, 0, 0]) is None


def test_probability_bar_chart() -> None:
    probs = [0.1, 0.05, 0.05, 0.6, 0.1, 0.05, 0.05]
    fig = plots.probability_bar_chart(FER2013_CLASSES, probs)
    ax = fig.axes[0]
    bars = ax.patches
    assert len(bars) == 7
    assert [t.get_text() for t in ax.get_yticklabels()] == list(FER2013_CLASSES)
    assert max(bars, key=lambda b: b.get_width()).get_width() == pytest.approx(60.0)
    assert plots.figure_png_bytes(fig).startswith(b"\x89PNG")
    with pytest.raises(ValueError):
        plots.probability_bar_chart(FER2013_CLASSES, [0.5, 0.5])


def test_results_table_and_csv(loaded_runs, astronaut_png: bytes) -> None:
    results = inference.analyse(
        [("=cmd|' /C calc'!A0.png", astronaut_png), ("bad.png", b"x")], loaded_runs["fer7"]
    )
    frame = results_frame(results, as_percent=False, run="fer7")
    # What a reader compares first, then the probabilities, then where the face was.
    assert list(frame.columns) == [
        "file", "face", "answer", "top probability", "message", *FER2013_CLASSES,
        "top class", "face found", "faces", "x", "y", "w", "h", "detector", "run",
    ]
    assert frame.loc[0, "face found"] == "yes" and frame.loc[1, "message"]
    assert list(frame["run"]) == ["fer7", "fer7"]
    assert frame.loc[0, list(FER2013_CLASSES)].sum() == pytest.approx(1.0, abs=1e-3)
    # The box is in the file's pixels: the astronaut's face, around (220, 115).
    x, y, w, h = (int(frame.loc[0, c]) for c in ("x", "y", "w", "h"))
    assert abs(x + w / 2 - 220) < 30 and abs(y + h / 2 - 115) < 30
    assert frame.loc[0, "detector"] in ("blazeface", "haar")
    text = csv_text(frame)
    assert text.splitlines()[1].startswith("'=cmd")  # defused for spreadsheets
    # A count stays a count beside the blank of the unreadable file.
    assert text.splitlines()[1].split(",")[1] == "1" and text.splitlines()[2].split(",")[1] == ""


def test_results_table_says_why_a_run_gave_no_probabilities(astronaut_png: bytes) -> None:
    # The run's model could not be loaded: the images are still read, and every row
    # without an error of its own carries the run's.
    results = inference.analyse([("a.png", astronaut_png), ("bad.png", b"x")], None)
    why = "The model of run “broken” cannot be used: model.keras is cut short"
    frame = results_frame(results, as_percent=True, run="broken", model_error=why)
    assert frame.loc[0, "message"] == why and frame.loc[0, "top class"] == ""
    assert frame.loc[1, "message"] != why and frame.loc[1, "message"]  # its own error


def test_large_photo_keeps_a_small_preview_and_boxes_match(loaded_runs) -> None:
    big = Image.fromarray(data.astronaut()).resize((1536, 1536))
    result = inference.analyse_bytes(png(big), loaded_runs["fer7"])
    prepared = result.prepared
    assert max(prepared.preview.shape) == inference.PREVIEW_KEEP_MAX_SIDE
    assert prepared.preview_scale == pytest.approx(720 / 1536)
    box = prepared.box
    assert box is not None  # in working-image pixels: three times the 512-px photo's
    assert abs(box.x + box.w / 2 - 3 * 220) < 90 and abs(box.y + box.h / 2 - 3 * 115) < 90


def test_too_many_files_in_one_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "MAX_FILES_PER_UPLOAD", 2)
    small = png(Image.new("L", (20, 20), 100))
    results = inference.analyse([(f"{i}.png", small) for i in range(3)], None)
    assert [r.ok for r in results] == [True, True, False]
    assert "at most 2 files" in results[2].error


def test_prepare_cache_skips_decoding_for_another_model(
    loaded_runs, astronaut_png: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "0"
    path.write_bytes(astronaut_png)
    upload = {"name": "a.png", "size": len(astronaut_png), "datapath": str(path)}
    cache: inference.PrepareCache = {}
    first = inference.analyse([("a.png", stored_upload(upload, tmp_path))], loaded_runs["fer7"], cache)
    calls = []
    monkeypatch.setattr(inference, "prepare_image", lambda *a: calls.append(a))
    second = inference.analyse([("a.png", stored_upload(upload, tmp_path))], loaded_runs["happy_sad"], cache)
    assert calls == []  # same upload, same input size: decoded once
    assert second[0].prepared is first[0].prepared
    assert second[0].probs.shape == (2,)


@pytest.mark.parametrize("datapath", ["/etc/passwd", "/dev/zero", "/proc/self/environ", "/"])
def test_upload_datapath_outside_the_upload_folder_is_refused(datapath: str, tmp_path: Path) -> None:
    # A browser can forge the file input's value; only the session's own uploads open.
    with pytest.raises(UploadError, match="did not reach the server"):
        read_shiny_upload({"name": "x.png", "size": 10, "datapath": datapath}, tmp_path)


def test_another_sessions_upload_is_refused(tmp_path: Path) -> None:
    # Shiny keeps each session's uploads in its own folder under the temporary folder:
    # /tmp/fileupload-AAAA/tmpXXXX/0.jpg is not readable by the session of fileupload-BBBB.
    mine, theirs = tmp_path / "fileupload-mine", tmp_path / "fileupload-theirs"
    (theirs / "tmp1").mkdir(parents=True)
    mine.mkdir()
    photo = theirs / "tmp1" / "0.jpg"
    photo.write_bytes(b"their photo")
    forged = [
        str(photo),
        str(mine / ".." / "fileupload-theirs" / "tmp1" / "0.jpg"),  # climbing out
        str(mine / ("x" * 300)),  # a name too long for the file system
        str(mine) + "/\x00.jpg",
        ["not", "a", "path"],
    ]
    for datapath in forged:
        with pytest.raises(UploadError, match="did not reach the server"):
            read_shiny_upload({"name": "x.jpg", "size": 11, "datapath": datapath}, mine)
    (mine / "link.jpg").symlink_to(photo)  # a link planted inside points outside
    with pytest.raises(UploadError, match="did not reach the server"):
        read_shiny_upload({"name": "x.jpg", "size": 11, "datapath": str(mine / "link.jpg")}, mine)
    # Without the session's folder nothing is opened at all.
    with pytest.raises(UploadError, match="did not reach the server"):
        read_shiny_upload({"name": "x.jpg", "size": 11, "datapath": str(photo)}, None)
    unconfined = stored_upload({"name": "x.jpg", "datapath": str(photo)}, None)
    assert inference.analyse([("x.jpg", unconfined)], None)[0].error == NOT_RECEIVED
    # Its own upload is read.
    (mine / "tmp2").mkdir()
    (mine / "tmp2" / "0.jpg").write_bytes(b"my photo")
    assert read_shiny_upload({"name": "x.jpg", "size": 8, "datapath": str(mine / "tmp2" / "0.jpg")}, mine) == b"my photo"


def test_file_names_are_shown_without_hidden_characters(astronaut_png: bytes) -> None:
    tricky = {
        "face\u202egpj.exe": "face\ufffdgpj.exe",  # right-to-left override: reads "faceexe.jpg"
        "a\x00b.png": "a\ufffdb.png",
        "line\nbreak.png": "line\ufffdbreak.png",
        "family 👨\u200d👩\u200d👧.png": "family 👨\u200d👩\u200d👧.png",  # emoji joiners kept
        "Ünïcödé.png": "Ünïcödé.png",
    }
    results = inference.analyse([(name, astronaut_png) for name in tricky], None)
    assert [r.name for r in results] == list(tricky.values())
    long = inference.analyse([("x" * 10_000 + ".png", astronaut_png)], None)[0].name
    assert len(long) == inference.MAX_NAME_CHARS and long.endswith("…")


def test_a_second_run_reads_every_face_too(loaded_runs, astronaut_png: bytes) -> None:
    # Happy-vs-sad mode: the seven-expression run also reads each face, at its own size.
    happy_sad, fer7 = loaded_runs["happy_sad"], loaded_runs["fer7"]
    (result,) = inference.analyse([("a.png", astronaut_png)], happy_sad, second=fer7)
    (face,) = result.faces
    classes, probs = face.second_opinion
    assert classes == fer7.classes and probs.shape == (7,)
    direct = fer7.predict(result.prepared.crop[None, ..., None].astype(np.float32))[0]
    np.testing.assert_allclose(probs, direct, atol=1e-6)
    assert face.probs.shape == (2,)  # the answer asked for is still the happy-vs-sad one
    # Without a second run there is no second reading.
    assert inference.analyse_bytes(astronaut_png, happy_sad).faces[0].second_opinion is None
