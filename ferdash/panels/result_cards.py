"""The Predict panel's result cards: tags built from a result and its pictures.

Pure builders, no reactivity: every picture arrives as a data URI made in the worker
(:mod:`ferdash.prediction`), never encoded here on the event loop.
"""

from __future__ import annotations

from htmltools import Tag
from shiny import ui

from .. import wording
from ..inference import ImageResult
from ..prediction import CROP_DISPLAY_SIDE, CardImages, SaliencyCard

CSS = f"""
.predict-result .card-header {{ font-weight: 600; overflow-wrap: anywhere; }}
.predict-result figure {{ margin: 0; text-align: center; }}
.predict-result figcaption {{ font-size: .85rem; color: var(--bs-secondary-color); margin-top: .25rem; }}
.predict-result img.upload-preview {{ max-width: 100%; height: auto; border-radius: .25rem; }}
.predict-result img.face-crop {{ width: {CROP_DISPLAY_SIDE}px; height: {CROP_DISPLAY_SIDE}px;
  image-rendering: pixelated; border: 1px solid var(--bs-border-color); border-radius: .25rem; }}
.predict-result img.prob-chart {{ max-width: 100%; height: auto; }}
.predict-result .expression-sentence, .predict-result .top-class {{
  font-size: 1.15rem; font-weight: 500; margin: .5rem 0 0; }}
.predict-result .crop-column {{ display: flex; flex-direction: column; gap: .5rem; align-items: center; }}
"""


def result_card(
    card_id: str,
    result: ImageResult,
    happy_sad: bool,
    unclassified_reason: str = "",
    images: CardImages | None = None,
    saliency: SaliencyCard = (None, None),
) -> Tag:
    """One file's card: the error, or the image, the crop, the answer.

    ``images`` are the card's pictures (None only for a file that could not be read);
    ``saliency`` the Grad-CAM (overlay, note), shown for a classified face;
    ``unclassified_reason`` ends "Not classified: …" where no model ran.
    """
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
    assert prepared is not None and images is not None
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
    crop_caption = f"Model input {prepared.crop.shape[1]} x {prepared.crop.shape[0]}"
    if prepared.whole_image:
        crop_caption += " (whole image)"

    body: list[Tag] = [
        ui.tags.figure(
            ui.img(
                src=images.preview,
                alt=f"uploaded image {result.name}",
                class_="upload-preview",
            ),
            ui.tags.figcaption(details, ui.br(), ui.span(faces_line, class_="faces-found")),
        ),
        ui.tags.figure(
            ui.img(src=images.crop, alt="face crop fed to the model", class_="face-crop"),
            ui.tags.figcaption(crop_caption, class_="crop-caption"),
        ),
    ]
    saliency_uri, saliency_note = saliency
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
        if images.chart:
            body.append(
                ui.tags.figure(
                    ui.img(src=images.chart, alt="bar chart of class probabilities", class_="prob-chart")
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
