"""Shared by the browser benchmarks: start ``shiny run`` on the real app, drive Chromium.

Not a benchmark itself (leading underscore). Uses the system Chromium the tests use
(``tests/conftest.py``), since Playwright cannot download its own on a closed network.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image
from playwright.sync_api import Browser, Page
from skimage import data

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

from conftest import system_chromium  # noqa: E402

# Resolves when the first card shows ``name`` with an answer (or an error), and returns
# the page's clock at that moment: measured inside the page, not by polling from Python.
WAIT_FOR_CARD_JS = """(name) => new Promise((resolve) => {
  const done = () => {
    const header = document.querySelector('#predict-result_0 .card-header');
    if (header && header.textContent.trim() === name &&
        document.querySelector('#predict-result_0 .expression-sentence, #predict-result_0 .top-class, #predict-result_0 .upload-error, #predict-result_0 .no-prediction')) {
      return true;
    }
    return false;
  };
  if (done()) { resolve(performance.now()); return; }
  const obs = new MutationObserver(() => { if (done()) { obs.disconnect(); resolve(performance.now()); } });
  obs.observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
})"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(app_file: Path = REPO_ROOT / "app.py") -> tuple[subprocess.Popen, str]:
    """``python -m shiny run app.py`` on a free port; returns at once (not waiting)."""
    port = free_port()
    # The app's own checkout comes first on the path: another checkout (an older commit)
    # can be compared with this one.
    root = Path(app_file).resolve().parent
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shiny", "run", "--port", str(port), str(app_file)],
        cwd=str(root),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}/"


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def parse_apps(doc: str, count: str, default: int) -> tuple[argparse.Namespace, dict[str, Path]]:
    """The browser benchmarks' command line: ``--<count> N``, ``--app``, ``--compare-with``.

    Returns the arguments and the apps to run by label, "this checkout" first and, with
    ``--compare-with``, the other checkout's ``app.py`` labelled by its path.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(f"--{count}", type=int, default=default)
    parser.add_argument("--app", type=Path, default=REPO_ROOT / "app.py")
    parser.add_argument("--compare-with", type=Path, default=None, help="another checkout's app.py")
    args = parser.parse_args()
    apps = {"this checkout": args.app}
    if args.compare_with:
        apps[str(args.compare_with)] = args.compare_with
    return args, apps


def load_average() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def launch_chromium(playwright):
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    return playwright.chromium.launch(executable_path=system_chromium(), args=args)


def open_app_page(browser: Browser, url: str, timeout_ms: int = 60_000) -> Page:
    """A new tab on the app, returned once the run selector lists the runs."""
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("#predict-run option", state="attached", timeout=timeout_ms)
    return page


def photo_640x480_jpeg(seed: int = 0) -> bytes:
    """The astronaut centred on a 640x480 frame; ``seed`` varies the frame's grey."""
    canvas = Image.new("RGB", (640, 480), (100 + seed % 50,) * 3)
    canvas.paste(Image.fromarray(data.astronaut()).resize((480, 480)), (80, 0))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def upload_and_wait(page, name: str, content: bytes) -> float:
    """Milliseconds from handing the file to the page to its answer being on screen."""
    waiter = page.evaluate_handle(
        "(name) => { window.__t0 = performance.now(); window.__card = (" + WAIT_FOR_CARD_JS + ")(name); }",
        name,
    )
    waiter.dispose()
    page.set_input_files("#predict-upload", files=[{"name": name, "mimeType": "image/jpeg", "buffer": content}])
    return float(page.evaluate("async () => (await window.__card) - window.__t0"))
