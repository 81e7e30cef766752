"""The library's version: a leaf, so that the artifact format can record it without importing
the package root."""

__version__ = "0.1.0"
