"""Runs comparison: one sortable row per run, what it is and how it scored."""

from __future__ import annotations

import pandas as pd
from shiny import module, reactive, render, req, ui

from ..inspect_data import comparison_frame
from .grid_selection import select_rows, selected_rows
from .run_selector import RunSelection


@module.ui
def panel_ui() -> ui.TagChild:
    return ui.TagList(
        ui.output_ui("message"),
        ui.p(
            "Every run in the run folders. Click a column header to sort; click a row to "
            "inspect that run; scroll right for how each run was trained. Accuracies and "
            "recalls are percentages. “eval acc %”, macro F1, ECE and the recalls come from "
            "evaluation.json: the kept model through the app's own engine, with the run's "
            "test-time augmentation and temperature. “best val acc %” is the best epoch's "
            "validation accuracy logged during training (history.csv), on one view of each "
            "face: it is usually a little lower, and both are measured on the same images.",
            class_="text-muted small",
        ),
        ui.output_data_frame("table"),
    )


@module.server
def panel_server(input, output, session, selection: RunSelection) -> None:
    @reactive.calc
    def frame() -> pd.DataFrame:
        listings = selection.runs()
        table = comparison_frame(listings)
        # The folder tells runs of the same name apart and lets a row click find its run.
        table["folder"] = [str(listing.path.parent) for listing in listings]
        return table

    @render.ui
    def message() -> ui.TagChild:
        if not selection.runs():
            return ui.div(selection.missing_message(), class_="alert alert-info")
        return None

    @render.data_frame
    def table() -> render.DataGrid:
        data = frame()
        req(len(data) > 0)
        # A bounded height keeps the horizontal scrollbar of this wide table in view.
        return render.DataGrid(data, selection_mode="row", height="60vh", width="100%")

    # The browser reports the grid's selection (empty) once it has drawn it: while the tab
    # is hidden the grid is not drawn, and a selection sent then (the default run, at
    # start) is lost.
    drawn = reactive.value(False)

    @reactive.effect
    @reactive.event(input.table_cell_selection)
    def _note_drawn() -> None:
        drawn.set(True)

    @reactive.effect
    def _highlight_selected_run() -> None:
        # The row of the run chosen in the sidebar, so the highlight never names
        # another run than the one every panel shows. Sent after the flush: a table
        # re-rendered in the same flush (a run changed on disk) would otherwise arrive
        # after the selection and clear it. Not on every selection the browser reports:
        # re-sending the sidebar's run then would undo the row a user just clicked.
        listing = selection.run()
        listings = selection.runs()
        if not drawn():
            return
        rows = [i for i, r in enumerate(listings) if listing is not None and r.path == listing.path]

        async def send() -> None:
            await select_rows(session, "table", rows)

        session.on_flushed(send, once=True)

    # Only on a click: re-rendering the table (a run changed on disk) must not pull the
    # selector back to a row clicked long ago.
    @reactive.effect
    @reactive.event(input.table_cell_selection)
    def _select_clicked_run() -> None:
        rows = selected_rows(input, "table")
        data = frame()
        if len(rows) != 1 or not 0 <= rows[0] < len(data):
            return
        row = data.iloc[rows[0]]
        selection.select(f"{row['folder']}/{row['run']}")
