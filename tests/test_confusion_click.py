"""Clicks on the confusion matrix: legit clicks name their cell, forged ones are ignored.

``input.matrix_click`` comes from the browser, which can send any JSON over the
websocket; :func:`cell_request` must return None for anything that is not a finite click
inside the matrix, never raise (an exception in the effect ends that user's session).
"""

from __future__ import annotations

import numpy as np
import pytest

from ferdash import plots
from ferdash.panels.confusion_panel import CellRequest, cell_request

CLASSES = ("angry", "happy", "sad")


def _click(x: object, y: object) -> dict:
    # What Shiny sends for a click on a plot (data coordinates plus pixel details).
    return {"x": x, "y": y, "coords_css": {"x": 10, "y": 10}, "mapping": {}, "domain": {}}


@pytest.mark.parametrize("dx", [-0.49, 0.0, 0.3])
@pytest.mark.parametrize("dy", [-0.45, 0.0, 0.49])
def test_a_click_in_a_cell_names_its_true_and_predicted_class(dx: float, dy: float) -> None:
    for row, true in enumerate(CLASSES):
        for col, predicted in enumerate(CLASSES):
            request = cell_request(_click(col + dx, row + dy), CLASSES)
            # A diagonal cell asks for every mistake of its true class: no predicted class.
            assert request == CellRequest(true, "" if row == col else predicted, 1)


def test_cells_match_the_drawn_matrix() -> None:
    """The figure puts cell (row, col) at data (x=col, y=row), spanning +-0.5: what the mapping assumes."""
    fig = plots.confusion_figure(np.arange(9).reshape(3, 3), CLASSES)
    (ax,) = fig.axes
    assert tuple(ax.get_xlim()) == (-0.5, 2.5)
    assert tuple(ax.get_ylim()) == (2.5, -0.5)  # rows run downwards
    for text in ax.texts:
        x, y = text.get_position()
        request = cell_request(_click(float(x), float(y)), CLASSES)
        assert request is not None
        row = CLASSES.index(request.true)
        col = CLASSES.index(request.predicted) if request.predicted else row
        assert int(text.get_text()) == 3 * row + col  # the count drawn in that cell


def test_serial_counts_clicks_so_the_same_cell_twice_is_two_requests() -> None:
    first = cell_request(_click(1, 0), CLASSES)
    second = cell_request(_click(1, 0), CLASSES, first)
    assert first is not None and second is not None
    assert (first.true, first.predicted) == (second.true, second.predicted) == ("angry", "happy")
    assert (first.serial, second.serial) == (1, 2)


@pytest.mark.parametrize(
    "click",
    [
        None,
        "x=1,y=1",
        [1, 1],
        42,
        {},
        {"x": 1},  # no y
        {"y": 1},  # no x
        _click("1", "1"),  # numbers as strings
        _click("one", 1),
        _click(None, 1),
        _click([1], 1),
        _click({"v": 1}, 1),
        _click(True, False),  # JSON booleans are not coordinates
        _click(float("nan"), 1),
        _click(1, float("nan")),
        _click(float("inf"), 1),
        _click(1, float("-inf")),
        _click(1e308, 1),
        _click(10**400, 1),  # a JSON integer too large for a float
        _click(-(10**400), 1),
        _click(-1, 1),
        _click(1, -0.51),
        _click(2.51, 1),  # just past the last column
        _click(1, 3),
        _click(-1e308, -1e308),
    ],
    ids=repr,
)
def test_forged_clicks_are_ignored(click: object) -> None:
    assert cell_request(click, CLASSES) is None
    assert cell_request(click, CLASSES, CellRequest("happy", "sad", 4)) is None


def test_no_classes_no_cell() -> None:
    assert cell_request(_click(0, 0), ()) is None
