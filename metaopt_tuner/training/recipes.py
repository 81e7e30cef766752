"""How a training configuration is resolved from a suite's recipe and the options given.

Each suite declares its recommended configuration as a ``tasks.recipe.Recipe`` (its ``recipe``
class attribute, defined beside the suite): TrainConfig fields, suite options, and how long to train
(an iteration count in ``config`` or a ``budget``). A configuration is resolved in one order,
later sources winning::

    TrainConfig defaults  <-  the suite's recipe  <-  flags (command line) / keywords (Python)

and every value carries the source it came from (``"default"``, ``"recipe"`` or ``"flag"``;
``"budget"`` for an iteration count fixed by a budget), printed by ``metaopt train --show-config``
and recorded in ``run.json``. How long to train is one choice: ``iterations`` and
``budget_seconds`` given at the same level are an error, and one given at a higher level replaces
the other from a lower one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..budget import format_duration
from ..config import TrainConfig
from ..errors import ConfigError
from ..tasks.recipe import Recipe

__all__ = ["ResolvedConfig", "resolve_train_config", "recipe_for", "SOURCES"]

#: where a resolved value came from, lowest precedence first
SOURCES = ("default", "recipe", "flag")
_LENGTH = ("iterations", "budget_seconds")


def recipe_for(suite: str, suite_options: Mapping[str, Any] | None = None) -> Recipe:
    """The recipe of the suite registered as (or importable as) ``suite`` for a run with these
    ``suite_options`` (a suite may keep one recipe per model, e.g. intents with an encoder
    folder); empty if it has none."""
    from ..tasks import suite_class

    recipe = suite_class(suite).recipe_for_options(dict(suite_options or {}))
    return recipe if isinstance(recipe, Recipe) else Recipe()


@dataclass(frozen=True)
class ResolvedConfig:
    """A TrainConfig and, for every field and every given suite option, where it came from."""

    config: TrainConfig
    sources: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        """``{"config": ..., "sources": ...}`` as run.json records it."""
        return {"config": self.config.to_dict(), "sources": dict(self.sources)}

    def lines(self) -> list[str]:
        """One ``name = value  (source)`` line per setting, for ``--show-config``."""
        data = self.config.to_dict()
        options = data.pop("suite_options")
        rows = []
        budget = data["budget_seconds"]
        outer, meta_lr = self.config.resolved_outer()
        resolved = {"meta_lr": meta_lr, "outer_optimizer": outer,
                    "rates_meta_lr": self.config.resolved_rates_lr()}
        for name, value in data.items():
            source = self.sources.get(name, "default")
            if name == "budget_seconds" and value is not None:
                value = format_duration(value)
            elif name == "iterations" and budget is not None:
                value, source = "fixed from the budget by a timed warm-up", "budget"
            if value is None and name in resolved:  # say what "not set" resolves to
                source = f"{source}: {resolved[name]!r}"
            rows.append((name, value, source))
        for name, value in options.items():
            key = f"suite_options.{name}"
            rows.append((key, value, self.sources.get(key, "flag")))
        width = max(len(name) for name, _, _ in rows)
        return [f"{name:<{width}} = {value!r}  ({source})" for name, value, source in rows]


def resolve_train_config(
    suite: str | None = None,
    flags: Mapping[str, Any] | None = None,
    suite_options: Mapping[str, Any] | None = None,
    *,
    recipe: Recipe | None = None,
) -> ResolvedConfig:
    """Resolve defaults <- ``suite``'s recipe <- ``flags`` (TrainConfig fields the user gave).

    Args:
        suite: the suite (a registered name or ``"module:Class"``); default: TrainConfig's.
        flags: TrainConfig fields given explicitly (None values count as not given).
        suite_options: suite options given explicitly; they override the recipe's key by key.
        recipe: use this recipe instead of the suite's.

    Returns:
        The validated configuration with its sources.

    Raises:
        ConfigError: unknown fields, ``iterations`` together with ``budget_seconds``, or an
            invalid value (see :meth:`TrainConfig.validate`).
        SuiteError: an unknown or unimportable suite.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(flags) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
    if all(k in flags for k in _LENGTH):
        raise ConfigError("give --budget or --iterations, not both")
    suite = flags.pop("suite", suite)
    flags.pop("suite_options", None)
    sources: dict[str, str] = {"suite": "default" if suite is None else "flag"}
    if suite is not None and not (isinstance(suite, str) and suite.strip()):
        raise ConfigError(f"the suite name is empty ({suite!r}); leave --suite out for the "
                          f"default ({TrainConfig.suite}) or name one (metaopt suites)")
    suite = TrainConfig.suite if suite is None else suite
    recipe = recipe_for(suite, suite_options) if recipe is None else recipe
    values: dict[str, Any] = {}
    for source, layer in (("recipe", recipe.values()), ("flag", flags)):
        if any(k in layer for k in _LENGTH):  # this level decides how long to train
            for k in _LENGTH:
                values.pop(k, None)
                sources.pop(k, None)
        values.update(layer)
        sources.update(dict.fromkeys(layer, source))
    options = dict(recipe.suite_options)
    sources.update({f"suite_options.{k}": "recipe" for k in options})
    options.update(suite_options or {})
    sources.update({f"suite_options.{k}": "flag" for k in (suite_options or {})})
    config = TrainConfig(suite=suite, suite_options=options, **values)
    for name in known:
        sources.setdefault(name, "default")
    config.validate()
    return ResolvedConfig(config, MappingProxyType(sources))
