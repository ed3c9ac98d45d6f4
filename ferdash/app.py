"""Builds the Shiny app: one navbar, one module per panel."""

from __future__ import annotations

from pathlib import Path

from shiny import App, reactive, ui

from . import config
from .panels.catalog import run_catalog
from .panels import inspect_panel, predict_panel, train_panel


def build_app(models_dirs: list[Path] | None = None) -> App:
    dirs = list(models_dirs) if models_dirs else config.models_dirs()

    app_ui = ui.page_navbar(
        ui.nav_panel("Predict", predict_panel.panel_ui("predict"), value="predict"),
        ui.nav_panel("Inspect", inspect_panel.panel_ui("inspect"), value="inspect"),
        ui.nav_panel("Train", train_panel.panel_ui("train"), value="train"),
        title="Facial Expression Test",
        id="nav",
        window_title="ferdash — Facial Expression Test",
    )

    def server(input, output, session) -> None:
        # A runs folder the user adds in Inspect is listed by every panel, Predict too.
        extra_dirs: reactive.Value[list[Path]] = reactive.value([])

        def run_dirs() -> list[Path]:
            return [*dirs, *extra_dirs()]

        runs = run_catalog(run_dirs)
        predict_panel.panel_server("predict", runs=runs)
        inspect_panel.panel_server("inspect", runs=runs, run_dirs=run_dirs, extra_dirs=extra_dirs)
        # New runs go to the first runs folder, which the catalog lists: a finished run
        # shows up in Predict and Inspect by itself.
        train_panel.panel_server("train", runs_root=lambda: dirs[0], runs=runs)

    return App(app_ui, server)
