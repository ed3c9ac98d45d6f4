"""Training history: loss, accuracy and learning rate per epoch, several runs overlaid;
and each class's validation recall per epoch, a panel per run."""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd
from shiny import module, reactive, render, req, ui

from .. import plots
from ..inspect_data import best_epoch_summary, load_history, load_run_info
from ..runs.rundir import class_recall_metrics, lr_column
from .run_selector import RunSelection
from .table_html import fmt_number, frame_table


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
        ui.h5("Recall per class", class_="mt-3"),
        ui.output_ui("recall_area"),
    )


class Loaded(NamedTuple):
    """The selected runs' histories as the panel shows them, keyed by display name."""

    histories: dict[str, pd.DataFrame]
    best: dict[str, int | None]  # kept epoch
    rows: list[dict]  # the summary table
    errors: list[str]  # runs without a readable history
    classes: dict[str, list[str]]  # from run.json, where it could be read


#: Height of one row of per-class recall panels (plots.RECALL_PANELS_PER_ROW runs).
RECALL_ROW_PX = 340



@module.server
def panel_server(input, output, session, selection: RunSelection) -> None:
    @reactive.calc
    def loaded() -> Loaded:
        histories: dict[str, pd.DataFrame] = {}
        classes: dict[str, list[str]] = {}
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
            if info.ok and info.value is not None:
                classes[name] = list(info.value.classes)
            lr = lr_column(frame)
            rows.append(
                {
                    "run": name,
                    "epochs": str(len(frame)),
                    "kept epoch": "—" if summary["epoch"] is None else str(summary["epoch"] + 1),
                    "chosen by": summary["source"],
                    "loss": fmt_number(summary["loss"], 4),
                    "val loss": fmt_number(summary["val_loss"], 4),
                    "accuracy": fmt_number(summary["accuracy"], 4),
                    "val accuracy": fmt_number(summary["val_accuracy"], 4),
                    "last learning rate": f"{frame[lr].iloc[-1]:.3g}" if lr else "not logged",
                }
            )
        return Loaded(histories, best, rows, errors, classes)

    @render.ui
    def message() -> ui.TagChild:
        if selection.run() is None:
            return ui.div(selection.missing_message(), class_="alert alert-info")
        errors = loaded().errors
        if not errors:
            return None
        return ui.div(
            ui.strong("No training history for: "),
            ui.tags.ul(*[ui.tags.li(e) for e in errors]),
            class_="alert alert-warning",
        )

    @render.plot(alt="Loss and accuracy per epoch")
    def plot():
        runs = loaded()
        req(runs.histories)
        return plots.history_figure(runs.histories, runs.best)

    @render.ui
    def summary() -> ui.TagChild:
        rows = loaded().rows
        req(rows)
        return frame_table(pd.DataFrame(rows))

    @reactive.calc
    def with_recall() -> tuple[dict[str, pd.DataFrame], list[str]]:
        """The loaded runs whose history logged every class's validation recall, and the
        names of those that did not."""
        runs = loaded()
        logged: dict[str, pd.DataFrame] = {}
        missing: list[str] = []
        for name, frame in runs.histories.items():
            names = class_recall_metrics(runs.classes[name]) if name in runs.classes else {}
            if names and all(f"val_{m}" in frame.columns for m in names.values()):
                logged[name] = frame
            else:
                missing.append(name)
        return logged, missing

    @render.ui
    def recall_area() -> ui.TagChild:
        req(loaded().histories)
        logged, missing = with_recall()
        parts: list[ui.TagChild] = []
        if missing:
            parts.append(
                ui.p(
                    f"No per-class recall in the history of {', '.join(missing)}: runs "
                    "trained before it was logged (the evaluation's per-class recall, "
                    "under Confusion matrix, is of the kept epoch).",
                    class_="text-muted small",
                )
            )
        if logged:
            rows = -(-len(logged) // plots.RECALL_PANELS_PER_ROW)
            parts.append(ui.output_plot("recall_plot", height=f"{RECALL_ROW_PX * rows}px"))
            parts.append(
                ui.p(
                    "Validation faces, without test-time augmentation; a face counts for a "
                    "class when the class is its top prediction. Dotted line: the kept epoch.",
                    class_="text-muted small",
                )
            )
        return ui.TagList(*parts)

    @render.plot(alt="Validation recall of each class per epoch")
    def recall_plot():
        logged, _ = with_recall()
        req(logged)
        runs = loaded()
        return plots.class_recall_figure(logged, {n: runs.classes[n] for n in logged}, runs.best)
