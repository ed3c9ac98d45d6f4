"""The Predict panel: upload face images, read the model's answer.

A Python port of the R Shiny app "Facial Expression Test", extended to several files,
seven expressions, face detection in real photos and a CSV of the results.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import cv2
import numpy as np
import pandas as pd
from htmltools import Tag, TagChild, TagList
from shiny import Inputs, Outputs, Session, module, reactive, render, req, ui

from .. import plots, saliency, wording
from ..imaging import ACCEPT, MAX_PIXELS, MAX_UPLOAD_BYTES, png_data_uri, shrink_to_max_side
from ..inference import FileSource, ImageResult, PrepareCache, analyse
from ..inspect_data import selector_choices
from ..model_store import LoadedRun, get_loaded_run
from ..predictor import ModelLoadError
from ..rundir import FER2013_CLASSES, RunInfo, RunListing
from ..webcam import WebcamError, decode_snapshot
from .uploads import UploadList, checked_upload_list, session_upload_dir
from .webcam_button import snapshot_button

MODE_FER7 = "fer7"
MODE_HAPPY_SAD = "happy_sad"
MODES = {MODE_FER7: "Seven expressions", MODE_HAPPY_SAD: "Happy vs sad (original app)"}
#: The run each mode selects when it exists (the names of the shipped runs).
DEFAULT_RUN = {MODE_FER7: "fer7", MODE_HAPPY_SAD: "happy_sad"}

TITLE = "Facial Expression Test"
SUBTITLE = "Let's calculate image expression percentage for happy or sad."
TRAIN_HINT = TagList(
    "Train one with ",
    ui.code("python -m training train"),
    " (see docs/training.md); it appears here without restarting the app.",
)

PREVIEW_MAX_SIDE = 360
CROP_DISPLAY_SIDE = 144

_CSS = """
.predict-result .card-header { font-weight: 600; overflow-wrap: anywhere; }
.predict-result figure { margin: 0; text-align: center; }
.predict-result figcaption { font-size: .85rem; color: var(--bs-secondary-color); margin-top: .25rem; }
.predict-result img.upload-preview { max-width: 100%; height: auto; border-radius: .25rem; }
.predict-result img.face-crop { width: 144px; height: 144px; image-rendering: pixelated;
  border: 1px solid var(--bs-border-color); border-radius: .25rem; }
