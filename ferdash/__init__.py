"""ferdash: a facial-expression dashboard (Shiny for Python) and its model contract."""

__version__ = "0.1.0"
