"""Shared test set-up: the browser for pytest-playwright, and quiet TensorFlow."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The small apps browser tests start (``create_app_fixture``), and the environment they
#: run with: this checkout importable without installing it, TensorFlow quiet.
APPS = REPO_ROOT / "tests" / "apps"
#: A seven-expression card's answer line; the tiny untrained test runs give near-uniform
#: probabilities, so theirs is usually the "uncertain" form.
ANSWER_LINE = re.compile(
    r"^(Top expression: \w+ \(\d{1,3}%\)|Uncertain: \w+ \(\d{1,3}%\) or \w+ \(\d{1,3}%\))$"
)

APP_ENV = {"PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}

# `playwright install` cannot download a browser on machines without internet, so prefer
# the distribution's Chromium and fall back to Playwright's own build where that exists.
_SYSTEM_CHROMIUMS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def system_chromium() -> str | None:
    override = os.environ.get("FERDASH_CHROMIUM")
    if override:
        return override
    for candidate in _SYSTEM_CHROMIUMS:
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    args = dict(browser_type_launch_args)
    executable = system_chromium()
    if executable:
        args["executable_path"] = executable
    # Chromium's background services try to reach Google; on a closed network they only
    # add noise and start-up time.
    args["args"] = [
        *args.get("args", []),
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    return args


def server_tracebacks(output: str) -> list[str]:
    """The tracebacks an app's server printed, but for one Shiny prints itself and that
    says nothing about the app: a timer task (``invalidate_later``, behind
    ``reactive.poll``) cancelled while waiting for the reactive lock because its session
    ended."""
    blocks: list[str] = []
    lines = output.splitlines()
    for start, line in enumerate(lines):
        if not line.startswith("Traceback (most recent call last):"):
            continue
        end = start + 1
        while end < len(lines) and (lines[end].startswith(" ") or not lines[end].strip()):
            end += 1
        blocks.append("\n".join(lines[start : end + 1]))
    return [
        block
        for block in blocks
        if not (
            block.endswith("asyncio.exceptions.CancelledError")
            and "shiny/reactive/_core.py" in block
            and "in _task" in block
        )
    ]

