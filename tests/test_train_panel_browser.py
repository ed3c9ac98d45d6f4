"""The Train panel in a real browser: checks before starting, then a 2-epoch run on
generated data that is cancelled after its first epoch, resumed and finished.

Training is the real ``python -m training train`` command line, started by the app as a
separate process; ``tests/apps/paced_training.py`` only holds the run once between its
first and second epoch, so that the cancel cannot race the (sub-second) epochs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from shiny.playwright import controller
from shiny.pytest import create_app_fixture
from shiny.run import ShinyAppProc

from ferdash.runs.rundir import read_history, read_run_info
from conftest import APP_ENV, APPS
from synthetic_runs import make_run
from trainingdata import make_dataset

pytestmark = pytest.mark.browser

# One folder per test process, removed by the module fixture below.
WORK = Path(tempfile.gettempdir()) / f"ferdash-train-panel-{os.getpid()}"
RUNS = WORK / "runs"
#: A second runs folder, listed after RUNS, holding a run whose name a new one must not take.
OTHER_RUNS = WORK / "other-runs"
DATA = WORK / "data"
CLASSES = ("happy", "sad", "surprise")

_ENV = {
    **APP_ENV,
    "FERDASH_MODELS_DIR": f"{RUNS}{os.pathsep}{OTHER_RUNS}",
    # The Train tab reads data only inside this; /tmp itself is not in it.
    "FERDASH_DATA_ROOTS": str(WORK),
}
app = create_app_fixture(APPS / "train_app.py", timeout_secs=60, env=_ENV)

# A run's process imports TensorFlow before its first epoch: generous on a shared CPU.
RUN_TIMEOUT = 180_000


@pytest.fixture(scope="module", autouse=True)
def work_folders():
    RUNS.mkdir(parents=True, exist_ok=True)
    make_run(OTHER_RUNS, "taken", classes=("happy", "sad"), epochs=2, evaluation=False)
    make_dataset(DATA, train_per_class=12, val_per_class=4, size=24, classes=CLASSES)
    # A class folder with nothing to train on: the panel leaves it out, and so must the
    # command it starts (the CLI refuses an empty class it is not told to skip).
    (DATA / "train" / "fear").mkdir(exist_ok=True)
    (WORK / "empty").mkdir(exist_ok=True)
    yield
    shutil.rmtree(WORK, ignore_errors=True)


def _open_train(page: Page, app: ShinyAppProc) -> None:
    page.goto(app.url)
    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#train-idle")).to_be_visible()


def test_bad_folder_and_name_are_refused_before_anything_starts(page: Page, app: ShinyAppProc) -> None:
    _open_train(page, app)
    data = controller.InputText(page, "train-data")
    start = page.locator("#train-start")

    data.set(str(WORK / "nowhere"))
    expect(page.locator("#train-data_error")).to_contain_text("does not exist")
    start.click()
    expect(page.locator("#train-notice")).to_contain_text("does not exist")

    # Not a browser of the server: /tmp (where every user's uploads are) is refused
    # unlisted, and a name too long for the file system gets words, not an errno.
    data.set(tempfile.gettempdir())
    expect(page.locator("#train-data_error")).to_contain_text(f"must be inside {WORK}")
    expect(page.locator("#train-data_error")).not_to_contain_text("fileupload")
    data.set(str(WORK / ("x" * 300)))
    expect(page.locator("#train-data_error")).to_contain_text("cannot be read: File name too long")

    data.set(str(WORK / "empty"))
    expect(page.locator("#train-data_error")).to_contain_text("no class sub-folders")
    start.click()
    expect(page.locator("#train-notice")).to_contain_text("no class sub-folders")

    data.set(str(DATA))
    expect(page.locator("#train-data_ok")).to_contain_text("3 classes in train/ and val/")
    expect(page.locator("#train-data_ok")).to_contain_text("Left out, no PNG or JPEG images: fear")
    controller.InputCheckboxGroup(page, "train-classes").expect_selected(list(CLASSES))
    controller.InputText(page, "train-name").set("../escape")
    start.click()
    expect(page.locator("#train-notice")).to_contain_text("not a usable run name")
    controller.InputText(page, "train-name").set("taken")
    start.click()
    expect(page.locator("#train-notice")).to_contain_text(f"A run named “taken” already exists in {OTHER_RUNS}")

    expect(page.locator("#train-idle")).to_be_visible()  # nothing was started
    expect(page.locator("#train-curves")).to_have_count(0)  # no blank plot area
    assert not any(RUNS.iterdir())


def test_two_epoch_run_cancel_resume_finish(page: Page, app: ShinyAppProc) -> None:
    _open_train(page, app)
    controller.InputText(page, "train-data").set(str(DATA))
    expect(page.locator("#train-data_ok")).to_be_visible()
    controller.InputSelect(page, "train-arch").set("r_parity")
    controller.InputText(page, "train-name").set("panel_run")
    controller.InputNumeric(page, "train-epochs").set("2")
    controller.InputNumeric(page, "train-batch_size").set("16")
    controller.InputNumeric(page, "train-image_size").set("24")
    # Every error the curves' output ever shows, and the height of every image it draws.
    # An image's height is known only once it has decoded, which on a slow machine comes
    # after the mutation that inserted it: each image is followed through its load events.
    page.evaluate(
        """() => {
            window.curveEvents = [];
            const seen = new WeakSet();
            const record = (img) => window.curveEvents.push(img.naturalHeight);
            new MutationObserver(() => {
                const out = document.getElementById('train-curves');
                if (!out) return;
                if (out.classList.contains('shiny-output-error')) window.curveEvents.push('error: ' + out.textContent);
                for (const img of out.querySelectorAll('img')) {
                    if (seen.has(img)) continue;
                    seen.add(img);
                    img.addEventListener('load', () => record(img));
                    if (img.complete && img.naturalHeight) record(img);
                }
            }).observe(document.body, {subtree: true, childList: true, attributes: true});
        }"""
    )
    page.locator("#train-start").click()
    expect(page.locator("#train-notice")).to_contain_text("Started “panel_run”")
    state = page.locator("#train-job_state")
    expect(state).to_have_attribute("data-state", "running")

    # The first epoch ends: one history row, half the bar, the curves are drawn.
    epochs = page.locator("#train-epochs_done")
    expect(epochs).to_have_text("1 of 2 epochs", timeout=RUN_TIMEOUT)
    expect(page.locator("#train-progress_bar")).to_have_attribute("aria-valuenow", "50")
    expect(page.locator("#train-curves img")).to_be_visible()
    page.wait_for_function("() => window.curveEvents.length > 0")
    # Drawn once at its full height: no "cannot write empty image", no squashed first plot.
    events = page.evaluate("() => window.curveEvents")
    assert events and all(e == events[0] and isinstance(e, int) and e >= 300 for e in events), events

    # One run at a time per server.
    page.locator("#train-start").click()
    expect(page.locator("#train-notice")).to_contain_text("already training")

    page.locator("#train-cancel").click()
    expect(state).to_have_attribute("data-state", "cancelled", timeout=30_000)
    run = RUNS / "panel_run"
    assert read_history(run)["epoch"].tolist() == [0]
    assert not read_run_info(run).meta.get("finished")

    page.locator("#train-resume").click()
    expect(page.locator("#train-notice")).to_contain_text("Resuming “panel_run”")
    expect(state).to_have_attribute("data-state", "finished", timeout=RUN_TIMEOUT)
    expect(epochs).to_have_text("2 of 2 epochs")
    expect(page.locator("#train-progress_bar")).to_have_attribute("aria-valuenow", "100")

    # Exactly the requested epochs, each once, though the run was stopped in between.
    assert read_history(run)["epoch"].tolist() == [0, 1]
    info = read_run_info(run)
    assert info.meta["finished"] and info.meta["epochs_completed"] == 2
    assert info.classes == CLASSES and info.input_size == (24, 24)
    assert "resuming" in (run / "train.log").read_text(encoding="utf-8")

    # Starting it again would silently do nothing: the panel says why instead.
    page.locator("#train-start").click()
    expect(page.locator("#train-notice")).to_contain_text("A finished run “panel_run” already exists")
    expect(state).to_have_attribute("data-state", "finished")

    # The finished run is offered by the other tabs without a restart.
    page.get_by_role("tab", name="Inspect").click()
    expect(page.locator("#inspect-selector-run option", has_text="panel_run")).to_have_count(
        1, timeout=30_000
    )
    page.get_by_role("tab", name="Predict").click()
    expect(page.locator("#predict-run option", has_text="panel_run")).to_have_count(1, timeout=30_000)