.predict-result img.prob-chart { max-width: 100%; height: auto; }
.predict-result .expression-sentence { font-size: 1.15rem; font-weight: 500; margin: .5rem 0 0; }
.predict-result .top-class { font-size: 1.15rem; font-weight: 500; margin: .5rem 0 0; }
.predict-result .crop-column { display: flex; flex-direction: column; gap: .5rem; align-items: center; }
"""


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
                "Colour images are converted to greyscale. In a photo the faces are found "
                "by BlazeFace (OpenCV's Haar cascade when it finds none) and the largest one "
                "is classified; small images "
                "(up to 96 px) are taken to be face crops already. "
                f"Up to {MAX_UPLOAD_BYTES // (1024 * 1024)} MB and "
                f"{MAX_PIXELS // 1_000_000} megapixels per file.",
                class_="small text-body-secondary",
            ),
            # One frame from the browser's camera, then the same path as an upload.
            snapshot_button("webcam", replaces="upload"),
            ui.input_switch("saliency", "Show where the model looked (Grad-CAM)", value=False),
            width=320,
            open="always",
        ),
        ui.tags.style(_CSS),
        ui.h2(TITLE, class_="mb-1"),
        ui.p(SUBTITLE, class_="lead text-body-secondary"),
        ui.output_ui("status"),
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
        happy_sad = input.mode() == MODE_HAPPY_SAD
        return [info for info in usable_runs() if info.is_happy_sad == happy_sad]

    mode_chosen = False

    @reactive.effect
    def _start_in_a_mode_that_has_runs() -> None:
        # Once per session: with only happy-vs-sad runs installed (or only others), open
        # in the mode that can answer instead of one that says "no run installed".
        nonlocal mode_chosen
        infos = usable_runs()
        if mode_chosen or not infos:
            return
        mode_chosen = True
        has_happy_sad = any(info.is_happy_sad for info in infos)
        has_other = any(not info.is_happy_sad for info in infos)
        with reactive.isolate():
            mode = input.mode()
        if mode == MODE_FER7 and has_happy_sad and not has_other:
            ui.update_radio_buttons("mode", selected=MODE_HAPPY_SAD)
        elif mode == MODE_HAPPY_SAD and has_other and not has_happy_sad:
            ui.update_radio_buttons("mode", selected=MODE_FER7)

    def _default_choice(infos: list[RunInfo]) -> str | None:
        named = [info for info in infos if info.name == DEFAULT_RUN.get(input.mode())]
        # A run trained under the same name in another runs folder must not take the
        # shipped model's place: prefer the one with the seven FER2013 classes.
        named.sort(key=lambda info: tuple(info.classes) != tuple(FER2013_CLASSES))
        if named:
            return str(named[0].path)
        return str(infos[0].path) if infos else None

    @reactive.effect
    def _update_run_choices() -> None:
        infos = mode_runs()
        choices = selector_choices((info.path, info.name, info.label) for info in infos)
        with reactive.isolate():
            current = input.run()
        selected = current if current in choices else _default_choice(infos)
        ui.update_select("run", choices=choices, selected=selected)

    @reactive.calc
    def selected_run() -> RunInfo | None:
        infos = mode_runs()
        chosen = input.run()
        for info in infos:
            if str(info.path) == chosen:
                return info
        # The select lags one round-trip behind a mode switch: use the mode's default.
        default = _default_choice(infos)
        return next((info for info in infos if str(info.path) == default), None)

    @reactive.effect
    def _preload() -> None:
        # Load (and trace) the chosen model in the background while the person picks a
        # file, so the first upload does not wait for TensorFlow's import.
        info = selected_run()
        if info is not None:
            threading.Thread(target=_load_quietly, args=(info,), daemon=True).start()

    # Decoding, face detection, model loading and the model all run in a worker thread
    # (an ExtendedTask): the reactive lock is global to the process, so work done inside
    # a calc, even an async one, would hold every other session's clicks and uploads.
    @reactive.extended_task
    async def analysis_task(
        files: list[FileSource], info: RunInfo | None, cache: PrepareCache, with_saliency: bool = False
    ) -> _Analysis:
        return await asyncio.to_thread(_analyse_upload, files, info, cache, with_saliency)

    # Only files Shiny stored for this session are ever opened (see uploads.py).
    upload_dir = session_upload_dir(session)

    # A webcam snapshot replaces the last upload's results, and an upload the last
    # snapshot's: whichever came last is analysed, by the same task.
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

    @reactive.calc
    def upload_list() -> UploadList | None:
        # A calc: the same checked list object until the input changes, which the
        # "is this the upload already analysed" checks below rely on.
        value = input.upload()
        return None if value is None else checked_upload_list(value)

    @reactive.calc
    def current_files() -> list[FileSource] | None:
        shot = snapshot()
        if shot is not None:
            return shot
        checked = upload_list()
        return checked.sources(upload_dir) if checked is not None else None

    # Decoded and cropped images of the current upload: switching model or mode re-runs
    # only the model. A new dict per upload, so it holds one upload at most; tasks of one
    # session run one after another, so it is never used by two threads at once.
    prepare_cache: list[PrepareCache] = [{}]
    requested: list[tuple[object, RunInfo | None, bool]] = [(None, None, False)]

    @reactive.effect
    def _start_analysis() -> None:
        files = current_files()
        info = selected_run()
        # Grad-CAM maps are computed only while the switch is on; switching it off
        # just hides the maps already made.
        with_saliency = bool(input.saliency())
        if not files:
            return
        last_files, last_info, last_saliency = requested[0]
        if files is last_files and info == last_info and (last_saliency or not with_saliency):
            return
        if files is not last_files:
            prepare_cache[0] = {}
        requested[0] = (files, info, with_saliency)
        analysis_task.invoke(files, info, prepare_cache[0], with_saliency)

    @reactive.calc
    def analysis() -> _Analysis | None:
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
            # _analyse_upload turns file and model failures into messages; anything that
            # still escapes is shown, never raised into the session.
            exc = analysis_task.error.get()
            return _Analysis(
                files=files,
                info=selected_run(),
                results=[],
                model_error=(
                    f"The analysis failed ({type(exc).__name__}: {exc}). "
                    "Upload the files again to retry."
                ),
            )
        if state != "success":
            return None
        done = analysis_task.value.get()
        if done.files is not files or done.info != selected_run():
            # An earlier request finished while a newer one waits: no stale cards.
            return None
        return done

    @reactive.calc
    def image_results() -> list[ImageResult]:
        done = analysis()
        return done.results if done is not None else []

    @render.ui
    def status() -> TagList:
        items: list[Tag] = []
        if not usable_runs():
            items.append(
                ui.div(
                    ui.strong("No trained model is installed. "),
                    "Uploaded images are still read and their faces found, but not "
                    "classified. ",
                    TRAIN_HINT,
                    class_="alert alert-warning",
                    id=session.ns("no_model"),
                    role="alert",
                )
            )
        elif not mode_runs():
            other = MODES[MODE_FER7 if input.mode() == MODE_HAPPY_SAD else MODE_HAPPY_SAD]
            items.append(
                ui.div(
                    f"No run for “{MODES[input.mode()]}” is installed; choose “{other}”. ",
                    TRAIN_HINT,
                    class_="alert alert-warning",
                    id=session.ns("no_mode_model"),
                    role="alert",
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
            items.append(
                ui.div(
                    camera_error(),
                    class_="alert alert-warning",
                    id=session.ns("camera_error"),
                    role="alert",
                )
            )
        checked = upload_list() if snapshot() is None else None
        notice = checked.notice() if checked is not None else None
        if notice:
            items.append(
                ui.div(notice, class_="alert alert-warning", id=session.ns("upload_notice"), role="alert")
            )
        if current_files():
            done = analysis()
            if done is None:
                n = len(current_files())
                items.append(
                    ui.div(
                        ui.span(class_="spinner-border spinner-border-sm me-2", role="status"),
                        f"Analysing {n} image{'s' if n != 1 else ''}…",
                        class_="text-body-secondary mb-3",
                        id=session.ns("working"),
                    )
                )
            error = done.model_error if done is not None else None
            if error:
                items.append(
                    ui.div(
                        error,
                        " Other runs still work: choose one in the sidebar.",
                        class_="alert alert-danger",
                        id=session.ns("model_error"),
                        role="alert",
                    )
                )
        else:
            items.append(
                ui.p(
                    "Choose one or more face images with “Browse”.",
                    class_="text-body-secondary",
                    id=session.ns("hint"),
                )
            )
        return TagList(*items)

    @render.ui
    def results() -> TagList:
        finished = analysis()
        maps = finished.saliency if finished is not None else None
        charts = finished.charts if finished is not None else ()
        images = finished.images if finished is not None else ()
        done_maps = maps if input.saliency() else None
        happy_sad = input.mode() == MODE_HAPPY_SAD
        if not usable_runs():
            why = "no trained model is installed."
        elif (done := analysis()) is not None and done.model_error:
            why = "the selected run's model cannot be loaded (see the message above)."
        else:
            why = "no run is selected."
        return TagList(
            *[
                _result_card(
                    session.ns(f"result_{i}"),
                    result,
                    happy_sad,
                    why,
                    *_saliency_of(done_maps, i),
                    chart_uri=charts[i] if i < len(charts) else None,
                    images=images[i] if i < len(images) else None,
                )
                for i, result in enumerate(image_results())
            ]
        )

    @render.ui
    def table_card() -> Tag | None:
        if len(image_results()) < 2:
            return None
        return ui.card(
            ui.card_header(
                ui.span(f"All files ({len(image_results())})"),
                ui.download_button("download_csv", "Download CSV", class_="btn-sm ms-auto"),
                class_="d-flex align-items-center gap-2",
            ),
            ui.output_data_frame("table"),
            id=session.ns("table_panel"),
        )

    @render.data_frame
    def table() -> render.DataGrid:
        rows = image_results()
        req(len(rows) >= 2)
        # The run is the sidebar's: one value down a whole column says nothing on screen
        # (the CSV keeps it, where the file leaves the page).
        frame = _frame_of(analysis(), as_percent=True).drop(columns="run")
        message_col = frame.columns.get_loc("message")
        return render.DataGrid(
            frame,
            width="100%",
            # Error messages are sentences: give them room instead of a one-word column.
            styles=[{"location": "body", "cols": [message_col], "style": {"min-width": "22em"}}],
        )

    def _csv_filename() -> str:
        # Named after the run, so that files saved from several runs do not overwrite
        # one another or lose which model answered.
        done = analysis()
        run = done.info.name if done is not None and done.info is not None else "no-model"
        return f"ferdash-{re.sub(r'[^A-Za-z0-9_.-]+', '_', run)}-predictions.csv"

    @render.download_button(filename=_csv_filename, media_type="text/csv")
    def download_csv() -> Iterator[str]:
        yield csv_text(_frame_of(analysis(), as_percent=False))


@dataclass(frozen=True)
class _Analysis:
    """The results of one upload with one run, and the run's load error if any."""

    files: object  # the upload's list, to tell this upload's results from an earlier one's
    info: RunInfo | None
    results: list[ImageResult]
    model_error: str | None
    #: Grad-CAM (overlay, note) per result, or why there are none; None when they were
    #: not asked for.
    saliency: list[SaliencyCard] | str | None = None
    #: The probability chart (PNG data URI) per result; None where no model ran.
    charts: tuple[str | None, ...] = ()
    #: (boxed preview, model input) PNG data URIs per result; None for unreadable files.
    images: tuple[tuple[str, str] | None, ...] = ()


