"""A suite's recipe: its recommended training configuration, as a frozen value.

The keys are :class:`~metaopt_tuner.config.TrainConfig` fields (the configuration is a value below
the suites); how a run's configuration is resolved from a recipe is ``training.recipes``'s job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..budget import parse_duration
from ..config import TrainConfig
from ..errors import ConfigError

__all__ = ["Recipe", "NOT_IN_RECIPES"]

#: fields that name the run rather than configure it: never part of a recipe
NOT_IN_RECIPES = ("suite", "suite_options", "budget_seconds")


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Recipe:
    """A suite's recommended training configuration, as data.

    Args:
        config: TrainConfig field -> value (``iterations`` included when the recipe trains for
            a fixed count).
        suite_options: suite constructor options (model size, augmentation, ...).
        budget: how long to train as a duration (``"90s"``, ``"20m"``), instead of
            ``config["iterations"]``.
        source: where the values were measured (a README section, a benchmark command).

    Raises:
        ConfigError: an unknown TrainConfig field, a run-naming field, an unreadable budget, or
            both ``iterations`` and ``budget``.
    """

    config: Mapping[str, Any] = field(default_factory=dict)
    suite_options: Mapping[str, Any] = field(default_factory=dict)
    budget: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        known = {f.name for f in dataclasses.fields(TrainConfig)} - set(NOT_IN_RECIPES)
        unknown = sorted(set(self.config) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) in a recipe: {', '.join(unknown)}; "
                              f"valid keys: {', '.join(sorted(known))}")
        if self.budget is not None:
            parse_duration(self.budget)
            if "iterations" in self.config:
                raise ConfigError("a recipe gives iterations or a budget, not both")
        object.__setattr__(self, "config", _frozen(self.config))
        object.__setattr__(self, "suite_options", _frozen(self.suite_options))

    def values(self) -> dict[str, Any]:
        """The TrainConfig values the recipe sets (the budget as ``budget_seconds``)."""
        values = dict(self.config)
        if self.budget is not None:
            values["budget_seconds"] = parse_duration(self.budget)
        return values
