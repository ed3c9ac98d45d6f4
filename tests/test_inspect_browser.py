"""Browser tests of the Inspect page on synthetic runs (tests/apps/inspect_app.py)."""

from __future__ import annotations

import atexit
import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from shiny.playwright import controller
from shiny.pytest import create_app_fixture
from shiny.run import ShinyAppProc

pytestmark = pytest.mark.browser

APPS = Path(__file__).resolve().parent / "apps"

# The app writes its runs here at import, so the tests know their paths and contents.
ROOT = Path(tempfile.mkdtemp(prefix="ferdash-inspect-test-"))
atexit.register(shutil.rmtree, ROOT, ignore_errors=True)
MODELS = ROOT / "models"

app = create_app_fixture(
    APPS / "inspect_app.py", env={"SHINY_TESTMODE": "1", "INSPECT_APP_ROOT": str(ROOT)}
)
empty_app = create_app_fixture(APPS / "inspect_empty_app.py")

expect.set_options(timeout=20_000)  # a shared 2-core machine: be patient, never time things


def _run(name: str) -> str:
    return str(MODELS / name)


def _evaluation(name: str) -> dict:
    return json.loads((MODELS / name / "evaluation.json").read_text())


def _open_inspect(page: Page, app: ShinyAppProc, tab: str | None = None) -> None:
    page.goto(app.url)
    controller.PageNavbar(page, "nav").set("inspect")
    controller.InputSelect(page, "inspect-selector-run").expect_selected(_run("a-fernet"))
    if tab:
        controller.NavsetCardUnderline(page, "inspect-tabs").set(tab)


def test_history_switch_run_overlay_and_broken_runs(page: Page, app: ShinyAppProc) -> None:
    _open_inspect(page, app)
    summary = controller.OutputUi(page, "inspect-history-summary")
    summary.expect.to_contain_text("a-fernet")
    summary.expect.to_contain_text("run.json best_epoch")
    plot = controller.OutputPlot(page, "inspect-history-plot")
    plot.expect_img_src(re.compile(r"^data:image/png;base64,"))

    # a-fernet logged each class's recall: its panel of seven curves.
    recall_area = controller.OutputUi(page, "inspect-history-recall_area")
    recall_plot = controller.OutputPlot(page, "inspect-history-recall_plot")
    recall_plot.expect_img_src(re.compile(r"^data:image/png;base64,"))
    recall_area.expect.not_to_contain_text("No per-class recall")

    run = controller.InputSelect(page, "inspect-selector-run")
    run.set(_run("b-tiny"))
    summary.expect.to_contain_text("b-tiny")
    expect(summary.loc.locator("tbody tr")).to_have_count(1)
    recall_area.expect.to_contain_text("No per-class recall in the history of b-tiny")
    expect(recall_plot.loc).to_have_count(0)

    controller.InputSelectize(page, "inspect-selector-overlay").set([_run("a-fernet")])
    expect(summary.loc.locator("tbody tr")).to_have_count(2)
    # The overlaid run's recall is drawn; the note still names the run without it.
    recall_plot.expect_img_src(re.compile(r"^data:image/png;base64,"))
    recall_area.expect.to_contain_text("b-tiny")

    # run.json broken: the sidebar says so, the history (which is fine) still shows.
    run.set(_run("c-broken"))
    notes = controller.OutputUi(page, "inspect-selector-notes")
    notes.expect.to_contain_text("run.json")
    notes.expect.to_contain_text("not valid JSON")
    summary.expect.to_contain_text("c-broken")

    # history.csv broken: its message, while the overlaid run is still drawn.
    run.set(_run("d-bad-history"))
    message = controller.OutputUi(page, "inspect-history-message")
    message.expect.to_contain_text("d-bad-history")
    message.expect.to_contain_text("non-numeric")
    expect(summary.loc.locator("tbody tr")).to_have_count(1)
    summary.expect.to_contain_text("a-fernet")


