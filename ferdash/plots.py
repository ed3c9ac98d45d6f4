"""Every figure of the dashboard, as pure functions returning matplotlib Figures.

No Shiny here: each function takes plain data and returns a new Figure, so tests can
count its bars, lines, cells and labels.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
