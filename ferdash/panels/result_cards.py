"""The Predict panel's result cards: tags built from a result and its pictures.

Pure builders, no reactivity: every picture arrives as a data URI made in the worker
(:mod:`ferdash.prediction`), never encoded here on the event loop.
"""

from __future__ import annotations

from htmltools import Tag, TagChild
from shiny import ui

from .. import wording
from ..inference import FaceResult, ImageResult
from ..prediction import CROP_DISPLAY_SIDE, CardImages, FaceImages, SaliencyCard, box_label

#: Faces of one photo shown open; the others are folded under one summary line, so a
#: group photo does not push the next file's card off the screen.
OPEN_FACES = 3

# Flex rows that wrap instead of fixed grid columns: at any width (an 800 px window, a
# 390 px phone) a picture moves to the next line rather than under its neighbour.
CSS = f"""
.predict-result .card-header {{ font-weight: 600; overflow-wrap: anywhere; }}
.predict-result figure {{ margin: 0; text-align: center; }}
.predict-result figcaption {{ font-size: .85rem; color: var(--bs-secondary-color); margin-top: .25rem; }}
.predict-result .card-row {{ display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }}
.predict-result .photo-figure {{ flex: 1 1 240px; min-width: 0; max-width: 380px; }}
.predict-result .chart-figure {{ flex: 1 1 220px; min-width: 0; max-width: 420px; }}
.predict-result img.upload-preview {{ max-width: 100%; height: auto; border-radius: .25rem; }}
.predict-result img.face-crop {{ width: {CROP_DISPLAY_SIDE}px; height: {CROP_DISPLAY_SIDE}px;
  image-rendering: pixelated; border: 1px solid var(--bs-border-color); border-radius: .25rem; }}
.predict-result img.prob-chart {{ max-width: 100%; height: auto; }}
.predict-result .expression-sentence, .predict-result .top-class {{
  font-size: 1.15rem; font-weight: 500; margin: .5rem 0 0; }}
.predict-result .top-class.uncertain {{ color: #9a6700; }}
.predict-result .second-opinion {{ margin: .25rem 0 0; }}
.predict-result .crop-column {{ flex: 0 0 auto; display: flex; flex-direction: column; gap: .5rem;
  align-items: center; }}
.predict-result .face-section {{ border-top: 1px solid var(--bs-border-color); padding-top: .75rem;
  margin-top: .75rem; }}
.predict-result .face-title {{ font-weight: 600; margin-bottom: .5rem; }}
.predict-result .not-face-reading img.prob-chart {{ opacity: .4; filter: grayscale(1); }}
.predict-result .not-face-reading .top-class {{ color: var(--bs-secondary-color); }}
.predict-thumbs {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: .75rem; }}
.predict-thumb {{ border: 1px solid var(--bs-border-color); border-radius: .375rem; padding: .4rem;
  font-size: .85rem; overflow-wrap: anywhere; }}
.predict-thumb img {{ width: 100%; height: 120px; object-fit: contain; }}
.predict-thumb .thumb-name {{ font-weight: 600; }}
"""


