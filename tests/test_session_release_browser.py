"""A closed session is freed: nothing the app or the libraries it uses keeps refers to it.

The server runs in this process (uvicorn in a thread) so the test can count Shiny's
session objects; a session that is never freed keeps its uploads' results for the life
of the server. Each user uploads photos, opens Inspect's runs table and clicks a row,
so the grid's selection is read and set both ways.
"""

from __future__ import annotations

import gc
import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from playwright.sync_api import Browser, expect
from shiny import App
from shiny.playwright import controller
from shiny.session._session import AppSession

from conftest import APPS
from test_many_users_browser import image_for

pytestmark = pytest.mark.browser

USERS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    sys.path.insert(0, str(APPS))
    try:
        from predict_app import app
    finally:
        sys.path.remove(str(APPS))
    assert isinstance(app, App)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def live_sessions() -> int:
    gc.collect()
    return sum(isinstance(obj, AppSession) for obj in gc.get_objects())


def test_closed_sessions_are_freed(browser: Browser, server_url: str) -> None:
    before = live_sessions()
    pages = []
    for user in range(USERS):
        page = browser.new_context().new_page()
        page.goto(server_url)
        controller.InputFile(page, "predict-upload").set(
            [{"name": f"u{user}-{i}.png", "mimeType": "image/png", "buffer": image_for(user, i)} for i in range(2)]
        )
        pages.append(page)
    for page in pages:
        expect(page.locator("#predict-result_1 .top-class")).to_be_visible(timeout=120_000)
        controller.PageNavbar(page, "nav").set("inspect")
        controller.NavsetCardUnderline(page, "inspect-tabs").set("runs")
        table = controller.OutputDataFrame(page, "inspect-runs-table")
        expect(table.loc_body.locator("> tr[aria-selected=true]")).to_have_count(1)
        table.cell_locator(row=1, col=0).click()
        expect(table.loc_body.locator("> tr").nth(1)).to_have_attribute("aria-selected", "true")
    assert live_sessions() == before + USERS

    for page in pages:
        page.context.close()
    deadline = time.monotonic() + 20
    while live_sessions() > before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert live_sessions() == before
