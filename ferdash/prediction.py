"""One upload and one run, turned into what the Predict page shows.

The model loaded (or why it cannot be), every file analysed (:func:`ferdash.inference.analyse`),
Grad-CAM overlays, each card's pictures as PNG data URIs, the results table and its CSV.
The panel (:mod:`ferdash.panels.predict_panel`) runs :func:`analyse_upload` in a worker
thread and draws the :class:`Analysis` it returns; which run a mode opens on is decided
here too.

No Shiny import: the panel calls these functions, and tests call them directly.
"""

from __future__ import annotations

import io
import re
import threading
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from . import plots, saliency, wording
from .imaging import png_bytes_data_uri, png_data_uri, shrink_to_max_side
from .inference import FaceResult, FileSource, ImageResult, PrepareCache, analyse
from .runs.model_store import LoadedRun, get_loaded_run
from .runs.predictor import ModelLoadError
from .runs.rundir import DEFAULT_RUN_NAME, RunInfo, preferred_run

MODE_FER7 = "fer7"
MODE_HAPPY_SAD = "happy_sad"
MODES = {MODE_FER7: "Seven expressions", MODE_HAPPY_SAD: "Happy vs sad (original app)"}
#: The run each mode selects when it exists (the names of the shipped runs).
DEFAULT_RUN = {MODE_FER7: DEFAULT_RUN_NAME, MODE_HAPPY_SAD: "happy_sad"}

#: Long side of the uploaded image as a card shows it.
PREVIEW_MAX_SIDE = 360
#: Side of the model-input crop on a card; a smaller preview is enlarged to it.
CROP_DISPLAY_SIDE = 144

#: A Grad-CAM overlay (PNG data URI) or the reason there is none, per card.
SaliencyCard = tuple[str | None, str | None]


def runs_for_mode(infos: Sequence[RunInfo], mode: str) -> list[RunInfo]:
    """The runs a mode offers: the happy-vs-sad ones, or all the others."""
    happy_sad = mode == MODE_HAPPY_SAD
    return [info for info in infos if info.is_happy_sad == happy_sad]


def default_run(infos: Sequence[RunInfo], mode: str) -> RunInfo | None:
    """The run the mode selects first: its shipped run's name if there, else the first."""
    return preferred_run(infos, DEFAULT_RUN.get(mode))


def opening_mode(infos: Sequence[RunInfo], mode: str) -> str | None:
    """The mode to switch to from ``mode`` when only the other mode's runs are installed
    (so the page opens in a mode that can answer); None to stay."""
    has_happy_sad = any(info.is_happy_sad for info in infos)
    has_other = any(not info.is_happy_sad for info in infos)
    if mode == MODE_FER7 and has_happy_sad and not has_other:
        return MODE_HAPPY_SAD
    if mode == MODE_HAPPY_SAD and has_other and not has_happy_sad:
        return MODE_FER7
    return None


@dataclass(frozen=True)
class FaceImages:
    """The pictures of one face's section of a card, as PNG data URIs."""

    crop: str  # the model's input
    chart: str | None  # the probabilities; None where no model ran


@dataclass(frozen=True)
class CardImages:
    """The pictures of one readable file's card, as PNG data URIs."""

    preview: str  # the image, each classified face boxed, numbered and labelled
    faces: tuple[FaceImages, ...]  # per face of the result, in order


@dataclass(frozen=True)
class Analysis:
    """The results of one upload with one run, and the run's load error if any."""

    files: object  # the upload's list, to tell this upload's results from an earlier one's
    info: RunInfo | None
    results: list[ImageResult]
    model_error: str | None
    #: Grad-CAM (overlay, note) per face of each result, or why there are none; None
    #: when they were not asked for.
    saliency: list[list[SaliencyCard]] | str | None = None
    #: The pictures per result; None for unreadable files.
    images: tuple[CardImages | None, ...] = ()

    @classmethod
    def failed(cls, files: object, info: RunInfo | None, exc: BaseException) -> Analysis:
        """What the page shows when the analysis itself raised: the message, no cards."""
        return cls(
            files=files,
            info=info,
            results=[],
            model_error=(
                f"The analysis failed ({type(exc).__name__}: {exc}). "
                "Upload the files again to retry."
            ),
        )

    def saliency_card(self, index: int) -> list[SaliencyCard]:
        """(overlay URI, note) per face of the card at ``index``."""
        faces = len(self.results[index].faces)
        if self.saliency is None:
            return [(None, None)] * faces
        if isinstance(self.saliency, str):
            return [(None, self.saliency)] * faces
        return self.saliency[index]


