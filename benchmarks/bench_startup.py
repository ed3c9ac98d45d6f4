"""Start-up: ``shiny run app.py`` to the first prediction a person could get.

    python benchmarks/bench_startup.py [--repeat 3] [--app app.py]
        [--compare-with /path/to/other/checkout/app.py]

For each start: a fresh ``python -m shiny run`` process; times (from the process start)
until the server answers HTTP, until the page in Chromium lists the runs, and until the
answer to a photo uploaded the moment the page is ready is on screen — that last one
includes importing TensorFlow and loading/tracing the model. Starts of the two checkouts
alternate when comparing, so both see the same machine load. Medians are printed.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _browser_app import launch_chromium, load_average, open_app_page, parse_apps  # noqa: E402
from _browser_app import photo_640x480_jpeg, start_app, stop_app, upload_and_wait, wait_http  # noqa: E402


def one_start(browser, app_file: Path) -> dict[str, float]:
    start = time.perf_counter()
    proc, url = start_app(app_file)
    try:
        wait_http(url, timeout=120)
        http = time.perf_counter() - start
        page = open_app_page(browser, url, timeout_ms=120_000)
        ready = time.perf_counter() - start
        upload_and_wait(page, "first.jpg", photo_640x480_jpeg())
        first = time.perf_counter() - start
        page.close()
    finally:
        stop_app(proc)
    return {"server answers": http, "page lists runs": ready, "first prediction visible": first}


def main() -> None:
    args, apps = parse_apps(__doc__, "repeat", 3)
    from playwright.sync_api import sync_playwright

    results: dict[str, list[dict[str, float]]] = {label: [] for label in apps}
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        for _ in range(args.repeat):
            for label, path in apps.items():
                results[label].append(one_start(browser, path))
        browser.close()
    print(f"machine: {os.cpu_count()} CPU cores, load average {load_average()}; {args.repeat} starts each, medians")
    for label, runs in results.items():
        parts = [f"{key} {statistics.median(r[key] for r in runs):.1f} s" for key in runs[0]]
        print(f"{label}: " + " | ".join(parts))


if __name__ == "__main__":
    main()
