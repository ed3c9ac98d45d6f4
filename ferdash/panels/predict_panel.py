"""The Predict panel: upload face images, read the model's answer.

A Python port of the R Shiny app "Facial Expression Test", extended to several files,
seven expressions, face detection in real photos and a CSV of the results. UI and
wiring only: what an upload shows is computed by :mod:`ferdash.prediction`, and its
cards are built by :mod:`ferdash.panels.result_cards`.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Iterator

from htmltools import Tag, TagChild, TagList
from shiny import Inputs, Outputs, Session, module, reactive, render, req, ui

from .. import prediction
from ..imaging import ACCEPT, MAX_PIXELS, MAX_UPLOAD_BYTES
from ..faces import TIGHT_CROP_MAX_SIDE
from ..inference import MAX_FACES_PER_PHOTO, FileSource, PrepareCache
from ..inspect_data import selector_choices
from ..prediction import MODE_FER7, MODE_HAPPY_SAD, MODES, Analysis
from ..runs.rundir import RunInfo, RunListing
from ..samples import sample_files
from ..train_settings import TRAIN_COMMAND_TEXT
from ..webcam import WebcamError, decode_snapshot
from . import labelled_panel
from .result_cards import CSS, result_card, result_thumbnail
from .uploads import UploadList, checked_upload_list, session_upload_dir
from .webcam_button import snapshot_button

TITLE = "Facial Expression Test"
#: How results are laid out: a card per file, or a grid of thumbnails for many files.
VIEWS = {"cards": "Cards", "grid": "Thumbnails"}
SUBTITLE = "Let's calculate image expression percentage for happy or sad."
TRAIN_HINT = TagList(
    "Train one with ",
    ui.code(TRAIN_COMMAND_TEXT),
    " (see docs/training.md); it appears here without restarting the app.",
)


@module.ui
def panel_ui() -> TagChild:
    return ui.layout_sidebar(
        ui.sidebar(
            ui.input_radio_buttons("mode", "Model", choices=MODES, selected=MODE_FER7),
            ui.input_select("run", "Trained run", choices={}),
            ui.input_file(
                "upload",
                "Face images",
                multiple=True,
                accept=ACCEPT,
                button_label="Browse",
                placeholder="JPEG, PNG, BMP, WebP, TIFF, GIF",
            ),
            ui.p(
                "Colour images are converted to greyscale. In a photo every face is found "
                "(BlazeFace, with OpenCV's Haar cascade for small ones) and classified, "
                f"up to the {MAX_FACES_PER_PHOTO} largest; small images "
                f"(up to {TIGHT_CROP_MAX_SIDE} px) are taken to be face crops already. "
                f"Up to {MAX_UPLOAD_BYTES // (1024 * 1024)} MB and "
                f"{MAX_PIXELS // 1_000_000} megapixels per file.",
                class_="small text-body-secondary",
            ),
            ui.input_action_button(
                "samples", "Try sample images", class_="btn-sm btn-outline-primary mb-3"
            ),
            # One frame from the browser's camera, then the same path as an upload.
            snapshot_button("webcam", replaces="upload"),
            labelled_panel.input_ui("labelled"),
            ui.input_switch("saliency", "Show where the model looked (Grad-CAM)", value=False),
            ui.input_radio_buttons("view", "Show results as", choices=VIEWS, selected="cards", inline=True),
            width=320,
            open="always",
        ),
        ui.tags.style(CSS),
        ui.h2(TITLE, class_="mb-1"),
        ui.p(SUBTITLE, class_="lead text-body-secondary"),
        ui.output_ui("status"),
        labelled_panel.report_ui("labelled"),
        ui.output_ui("table_card"),
        ui.output_ui("results"),
    )


@module.server
def panel_server(
    input: Inputs,
    output: Outputs,
    session: Session,
    runs: Callable[[], list[RunListing]],
) -> None:
    @reactive.calc
    def usable_runs() -> list[RunInfo]:
        return [r.info for r in runs() if r.info is not None and not r.problems]

    @reactive.calc
    def mode_runs() -> list[RunInfo]:
        return prediction.runs_for_mode(usable_runs(), input.mode())

    @reactive.effect
    def _start_in_a_mode_that_has_runs() -> None:
        # Once per session, when the runs are first listed: with only happy-vs-sad runs
        # installed (or only others), open in the mode that can answer instead of one
        # that says "no run installed".
        infos = usable_runs()
        if not infos:
            return
        with reactive.isolate():
            mode = prediction.opening_mode(infos, input.mode())
        if mode is not None:
            ui.update_radio_buttons("mode", selected=mode)
        _start_in_a_mode_that_has_runs.destroy()

    @reactive.effect
    def _update_run_choices() -> None:
        infos = mode_runs()
        choices = selector_choices((info.path, info.name, info.label) for info in infos)
        with reactive.isolate():
            selected = input.run()
        if selected not in choices:
            default = prediction.default_run(infos, input.mode())
            selected = str(default.path) if default is not None else None
        ui.update_select("run", choices=choices, selected=selected)

    @reactive.calc
    def selected_run() -> RunInfo | None:
        infos = mode_runs()
        chosen = input.run()
        for info in infos:
            if str(info.path) == chosen:
                return info
        # The select lags one round-trip behind a mode switch: use the mode's default.
        return prediction.default_run(infos, input.mode())

    labelled_panel.panel_server("labelled", run=selected_run)

    @reactive.effect
    def _preload() -> None:
        # While the person picks a file, so the first upload does not wait for the model.
        info = selected_run()
        if info is not None:
            prediction.preload(info)

    # Decoding, face detection, model loading and the model all run in a worker thread
    # (an ExtendedTask): the reactive lock is global to the process, so work done inside
    # a calc, even an async one, would hold every other session's clicks and uploads.
    @reactive.extended_task
    async def analysis_task(
        files: list[FileSource],
        info: RunInfo | None,
        cache: PrepareCache,
        with_saliency: bool,
        second: RunInfo | None,
    ) -> Analysis:
        return await asyncio.to_thread(
            prediction.analyse_upload, files, info, cache, with_saliency, second
        )

    @reactive.calc
    def second_run() -> RunInfo | None:
        return prediction.second_opinion_run(usable_runs(), input.mode())

    # Only files Shiny stored for this session are ever opened (see uploads.py).
    upload_dir = session_upload_dir(session)

    # A webcam snapshot (or the sample images) replaces the last upload's results, and an
    # upload the last snapshot's: whichever came last is analysed, by the same task.
    snapshot: reactive.Value[list[FileSource] | None] = reactive.value(None)
    camera_error: reactive.Value[str | None] = reactive.value(None)

    @reactive.effect
    @reactive.event(input.upload)
    def _upload_replaces_snapshot() -> None:
        snapshot.set(None)
        camera_error.set(None)

    @reactive.effect
    @reactive.event(input.webcam)
    def _take_snapshot() -> None:
        try:
            name, data = decode_snapshot(input.webcam())
        except WebcamError as exc:
            camera_error.set(str(exc))
            return
        camera_error.set(None)
        snapshot.set([(name, data)])

    @reactive.effect
    @reactive.event(input.samples)
    def _try_samples() -> None:
        camera_error.set(None)
        snapshot.set(sample_files())

    @reactive.calc
    def upload_list() -> UploadList | None:
        value = input.upload()
        return None if value is None else checked_upload_list(value)

    @reactive.calc
    def current_files() -> list[FileSource] | None:
        # A calc: the same list object until the upload or snapshot changes, which the
        # "is this the upload already analysed" checks below rely on.
        shot = snapshot()
        if shot is not None:
            return shot
        checked = upload_list()
        return checked.sources(upload_dir) if checked is not None else None

    requests = prediction.Requests()

    @reactive.effect
    def _start_analysis() -> None:
        files = current_files()
        info = selected_run()
        # Grad-CAM maps are computed only while the switch is on; switching it off
        # just hides the maps already made.
        with_saliency = bool(input.saliency())
        second = second_run()
        if not files:
            return
        cache = requests.start(files, info, with_saliency, second)
        if cache is not None:
            analysis_task.invoke(files, info, cache, with_saliency, second)

    @reactive.calc
    def analysis() -> Analysis | None:
        """The current upload's finished analysis, or None while it is being computed.

        Reads the task's status instead of ``analysis_task.result()``: the latter parks
        every dependent output in Shiny's "persistent progress" state, which the client
        then rejects ("unexpected state of: 'persistent'") when the value arrives.
        """
        files = current_files()
        if not files:
            return None
        state = analysis_task.status()
        if state == "error":
            # analyse_upload turns file and model failures into messages; anything that
            # still escapes is shown, never raised into the session.
            return Analysis.failed(files, selected_run(), analysis_task.error.get())
        if state != "success":
            return None
        done = analysis_task.value.get()
        if done.files is not files or done.info != selected_run():
            # An earlier request finished while a newer one waits: no stale cards.
            return None
        return done

    @render.ui
    def status() -> TagList:
        items: list[Tag] = []
        if not usable_runs():
            items.append(
                _alert(
                    session.ns("no_model"),
                    ui.strong("No trained model is installed. "),
                    "Uploaded images are still read and their faces found, but not "
                    "classified. ",
                    TRAIN_HINT,
                )
            )
        elif not mode_runs():
            other = MODES[MODE_FER7 if input.mode() == MODE_HAPPY_SAD else MODE_HAPPY_SAD]
            items.append(
                _alert(
                    session.ns("no_mode_model"),
                    f"No run for “{MODES[input.mode()]}” is installed; choose “{other}”. ",
                    TRAIN_HINT,
                )
            )
        broken = [r for r in runs() if r.problems]
        if broken:
            items.append(
                ui.div(
                    ui.strong("Runs that cannot be used: "),
                    ui.tags.ul(*[ui.tags.li(f"{r.name}: {'; '.join(r.problems)}") for r in broken]),
                    class_="alert alert-secondary small",
                    id=session.ns("broken_runs"),
                )
            )
        if camera_error() is not None:
            items.append(_alert(session.ns("camera_error"), camera_error()))
        checked = upload_list() if snapshot() is None else None
        notice = checked.notice() if checked is not None else None
        if notice:
            items.append(_alert(session.ns("upload_notice"), notice))
        files = current_files()
        if not files:
            items.append(
                ui.p(
                    "Choose one or more face images with “Browse”, or “Try sample images”.",
                    class_="text-body-secondary",
                    id=session.ns("hint"),
                )
            )
        elif (done := analysis()) is None:
            n = len(files)
            items.append(
                ui.div(
                    ui.span(class_="spinner-border spinner-border-sm me-2", role="status"),
                    f"Analysing {n} image{'s' if n != 1 else ''}…",
                    class_="text-body-secondary mb-3",
                    id=session.ns("working"),
                )
            )
        elif done.model_error:
            items.append(
                _alert(
                    session.ns("model_error"),
                    done.model_error,
                    " Other runs still work: choose one in the sidebar.",
                    kind="danger",
                )
            )
        return TagList(*items)

    @render.ui
    def results() -> TagList:
        done = analysis()
        if done is None:
            return TagList()
        if not usable_runs():
            why = "no trained model is installed."
        elif done.model_error:
            why = "the selected run's model cannot be loaded (see the message above)."
        else:
            why = "no run is selected."
        if input.view() == "grid":
            return TagList(
                ui.div(
                    *[
                        result_thumbnail(session.ns(f"thumb_{i}"), result, done.images[i])
                        for i, result in enumerate(done.results)
                    ],
                    class_="predict-thumbs",
                )
            )
        happy_sad = input.mode() == MODE_HAPPY_SAD
        with_saliency = bool(input.saliency())
        return TagList(
            *[
                result_card(
                    session.ns(f"result_{i}"),
                    result,
                    happy_sad,
                    why,
                    done.images[i],
                    done.saliency_card(i) if with_saliency else None,
                )
                for i, result in enumerate(done.results)
            ]
        )

    def counts() -> tuple[int, int]:
        """Files and classified faces of the finished analysis."""
        done = analysis()
        if done is None:
            return 0, 0
        return len(done.results), sum(len(r.faces) for r in done.results)

    def has_table() -> bool:
        # One row says nothing the card does not; two files or two faces make a table.
        files, faces = counts()
        return files >= 2 or faces >= 2

    @render.ui
    def table_card() -> Tag | None:
        if not has_table():
            return None
        files, faces = counts()
        return ui.card(
            ui.card_header(
                ui.span(
                    f"All files ({files})"
                    + (f", {faces} faces" if faces != files else "")
                ),
                ui.download_button("download_csv", "Download CSV", class_="btn-sm ms-auto"),
                class_="d-flex align-items-center gap-2",
            ),
            ui.output_data_frame("table"),
            id=session.ns("table_panel"),
        )

    @render.data_frame
    def table() -> render.DataGrid:
        req(has_table())
        # The run is the sidebar's: one value down a whole column says nothing on screen
        # (the CSV keeps it, where the file leaves the page).
        frame = prediction.results_table(analysis(), as_percent=True).drop(columns="run")
        message_col = frame.columns.get_loc("message")
        return render.DataGrid(
            frame,
            width="100%",
            # Error messages are sentences: give them room instead of a one-word column.
            styles=[{"location": "body", "cols": [message_col], "style": {"min-width": "22em"}}],
        )

    @render.download_button(
        filename=lambda: prediction.csv_filename(analysis()), media_type="text/csv"
    )
    def download_csv() -> Iterator[str]:
        yield prediction.csv_text(prediction.results_table(analysis(), as_percent=False))


def _alert(alert_id: str, *children: TagChild, kind: str = "warning") -> Tag:
    return ui.div(*children, class_=f"alert alert-{kind}", id=alert_id, role="alert")
