"""Builds the Shiny app: one navbar, one module per panel."""

from __future__ import annotations

from pathlib import Path

from shiny import App, ui

from . import config
from .catalog import run_catalog
from .panels import predict_panel


def build_app(models_dirs: list[Path] | None = None) -> App:
    dirs = list(models_dirs) if models_dirs else config.models_dirs()

    app_ui = ui.page_navbar(
        ui.nav_panel("Predict", predict_panel.panel_ui("predict"), value="predict"),
        title="Facial Expression Test",
        id="nav",
        window_title="ferdash — Facial Expression Test",
    )

    def server(input, output, session) -> None:
        runs = run_catalog(lambda: dirs)
        predict_panel.panel_server("predict", runs=runs)

    return App(app_ui, server)