class Requests:
    """The analyses one page has asked for, so that each is started once.

    Holds the prepare cache (decoded and cropped images) of the current upload: switching
    model or mode re-runs only the model. A new dict per upload, so it holds one upload
    at most; a page's analyses run one after another, so it is never used by two
    threads at once.
    """

    def __init__(self) -> None:
        self._last: tuple[object, RunInfo | None, bool, RunInfo | None] = (None, None, False, None)
        self._cache: PrepareCache = {}

    def start(
        self, files: object, info: RunInfo | None, with_saliency: bool, second: RunInfo | None = None
    ) -> PrepareCache | None:
        """The prepare cache to analyse ``files`` with, or None when the last request
        covers this one: the same upload (the same list object) and runs, with Grad-CAM
        maps already made if they are wanted."""
        last_files, last_info, last_saliency, last_second = self._last
        if (
            files is last_files
            and info == last_info
            and second == last_second
            and (last_saliency or not with_saliency)
        ):
            return None
        if files is not last_files:
            self._cache = {}
        self._last = (files, info, with_saliency, second)
        return self._cache


def load_model(info: RunInfo) -> tuple[LoadedRun | None, str | None]:
    """The run's model, or None and the message that says why it cannot be used."""
    try:
        return get_loaded_run(info), None
    except ModelLoadError as exc:
        return None, f"The model of run “{info.name}” cannot be used: {exc}"
    except Exception as exc:  # e.g. TensorFlow failing to import: still show the images
        return None, f"The model of run “{info.name}” cannot be used ({type(exc).__name__}: {exc})"


def preload(info: RunInfo) -> None:
    """Load (and trace) the run's model in a background thread, so the first upload does
    not wait for TensorFlow's import; a failure is cached and shown at the upload."""
    threading.Thread(target=load_model, args=(info,), daemon=True).start()


def second_opinion_run(infos: Sequence[RunInfo], mode: str) -> RunInfo | None:
    """In happy-vs-sad mode, the seven-expression run that also reads each face (so the
    card can say when a face is clearly neither happy nor sad); None in other modes."""
    if mode != MODE_HAPPY_SAD:
        return None
    return default_run(runs_for_mode(infos, MODE_FER7), MODE_FER7)


def analyse_upload(
    files: Sequence[FileSource],
    info: RunInfo | None,
    cache: PrepareCache,
    with_saliency: bool = False,
    second: RunInfo | None = None,
) -> Analysis:
    """Everything the page shows for ``files`` with run ``info`` (None: no model), and
    run ``second``'s reading of every face (see :func:`second_opinion_run`).

    For a worker thread: the model store's locks make loading safe, and the traced
    predictor may be called from several threads.
    """
    model, error = load_model(info) if info is not None else (None, None)
    second_model = load_model(second)[0] if second is not None and model is not None else None
    results = analyse(files, model, cache, second=second_model)
    maps = saliency_overlays(results, model) if with_saliency and model is not None else None
    # Every image of the cards is encoded here, off the event loop: an upload of 100 files
    # would otherwise stall all sessions while its previews are PNG-encoded.
    return Analysis(
        files=files,
        info=info,
        results=results,
        model_error=error,
        saliency=maps,
        images=tuple(card_images(r) for r in results),
    )


def card_images(result: ImageResult) -> CardImages | None:
    """The card's pictures; None for a file that could not be read."""
    if not result.ok or result.prepared is None:
        return None
    return CardImages(
        preview=png_data_uri(preview_with_boxes(result)),
        faces=tuple(
            FaceImages(crop=png_data_uri(face.crop), chart=probability_chart(face))
            for face in result.faces
        ),
    )


