"""ferdash: a facial-expression dashboard (Shiny for Python) and its model contract.

From Python (docs/cli.md): ``ferdash.Predictor("models/fer7").predict("photo.jpg")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["FacePrediction", "Predictor", "__version__"]

if TYPE_CHECKING:
    from .api import FacePrediction, Predictor


def __getattr__(name: str) -> Any:
    # Imported on first use: `import ferdash` (the app, the CLI's --help, the training
    # scripts) must not pay for OpenCV, pandas and the pipeline.
    if name in ("FacePrediction", "Predictor"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'ferdash' has no attribute {name!r}")
