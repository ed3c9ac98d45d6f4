"""The Predict panel in a real browser, on tiny untrained runs (and on none)."""

from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect
from shiny.playwright import controller
from shiny.pytest import create_app_fixture
from shiny.run import ShinyAppProc
from skimage import data

from conftest import ANSWER_LINE, APP_ENV, APPS

pytestmark = pytest.mark.browser


app = create_app_fixture(APPS / "predict_app.py", timeout_secs=120, env=APP_ENV)
empty_app = create_app_fixture(APPS / "empty_app.py", timeout_secs=60, env=APP_ENV)

# Generous: the first upload loads TensorFlow and traces the model in the app process.
RESULT_TIMEOUT = 60_000


def payload(name: str, content: bytes, mime: str = "image/png") -> dict:
    return {"name": name, "mimeType": mime, "buffer": content}


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


ASTRONAUT_PNG = encode(Image.fromarray(data.astronaut()), "PNG")
FACE48_PNG = encode(
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)), "PNG"
)
# A photo without a face (the cameraman has one, which BlazeFace finds).
COFFEE_JPG = encode(Image.fromarray(data.coffee()), "JPEG")


def test_one_png_happy_vs_sad(page: Page, app: ShinyAppProc) -> None:
    page.goto(app.url)
    controller.InputRadioButtons(page, "predict-mode").set("happy_sad")
    # The app may be busy importing TensorFlow for the preloaded model: wait generously.
    controller.InputSelect(page, "predict-run").expect_selected(
        re.compile(".*happy_sad$"), timeout=RESULT_TIMEOUT
    )
    controller.InputFile(page, "predict-upload").set(payload("astronaut.png", ASTRONAUT_PNG))

    card = page.locator("#predict-result_0")
    expect(card.locator(".expression-sentence")).to_have_text(
        re.compile(r"^With an expression percentage of \d{1,3}% \.\.\. the image expression is more (happy|sad)\.$"),
        timeout=RESULT_TIMEOUT,
    )
    expect(card.locator("img.upload-preview")).to_be_visible()
    expect(card.locator("img.face-crop")).to_be_visible()
    expect(card.locator("img.prob-chart")).to_be_visible()
    expect(card.locator(".faces-found")).to_have_text("1 face found by BlazeFace.")
    expect(card.locator(".card-header")).to_have_text("astronaut.png")


def test_several_files_one_corrupt_then_another_upload(page: Page, app: ShinyAppProc) -> None:
    page.goto(app.url)
    controller.InputRadioButtons(page, "predict-mode").expect_selected("fer7")
    controller.InputSelect(page, "predict-run").expect_selected(
        re.compile(".*fer7$"), timeout=RESULT_TIMEOUT
    )
    upload = controller.InputFile(page, "predict-upload")
    upload.set(
        [
            payload("astronaut.png", ASTRONAUT_PNG),
            payload("<b>broken</b>.png", b"\x89PNG\r\n\x1a\n not really"),
            payload("coffee.jpg", COFFEE_JPG, "image/jpeg"),
        ]
    )
    expect(page.locator("#predict-result_2 .top-class")).to_have_text(
        ANSWER_LINE, timeout=RESULT_TIMEOUT
    )
    broken = page.locator("#predict-result_1")
    expect(broken.locator(".card-header")).to_have_text("<b>broken</b>.png")  # shown as text
    expect(broken.locator(".upload-error")).to_contain_text("corrupt")
    expect(page.locator("#predict-result_0 .top-class")).to_be_visible()

    table = controller.OutputDataFrame(page, "predict-table")
    table.expect_nrow(3)
    table.expect_cell("astronaut.png", row=0, col=0)
    labels = table.loc_column_label.all_inner_texts()
    assert labels[:5] == ["file", "face", "answer", "top probability (%)", "message"]
    table.expect_cell("1", row=0, col=1)  # the astronaut's face, numbered as on the photo
    found = labels.index("face found")
    table.expect_cell("yes", row=0, col=found)
    table.expect_cell("no", row=2, col=found)
    table.expect_cell(re.compile("not a face reading"), row=2, col=4)

    with page.expect_download() as download_info:
        page.locator("#predict-download_csv").click()
    csv_text = Path(download_info.value.path()).read_text(encoding="utf-8")
    header = csv_text.splitlines()[0].split(",")
    assert header[:5] == ["file", "face", "answer", "top probability", "message"]
    assert len(csv_text.strip().splitlines()) == 4
    # Which run answered: in every row and in the file's name.
    run = csv_text.splitlines()[1].split(",")[header.index("run")]
    assert run and download_info.value.suggested_filename == f"ferdash-{run}-predictions.csv"

    # The session survives: the next upload replaces the results.
    upload.set(payload("face48.png", FACE48_PNG))
    expect(page.locator("#predict-result_0 .card-header")).to_have_text("face48.png", timeout=RESULT_TIMEOUT)
    expect(page.locator("#predict-result_0 .top-class")).to_be_visible()
    expect(page.locator(".predict-result")).to_have_count(1)
    expect(page.locator("#predict-table_panel")).to_have_count(0)


