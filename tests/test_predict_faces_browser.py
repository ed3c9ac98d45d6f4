"""Predict on real photos and labelled sets, in a real browser (tiny untrained runs).

Every face of a group photo, the honest "no face" of a cat and a coffee cup, a labelled
zip scored (and hostile ones refused), and the layout at 800 px and on a phone.
"""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect
from shiny.playwright import controller
from shiny.pytest import create_app_fixture
from shiny.run import ShinyAppProc
from skimage import data

from conftest import APP_ENV, APPS

pytestmark = pytest.mark.browser

app = create_app_fixture(APPS / "predict_app.py", timeout_secs=120, env=APP_ENV)
RESULT_TIMEOUT = 60_000


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def group_photo() -> bytes:
    """Scikit-image's astronaut twice, large and small, on one grey canvas: faces of
    about 113 and 57 pixels, found by BlazeFace and the Haar cascade respectively."""
    astronaut = Image.fromarray(data.astronaut())
    canvas = Image.new("RGB", (1200, 700), (120, 120, 120))
    canvas.paste(astronaut.resize((520, 520)), (0, 180))
    canvas.paste(astronaut.resize((300, 300)), (530, 400))
    return encode(canvas, "JPEG")


def face_crop(seed: int) -> bytes:
    face = Image.fromarray(data.astronaut()).convert("L").crop((150, 40, 290, 180)).resize((48, 48))
    noise = np.random.default_rng(seed).integers(-12, 12, (48, 48))
    return encode(Image.fromarray(np.clip(np.asarray(face, int) + noise, 0, 255).astype(np.uint8)))


def labelled_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for i in range(4):
            archive.writestr(f"faces/Happiness/h{i}.png", face_crop(i))
            archive.writestr(f"faces/sad/s{i}.png", face_crop(10 + i))
        archive.writestr("faces/contempt/c0.png", face_crop(20))
        archive.writestr("faces/readme.txt", "not an image")
        archive.writestr("../../evil/happy/e.png", face_crop(30))
    return buf.getvalue()


def zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("happy/bomb.png", b"\0" * (200 * 1024 * 1024))
    return buf.getvalue()


def open_predict(page: Page, app: ShinyAppProc) -> None:
    page.goto(app.url)
    controller.InputSelect(page, "predict-run").expect_selected(re.compile(".*fer7$"), timeout=RESULT_TIMEOUT)


def test_every_face_of_a_group_photo(page: Page, app: ShinyAppProc) -> None:
    open_predict(page, app)
    controller.InputFile(page, "predict-upload").set(
        {"name": "group.jpg", "mimeType": "image/jpeg", "buffer": group_photo()}
    )
    card = page.locator("#predict-result_0")
    sections = card.locator(".face-section")
    expect(sections).to_have_count(2, timeout=RESULT_TIMEOUT)
    expect(card.locator(".faces-found")).to_have_text("2 faces found, each classified.")
    # Numbered as on the photo, largest first, each with its detector, crop, chart, answer.
    expect(sections.nth(0).locator(".face-title")).to_contain_text("Face 1 · BlazeFace")
    expect(sections.nth(1).locator(".face-title")).to_contain_text("Face 2 · the Haar cascade")
    expect(sections.locator("img.face-crop")).to_have_count(2)
    expect(sections.locator("img.prob-chart")).to_have_count(2)
    expect(sections.locator(".top-class")).to_have_count(2)
    # The photo's label names the face's answer: "1 happy 14%" or "1 happy? 14%".
    expect(sections.nth(0).locator(".face-title")).to_contain_text(re.compile(r"“1 \w+\??\s\d+%”"))
    # One table row per face, with its box.
    table = controller.OutputDataFrame(page, "predict-table")
    table.expect_nrow(2)
    table.expect_cell("1", row=0, col=1)
    table.expect_cell("2", row=1, col=1)

    # Grad-CAM per face.
    controller.InputSwitch(page, "predict-saliency").set(True)
    expect(card.locator(".face-section .saliency-map, .face-section .saliency-note")).to_have_count(
        2, timeout=RESULT_TIMEOUT
    )


def test_a_cat_and_a_coffee_cup_are_no_face_readings(page: Page, app: ShinyAppProc) -> None:
    open_predict(page, app)
    controller.InputFile(page, "predict-upload").set(
        [
            {"name": "cat.png", "mimeType": "image/png", "buffer": encode(Image.fromarray(data.chelsea()))},
            {"name": "cup.jpg", "mimeType": "image/jpeg", "buffer": encode(Image.fromarray(data.coffee()), "JPEG")},
        ]
    )
    for i in range(2):
        card = page.locator(f"#predict-result_{i}")
        expect(card.locator(".not-a-face")).to_contain_text("Not a face reading", timeout=RESULT_TIMEOUT)
        expect(card).to_have_class(re.compile("not-face-reading"))
        expect(card.locator(".faces-found")).to_have_text("No face found: the whole image was classified.")
    table = controller.OutputDataFrame(page, "predict-table")
    table.expect_nrow(2)
    table.expect_cell(re.compile("not a face reading"), row=0, col=4)
    table.expect_cell(re.compile("not a face reading"), row=1, col=4)
    # The compact view says the same in a line per file.
    controller.InputRadioButtons(page, "predict-view").set("grid")
    expect(page.locator(".predict-thumb .not-a-face")).to_have_count(2)


