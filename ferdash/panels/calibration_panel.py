"""Calibration of a run's evaluation: its reliability diagram and the temperature behind it."""

from __future__ import annotations


from shiny import module, reactive, render, req, ui

from .. import plots
from ..inspect_data import Calibration, calibration_of
from .run_selector import RunSelection
from .table_html import fmt_number

#: How a run without stored calibration gets it (the same command training runs).
CALIBRATE_COMMAND = "python -m training evaluate --run RUN --data DIR --fit-temperature"


@module.ui
def panel_ui() -> ui.TagChild:
    return ui.TagList(
        ui.output_ui("message"),
        ui.layout_columns(
            ui.output_plot("diagram", height="480px"),
            ui.div(
                ui.output_ui("summary"),
                ui.p(
                    "Faces are grouped by how sure the model was of its answer (15 equal "
                    "bins of the top probability). A calibrated model is right as often "
                    "as it claims: its bars reach the dotted diagonal. Orange: each bin's "
                    "gap between claimed confidence and accuracy; circles: the same bins "
                    "before the run's temperature was applied. ECE is the gaps' average, "
                    "weighted by the faces in each bin.",
                    class_="text-muted small",
                ),
            ),
            col_widths=(7, 5),
        ),
    )



@module.server
def panel_server(input, output, session, selection: RunSelection) -> None:
    @reactive.calc
    def calibration() -> Calibration | None:
        loaded = selection.evaluation()
        if loaded is None or not loaded.ok or loaded.value is None:
            return None
        return calibration_of(loaded.value)

    @render.ui
    def message() -> ui.TagChild:
        problem = selection.evaluation_problem()
        if problem is not None:
            return problem
        listing = selection.run()
        assert listing is not None
        if calibration() is None:
            return ui.div(
                f"{listing.name}'s evaluation.json holds no calibration figures (a run "
                "evaluated before calibration was recorded, or edited by hand). Its "
                "probabilities are shown as the network gives them. To calibrate it: ",
                ui.code(CALIBRATE_COMMAND.replace("RUN", str(listing.path))),
                class_="alert alert-info",
            )
        return None

    @render.plot(alt="Reliability diagram")
    def diagram():
        figures = calibration()
        req(figures is not None)
        assert figures is not None
        listing = selection.run()
        scaled = figures.temperature is not None
        shown = figures.after
        title = f"{listing.name if listing else ''}: ECE {fmt_number(figures.ece)}"
        if scaled:
            title += f" at temperature {figures.temperature:.3g}"
        return plots.reliability_figure(
            shown.count, shown.accuracy, shown.confidence,
            before=(figures.before.confidence, figures.before.accuracy) if scaled else None,
            title=title,
        )

    @render.ui
    def summary() -> ui.TagChild:
        figures = calibration()
        req(figures is not None)
        assert figures is not None
        rows = [
            ("temperature", "none (unscaled)" if figures.temperature is None
             else f"{figures.temperature:.3f}"),
            ("ECE before → after", f"{fmt_number(figures.ece_before)} → {fmt_number(figures.ece_after)}"),
            ("NLL before → after", f"{fmt_number(figures.nll_before)} → {fmt_number(figures.nll_after)}"),
            ("faces", f"{sum(figures.after.count)}"),
        ]
        return ui.tags.table(
            ui.tags.tbody(*[ui.tags.tr(ui.tags.th(k), ui.tags.td(v)) for k, v in rows]),
            class_="table table-sm",
            id=session.ns("figures"),
        )
