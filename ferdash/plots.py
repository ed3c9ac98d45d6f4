"""Every figure of the dashboard, as pure functions returning matplotlib Figures.

No Shiny here: each function takes plain data and returns a new Figure, so tests can
count its bars, lines, cells and labels.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


# --- Predict: class probabilities of one image (issue 2) --------------------------------

import io as _io  # noqa: E402
from collections.abc import Sequence as _Sequence  # noqa: E402

_FloatSequence = _Sequence[float]  # numpy arrays are accepted too


def probability_bar_chart(
    classes: list[str] | tuple[str, ...],
    probs: _FloatSequence,
    title: str | None = None,
) -> Figure:
    """Horizontal bars of class probabilities (in %), the top class highlighted.

    Classes keep the model's order, top to bottom, so charts of several images compare
    at a glance.
    """
    values = [float(p) * 100.0 for p in probs]
    if len(values) != len(classes):
        raise ValueError(f"{len(classes)} classes but {len(values)} probabilities")
    top = max(range(len(values)), key=values.__getitem__) if values else -1
    # A pyplot-free Figure: no global figure registry, so concurrent sessions never
    # share state and nothing leaks when the figure is dropped.
    fig = Figure(figsize=(4.2, 0.42 * len(values) + 0.9), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    positions = list(range(len(values)))
    colours = ["#2c7fb8" if i == top else "#a6bddb" for i in positions]
    bars = ax.barh(positions, values, color=colours, height=0.7)
    ax.set_yticks(positions, labels=list(classes))
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("probability (%)")
    for bar, value in zip(bars, values):
        ax.text(
            min(value + 1.5, 88.0),
            bar.get_y() + bar.get_height() / 2,
            f"{value:.0f}%",
            va="center",
            fontsize=9,
        )
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def figure_png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """A figure rendered as PNG bytes (for data-URI images in the page)."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
