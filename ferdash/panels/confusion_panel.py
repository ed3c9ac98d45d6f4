"""Confusion matrix of a run's evaluation, with its stored per-class metrics."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shiny import module, reactive, render, req, ui

from .. import plots
from ..inspect_data import per_class_frame
from ..runs.rundir import Evaluation
from .run_selector import RunSelection
from .table_html import fmt_number, frame_table


@dataclass(frozen=True)
class CellRequest:
    """A click on a confusion-matrix cell: show the faces of that (true, predicted) pair.

    ``predicted`` is empty for a diagonal cell (all mistakes of that true class).
    ``serial`` makes two clicks on the same cell two distinct values.
    """

    true: str
    predicted: str
    serial: int


def _coordinate(value: object) -> float | None:
    """``value`` as a finite float, or None: a click's x or y as JSON may deliver it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # strings, lists, objects, null: not a coordinate
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


def cell_request(
    click: object, classes: Sequence[str], previous: CellRequest | None = None
) -> CellRequest | None:
    """The cell a ``matrix_click`` input names, or None when it names none.

    The matrix is drawn with ``imshow``, so cell (row, col) is centred on data coordinates
    (x=col, y=row). The input comes from the browser, which can send any JSON: anything
    that is not a finite click inside the matrix (missing or non-numeric x/y, NaN,
    infinities, numbers off the matrix) is ignored rather than allowed to raise and end
    the session.
    """
    if not isinstance(click, Mapping):
        return None
    x, y = _coordinate(click.get("x")), _coordinate(click.get("y"))
    if x is None or y is None:
        return None
    n = len(classes)
    if not (-0.5 <= x < n - 0.5 and -0.5 <= y < n - 0.5):
        return None  # in the margins, or a forged number off the matrix
    col, row = round(x), round(y)
    serial = previous.serial + 1 if previous else 1
    predicted = "" if row == col else classes[col]
    return CellRequest(classes[row], predicted, serial)


@module.ui
def panel_ui() -> ui.TagChild:
    return ui.TagList(ui.output_ui("message"), ui.output_ui("body"))


def _body(scale: str) -> ui.TagChild:
    return ui.layout_columns(
        ui.div(
            ui.input_radio_buttons(
                "scale",
                None,
                {"counts": "Counts", "normalised": "Row-normalised"},
                selected=scale,
                inline=True,
            ),
            ui.output_plot("matrix", height="460px", click=True),
            ui.p(
                "Rows: true class; columns: predicted class. Click a cell to see "
                "those faces under Misclassified faces.",
                class_="text-muted small",
            ),
        ),
        ui.div(ui.output_ui("overview"), ui.output_ui("per_class")),
        col_widths=(7, 5),
    )



@module.server
def panel_server(
    input, output, session, selection: RunSelection
) -> reactive.Value[CellRequest | None]:
    clicked: reactive.Value[CellRequest | None] = reactive.value(None)

    evaluation = selection.evaluation

    # The matrix and table exist only while there is an evaluation to show, so a broken
    # run shows its message instead of an empty frame. A Value (unlike a calc) only
    # notifies on change, so switching between good runs keeps the same elements.
    has_evaluation = reactive.value(False)

    @reactive.effect
    def _track_evaluation() -> None:
        loaded = evaluation()
        has_evaluation.set(loaded is not None and loaded.ok)

    @render.ui
    def body() -> ui.TagChild:
        if not has_evaluation():
            return None
        with reactive.isolate():
            scale = input.scale() if "scale" in input else "counts"
        return _body(scale)

    @render.ui
    def message() -> ui.TagChild:
        return selection.evaluation_problem()

    def _ok() -> Evaluation:
        loaded = evaluation()
        req(loaded is not None and loaded.ok)
        assert loaded is not None and loaded.value is not None
        return loaded.value

    @render.plot(alt="Confusion matrix")
    def matrix():
        ev = _ok()
        normalise = input.scale() == "normalised"
        listing = selection.run()
        name = listing.name if listing is not None else ""
        title = f"{name} — {ev.split} ({ev.image_count} images)"
        if normalise:
            title += ", row-normalised"
        return plots.confusion_figure(ev.confusion_matrix, ev.classes, normalize=normalise, title=title)

    @render.ui
    def overview() -> ui.TagChild:
        ev = _ok()
        macro = "not stored" if math.isnan(ev.macro_f1) else f"{ev.macro_f1:.3f}"
        return ui.div(
            ui.div(
                ui.span("Accuracy ", class_="text-muted"),
                ui.strong(f"{100 * ev.accuracy:.1f} %", id=session.ns("accuracy")),
                ui.span("   macro-F1 ", class_="text-muted ms-3"),
                ui.strong(macro, id=session.ns("macro_f1")),
                class_="fs-5",
            ),
            ui.div(f"split {ev.split}, {ev.image_count} images", class_="text-muted small"),
            class_="mb-2",
        )

    @render.ui
    def per_class() -> ui.TagChild:
        frame = per_class_frame(_ok())
        for col in ("precision", "recall", "F1"):
            frame[col] = frame[col].map(fmt_number)
        frame["support"] = frame["support"].map(lambda v: "—" if math.isnan(v) else f"{int(v)}")
        return frame_table(frame)

    @reactive.effect
    @reactive.event(input.matrix_click)
    def _on_click() -> None:
        loaded = evaluation()
        if loaded is None or not loaded.ok or loaded.value is None:
            return
        request = cell_request(input.matrix_click(), loaded.value.classes, clicked.get())
        if request is not None:
            clicked.set(request)

    return clicked
