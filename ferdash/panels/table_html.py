"""A plain Bootstrap HTML table from a small DataFrame.

``render.table`` goes through ``DataFrame.style``, which needs jinja2 (not a dependency);
the Inspect summaries are a few rows of preformatted strings, so plain tags suffice.
"""

from __future__ import annotations

import math

import pandas as pd
from shiny import ui


def fmt_number(value: float | None, digits: int = 3) -> str:
    """A stored figure for a table cell: "—" where the run did not store it."""
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def frame_table(frame: pd.DataFrame, **attrs: str) -> ui.Tag:
    """``<table>`` with a header row and one row per frame row; cells shown with ``str``."""
    head = ui.tags.thead(ui.tags.tr(*[ui.tags.th(str(c)) for c in frame.columns]))
    body = ui.tags.tbody(
        *[ui.tags.tr(*[ui.tags.td(str(v)) for v in row]) for row in frame.itertuples(index=False)]
    )
    return ui.tags.table(head, body, class_="table table-sm table-striped w-auto small", **attrs)