def _forge_upload(page: Page, entries: list[dict]) -> None:
    # What a hostile user can do from the browser's console: set the file input's value.
    page.evaluate("(entries) => Shiny.setInputValue('predict-upload', entries)", entries)


def test_no_user_can_open_another_users_upload(page: Page, browser, app: ShinyAppProc) -> None:
    page.goto(app.url)
    controller.InputSelect(page, "predict-run").expect_selected(re.compile(".*fer7$"), timeout=RESULT_TIMEOUT)
    # A photo nobody else uploads, so its copy on the server can be told from others'.
    private = encode(Image.fromarray(np.random.default_rng(7).integers(0, 255, (64, 64), dtype=np.uint8)), "PNG")
    controller.InputFile(page, "predict-upload").set(payload("mine.png", private))
    expect(page.locator("#predict-result_0 .top-class")).to_be_visible(timeout=RESULT_TIMEOUT)
    stored = [
        p for p in Path(tempfile.gettempdir()).glob("fileupload-*/*/0.png")
        if p.read_bytes() == private
    ]
    assert len(stored) == 1  # Shiny stored it where the attacker would guess

    other = browser.new_context().new_page()
    try:
        other.goto(app.url)
        controller.InputSelect(other, "predict-run").expect_selected(re.compile(".*fer7$"), timeout=RESULT_TIMEOUT)
        _forge_upload(other, [{"name": "theirs.png", "size": len(private), "type": "image/png",
                               "datapath": str(stored[0])}])
        card = other.locator("#predict-result_0")
        expect(card.locator(".upload-error")).to_have_text("The upload did not reach the server.",
                                                            timeout=RESULT_TIMEOUT)
        expect(card.locator("img")).to_have_count(0)  # neither the photo nor its prediction
        expect(card.locator(".top-class")).to_have_count(0)

        # A forged list of 5,000 entries: 100 cards at most and one notice, at once.
        _forge_upload(other, [{"name": f"{i}.png", "size": 1, "datapath": "/etc/passwd"} for i in range(5000)])
        expect(other.locator("#predict-upload_notice")).to_contain_text("the other 4900 were not")
        expect(other.locator(".predict-result")).to_have_count(100, timeout=RESULT_TIMEOUT)
        # The page still answers a real upload.
        controller.InputFile(other, "predict-upload").set(payload("face48.png", FACE48_PNG))
        expect(other.locator("#predict-result_0 .top-class")).to_be_visible(timeout=RESULT_TIMEOUT)
        expect(other.locator("#predict-upload_notice")).to_have_count(0)
    finally:
        other.context.close()
    # The owner's results are untouched.
    expect(page.locator("#predict-result_0 .card-header")).to_have_text("mine.png")


def test_empty_models_folder_says_no_model(page: Page, empty_app: ShinyAppProc) -> None:
    page.goto(empty_app.url)
    expect(page.locator("#predict-no_model")).to_contain_text("No trained model is installed")
    expect(page.locator("#predict-no_model")).to_contain_text("python -m training train")
    controller.InputFile(page, "predict-upload").set(payload("astronaut.png", ASTRONAUT_PNG))
    card = page.locator("#predict-result_0")
    expect(card.locator("img.upload-preview")).to_be_visible(timeout=RESULT_TIMEOUT)
    expect(card.locator(".no-prediction")).to_contain_text("no trained model is installed")
