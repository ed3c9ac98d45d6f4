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
from .inference import FileSource, ImageResult, PrepareCache, analyse
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
class CardImages:
    """The pictures of one readable file's card, as PNG data URIs."""

    preview: str  # the image, the classified face boxed
    crop: str  # the model's input
    chart: str | None  # the probabilities; None where no model ran


@dataclass(frozen=True)
class Analysis:
    """The results of one upload with one run, and the run's load error if any."""

    files: object  # the upload's list, to tell this upload's results from an earlier one's
    info: RunInfo | None
    results: list[ImageResult]
    model_error: str | None
    #: Grad-CAM (overlay, note) per result, or why there are none; None when they were
    #: not asked for.
    saliency: list[SaliencyCard] | str | None = None
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

    def saliency_card(self, index: int) -> SaliencyCard:
        """(overlay URI, note) for the card at ``index``."""
        if self.saliency is None:
            return None, None
        if isinstance(self.saliency, str):
            return None, self.saliency
        return self.saliency[index]


class Requests:
    """The analyses one page has asked for, so that each is started once.

    Holds the prepare cache (decoded and cropped images) of the current upload: switching
    model or mode re-runs only the model. A new dict per upload, so it holds one upload
    at most; a page's analyses run one after another, so it is never used by two
    threads at once.
    """

    def __init__(self) -> None:
        self._last: tuple[object, RunInfo | None, bool] = (None, None, False)
        self._cache: PrepareCache = {}

    def start(self, files: object, info: RunInfo | None, with_saliency: bool) -> PrepareCache | None:
        """The prepare cache to analyse ``files`` with, or None when the last request
        covers this one: the same upload (the same list object) and run, with Grad-CAM
        maps already made if they are wanted."""
        last_files, last_info, last_saliency = self._last
        if files is last_files and info == last_info and (last_saliency or not with_saliency):
            return None
        if files is not last_files:
            self._cache = {}
        self._last = (files, info, with_saliency)
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


def analyse_upload(
    files: Sequence[FileSource],
    info: RunInfo | None,
    cache: PrepareCache,
    with_saliency: bool = False,
) -> Analysis:
    """Everything the page shows for ``files`` with run ``info`` (None: no model).

    For a worker thread: the model store's locks make loading safe, and the traced
    predictor may be called from several threads.
    """
    model, error = load_model(info) if info is not None else (None, None)
    results = analyse(files, model, cache)
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
        preview=png_data_uri(preview_with_box(result)),
        crop=png_data_uri(result.prepared.crop),
        chart=probability_chart(result),
    )


def probability_chart(result: ImageResult) -> str | None:
    # A Matplotlib figure costs tens of milliseconds: on the event loop that would stall
    # every session's outputs.
    if result.probs is None:
        return None
    fig = plots.probability_bar_chart(result.classes, result.probs)
    return png_bytes_data_uri(plots.figure_png_bytes(fig))


def saliency_overlays(results: Sequence[ImageResult], model: LoadedRun) -> list[SaliencyCard] | str:
    """(overlay, note) per card ((None, None) for faces not classified), or why no card
    has a map."""
    shown = [i for i, r in enumerate(results) if r.ok and r.probs is not None]
    cards: list[SaliencyCard] = [(None, None)] * len(results)
    if not shown:
        return cards
    crops = np.stack([results[i].prepared.crop for i in shown])
    # The class the card names, so the map explains the answer shown (TTA included).
    named = [results[i].top[0] for i in shown]
    chosen = [results[i].classes.index(name) for i, name in zip(shown, named)]
    try:
        maps = saliency.run_saliency(model, crops, chosen)
    except saliency.SaliencyError as exc:
        return f"No Grad-CAM map: {exc}"
    for j, i in enumerate(shown):
        if not np.any(maps[j] > 0):
            # No region argued for the class against a blank (a flat crop): an overlay
            # would be the bare crop, which reads as "looked nowhere".
            cards[i] = (None, wording.no_saliency_text(named[j]))
        else:
            cards[i] = (png_data_uri(saliency.overlay(results[i].prepared.crop, maps[j])), None)
    return cards


def preview_with_box(result: ImageResult) -> np.ndarray:
    """The readable file's preview as RGB, at most :data:`PREVIEW_MAX_SIDE`, the face boxed."""
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


def csv_filename(done: Analysis | None) -> str:
    """Named after the run, so that files saved from several runs do not overwrite one
    another or lose which model answered."""
    run = done.info.name if done is not None and done.info is not None else "no-model"
    return f"ferdash-{re.sub(r'[^A-Za-z0-9_.-]+', '_', run)}-predictions.csv"
