"""The ``metaopt`` command line: a thin Typer layer over the metaopt_tuner library."""

from .app import app, main

__all__ = ["app", "main"]
