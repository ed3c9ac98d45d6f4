"""Predict's third input: a labelled set, and how good the selected run is on it.

The user uploads a ``.zip`` of ``<class>/<image>`` folders, or images whose names start
with their class; the set is read (hostile-input safe, :mod:`ferdash.labelled_set`) and
scored through the Predict pipeline (:mod:`ferdash.set_evaluation`) in a worker thread,
with progress and a cancel button. Shown: accuracy, macro-F1, the confusion matrix
(Inspect's figure; a click shows the faces of a cell), per-class metrics, the images
without an answer, and downloads of the per-image CSV and the matrix PNG.
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Callable, Iterator

from htmltools import Tag, TagChild, TagList
from shiny import Inputs, Outputs, Session, module, reactive, render, req, ui

from .. import plots, prediction
from ..imaging import ACCEPT, UploadError, png_data_uri
from ..labelled_set import MAX_ARCHIVE_BYTES, LabelledSetError, label_images, read_zip
from ..runs.rundir import RunInfo
from ..set_evaluation import SetReport, evaluate_set
from ..set_score import per_class_frame
from .confusion_panel import CellRequest, cell_request
from .table_html import fmt_number, frame_table
from .uploads import checked_upload_list, read_shiny_upload, session_upload_dir

ZIP_EXTENSION = ".zip"
#: Faces a clicked confusion cell shows at most.
CELL_FACES_SHOWN = 60


@module.ui
def input_ui() -> TagChild:
    return TagList(
        ui.input_file(
            "set",
            "Labelled set",
            multiple=True,
            accept=[ZIP_EXTENSION, *ACCEPT],
            button_label="Browse",
            placeholder=".zip of class folders",
        ),
        ui.p(
            "Score the selected run on your own labelled faces: a .zip of folders named "
            "after the classes (happy/, sad/, …; synonyms such as “happiness” work), or "
            "images whose names start with their class (happy_01.jpg). See "
            "docs/labelled-sets.md.",
            class_="small text-body-secondary",
        ),
    )


@module.ui
def report_ui() -> TagChild:
    return ui.output_ui("report")


def _read_set(entries: list[dict], upload_root, classes: tuple[str, ...]):
    """The labelled set of the upload: one .zip, or loose images labelled by name."""
    if len(entries) == 1 and str(entries[0].get("name", "")).lower().endswith(ZIP_EXTENSION):
        data = read_shiny_upload(entries[0], upload_root, max_bytes=MAX_ARCHIVE_BYTES)
        return read_zip(data, classes)
    files = []
    for entry in entries:
        name = str(entry.get("name", ""))
        if name.lower().endswith(ZIP_EXTENSION):
            raise LabelledSetError("Upload one .zip on its own, or images without a .zip.")
        files.append((name, read_shiny_upload(entry, upload_root)))
    return label_images(files, classes)


def score_upload(
    entries: list[dict],
    upload_root,
    info: RunInfo,
    progress: Callable[[int, int], None],
    cancel: threading.Event,
) -> SetReport | str:
    """For a worker thread: the report, or the message that says why there is none."""
    model, error = prediction.load_model(info)
    if model is None:
        return error or "The run's model cannot be used."
    try:
        labelled = _read_set(entries, upload_root, model.classes)
        return evaluate_set(labelled, model, info.name, progress, cancel)
    except (LabelledSetError, UploadError, ValueError) as exc:
        return str(exc)


@module.server
def panel_server(
    input: Inputs, output: Outputs, session: Session, run: Callable[[], RunInfo | None]
) -> None:
    upload_dir = session_upload_dir(session)
    # Written by the worker thread, read by the page while it polls: two ints.
    counter = {"done": 0, "total": 0}
    cancel_holder: list[threading.Event] = [threading.Event()]
    clicked: reactive.Value[CellRequest | None] = reactive.value(None)

    @reactive.extended_task
    async def scoring(entries: list[dict], info: RunInfo, cancel: threading.Event) -> SetReport | str:
        def progress(done: int, total: int) -> None:
            counter["done"], counter["total"] = done, total

        return await asyncio.to_thread(score_upload, entries, upload_dir, info, progress, cancel)

    # The upload and run last scored: the run's listing is re-read whenever a run folder
    # changes (a training epoch in the Train tab), which must not score the set again.
    last: list[tuple[object, RunInfo | None]] = [(None, None)]

    @reactive.effect
    def _start() -> None:
        value = input.set()
        info = run()
        if value is None or info is None or (value is last[0][0] and info == last[0][1]):
            return
        checked = checked_upload_list(value)
        if not checked.files:
            return
        last[0] = (value, info)
        cancel_holder[0].set()  # an earlier set still running stops
        cancel_holder[0] = threading.Event()
        counter["done"], counter["total"] = 0, 0
        clicked.set(None)
        scoring.invoke(checked.files, info, cancel_holder[0])

    @reactive.effect
    @reactive.event(input.cancel)
    def _cancel() -> None:
        cancel_holder[0].set()

    @render.ui
    def report() -> TagChild:
        if input.set() is None:
            return None
        if run() is None:
            return ui.div("Choose a run to score the set with.", class_="alert alert-warning")
        if scoring.status() == "running":
            # Drawn once per scoring; only the progress line below polls, so the Cancel
            # button is never redrawn under the pointer.
            return ui.card(
                ui.card_header("Labelled set"),
                ui.output_ui("progress"),
                ui.input_action_button("cancel", "Cancel", class_="btn-sm btn-outline-secondary"),
                id=session.ns("running"),
            )
        done_report = scoring_result()
        if done_report is None:
            return None
        if isinstance(done_report, str):
            return ui.div(done_report, class_="alert alert-danger", id=session.ns("set_error"))
        return _report_card(done_report)

    @render.ui
    def progress() -> TagChild:
        if scoring.status() != "running":
            return None
        reactive.invalidate_later(0.5)
        done, total = counter["done"], counter["total"]
        share = round(100 * done / total) if total else 0
        return TagList(
            ui.div(
                ui.span(class_="spinner-border spinner-border-sm me-2", role="status"),
                f"Scoring… {done:,} of {total:,} images" if total else "Reading the set…",
                class_="mb-2",
                id=session.ns("progress_text"),
            ),
            ui.div(
                ui.div(class_="progress-bar", style=f"width: {share}%"),
                class_="progress mb-2",
                role="progressbar",
                aria_valuenow=str(share),
                id=session.ns("progress_bar"),
            ),
        )

    def scoring_result() -> SetReport | str | None:
        state = scoring.status()
        if state == "success":
            return scoring.value.get()
        if state == "error":
            return f"The set could not be scored ({type(scoring.error.get()).__name__})."
        return None

    def _report_card(rep: SetReport) -> Tag:
        s = rep.score
        summary = [
            ui.div(
                ui.span(f"{100 * s.accuracy:.1f}%", class_="fs-3 fw-semibold me-2", id=session.ns("accuracy")),
                f"accuracy on {s.images:,} labelled images ({s.correct:,} right), run “{rep.run_name}”",
            ),
            ui.div(
                f"Macro-F1 {fmt_number(s.macro_f1)} · accuracy on the {s.classified:,} images with "
                f"an answer {fmt_number(100 * s.accuracy_classified, 1)}% · "
                f"{s.unclassified_count:,} without an answer (no face found or unreadable), counted wrong",
                class_="small text-body-secondary",
                id=session.ns("summary"),
            ),
        ]
        if rep.cancelled_at is not None:
            summary.append(
                ui.div(f"Cancelled: the first {rep.cancelled_at:,} images were scored.",
                       class_="alert alert-warning py-1 mt-2", id=session.ns("cancelled"))
            )
        notes = list(rep.notes)
        if rep.non_images and not any("not an image" in n.lower() for n in notes):
            notes.append(f"{rep.non_images} files that are not images were skipped.")
        return ui.card(
            ui.card_header(
                ui.span("Labelled set"),
                ui.download_button("download_csv", "Per-image CSV", class_="btn-sm ms-auto"),
                ui.download_button("download_png", "Matrix PNG", class_="btn-sm"),
                class_="d-flex align-items-center gap-2",
            ),
            *summary,
            ui.tags.ul(*[ui.tags.li(n) for n in notes], class_="small mt-2", id=session.ns("notes"))
            if notes
            else None,
            ui.layout_columns(
                ui.div(
                    ui.output_plot("matrix", height="420px", click=True),
                    ui.p("Click a cell to see its faces (a diagonal cell: all that class's mistakes).",
                         class_="small text-body-secondary"),
                ),
                ui.div(frame_table(_per_class_display(rep), id=session.ns("per_class"))),
                col_widths={"sm": [12, 12], "lg": [7, 5]},
            ),
            ui.output_ui("cell_faces"),
            id=session.ns("set_report"),
        )

    def _done() -> SetReport:
        rep = scoring_result()
        req(isinstance(rep, SetReport))
        return rep

    @render.plot(alt="confusion matrix of the labelled set")
    def matrix():
        rep = _done()
        return plots.confusion_figure(rep.score.confusion, rep.score.classes, title="true class (rows) by answer (columns)")

    @reactive.effect
    @reactive.event(input.matrix_click)
    def _on_click() -> None:
        rep = scoring_result()
        if not isinstance(rep, SetReport):
            return
        request = cell_request(input.matrix_click(), rep.score.classes, clicked.get())
        if request is not None:
            clicked.set(request)

    @render.ui
    def cell_faces() -> TagChild:
        request = clicked()
        rep = scoring_result()
        if request is None or not isinstance(rep, SetReport):
            return None
        indices = rep.cell_indices(request.true, request.predicted)
        what = (
            f"true {request.true}, answered {request.predicted}"
            if request.predicted
            else f"true {request.true}, answered otherwise"
        )
        tiles = [
            ui.tags.figure(
                ui.img(src=png_data_uri(rep.crops[i]), alt=rep.names[i], class_="face-crop"),
                ui.tags.figcaption(rep.names[i], ui.br(), rep.predicted[i] or ""),
                class_="predict-thumb",
            )
            for i in indices[:CELL_FACES_SHOWN]
            if rep.crops[i] is not None
        ]
        more = len(indices) - len(tiles)
        return ui.div(
            ui.h6(f"{len(indices)} faces: {what}"),
            ui.div(*tiles, class_="predict-thumbs") if tiles else ui.p("None.", class_="text-body-secondary"),
            ui.p(f"and {more} more (in the CSV)", class_="small") if more > 0 else None,
            id=session.ns("cell"),
        )

    def _file_stem() -> str:
        rep = scoring_result()
        name = rep.run_name if isinstance(rep, SetReport) else "run"
        return f"ferdash-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-labelled-set"

    @render.download_button(filename=lambda: _file_stem() + ".csv", media_type="text/csv")
    def download_csv() -> Iterator[str]:
        yield prediction.csv_text(_done().frame())

    @render.download_button(filename=lambda: _file_stem() + "-confusion.png", media_type="image/png")
    def download_png() -> Iterator[bytes]:
        yield _done().confusion_png()


def _per_class_display(rep: SetReport):
    frame = per_class_frame(rep.score)
    for column in frame.columns:
        if frame[column].dtype.kind == "f":
            frame[column] = [fmt_number(v) for v in frame[column]]
    return frame