def test_confusion_counts_normalised_and_cell_click(page: Page, app: ShinyAppProc) -> None:
    _open_inspect(page, app, "confusion")
    ev = _evaluation("a-fernet")
    overview = controller.OutputUi(page, "inspect-confusion-overview")
    overview.expect.to_contain_text(f"{100 * ev['accuracy']:.1f} %")
    overview.expect.to_contain_text(f"{ev['macro_f1']:.3f}")
    table = controller.OutputUi(page, "inspect-confusion-per_class")
    expect(table.loc.locator("tbody tr")).to_have_count(7)
    sad_cells = table.loc.locator("tbody tr").nth(5).locator("td")
    expect(sad_cells.nth(0)).to_have_text("sad")
    expect(sad_cells.nth(1)).to_have_text(f"{ev['per_class']['sad']['precision']:.3f}")
    expect(sad_cells.nth(4)).to_have_text(str(ev["per_class"]["sad"]["support"]))

    plot = controller.OutputPlot(page, "inspect-confusion-matrix")
    plot.expect_img_src(re.compile(r"^data:image/png"))
    counts_src = plot.loc_img.get_attribute("src")
    controller.InputRadioButtons(page, "inspect-confusion-scale").set("normalised")
    expect(plot.loc_img).not_to_have_attribute("src", counts_src or "")

    # The happy/sad run: a 2x2 matrix and two rows.
    controller.InputSelect(page, "inspect-selector-run").set(_run("b-tiny"))
    expect(table.loc.locator("tbody tr")).to_have_count(2)

    # A run without evaluation.json says so.
    controller.InputSelect(page, "inspect-selector-run").set(_run("c-broken"))
    controller.OutputUi(page, "inspect-confusion-message").expect.to_contain_text(
        "evaluation.json is missing"
    )

    # Clicking a cell of the matrix opens the gallery filtered on that cell.
    controller.InputSelect(page, "inspect-selector-run").set(_run("a-fernet"))
    overview.expect.to_contain_text(f"{100 * ev['accuracy']:.1f} %")
    plot.expect_img_src(re.compile(r"^data:image/png"))
    box = plot.loc_img.bounding_box()
    assert box is not None
    plot.loc_img.click(position={"x": box["width"] * 0.55, "y": box["height"] * 0.45})
    controller.NavsetCardUnderline(page, "inspect-tabs").expect_value("gallery")
    true_class = controller.InputSelect(page, "inspect-gallery-true_class")
    expect(true_class.loc).not_to_have_value("")


def test_runs_table_sorts_shows_problems_and_selects(page: Page, app: ShinyAppProc) -> None:
    _open_inspect(page, app, "runs")
    table = controller.OutputDataFrame(page, "inspect-runs-table")
    table.expect_nrow(4)
    # On first open the run every panel shows (the default one) is the highlighted row.
    expect(table.loc_body.locator("> tr[aria-selected=true] > td:nth-child(1)")).to_have_text(["a-fernet"])
    table.expect_cell("c-broken", row=2, col=0)
    table.expect_cell(re.compile("run.json is not valid JSON"), row=2, col=1)
    table.expect_cell(re.compile("history.csv has non-numeric columns"), row=3, col=1)

    labels = table.loc_column_label.all_inner_texts()
    acc_col = labels.index("eval acc %")
    expected = sorted(
        ((_evaluation(n)["accuracy"], n) for n in ("a-fernet", "b-tiny", "d-bad-history")),
        reverse=True,
    )
    names = table.loc_body.locator("> tr > td:nth-child(1)")
    table.set_sort({"col": acc_col, "desc": True})
    expect(names).to_have_text([n for _, n in expected] + ["c-broken"])
    table.set_sort({"col": acc_col, "desc": False})
    # The run without an evaluation (an empty cell) sorts before the numbers.
    expect(names).to_have_text(["c-broken"] + [n for _, n in reversed(expected)])

    # Clicking a row makes it the run of every panel.
    table.set_sort(None)
    table.cell_locator(row=1, col=0).click()
    controller.InputSelect(page, "inspect-selector-run").expect_selected(_run("b-tiny"))
    # And the other way: a run chosen in the sidebar is the highlighted row.
    controller.InputSelect(page, "inspect-selector-run").set(_run("a-fernet"))
    highlighted = table.loc_body.locator("> tr[aria-selected=true] > td:nth-child(1)")
    expect(highlighted).to_have_text(["a-fernet"])
    # A run changing on disk re-renders the table: the highlight stays.
    history = MODELS / "b-tiny" / "history.csv"
    before = history.read_text()
    try:
        history.write_text(before + "5,0.5,0.9,0.0001,0.45,1.2\n")
        table.expect_cell("6", row=1, col=table.loc_column_label.all_inner_texts().index("epochs"))
        expect(highlighted).to_have_text(["a-fernet"])
    finally:
        history.write_text(before)  # the other tests' b-tiny

    # Runs in another folder the user points to join the table (and the selector).
    controller.InputText(page, "inspect-selector-folder").set(str(ROOT / "extra"))
    controller.InputActionButton(page, "inspect-selector-add_folder").click()
    table.expect_nrow(5)
    table.expect_cell("e-extra", row=4, col=0)
    note = controller.OutputUi(page, "inspect-selector-folder_note")
    note.expect.to_contain_text(f"Also listing 1 run in {ROOT / 'extra'}")
    # A folder of images, not of runs: said, instead of "listing" nothing.
    controller.InputText(page, "inspect-selector-folder").set(str(ROOT / "data"))
    controller.InputActionButton(page, "inspect-selector-add_folder").click()
    note.expect.to_contain_text("No runs in")
    table.expect_nrow(5)  # the folder listed before stays listed
    controller.InputText(page, "inspect-selector-folder").set(str(ROOT / "nowhere"))
    controller.InputActionButton(page, "inspect-selector-add_folder").click()
    controller.OutputUi(page, "inspect-selector-folder_note").expect.to_contain_text(
        "is not a folder"
    )
    # A name longer than the file system allows: a message, and the session lives on.
    controller.InputText(page, "inspect-selector-folder").set(str(ROOT / ("x" * 300)))
    controller.InputActionButton(page, "inspect-selector-add_folder").click()
    note.expect.to_contain_text("That folder cannot be read: File name too long.")
    controller.InputSelect(page, "inspect-selector-run").set(_run("b-tiny"))
    highlighted = table.loc_body.locator("> tr[aria-selected=true] > td:nth-child(1)")
    expect(highlighted).to_have_text(["b-tiny"])


