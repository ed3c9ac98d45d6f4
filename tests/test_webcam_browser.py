"""Issue 6 in the Predict panel, in a real browser: the webcam snapshot (Chromium's fake
camera, and a camera denied or absent) and the Grad-CAM switch.

The fake camera (``--use-fake-device-for-media-stream``, with
``--use-fake-ui-for-media-stream`` answering the permission prompt) shows a test
pattern with no face, so the snapshot takes the upload path's whole-image branch. The
browser for this module is launched here, so the other browser tests keep their flags.
"""

from __future__ import annotations

import io
import re
from typing import Iterator

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, Playwright, expect
from shiny.playwright import controller
from shiny.pytest import create_app_fixture
from shiny.run import ShinyAppProc

from conftest import ANSWER_LINE, APP_ENV, APPS, system_chromium

pytestmark = pytest.mark.browser


app = create_app_fixture(APPS / "predict_app.py", timeout_secs=120, env=APP_ENV)

# The first snapshot loads TensorFlow and traces the model in the app process.
RESULT_TIMEOUT = 60_000

_DENIED = """
navigator.mediaDevices.getUserMedia = () =>
  Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
"""
_ABSENT = "Object.defineProperty(navigator, 'mediaDevices', {value: undefined});"


@pytest.fixture(scope="module")
def camera_browser(playwright: Playwright) -> Iterator[Browser]:
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    executable = system_chromium()
    browser = playwright.chromium.launch(
        headless=True, args=args, **({"executable_path": executable} if executable else {})
    )
    yield browser
    browser.close()


@pytest.fixture
def camera_page(camera_browser: Browser) -> Iterator[Page]:
    context = camera_browser.new_context()
    page = context.new_page()
    yield page
    context.close()


def test_a_fake_camera_frame_is_classified_like_an_upload(camera_page: Page, app: ShinyAppProc) -> None:
    page = camera_page
    page.goto(app.url)
    page.locator("#predict-webcam_button").click()
    card = page.locator("#predict-result_0")
    expect(card.locator(".card-header")).to_have_text(
        re.compile(r"^webcam snapshot \d\d:\d\d:\d\d\.jpg$"), timeout=RESULT_TIMEOUT
    )
    expect(card.locator(".top-class")).to_have_text(
        ANSWER_LINE, timeout=RESULT_TIMEOUT
    )
    # The fake camera's test pattern has no face: the whole frame is the model's input.
    expect(card.locator(".faces-found")).to_have_text("No face found: the whole image was classified.")
    expect(card.locator(".crop-caption")).to_contain_text("(whole image)")
    expect(card.locator("img.upload-preview")).to_be_visible()
    expect(page.locator("#predict-camera_error")).to_have_count(0)
    # The file field says what the cards show.
    file_text = page.locator("#predict-upload").locator("xpath=ancestor::div[contains(@class,'input-group')]//input[@type='text']")
    expect(file_text).to_have_value("webcam snapshot")


@pytest.mark.parametrize(
    ("script", "message"),
    [(_DENIED, "Camera access was denied"), (_ABSENT, "offers no camera access")],
    ids=["denied", "absent"],
)
def test_a_denied_or_absent_camera_says_so(
    camera_page: Page, app: ShinyAppProc, script: str, message: str
) -> None:
    page = camera_page
    page.add_init_script(script)
    page.goto(app.url)
    page.locator("#predict-webcam_button").click()
    expect(page.locator("#predict-camera_error")).to_contain_text(message, timeout=30_000)
    expect(page.locator(".predict-result")).to_have_count(0)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_the_gradcam_switch_adds_a_heatmap_to_each_classified_face(
    camera_page: Page, app: ShinyAppProc
) -> None:
    page = camera_page
    page.goto(app.url)
    page.locator("#predict-webcam_button").click()
    card = page.locator("#predict-result_0")
    expect(card.locator(".top-class")).to_be_visible(timeout=RESULT_TIMEOUT)
    expect(card.locator("img.saliency-map")).to_have_count(0)  # off: not computed

    switch = controller.InputSwitch(page, "predict-saliency")
    switch.set(True)
    expect(card.locator("img.saliency-map")).to_be_visible(timeout=RESULT_TIMEOUT)
    assert card.locator("img.saliency-map").get_attribute("src").startswith("data:image/png;base64,")

    # An upload takes the same path: its card gets a map too while the switch is on.
    face = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    controller.InputFile(page, "predict-upload").set(
        {"name": "face48.png", "mimeType": "image/png", "buffer": _png(face)}
    )
    expect(card.locator(".card-header")).to_have_text("face48.png", timeout=RESULT_TIMEOUT)
    expect(card.locator("img.saliency-map")).to_be_visible(timeout=RESULT_TIMEOUT)

    switch.set(False)
    expect(card.locator("img.saliency-map")).to_have_count(0)
    expect(card.locator(".top-class")).to_be_visible()
