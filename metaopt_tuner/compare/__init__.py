"""The comparison: ordinary optimizers as baselines (``baselines``) tuned with Optuna (``tuning``,
``studies``), the pretrained initialization, the SetFit baseline, the comparison itself
(``comparison``) and its rendering (``report``)."""

from __future__ import annotations

from .comparison import (
    CENTROID,
    FORMAT,
    META,
    ORACLE,
    TARGETS,
    ComparisonResult,
    compare,
    default_baselines,
    meta_training_cost,
    targets_met,
)
from .report import break_even_line, figures, table_rows, write_report

__all__ = [
    "ComparisonResult",
    "compare",
    "default_baselines",
    "meta_training_cost",
    "targets_met",
    "write_report",
    "table_rows",
    "break_even_line",
    "figures",
    "FORMAT",
    "META",
    "ORACLE",
    "CENTROID",
    "TARGETS",
]
