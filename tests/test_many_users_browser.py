"""Ten people uploading at once against one server: no errors, no crossed results, no leak.

Each user (a separate browser context, so a separate Shiny session) uploads 10 small
images in two batches of five, then ten new users do the same; all users' batches are
sent before any result is awaited, so the server has ten sessions' work in flight together. Every image's width
encodes its user, and the card shows the width read from the file, so a card with
another user's picture would be caught even under the right file name.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect
from shiny.playwright import controller
from shiny.pytest import create_app_fixture
from shiny.run import ShinyAppProc
from skimage import data

from conftest import APP_ENV, APPS, server_tracebacks

pytestmark = pytest.mark.browser

app = create_app_fixture(APPS / "predict_app.py", timeout_secs=120, env=APP_ENV)

USERS = 10
WAVES = 2  # ten users, then ten new users
ROUNDS = 2
PER_ROUND = 5  # 2 waves x 2 rounds x 5 = 20 images per user slot
RESULT_TIMEOUT = 120_000
#: Allowed growth of the server's resident memory from the end of the first wave of
#: sessions to the end of the second. Python's and TensorFlow's allocators keep what the
#: first wave freed (about 100 MB here) and hand it to the second, so memory that keeps
#: growing from wave to wave is what sessions left behind. A coarse net for leaks of
#: large things (decoded photos); that every closed session is freed at all is checked
#: exactly, by counting sessions, in test_session_release_browser.py.
WAVE_SLACK_MB = 40
#: A ceiling on the first wave's growth itself, far above what allocators keep, that a
#: gross leak (every session's decoded photos kept) would pass.
FIRST_WAVE_CEILING_MB = 400


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


_FACE = Image.fromarray(data.astronaut()).convert("L")


def image_for(user: int, index: int) -> bytes:
    """A small photo whose width (120 + user) says whose it is; each one different."""
    width, height = 120 + user, 130
    canvas = Image.new("L", (width, height), 40 + 10 * index)
    canvas.paste(_FACE.resize((110, 110)), (5, 10 + index % 10))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def open_user(browser: Browser, url: str) -> Page:
    page = browser.new_context().new_page()
    page.goto(url)
    controller.InputSelect(page, "predict-run").expect_selected(
        re.compile(".*fer7$"), timeout=RESULT_TIMEOUT
    )
    return page


def names(user: int, round_: int) -> list[str]:
    return [f"user{user}-round{round_}-{i}.png" for i in range(PER_ROUND)]


def run_wave(browser: Browser, url: str) -> None:
    """Ten users, each uploading twice five images with everyone's batch in flight together."""
    pages = [open_user(browser, url) for _ in range(USERS)]
    for round_ in range(ROUNDS):
        for user, page in enumerate(pages):  # send everyone's batch before awaiting any
            controller.InputFile(page, "predict-upload").set(
                [
                    {"name": name, "mimeType": "image/png", "buffer": image_for(user, round_ * PER_ROUND + i)}
                    for i, name in enumerate(names(user, round_))
                ]
            )
        for user, page in enumerate(pages):
            cards = page.locator(".predict-result")
            expect(page.locator(f"#predict-result_{PER_ROUND - 1} .card-header")).to_have_text(
                names(user, round_)[-1], timeout=RESULT_TIMEOUT
            )
            expect(cards).to_have_count(PER_ROUND)
            expect(cards.locator(".card-header")).to_have_text(names(user, round_))
            # The width in each caption was read from the uploaded file: this user's.
            expect(page.locator(".predict-result figcaption").filter(has_text=" x 130 PNG")).to_have_count(PER_ROUND)
            for i in range(PER_ROUND):
                expect(page.locator(f"#predict-result_{i} figcaption").first).to_contain_text(f"{120 + user} x 130 PNG")
            expect(page.locator(".top-class")).to_have_count(PER_ROUND)
            expect(page.locator(".upload-error, .model-error, .shiny-output-error")).to_have_count(0)
    for page in pages:
        page.context.close()


def settled_rss(pid: int, target: float) -> float:
    """The server's memory once closed sessions are freed (they end when their websockets close)."""
    deadline = time.monotonic() + 20
    time.sleep(1.0)
    rss = rss_mb(pid)
    while rss > target and time.monotonic() < deadline:
        time.sleep(0.5)
        rss = rss_mb(pid)
    return rss


def test_ten_users_twenty_images_each(browser: Browser, app: ShinyAppProc) -> None:
    pid = app.proc.pid
    # Warm-up: TensorFlow imported and the model traced, so the baseline includes them.
    warm = open_user(browser, app.url)
    controller.InputFile(warm, "predict-upload").set(
        {"name": "warm.png", "mimeType": "image/png", "buffer": image_for(99, 0)}
    )
    expect(warm.locator("#predict-result_0 .top-class")).to_be_visible(timeout=RESULT_TIMEOUT)
    warm.context.close()
    baseline = settled_rss(pid, 0)

    settled = []
    for _ in range(WAVES):
        run_wave(browser, app.url)
        target = settled[0] + WAVE_SLACK_MB if settled else baseline
        settled.append(settled_rss(pid, target))
    print(f"server RSS: baseline {baseline:.0f} MB, after each wave " + ", ".join(f"{m:.0f}" for m in settled))
    assert settled[0] <= baseline + FIRST_WAVE_CEILING_MB, (baseline, settled)
    assert settled[-1] <= settled[0] + WAVE_SLACK_MB, (baseline, settled)
    assert server_tracebacks("".join(app.stderr._lines)) == []

    # And the server still serves a new user.
    late = open_user(browser, app.url)
    controller.InputFile(late, "predict-upload").set(
        {"name": "late.png", "mimeType": "image/png", "buffer": image_for(0, 0)}
    )
    expect(late.locator("#predict-result_0 .top-class")).to_be_visible(timeout=RESULT_TIMEOUT)
    late.context.close()
