"""One way to import an object a string names as ``"package.module:attr"`` (``attr`` may be
dotted): model factories, suites and sentence encoders are all named like that."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["import_object"]


def import_object(path: str) -> Any:
    """The object ``"module:attr"`` names; ImportError or AttributeError (or whatever importing
    the module raises) for one that is not there. Callers turn those into their own errors."""
    module_name, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