def _analyse_upload(
    files: list[FileSource],
    info: RunInfo | None,
    cache: PrepareCache,
    with_saliency: bool = False,
) -> _Analysis:
    # Runs in a worker thread: the model store's locks make loading safe, and the traced
    # predictor may be called from several threads.
    model: LoadedRun | None = None
    error: str | None = None
    if info is not None:
        try:
            model = get_loaded_run(info)
        except ModelLoadError as exc:
            error = f"The model of run “{info.name}” cannot be used: {exc}"
        except Exception as exc:  # e.g. TensorFlow failing to import: still show the images
            error = f"The model of run “{info.name}” cannot be used ({type(exc).__name__}: {exc})"
    results = analyse(files, model, cache)
    maps = _saliency_overlays(results, model) if with_saliency and model is not None else None
    # Every image of the cards is encoded here, off the event loop: an upload of 100 files
    # would otherwise stall all sessions while its previews are PNG-encoded.
    charts = tuple(_probability_chart(r) for r in results)
    images = tuple(_card_images(r) for r in results)
    return _Analysis(
        files=files,
        info=info,
        results=results,
        model_error=error,
        saliency=maps,
        charts=charts,
        images=images,
    )


def _card_images(result: ImageResult) -> tuple[str, str] | None:
    if not result.ok or result.prepared is None:
        return None
    return png_data_uri(_preview_with_box(result)), png_data_uri(result.prepared.crop)