def test_gallery_filters_and_missing_data(page: Page, app: ShinyAppProc) -> None:
    _open_inspect(page, app, "gallery")
    mistakes = _evaluation("a-fernet")["misclassified"]
    grid = controller.OutputUi(page, "inspect-gallery-grid")
    count = page.locator("#inspect-gallery-count")
    expect(count).to_contain_text(f"{len(mistakes)} of {len(mistakes)} misclassified")
    expect(grid.loc.locator("figure img")).to_have_count(min(len(mistakes), 60))

    controller.InputSelect(page, "inspect-gallery-true_class").set("sad")
    sad = [m for m in mistakes if m["true"] == "sad"]
    expect(count).to_contain_text(f"{len(sad)} of {len(mistakes)} misclassified")
    expect(grid.loc.locator("figure")).to_have_count(len(sad))
    expect(grid.loc.locator("figcaption").first).to_contain_text("true: sad")

    predicted = sad[0]["predicted"]
    controller.InputSelect(page, "inspect-gallery-predicted_class").set(predicted)
    pair = [m for m in sad if m["predicted"] == predicted]
    expect(grid.loc.locator("figure")).to_have_count(len(pair))
    expect(grid.loc.locator("figcaption").first).to_contain_text(f"predicted: {predicted}")

    # b-tiny was evaluated on a folder that is not on this machine: say why it is empty.
    controller.InputSelect(page, "inspect-selector-run").set(_run("b-tiny"))
    summary = controller.OutputUi(page, "inspect-gallery-summary")
    summary.expect.to_contain_text("not on this machine")
    summary.expect.to_contain_text("FERDASH_DATA_DIR")
    expect(grid.loc.locator("figure")).to_have_count(0)


def test_empty_models_says_how_to_train(page: Page, empty_app: ShinyAppProc) -> None:
    page.goto(empty_app.url)
    controller.PageNavbar(page, "nav").set("inspect")
    hint = "python -m training train --data DIR --arch fernet --out models/NAME"
    controller.OutputUi(page, "inspect-selector-notes").expect.to_contain_text(hint)
    controller.OutputUi(page, "inspect-history-message").expect.to_contain_text(hint)
    controller.NavsetCardUnderline(page, "inspect-tabs").set("runs")
    controller.OutputUi(page, "inspect-runs-message").expect.to_contain_text(hint)


def test_calibration_shows_the_reliability_diagram_or_how_to_calibrate(page: Page, app: ShinyAppProc) -> None:
    _open_inspect(page, app, "calibration")
    calibration = _evaluation("a-fernet")["calibration"]
    figures = controller.OutputUi(page, "inspect-calibration-figures")
    figures.expect.to_contain_text("1.800")
    figures.expect.to_contain_text(f"{calibration['ece_before']:.3f} → {calibration['ece_after']:.3f}")
    plot = controller.OutputPlot(page, "inspect-calibration-diagram")
    plot.expect_img_src(re.compile(r"^data:image/png"))
    # A run evaluated without calibration: no diagram, the command that adds one.
    controller.InputSelect(page, "inspect-selector-run").set(_run("b-tiny"))
    message = controller.OutputUi(page, "inspect-calibration-message")
    message.expect.to_contain_text("no calibration figures")
    message.expect.to_contain_text("--fit-temperature")
    expect(plot.loc_img).to_have_count(0)