def test_a_labelled_zip_is_scored(page: Page, app: ShinyAppProc) -> None:
    open_predict(page, app)
    controller.InputFile(page, "predict-labelled-set").set(
        {"name": "my-faces.zip", "mimeType": "application/zip", "buffer": labelled_zip()}
    )
    report = page.locator("#predict-labelled-set_report")
    expect(report).to_be_visible(timeout=RESULT_TIMEOUT)
    expect(page.locator("#predict-labelled-accuracy")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
    expect(page.locator("#predict-labelled-summary")).to_contain_text("Macro-F1")
    expect(report).to_contain_text("accuracy on 8 labelled images")
    notes = page.locator("#predict-labelled-notes")
    expect(notes).to_contain_text("contempt")
    expect(notes).to_contain_text(re.compile("not an image|non-image|not images", re.I))
    # One row per class of the run in the per-class table.
    expect(page.locator("#predict-labelled-per_class tbody tr")).to_have_count(7)
    matrix = page.locator("#predict-labelled-matrix img")
    expect(matrix).to_be_visible()
    # A click on a diagonal cell shows that class's mistakes (or none).
    matrix.click(position={"x": 200, "y": 200})
    expect(page.locator("#predict-labelled-cell")).to_contain_text(re.compile(r"\d+ faces: true \w+"))
    with page.expect_download() as download:
        page.locator("#predict-labelled-download_csv").click()
    lines = download.value.path().read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("file,true class,predicted class") and len(lines) == 9
    # The traversal member was skipped, said so, and never used as a path.
    expect(notes).to_contain_text("'..' in the path: 1 file")
    assert not any("evil" in line for line in lines[1:])


def test_a_zip_bomb_is_refused_with_a_message(page: Page, app: ShinyAppProc) -> None:
    open_predict(page, app)
    controller.InputFile(page, "predict-labelled-set").set(
        {"name": "bomb.zip", "mimeType": "application/zip", "buffer": zip_bomb()}
    )
    expect(page.locator("#predict-labelled-set_error")).to_contain_text(
        "The archive looks like a zip bomb", timeout=RESULT_TIMEOUT
    )
    # The session lives on: a photo still gets its answer.
    controller.InputFile(page, "predict-upload").set(
        {"name": "face.png", "mimeType": "image/png", "buffer": face_crop(1)}
    )
    expect(page.locator("#predict-result_0 .top-class")).to_be_visible(timeout=RESULT_TIMEOUT)


def _boxes_overlap(page: Page, a: str, b: str) -> bool:
    return page.evaluate(
        """([a, b]) => {
            const r1 = document.querySelector(a).getBoundingClientRect();
            const r2 = document.querySelector(b).getBoundingClientRect();
            return !(r1.right <= r2.left || r2.right <= r1.left || r1.bottom <= r2.top || r2.bottom <= r1.top);
        }""",
        [a, b],
    )


@pytest.mark.parametrize("width", [800, 390])
def test_layout_at_800_px_and_on_a_phone(page: Page, app: ShinyAppProc, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    open_predict(page, app)
    upload = page.locator("#predict-upload")
    controller.InputFile(page, "predict-upload").set(
        {"name": "astronaut.png", "mimeType": "image/png", "buffer": encode(Image.fromarray(data.astronaut()))}
    )
    card = "#predict-result_0"
    expect(page.locator(f"{card} img.prob-chart")).to_be_visible(timeout=RESULT_TIMEOUT)
    page.wait_for_function(
        "(sel) => [...document.querySelectorAll(sel + ' img')].every(i => i.complete)", arg=card
    )
    assert not _boxes_overlap(page, f"{card} img.face-crop", f"{card} img.prob-chart")
    assert not _boxes_overlap(page, f"{card} img.upload-preview", f"{card} img.face-crop")
    # Nothing wider than the screen.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width + 1
    if width < 576:
        # On a phone the upload control comes before the results.
        upload_top = upload.bounding_box()["y"]
        assert upload_top < page.locator(card).bounding_box()["y"]


def test_sample_images_in_one_click(page: Page, app: ShinyAppProc) -> None:
    open_predict(page, app)
    page.locator("#predict-samples").click()
    cards = page.locator(".predict-result")
    expect(cards).to_have_count(4, timeout=RESULT_TIMEOUT)
    expect(cards.locator(".card-header")).to_have_text(
        ["astronaut.jpg", "astronaut-twice.jpg", "coffee-cup.jpg", "chelsea-the-cat.jpg"]
    )
    expect(page.locator("#predict-result_0 .faces-found")).to_have_text("1 face found by BlazeFace.")
    expect(page.locator("#predict-result_1 .face-section")).to_have_count(2)
    expect(page.locator("#predict-result_2 .not-a-face")).to_be_visible()
    expect(page.locator("#predict-result_3 .not-a-face")).to_be_visible()


def test_a_hundred_files_in_the_thumbnail_grid(page: Page, app: ShinyAppProc) -> None:
    open_predict(page, app)
    controller.InputRadioButtons(page, "predict-view").set("grid")
    controller.InputFile(page, "predict-upload").set(
        [{"name": f"face{i:03}.png", "mimeType": "image/png", "buffer": face_crop(i)} for i in range(100)]
    )
    thumbs = page.locator(".predict-thumb")
    expect(thumbs).to_have_count(100, timeout=RESULT_TIMEOUT)
    expect(page.locator(".predict-result")).to_have_count(0)  # no card drawn in this view
    expect(thumbs.nth(99).locator(".thumb-name")).to_have_text("face099.png")
    expect(thumbs.nth(0).locator(".thumb-answer")).to_have_text(re.compile(r"^(uncertain: )?\w+( or \w+)? \(\d+%\)$"))
    controller.OutputDataFrame(page, "predict-table").expect_nrow(100)
    # Back to cards: the same results, no new analysis.
    controller.InputRadioButtons(page, "predict-view").set("cards")
    expect(page.locator(".predict-result")).to_have_count(100)
