"""JSON as every reader accepts it: a non-finite number is written as ``null``, never a bare
``NaN`` or ``Infinity`` (which strict parsers, JavaScript and most other languages refuse)."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["finite", "dumps"]


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (in dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(value)``; strict (a NaN that slipped through raises)."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
