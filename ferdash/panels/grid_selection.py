"""A data grid's row selection, read and set without the renderer's selection methods.

Shiny 1.8's ``cell_selection()``, ``data_view()`` and ``update_cell_selection()`` cache a
reactive calc per renderer in a ``WeakKeyDictionary`` whose value refers back to its key,
so a session that calls any of them is never freed: each one kept its uploads' results
and grew the server by about 2.5 MB per session of this app. The selection the browser
reports is the grid's documented input ``<id>_cell_selection``; setting it is the message
the renderer itself sends.
"""

from __future__ import annotations

from typing import Any

from shiny import Inputs, Session


def selected_rows(input: Inputs, output_id: str) -> tuple[int, ...]:
    """The data rows selected in grid ``output_id``.

    Raises Shiny's silent exception while the browser has not drawn the grid (it reports
    its selection, empty at first, once drawn), as reading any unset input does.
    """
    value: Any = input[f"{output_id}_cell_selection"]()
    # What the browser sends can be forged: anything but a list of row numbers is none.
    if not isinstance(value, dict) or value.get("type") != "row":
        return ()
    rows = value.get("rows")
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, int) and not isinstance(r, bool) for r in rows):
        return ()
    return tuple(rows)


async def select_rows(session: Session, output_id: str, rows: list[int]) -> None:
    """Select ``rows`` of grid ``output_id`` in the browser (none: clear the selection)."""
    selection = {"type": "row", "rows": rows} if rows else {"type": "none"}
    await session.send_custom_message(
        "shinyDataFrameMessage",
        {"id": session.ns(output_id), "handler": "updateCellSelection", "obj": {"cellSelection": selection}},
    )
