"""The runs grid's selection as the browser reports it, forged values included."""

from __future__ import annotations

import pytest
from shiny.types import SilentException

from ferdash.panels.grid_selection import selected_rows


class FakeInputs(dict):
    """What a module's inputs look like to ``selected_rows``: ``input[name]()``."""

    def __getitem__(self, name: str):
        if name not in self.keys():
            def unset():
                raise SilentException()

            return unset
        value = dict.__getitem__(self, name)
        return lambda: value


@pytest.mark.parametrize(
    ("value", "rows"),
    [
        ({"type": "row", "rows": (2,)}, (2,)),
        ({"type": "row", "rows": [0, 3]}, (0, 3)),
        ({"type": "row", "rows": ()}, ()),
        ({"type": "none"}, ()),
        # Forged: anything but row numbers selects nothing and raises nothing.
        ({"type": "row", "rows": ["0; drop"]}, ()),
        ({"type": "row", "rows": [True]}, ()),
        ({"type": "row", "rows": 5}, ()),
        ({"type": "rect", "rows": [1]}, ()),
        (["row", 1], ()),
        (None, ()),
        ("row", ()),
    ],
)
def test_selected_rows(value: object, rows: tuple[int, ...]) -> None:
    assert selected_rows(FakeInputs(table_cell_selection=value), "table") == rows


def test_not_drawn_is_silent() -> None:
    with pytest.raises(SilentException):
        selected_rows(FakeInputs(), "table")