def probability_chart(face: FaceResult) -> str | None:
    # A Matplotlib figure costs tens of milliseconds: on the event loop that would stall
    # every session's outputs.
    if face.probs is None:
        return None
    fig = plots.probability_bar_chart(face.classes, face.probs)
    return png_bytes_data_uri(plots.figure_png_bytes(fig))


def saliency_overlays(
    results: Sequence[ImageResult], model: LoadedRun
) -> list[list[SaliencyCard]] | str:
    """(overlay, note) per face of each card ((None, None) for faces not classified), or
    why no card has a map. One Grad-CAM batch for every face of the upload."""
    cards: list[list[SaliencyCard]] = [[(None, None)] * len(r.faces) for r in results]
    shown = [
        (i, face)
        for i, r in enumerate(results)
        if r.ok
        for face in r.faces
        if face.probs is not None
    ]
    if not shown:
        return cards
    crops = np.stack([face.crop for _, face in shown])
    # The class the card names, so the map explains the answer shown (TTA included).
    named = [face.top[0] for _, face in shown]
    chosen = [face.classes.index(name) for (_, face), name in zip(shown, named)]
    try:
        maps = saliency.run_saliency(model, crops, chosen)
    except saliency.SaliencyError as exc:
        return f"No Grad-CAM map: {exc}"
    for j, (i, face) in enumerate(shown):
        if not np.any(maps[j] > 0):
            # No region argued for the class against a blank (a flat crop): an overlay
            # would be the bare crop, which reads as "looked nowhere".
            cards[i][face.number - 1] = (None, wording.no_saliency_text(named[j]))
        else:
            cards[i][face.number - 1] = (png_data_uri(saliency.overlay(face.crop, maps[j])), None)
    return cards


#: Colours of the boxes drawn on the photo (RGB): a confident answer, an uncertain one.
BOX_COLOUR = (40, 200, 60)
UNCERTAIN_BOX_COLOUR = (235, 160, 20)


def box_label(face: FaceResult) -> str:
    """What the photo shows beside a face's box: its number, and its answer when there
    is one ("2 sad? 38%" for an uncertain one)."""
    top = face.top
    if top is None:
        return str(face.number)
    uncertain = wording.is_uncertain(face.classes, face.probs)
    return f"{face.number} {top[0]}{'?' if uncertain else ''} {wording.percent(top[1])}%"


