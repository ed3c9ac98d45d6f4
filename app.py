"""Entry point for `shiny run app.py`."""

from ferdash.app import build_app

app = build_app()
