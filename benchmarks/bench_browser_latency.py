"""Upload to result visible, in a real browser, warm: median and p95 over 50 uploads.

    python benchmarks/bench_browser_latency.py [--uploads 50] [--app app.py]
        [--compare-with /path/to/other/checkout/app.py]

Starts ``shiny run app.py`` (the shipped models), opens it in Chromium, waits for the
model to be ready (three warm-up uploads), then uploads a 640x480 JPEG photo again and
again (each with another name and background, so nothing is served from a cache) and
times, inside the page, from handing over the file to the answer being on screen:
upload over HTTP, decode, detection, model, rendering the card, and the browser drawing it.

``--compare-with`` starts a second server from another checkout (e.g. an older commit
in a ``git worktree``) and alternates uploads between the two, so both see the same load.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _browser_app import launch_chromium, load_average, open_app_page, parse_apps  # noqa: E402
from _browser_app import photo_640x480_jpeg, start_app, stop_app, upload_and_wait, wait_http  # noqa: E402


def main() -> None:
    args, apps = parse_apps(__doc__, "uploads", 50)
    from playwright.sync_api import sync_playwright

    servers = {label: start_app(path) for label, path in apps.items()}
    times: dict[str, list[float]] = {label: [] for label in apps}
    try:
        for _proc, url in servers.values():
            wait_http(url)
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            pages = {}
            for label, (_proc, url) in servers.items():
                page = open_app_page(browser, url)
                for i in range(3):  # TensorFlow import, model load and trace, caches
                    upload_and_wait(page, f"warm{i}.jpg", photo_640x480_jpeg(100 + i))
                pages[label] = page
            for i in range(args.uploads):
                for label, page in pages.items():
                    times[label].append(upload_and_wait(page, f"photo{i}.jpg", photo_640x480_jpeg(i)))
            browser.close()
    finally:
        for proc, _url in servers.values():
            stop_app(proc)
    print(f"machine: {os.cpu_count()} CPU cores, load average {load_average()}")
    medians = {}
    for label, values in times.items():
        values.sort()
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        medians[label] = statistics.median(values)
        print(
            f"{label}: upload -> result visible, one 640x480 JPEG, warm, {len(values)} uploads: "
            f"median {medians[label]:.0f} ms, p95 {p95:.0f} ms, min {values[0]:.0f} ms, max {values[-1]:.0f} ms"
        )
    if len(medians) == 2:
        ours, other = medians.values()
        print(f"median ratio (other / this checkout): {other / ours:.1f}x")


if __name__ == "__main__":
    main()
