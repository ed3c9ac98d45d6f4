"""Misclassified faces: the evaluation's wrong answers, as a filterable grid of images."""

from __future__ import annotations

import math
from typing import Callable

from shiny import module, reactive, render, ui

from .. import config
from ..inspect_data import (
    GALLERY_LIMIT,
    Mistake,
    filter_mistakes,
    gallery_root,
    misclassified_entries,
    safe_image_path,
    thumbnail_uri,
)
from .confusion_panel import CellRequest
from .run_selector import RunSelection

_ANY = {"": "any"}

_STYLE = ui.tags.style(
    """
    .ferdash-gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(112px, 1fr));
                       gap: .6rem; }
    .ferdash-face { margin: 0; text-align: center; font-size: .75rem; line-height: 1.2; }
    .ferdash-face img, .ferdash-face .ferdash-noimg { width: 96px; height: 96px;
                       image-rendering: pixelated; border-radius: 4px; background: #eee; }
    .ferdash-face .ferdash-noimg { display: inline-flex; align-items: center;
                       justify-content: center; color: #888; padding: 4px; }
    .ferdash-face .pred { color: #b02a37; font-weight: 600; }
    """
)


@module.ui
def panel_ui() -> ui.TagChild:
    return ui.TagList(
        _STYLE,
        ui.layout_columns(
            ui.input_select("true_class", "True class", choices=_ANY),
            ui.input_select("predicted_class", "Predicted class", choices=_ANY),
            col_widths=(3, 3),
        ),
        ui.output_ui("summary"),
        ui.output_ui("grid"),
    )


def _tile(mistake: Mistake, root, index: int) -> ui.Tag:
    prob = "" if math.isnan(mistake.probability) else f"p = {mistake.probability:.2f}"
    path = safe_image_path(root, mistake.file)
    if path is None:
        picture: ui.Tag = ui.div("refused: outside the data folder", class_="ferdash-noimg")
    else:
        uri = thumbnail_uri(path)
        picture = (
            ui.tags.img(src=uri, alt=f"{mistake.true} face predicted {mistake.predicted}")
            if uri
            else ui.div("image missing or unreadable", class_="ferdash-noimg")
        )
    return ui.tags.figure(
        picture,
        ui.tags.figcaption(
            ui.div(f"true: {mistake.true}"),
            ui.div(f"predicted: {mistake.predicted}", class_="pred"),
            ui.div(prob, class_="text-muted"),
        ),
        class_="ferdash-face",
        title=mistake.file,
        data_index=str(index),
    )


@module.server
def panel_server(
    input,
    output,
    session,
    selection: RunSelection,
    cell_request: Callable[[], CellRequest | None] | None = None,
) -> None:
    evaluation = selection.evaluation

    @reactive.calc
    def classes() -> tuple[str, ...]:
        loaded = evaluation()
        return loaded.value.classes if loaded is not None and loaded.ok else ()

    # classes() is recomputed whenever the catalog re-polls a changing run; re-sending
    # identical choices would close a drop-down the user has open.
    last_classes: tuple[str, ...] | None = None

    @reactive.effect
    def _update_filters() -> None:
        nonlocal last_classes
        names = classes()
        if names == last_classes:
            return
        last_classes = names
        choices = {**_ANY, **{c: c for c in names}}
        with reactive.isolate():
            true, pred = input.true_class(), input.predicted_class()
        ui.update_select("true_class", choices=choices, selected=true if true in names else "")
        ui.update_select(
            "predicted_class", choices=choices, selected=pred if pred in names else ""
        )

    if cell_request is not None:

        @reactive.effect
        def _from_confusion_click() -> None:
            request = cell_request()
            if request is None:
                return
            ui.update_select("true_class", selected=request.true)
            ui.update_select("predicted_class", selected=request.predicted)

    @reactive.calc
    def state() -> dict:
        """Everything the summary and grid need, or why there is nothing to show."""
        listing = selection.run()
        if listing is None:
            return {"message": selection.missing_message(), "level": "info"}
        loaded = evaluation()
        if loaded is None or not loaded.ok or loaded.value is None:
            return {
                "message": f"No misclassified faces for {listing.name}: {loaded.error if loaded else ''}",
                "level": "warning",
            }
        ev = loaded.value
        mistakes, malformed = misclassified_entries(ev)
        if not mistakes:
            return {
                "message": f"evaluation.json of {listing.name} lists no misclassified images"
                + (f" ({malformed} malformed entries skipped)." if malformed else "."),
                "level": "info",
            }
        root = gallery_root(ev, config.data_dir_override(), listing.path)
        if root.path is None:
            return {"message": root.problem, "level": "warning", "total": len(mistakes)}
        matching = filter_mistakes(mistakes, input.true_class(), input.predicted_class())
        return {
            "root": root,
            "matching": matching,
            "total": len(mistakes),
            "malformed": malformed,
        }

    @render.ui
    def summary() -> ui.TagChild:
        s = state()
        if "message" in s:
            return ui.div(s["message"], class_=f"alert alert-{s['level']}")
        matching, total = s["matching"], s["total"]
        shown = min(len(matching), GALLERY_LIMIT)
        text = (
            f"{len(matching)} of {total} misclassified images match"
            + (f"; showing the {shown} most confident mistakes" if len(matching) > shown else "")
            + f". Images from {s['root'].path} ({s['root'].source})."
        )
        if s["malformed"]:
            text += f" {s['malformed']} malformed entries skipped."
        return ui.p(text, class_="small text-muted", id=session.ns("count"))

    @render.ui
    def grid() -> ui.TagChild:
        s = state()
        if "message" in s:
            return None
        matching = s["matching"][:GALLERY_LIMIT]
        if not matching:
            return ui.p("No misclassified image matches these filters.", class_="text-muted")
        root = s["root"].path
        return ui.div(
            *[_tile(m, root, i) for i, m in enumerate(matching)], class_="ferdash-gallery"
        )