def result_card(
    card_id: str,
    result: ImageResult,
    happy_sad: bool,
    unclassified_reason: str = "",
    images: CardImages | None = None,
    saliency: list[SaliencyCard] | None = None,
) -> Tag:
    """One file's card: the error, or the photo and every face's crop and answer.

    ``images`` are the card's pictures (None only for a file that could not be read);
    ``saliency`` the Grad-CAM (overlay, note) per face, shown for classified faces;
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
    faces = result.faces
    detectors = {f.box.detector for f in faces if f.box is not None}
    faces_line = wording.faces_text(
        prepared.faces_found,
        prepared.tight_crop,
        classified=result.probs is not None,
        detector=next(iter(detectors)) if len(detectors) == 1 else None,
        shown=len(faces),
    )
    photo = ui.tags.figure(
        ui.img(src=images.preview, alt=f"uploaded image {result.name}", class_="upload-preview"),
        ui.tags.figcaption(details, ui.br(), ui.span(faces_line, class_="faces-found")),
        class_="photo-figure",
    )
    saliency = saliency or [(None, None)] * len(faces)
    footer: list[TagChild] = []
    if result.probs is None:
        footer.append(
            ui.div(result.model_error, class_="alert alert-danger model-error")
            if result.model_error
            else ui.p(
                f"Not classified: {unclassified_reason or 'no usable model is selected.'}",
                class_="text-body-secondary no-prediction",
            )
        )
    if len(faces) == 1:
        # One face: the photo, its crop and chart side by side, the answer below.
        pictures, answer = _face_parts(faces[0], images.faces[0], saliency[0], happy_sad)
        body: list[TagChild] = [
            ui.div(photo, *pictures, class_="card-row"),
            *answer,
            *footer,
        ]
        classes = "predict-result" + ("" if faces[0].is_face else " not-face-reading")
        return ui.card(header, *body, class_=classes, id=card_id)
    sections = [
        _face_section(face, face_images, cam, happy_sad)
        for face, face_images, cam in zip(faces, images.faces, saliency)
    ]
    folded: list[TagChild] = []
    if len(sections) > OPEN_FACES:
        folded.append(
            ui.tags.details(
                ui.tags.summary(f"Faces {OPEN_FACES + 1}–{len(sections)}"),
                *sections[OPEN_FACES:],
                class_="more-faces",
            )
        )
    return ui.card(
        header,
        ui.div(photo, class_="card-row"),
        *footer,
        *sections[:OPEN_FACES],
        *folded,
        class_="predict-result multi-face",
        id=card_id,
    )


def _face_section(face: FaceResult, images: FaceImages, cam: SaliencyCard, happy_sad: bool) -> Tag:
    pictures, answer = _face_parts(face, images, cam, happy_sad)
    title = f"Face {face.number}"
    if face.box is not None:
        title += f" · {wording.DETECTOR_NAMES.get(face.box.detector, face.box.detector)}"
        title += f" · label on the photo: “{box_label(face)}”"
    return ui.div(
        ui.div(title, class_="face-title small"),
        ui.div(*pictures, class_="card-row"),
        *answer,
        class_="face-section",
        data_face=str(face.number),
    )


def _face_parts(
    face: FaceResult, images: FaceImages, cam: SaliencyCard, happy_sad: bool
) -> tuple[list[Tag], list[Tag]]:
    """A face's pictures (crop with its Grad-CAM, chart) and its answer lines."""
    crop_caption = f"Model input {face.crop.shape[1]} x {face.crop.shape[0]}"
    if face.box is None:
        crop_caption += " (whole image)"
    crop_parts: list[Tag] = [
        ui.tags.figure(
            ui.img(src=images.crop, alt=f"face {face.number} as fed to the model", class_="face-crop"),
            ui.tags.figcaption(crop_caption, class_="crop-caption"),
        )
    ]
    saliency_uri, saliency_note = cam
    if face.probs is not None and (saliency_uri or saliency_note):
        crop_parts.append(
            ui.tags.figure(
                ui.img(src=saliency_uri, alt="Grad-CAM heatmap over the face crop",
                       class_="face-crop saliency-map"),
                ui.tags.figcaption("Grad-CAM: warm = evidence for the answer"),
            )
            if saliency_uri
            else ui.div(saliency_note, class_="small text-body-secondary saliency-note")
        )
    pictures: list[Tag] = [ui.div(*crop_parts, class_="crop-column")]
    answer: list[Tag] = []
    if face.probs is None:
        return pictures, answer
    if images.chart:
        pictures.append(
            ui.tags.figure(
                ui.img(src=images.chart, alt="bar chart of class probabilities", class_="prob-chart"),
                class_="chart-figure",
            )
        )
    if not face.is_face:
        answer.append(ui.div(wording.NOT_A_FACE_TEXT, class_="alert alert-secondary py-2 mb-1 not-a-face"))
    if happy_sad and {"happy", "sad"} <= set(face.classes):
        answer.append(
            ui.p(wording.happy_sad_sentence(face.classes, face.probs), class_="expression-sentence")
        )
        if face.second_opinion is not None and face.is_face:
            line = wording.neither_happy_nor_sad_text(*face.second_opinion)
            if line:
                answer.append(ui.p(line, class_="second-opinion text-body-secondary"))
    else:
        uncertain = wording.is_uncertain(face.classes, face.probs)
        answer.append(
            ui.p(
                wording.answer_text(face.classes, face.probs),
                class_="top-class" + (" uncertain" if uncertain else ""),
                title=(
                    f"Uncertain: the top probability is below {wording.percent(wording.UNCERTAIN_BELOW)}% "
                    f"or the top two are within {wording.percent(wording.UNCERTAIN_MARGIN)} points."
                    if uncertain
                    else None
                ),
            )
        )
    return pictures, answer


def result_thumbnail(card_id: str, result: ImageResult, images: CardImages | None) -> Tag:
    """One file in the compact grid: its picture, name and answer in a line."""
    if not result.ok or images is None:
        line: TagChild = ui.span(result.error or "", class_="text-danger upload-error")
        picture: TagChild = None
    else:
        faces = result.faces
        first = faces[0]
        if first.probs is None:
            line = ui.span("not classified", class_="text-body-secondary")
        elif not first.is_face:
            line = ui.span("no face found", class_="text-body-secondary not-a-face")
        else:
            line = wording.answer(first.classes, first.probs)
            top = first.top
            line = f"{line} ({wording.percent(top[1])}%)" if top else line
            if len(faces) > 1:
                line += f" · {len(faces)} faces"
        picture = ui.img(src=images.preview, alt=f"uploaded image {result.name}")
    return ui.div(
        picture,
        ui.div(result.name or "(unnamed file)", class_="thumb-name"),
        ui.div(line, class_="thumb-answer"),
        class_="predict-thumb",
        id=card_id,
    )
