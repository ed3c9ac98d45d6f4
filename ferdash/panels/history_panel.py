"""Training history: loss, accuracy and learning rate per epoch, several runs overlaid."""

from __future__ import annotations

import math

import pandas as pd
from shiny import module, reactive, render, req, ui

from .. import plots
from ..inspect_data import best_epoch_summary, load_history, load_run_info, lr_column
from .run_selector import RunSelection
from .table_html import frame_table


@module.ui
def panel_ui() -> ui.TagChild:
    return ui.TagList(
        ui.output_ui("message"),
        ui.output_plot("plot", height="400px"),
        ui.output_ui("summary"),
        ui.p(
            "Solid: training; dashed: validation; ★ and dotted line: the epoch whose "
            "checkpoint was kept (run.json best_epoch, else best validation accuracy).",
            class_="text-muted small",
        ),
    )


def _fmt(value: float, digits: int = 4) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


@module.server
def panel_server(input, output, session, selection: RunSelection) -> None:
    @reactive.calc
    def loaded() -> tuple[dict[str, pd.DataFrame], dict[str, int | None], list[dict], list[str]]:
        histories: dict[str, pd.DataFrame] = {}
        best: dict[str, int | None] = {}
        rows: list[dict] = []
        errors: list[str] = []
        for listing in selection.history_runs():
            result = load_history(listing.path)
            if not result.ok:
                errors.append(f"{listing.name}: {result.error}")
                continue
            frame = result.value
            # run.json may be broken while history.csv is fine: plot it anyway.
            info = load_run_info(listing.path)
            meta = info.value.meta if info.ok and info.value is not None else {}
            name = listing.name
            while name in histories:  # same name in two folders
                name += "′"
            summary = best_epoch_summary(frame, meta)
            histories[name] = frame
            best[name] = summary["epoch"]
            lr = lr_column(frame)
            rows.append(
                {
                    "run": name,
                    "epochs": str(len(frame)),
                    "kept epoch": "—" if summary["epoch"] is None else str(summary["epoch"] + 1),
                    "chosen by": summary["source"],
                    "loss": _fmt(summary["loss"]),
                    "val loss": _fmt(summary["val_loss"]),
                    "accuracy": _fmt(summary["accuracy"]),
                    "val accuracy": _fmt(summary["val_accuracy"]),
                    "last learning rate": f"{frame[lr].iloc[-1]:.3g}" if lr else "not logged",
                }
            )
        return histories, best, rows, errors

    @render.ui
    def message() -> ui.TagChild:
        if selection.run() is None:
            return ui.div(selection.missing_message(), class_="alert alert-info")
        errors = loaded()[3]
        if not errors:
            return None
        return ui.div(
            ui.strong("No training history for: "),
            ui.tags.ul(*[ui.tags.li(e) for e in errors]),
            class_="alert alert-warning",
        )

    @render.plot(alt="Loss and accuracy per epoch")
    def plot():
        histories, best, _, _ = loaded()
        req(histories)
        return plots.history_figure(histories, best)

    @render.ui
    def summary() -> ui.TagChild:
        rows = loaded()[2]
        req(rows)
        return frame_table(pd.DataFrame(rows))