def _probability_chart(result: ImageResult) -> str | None:
    # Drawn here, in the worker, because a Matplotlib figure costs tens of milliseconds:
    # on the event loop that would stall every session's outputs.
    if result.probs is None:
        return None
    fig = plots.probability_bar_chart(result.classes, result.probs)
    data = base64.b64encode(plots.figure_png_bytes(fig)).decode("ascii")
    return f"data:image/png;base64,{data}"


#: A Grad-CAM overlay (PNG data URI) or the reason there is none, per card.
SaliencyCard = tuple[str | None, str | None]


def _saliency_overlays(results: list[ImageResult], model: LoadedRun) -> list[SaliencyCard] | str:
    """(overlay, note) per card ((None, None) for faces not classified), or why no card
    has a map."""
    shown = [i for i, r in enumerate(results) if r.ok and r.probs is not None]
    cards: list[SaliencyCard] = [(None, None)] * len(results)
    if not shown:
        return cards
    crops = np.stack([results[i].prepared.crop for i in shown])
    # The class the card names: the argmax of the probabilities shown (TTA included).
    chosen = [int(np.argmax(results[i].probs)) for i in shown]
    try:
        maps = saliency.run_saliency(model, crops, chosen)
    except saliency.SaliencyError as exc:
        return f"No Grad-CAM map: {exc}"
    for j, i in enumerate(shown):
        if not np.any(maps[j] > 0):
            # Every region of the last feature map argued (slightly) against the class:
            # an overlay would be the bare crop, which reads as "looked nowhere".
            cards[i] = (None, wording.no_saliency_text(results[i].classes[chosen[j]]))
        else:
            cards[i] = (png_data_uri(saliency.overlay(results[i].prepared.crop, maps[j])), None)
    return cards


