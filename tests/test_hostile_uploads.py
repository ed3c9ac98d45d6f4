"""Hostile and awkward uploads: a clear message or a correct result for each, nothing else.

The corpus (``hostile_corpus.py``, 40 files generated in memory) goes through the
inference layer file by file, then all at once the way the Predict panel sends a
Shiny upload, while a Python audit hook watches every file the process opens; one
browser test uploads the whole corpus in one go and then uploads again.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pytest
from playwright.sync_api import Page, expect
from shiny.playwright import controller
from shiny.pytest import create_app_fixture
from shiny.run import ShinyAppProc

from ferdash import inference

from ferdash.runs import model_store
from ferdash.panels.uploads import stored_upload
from ferdash.runs.rundir import FER2013_CLASSES, read_run_info

from conftest import ANSWER_LINE, APP_ENV, APPS, REPO_ROOT
from hostile_corpus import Case, build_corpus
from tiny_runs import make_default_runs

CORPUS = build_corpus()


@pytest.fixture(scope="module")
def fer7(tmp_path_factory: pytest.TempPathFactory) -> model_store.LoadedRun:
    root = tmp_path_factory.mktemp("runs")
    make_default_runs(root)
    return model_store.get_loaded_run(read_run_info(root / "fer7"))


def test_the_corpus_is_big_and_varied() -> None:
    assert len(CORPUS) >= 30
    assert len({case.name for case in CORPUS}) == len(CORPUS)
    assert sum(case.error is None for case in CORPUS) >= 10
    assert sum(case.error is not None for case in CORPUS) >= 10
    bomb = next(c for c in CORPUS if c.name.startswith("bomb-"))
    assert len(bomb.content) < 200_000  # a bomb: tiny on disk, 400 megapixels decoded


def check_result(case: Case, result: inference.ImageResult) -> None:
    assert result.name == case.name
    if case.error is not None:
        assert result.error is not None, f"{case.name} should be refused"
        assert re.search(case.error, result.error), (case.name, result.error)
        assert result.prepared is None and result.probs is None
        return
    assert result.error is None, (case.name, result.error)
    assert result.model_error is None
    prepared = result.prepared
    assert prepared is not None
    assert prepared.crop.shape == (48, 48) and prepared.crop.dtype == np.uint8
    assert max(prepared.preview.shape) <= inference.PREVIEW_KEEP_MAX_SIDE
    assert result.probs is not None and result.probs.shape == (len(FER2013_CLASSES),)
    assert np.isfinite(result.probs).all() and abs(float(result.probs.sum()) - 1.0) < 1e-4
    for key, expected in case.checks.items():
        if key == "shape":
            assert prepared.preview.shape == expected, case.name
        else:
            assert getattr(prepared, key) == expected, (case.name, key, getattr(prepared, key))


@pytest.mark.parametrize("case", CORPUS, ids=[f"{i:02d}" for i in range(len(CORPUS))])
def test_each_file_gets_a_message_or_a_result(case: Case, fer7: model_store.LoadedRun) -> None:
    check_result(case, inference.analyse_bytes(case.content, fer7, name=case.name))


class OpenedFiles:
    """Every file the process opens from Python (``open``, ``os.open``) while recording.

    An audit hook cannot be removed, so one is installed per process and switched on
    and off; C libraries opening files by themselves are not seen (Pillow and OpenCV
    are handed bytes and arrays here, never paths).
    """

    _installed = False
    _lock = threading.Lock()
    events: list[tuple[str, str | None, int]] = []
    recording = False

    @classmethod
    def install(cls) -> None:
        with cls._lock:
            if not cls._installed:
                sys.addaudithook(cls._hook)
                cls._installed = True

    @classmethod
    def _hook(cls, event: str, args: tuple) -> None:
        if cls.recording and event == "open":
            path, mode, flags = args
            cls.events.append((os.fsdecode(path) if isinstance(path, (str, bytes)) else str(path), mode, flags or 0))


def is_write(mode: str | None, flags: int) -> bool:
    if mode is not None:
        return any(c in mode for c in "wax+")
    return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))


def test_a_whole_upload_of_the_corpus_reads_only_the_server_paths(
    fer7: model_store.LoadedRun, tmp_path: Path
) -> None:
    # Shaped like Shiny's upload: the server saved each file as <index><suffix> in its
    # own temporary folder; the user's name travels alongside as text.
    upload_dir = tmp_path / "upload"
    upload_dir.mkdir()
    files = []
    for i, case in enumerate(CORPUS):
        datapath = upload_dir / f"{i}.bin"
        datapath.write_bytes(case.content)
        files.append({"name": case.name, "size": len(case.content), "type": case.mime, "datapath": str(datapath)})
    before = sorted(p.name for p in tmp_path.rglob("*"))

    OpenedFiles.install()
    OpenedFiles.events.clear()
    OpenedFiles.recording = True
    try:
        results = inference.analyse([(f["name"], stored_upload(f, upload_dir)) for f in files], fer7, cache={})
    finally:
        OpenedFiles.recording = False

    assert len(results) == len(CORPUS)
    for case, result in zip(CORPUS, results):
        check_result(case, result)
    writes = [e for e in OpenedFiles.events if is_write(e[1], e[2])]
    assert writes == []
    opened = {e[0] for e in OpenedFiles.events}
    allowed = {f["datapath"] for f in files}
    # Only the server's paths are opened (the oversized one is refused from its size).
    assert opened <= allowed, opened - allowed
    user_parts = {
        part
        for case in CORPUS
        for part in (PurePosixPath(case.name).name, PureWindowsPath(case.name).name)
        if part
    }
    assert not any(Path(p).name in user_parts for p in opened)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written beside them

    # The process is fine afterwards: a normal photo still works.
    good = next(c for c in CORPUS if c.name == "astronaut.jpg")
    check_result(good, inference.analyse_bytes(good.content, fer7, name=good.name))


# --- In the browser ---------------------------------------------------------------

app = create_app_fixture(APPS / "predict_app.py", timeout_secs=120, env=APP_ENV)
RESULT_TIMEOUT = 90_000


@pytest.mark.browser
def test_uploading_the_whole_corpus_at_once(page: Page, app: ShinyAppProc) -> None:
    page.goto(app.url)
    controller.InputSelect(page, "predict-run").expect_selected(
        re.compile(".*fer7$"), timeout=RESULT_TIMEOUT
    )
    upload = controller.InputFile(page, "predict-upload")
    upload.set([{"name": c.name, "mimeType": c.mime, "buffer": c.content} for c in CORPUS])

    cards = page.locator(".predict-result")
    expect(cards).to_have_count(len(CORPUS), timeout=RESULT_TIMEOUT)
    for i, case in enumerate(CORPUS):
        card = page.locator(f"#predict-result_{i}")
        # Names are shown as text, whatever they contain (markup, slashes, emoji).
        expect(card.locator(".card-header")).to_have_text(case.name)
        if case.error is not None:
            expect(card.locator(".upload-error")).to_have_text(re.compile(case.error))
        else:
            expect(card.locator(".top-class").first).to_have_text(ANSWER_LINE)
    # A row per face: five-faces.png has five rows, every other file one.
    expect(page.locator("#predict-result_43 .face-section")).to_have_count(5)
    controller.OutputDataFrame(page, "predict-table").expect_nrow(len(CORPUS) + 4)
    # No file named after a user's path appeared next to the app or the repository.
    for where in (REPO_ROOT, REPO_ROOT.parent, APPS, APPS.parent):
        assert not (where / "x.png").exists()

    good = next(c for c in CORPUS if c.name == "astronaut.jpg")
    upload.set({"name": "after.jpg", "mimeType": "image/jpeg", "buffer": good.content})
    expect(page.locator("#predict-result_0 .card-header")).to_have_text("after.jpg", timeout=RESULT_TIMEOUT)
    expect(page.locator("#predict-result_0 .top-class")).to_be_visible()
    expect(cards).to_have_count(1)


def test_uploads_analysed_in_parallel_threads_match_one_at_a_time(fer7: model_store.LoadedRun) -> None:
    # The Predict panel analyses each session's upload in a worker thread: sessions run
    # detection (one cascade per thread) and the traced model side by side.
    from concurrent.futures import ThreadPoolExecutor

    readable = [c for c in CORPUS if c.error is None]
    expected = [inference.analyse_bytes(c.content, fer7, name=c.name) for c in readable]
    with ThreadPoolExecutor(max_workers=4) as pool:
        rounds = list(pool.map(lambda _: inference.analyse([(c.name, c.content) for c in readable], fer7), range(4)))
    for results in rounds:
        for want, got in zip(expected, results):
            assert got.prepared.box == want.prepared.box and got.prepared.faces_found == want.prepared.faces_found
            np.testing.assert_allclose(got.probs, want.probs, rtol=1e-5, atol=1e-6)
