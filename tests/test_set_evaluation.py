"""A labelled set through the Predict pipeline: answers, score and the cell gallery."""

from __future__ import annotations

import io
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image
from skimage import data

from ferdash.labelled_set import label_images, read_zip
from ferdash.runs import model_store
from ferdash.runs.rundir import read_run_info
from ferdash.set_evaluation import CHUNK_IMAGES, NO_FACE_MESSAGE, evaluate_set

from tiny_runs import make_default_runs


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def fer7(tmp_path_factory: pytest.TempPathFactory) -> model_store.LoadedRun:
    root = tmp_path_factory.mktemp("runs")
    make_default_runs(root)
    return model_store.get_loaded_run(read_run_info(root / "fer7"))


FACE = Image.fromarray(data.astronaut()).convert("L").crop((150, 40, 290, 180)).resize((48, 48))


def test_answers_match_the_predict_pipeline_and_no_face_is_no_answer(fer7) -> None:
    files = [(f"happy_{i}.png", png(FACE.rotate(i))) for i in range(3)]
    files.append(("sad_cup.png", png(Image.fromarray(data.coffee()))))  # a photo without a face
    labelled = label_images(files, fer7.classes)
    report = evaluate_set(labelled, fer7, "fer7")
    assert report.true == ("happy", "happy", "happy", "sad")
    assert report.predicted[3] is None and report.messages[3] == NO_FACE_MESSAGE
    # The same answer as the model gives the same crop directly.
    direct = fer7.predict(np.stack([np.asarray(FACE.rotate(0))]).astype(np.float32)[..., None])[0]
    assert report.predicted[0] == fer7.classes[int(np.argmax(direct))]
    assert report.top_probability[0] == pytest.approx(float(direct.max()), abs=1e-5)
    s = report.score
    assert s.images == 4 and s.unclassified_count == 1 and s.classified == 3
    assert s.accuracy == pytest.approx(s.correct / 4)
    frame = report.frame()
    assert list(frame["file"]) == [name for name, _ in files] and frame["correct"].sum() == s.correct
    # A cell's faces: the diagonal cell of "happy" lists happy faces answered otherwise.
    mistakes = report.cell_indices("happy", "")
    assert all(report.predicted[i] not in (None, "happy") for i in mistakes)
    assert report.confusion_png().startswith(b"\x89PNG")


def test_progress_and_cancel_between_chunks(fer7) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for i in range(CHUNK_IMAGES * 2 + 5):
            archive.writestr(f"happy/{i}.png", png(FACE))
    labelled = read_zip(buf.getvalue(), fer7.classes)
    seen: list[tuple[int, int]] = []
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        cancel.set()  # stop after the first chunk

    report = evaluate_set(labelled, fer7, "fer7", progress, cancel)
    assert seen == [(CHUNK_IMAGES, CHUNK_IMAGES * 2 + 5)]
    assert report.cancelled_at == CHUNK_IMAGES and report.score.images == CHUNK_IMAGES


def test_an_empty_set_says_so(fer7) -> None:
    with pytest.raises(ValueError, match="No image in the upload carries one of the run.s classes"):
        evaluate_set(label_images([("cat.png", png(FACE))], fer7.classes), fer7, "fer7")