def _saliency_of(maps: list[SaliencyCard] | str | None, index: int) -> SaliencyCard:
    """(overlay URI, note) for the card at ``index``."""
    if maps is None:
        return None, None
    if isinstance(maps, str):
        return None, maps
    return maps[index] if index < len(maps) else (None, None)


def _load_quietly(info: RunInfo) -> None:
    try:
        get_loaded_run(info)
    except Exception:
        pass  # the error is cached and shown when the person uploads


def _frame_of(done: _Analysis | None, as_percent: bool) -> pd.DataFrame:
    if done is None:
        return results_frame([], as_percent)
    return results_frame(
        done.results,
        as_percent,
        run=done.info.name if done.info is not None else None,
        model_error=done.model_error,
    )


def results_frame(
    results: list[ImageResult],
    as_percent: bool,
    run: str | None = None,
    model_error: str | None = None,
) -> pd.DataFrame:
    """One row per file: file, the run that answered, face found, number of faces, top
    class, every class probability, message.

    ``model_error`` is the run's load failure, the message of every row that has no
    error of its own: the table and the CSV say why no probabilities are there.
    """
    classes: list[str] = []
    for result in results:
        for name in result.classes:
            if name not in classes:
                classes.append(name)
    rows = []
    for result in results:
        prepared = result.prepared
        row: dict[str, object] = {"file": result.name, "run": run or ""}
        if prepared is None:
            row["face found"] = ""
            row["faces"] = None
        elif prepared.tight_crop:
            row["face found"] = "small image"
            row["faces"] = None
        elif prepared.box is None:
            row["face found"] = "no"
            row["faces"] = 0
        else:
            row["face found"] = "yes"
            row["faces"] = prepared.faces_found
        top = result.top
        row["top class"] = top[0] if top else ""
        scale = 100.0 if as_percent else 1.0
        digits = 1 if as_percent else 4
        row["top probability" + (" (%)" if as_percent else "")] = (
            round(top[1] * scale, digits) if top else None
        )
        for name in classes:
            value = None
            if result.probs is not None and name in result.classes:
                value = round(float(result.probs[result.classes.index(name)]) * scale, digits)
            row[name + (" (%)" if as_percent else "")] = value
        row["message"] = result.error or result.model_error or model_error or ""
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "faces" in frame:
        # Counts, not measurements: a blank among them must not turn 1 into 1.0.
        frame["faces"] = frame["faces"].astype("Int64")
    return frame


def csv_text(frame: pd.DataFrame) -> str:
    """The frame as CSV, with file names defused for spreadsheets.

    A name starting with = + - @ would run as a formula when the CSV is opened in a
    spreadsheet; a leading apostrophe keeps it text.
    """
    frame = frame.copy()
    if "file" in frame:
        frame["file"] = [
            "'" + name if name[:1] in ("=", "+", "-", "@", "\t", "\r") else name
            for name in frame["file"].astype(str)
        ]
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    return buf.getvalue()