def preview_with_boxes(result: ImageResult) -> np.ndarray:
    """The readable file's preview as RGB, at most :data:`PREVIEW_MAX_SIDE`, every
    classified face boxed and labelled with its number and answer."""
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
    scale *= prepared.preview_scale  # the boxes are in working-image pixels
    thickness = max(1, round(max(rgb.shape[:2]) / 240))
    font_scale = max(0.35, max(rgb.shape[:2]) / 900)
    for face in result.faces:
        if face.box is None:
            continue
        box = face.box
        uncertain = face.probs is not None and wording.is_uncertain(face.classes, face.probs)
        colour = UNCERTAIN_BOX_COLOUR if uncertain else BOX_COLOUR
        x0, y0 = round(box.x * scale), round(box.y * scale)
        x1, y1 = round((box.x + box.w) * scale), round((box.y + box.h) * scale)
        cv2.rectangle(rgb, (x0, y0), (x1, y1), colour, thickness + 1)
        label = box_label(face)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        # Above the box where there is room, else inside its top edge.
        ty = y0 - 3 if y0 - th - base - 3 >= 0 else y0 + th + 3
        tx = min(max(0, x0), max(0, rgb.shape[1] - tw))
        cv2.rectangle(rgb, (tx, ty - th - 2), (tx + tw + 2, ty + base), colour, -1)
        cv2.putText(rgb, label, (tx + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                    thickness, cv2.LINE_AA)
    return rgb


def results_table(done: Analysis | None, as_percent: bool) -> pd.DataFrame:
    """The table of :func:`results_frame` for a finished analysis (empty for None)."""
    if done is None:
        return results_frame([], as_percent)
    return results_frame(
        done.results,
        as_percent,
        run=done.info.name if done.info is not None else None,
        model_error=done.model_error,
    )


def results_frame(
    results: Sequence[ImageResult],
    as_percent: bool,
    run: str | None = None,
    model_error: str | None = None,
) -> pd.DataFrame:
    """One row per face (a file with no face or an error keeps one row): file, face
    number, answer, top probability, message, every class probability, then the top
    class, whether a face was found, how many, the face's box in the file's pixels, the
    detector and the run that answered.

    ``model_error`` is the run's load failure, the message of every row that has no
    error of its own: the table and the CSV say why no probabilities are there.
    """
    classes: list[str] = []
    for result in results:
        for name in result.classes:
            if name not in classes:
                classes.append(name)
    top_column, *class_columns = probability_columns(classes, as_percent)
    scale = 100.0 if as_percent else 1.0
    digits = 1 if as_percent else 4
    rows = []
    for result in results:
        prepared = result.prepared
        for face in result.faces or (None,):
            row: dict[str, object] = {"file": result.name}
            row["face"] = face.number if face is not None and face.box is not None else None
            top = face.top if face is not None else None
            row["answer"] = wording.answer(face.classes, face.probs) if top else ""
            row[top_column] = round(top[1] * scale, digits) if top else None
            message = result.error or result.model_error or model_error or ""
            if not message and face is not None and not face.is_face:
                message = "No face found: not a face reading (the whole image was classified)."
            row["message"] = message
            for name, column in zip(classes, class_columns):
                value = None
                if face is not None and face.probs is not None and name in face.classes:
                    value = round(float(face.probs[face.classes.index(name)]) * scale, digits)
                row[column] = value
            row["top class"] = top[0] if top else ""
            if prepared is None:
                row["face found"], row["faces"] = "", None
            elif prepared.tight_crop:
                row["face found"], row["faces"] = "small image", None
            elif prepared.whole_image:
                row["face found"], row["faces"] = "no", 0
            else:
                row["face found"], row["faces"] = "yes", prepared.faces_found
            box = prepared.box_in_file(face.box) if face is not None and face.box is not None else None
            for key, value in zip(("x", "y", "w", "h"), box or (None,) * 4):
                row[key] = value
            row["detector"] = face.box.detector if face is not None and face.box is not None else ""
            row["run"] = run or ""
            rows.append(row)
    frame = pd.DataFrame(rows)
    for column in ("face", "faces", "x", "y", "w", "h"):
        if column in frame:
            # Counts and pixels, not measurements: a blank among them must not turn 1 into 1.0.
            frame[column] = frame[column].astype("Int64")
    return frame


def probability_columns(classes: Sequence[str], as_percent: bool) -> list[str]:
    """The columns of :func:`results_frame` that hold probabilities: the top one's, then
    one per class."""
    suffix = " (%)" if as_percent else ""
    return ["top probability" + suffix, *(name + suffix for name in classes)]


#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(frame: pd.DataFrame, header: bool = True) -> str:
    """The frame as CSV, with file names defused for spreadsheets (:func:`spreadsheet_safe`;
    ``header`` False: the rows only, to append to a file that has it)."""
    buf = io.StringIO()
    spreadsheet_safe(frame).to_csv(buf, index=False, header=header)
    return buf.getvalue()


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose file names cannot run as spreadsheet formulas.

    A name starting with = + - @ would run as a formula when the CSV is opened in a
    spreadsheet; a leading apostrophe keeps it text. Every CSV writer uses this (the
    Predict download, the command line's output, the Ray engine's part files).
    """
    frame = frame.copy()
    if "file" in frame:
        frame["file"] = [
            "'" + name if name[:1] in FORMULA_STARTS else name for name in frame["file"].astype(str)
        ]
    return frame


def undefused(name: str) -> str:
    """A file name as it was before :func:`csv_text` defused it."""
    return name[1:] if name[:1] == "'" and name[1:2] in FORMULA_STARTS else name


def csv_filename(done: Analysis | None) -> str:
    """Named after the run, so that files saved from several runs do not overwrite one
    another or lose which model answered."""
    run = done.info.name if done is not None and done.info is not None else "no-model"
    return f"ferdash-{re.sub(r'[^A-Za-z0-9_.-]+', '_', run)}-predictions.csv"
