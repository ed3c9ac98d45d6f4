"""The Inspect page: the shared run selector beside five panels (one module each)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from shiny import module, reactive, ui

from ..runs.rundir import RunListing
from . import calibration_panel, confusion_panel, gallery_panel, history_panel, run_selector, runs_panel
from .run_selector import RunSelection


@module.ui
def panel_ui() -> ui.TagChild:
    return ui.layout_sidebar(
        ui.sidebar(run_selector.selector_ui("selector"), width=320, title="Runs"),
        # Each panel in a plain div: the card body is a fillable container, which would
        # stretch the panels' first fill item (e.g. the filter row) to the card's height.
        ui.navset_card_underline(
            ui.nav_panel(
                "Training history", ui.div(history_panel.panel_ui("history")), value="history"
            ),
            ui.nav_panel(
                "Confusion matrix", ui.div(confusion_panel.panel_ui("confusion")), value="confusion"
            ),
            ui.nav_panel(
                "Calibration", ui.div(calibration_panel.panel_ui("calibration")), value="calibration"
            ),
            ui.nav_panel("Runs comparison", ui.div(runs_panel.panel_ui("runs")), value="runs"),
            ui.nav_panel(
                "Misclassified faces", ui.div(gallery_panel.panel_ui("gallery")), value="gallery"
            ),
            id="tabs",
        ),
    )


@module.server
def panel_server(
    input,
    output,
    session,
    runs: Callable[[], list[RunListing]],
    run_dirs: Callable[[], list[Path]],
    extra_dirs: reactive.Value[list[Path]] | None = None,
) -> RunSelection:
    """Wire the panels to one selector; ``extra_dirs`` receives the user's runs folder."""
    selection = run_selector.selector_server(
        "selector", runs=runs, run_dirs=run_dirs, extra_dirs=extra_dirs
    )
    history_panel.panel_server("history", selection=selection)
    cell = confusion_panel.panel_server("confusion", selection=selection)
    calibration_panel.panel_server("calibration", selection=selection)
    runs_panel.panel_server("runs", selection=selection)
    gallery_panel.panel_server("gallery", selection=selection, cell_request=cell)

    @reactive.effect
    @reactive.event(cell)
    def _show_clicked_cell() -> None:
        ui.update_navset("tabs", selected="gallery")

    return selection