def _preview_with_box(result: ImageResult) -> np.ndarray:
    prepared = result.prepared
    assert prepared is not None
    height, width = prepared.preview.shape
    grey, scale = shrink_to_max_side(prepared.preview, PREVIEW_MAX_SIDE)
    if scale == 1.0 and max(height, width) < CROP_DISPLAY_SIDE:
        # A 48x48 crop would be a speck: enlarge by a whole factor, keeping its pixels sharp.
        scale = float(CROP_DISPLAY_SIDE // max(height, width))
        grey = cv2.resize(
            grey, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_NEAREST
        )
    rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    if prepared.box is not None:
        box = prepared.box
        scale *= prepared.preview_scale  # the box is in working-image pixels
        thickness = max(2, round(max(rgb.shape[:2]) / 150))
        cv2.rectangle(
            rgb,
            (round(box.x * scale), round(box.y * scale)),
            (round((box.x + box.w) * scale), round((box.y + box.h) * scale)),
            (40, 200, 60),
            thickness,
        )
    return rgb


def _result_card(
    card_id: str,
    result: ImageResult,
    happy_sad: bool,
    unclassified_reason: str = "",
    saliency_uri: str | None = None,
    saliency_note: str | None = None,
    chart_uri: str | None = None,
    images: tuple[str, str] | None = None,
) -> Tag:
    # The file name is only ever display text; htmltools escapes it.
    header = ui.card_header(result.name or "(unnamed file)")
    if not result.ok:
        return ui.card(
            header,
            ui.div(result.error, class_="alert alert-danger mb-0 upload-error", role="alert"),
            class_="predict-result predict-error",
            id=card_id,
        )
    prepared = result.prepared
    assert prepared is not None
    width, height = prepared.original_size
    details = f"{width} x {height} {prepared.format}"
    if prepared.multi_frame:
        details += ", first frame"
    faces_line = wording.faces_text(
        prepared.faces_found,
        prepared.tight_crop,
        classified=result.probs is not None,
        detector=prepared.box.detector if prepared.box else None,
    )
    # Encoded in the worker with the analysis (_card_images), never here on the event loop.
    preview_uri, crop_uri = images or ("", "")
    crop_caption = f"Model input {prepared.crop.shape[1]} x {prepared.crop.shape[0]}"
    if prepared.whole_image:
        crop_caption += " (whole image)"

    body: list[Tag] = [
        ui.tags.figure(
            ui.img(
                src=preview_uri,
                alt=f"uploaded image {result.name}",
                class_="upload-preview",
            ),
            ui.tags.figcaption(details, ui.br(), ui.span(faces_line, class_="faces-found")),
        ),
        ui.tags.figure(
            ui.img(src=crop_uri, alt="face crop fed to the model", class_="face-crop"),
            ui.tags.figcaption(crop_caption, class_="crop-caption"),
        ),
    ]
    if result.probs is not None and (saliency_uri or saliency_note):
        cam: Tag = (
            ui.tags.figure(
                ui.img(src=saliency_uri, alt="Grad-CAM heatmap over the face crop",
                       class_="face-crop saliency-map"),
                ui.tags.figcaption("Grad-CAM: warm = evidence for the answer"),
            )
            if saliency_uri
            else ui.div(saliency_note, class_="small text-body-secondary saliency-note")
        )
        body[1] = ui.div(body[1], cam, class_="crop-column")
    answer: list[Tag] = []
    if result.probs is not None:
        if chart_uri:
            body.append(
                ui.tags.figure(
                    ui.img(src=chart_uri, alt="bar chart of class probabilities", class_="prob-chart")
                )
            )
        if happy_sad and {"happy", "sad"} <= set(result.classes):
            answer.append(
                ui.p(
                    wording.happy_sad_sentence(result.classes, result.probs),
                    class_="expression-sentence",
                )
            )
        else:
            answer.append(
                ui.p(wording.top_class_text(result.classes, result.probs), class_="top-class")
            )
    elif result.model_error:
        answer.append(ui.div(result.model_error, class_="alert alert-danger model-error"))
    else:
        answer.append(
            ui.p(
                f"Not classified: {unclassified_reason or 'no usable model is selected.'}",
                class_="text-body-secondary no-prediction",
            )
        )
    return ui.card(
        header,
        ui.layout_columns(*body, col_widths=[5, 3, 4] if len(body) == 3 else [6, 6]),
        *answer,
        class_="predict-result",
        id=card_id,
    )
