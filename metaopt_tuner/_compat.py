"""Old import paths, kept for one release: every module or name that moved, in one table.

``import metaopt_tuner.report`` (or any module in :data:`MOVED_MODULES`) gives the module at its
new path, the same object, so that both names see the same state; a name that moved between
modules (:data:`MOVED_NAMES`) is found through its old module's ``__getattr__``. Each use warns
with a DeprecationWarning that names the new path. This module imports nothing of the package.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

__all__ = ["MOVED_MODULES", "MOVED_NAMES", "install", "module_getattr"]

#: old module path -> new module path (submodules of an old package follow it)
MOVED_MODULES: dict[str, str] = {
    "metaopt_tuner.report": "metaopt_tuner.compare",
    "metaopt_tuner.baselines": "metaopt_tuner.compare.baselines",
    "metaopt_tuner.studies": "metaopt_tuner.compare.studies",
    "metaopt_tuner.pretraining": "metaopt_tuner.compare.pretraining",
    "metaopt_tuner.text.setfit_baseline": "metaopt_tuner.compare.setfit_baseline",
    "metaopt_tuner.text": "metaopt_tuner.models.text",
    "metaopt_tuner.learners.proto_head": "metaopt_tuner.models.proto_head",
    "metaopt_tuner.recipes": "metaopt_tuner.training.recipes",
    "metaopt_tuner.compiled": "metaopt_tuner.training.compiled",
    "metaopt_tuner.cuda_graphs": "metaopt_tuner.training.cuda_graphs",
    "metaopt_tuner.distributed": "metaopt_tuner.training.distributed",
    "metaopt_tuner.mlflow_store": "metaopt_tuner.registry.mlflow_store",
    "metaopt_tuner.model_cache": "metaopt_tuner.registry.model_cache",
}

#: (old module, name) -> the module that now holds the name
MOVED_NAMES: dict[tuple[str, str], str] = {
    ("metaopt_tuner.artifact", "resolve_artifact"): "metaopt_tuner.resolver",
    **{("metaopt_tuner.compare.baselines", name): "metaopt_tuner.compare.tuning" for name in (
        "TuneResult", "tune", "tune_on_suite", "open_study", "study_name_for", "finished_trials",
        "StudyStorageError")},
    ("metaopt_tuner.learners.inner", "metasgd_update"): "metaopt_tuner.update_rule",
    ("metaopt_tuner.learners.inner", "rates_at_step"): "metaopt_tuner.update_rule",
    ("metaopt_tuner.learners.inner", "tail_factor"): "metaopt_tuner.update_rule",
    ("metaopt_tuner.learners.inner", "TAIL_DECAY"): "metaopt_tuner.update_rule",
    ("metaopt_tuner.learners.inner", "TAIL_STEPS"): "metaopt_tuner.update_rule",
    ("metaopt_tuner.learners.inner", "TAIL_CUTOFF"): "metaopt_tuner.update_rule",
}


def _new_path(old: str) -> str | None:
    for prefix, target in sorted(MOVED_MODULES.items(), key=lambda item: -len(item[0])):
        if old == prefix or old.startswith(prefix + "."):
            return target + old[len(prefix):]
    return None


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path goes away in the next release",
                  DeprecationWarning, stacklevel=3)


class _Alias(importlib.abc.Loader):
    """Loads an old path as the module at its new path (the same object, not a copy)."""

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new
        self.spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        _warn(self.old, self.new)
        module = importlib.import_module(self.new)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self.spec  # importlib set the alias's spec: give the module its own


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        new = _new_path(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(fullname, new))


_FINDER = _Finder()


def install() -> None:
    """Put the old paths' finder first on ``sys.meta_path`` (once), before the path finder would
    load a moved module's file a second time under its old name."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def module_getattr(module_name: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` that finds the names :data:`MOVED_NAMES` lists for that module."""

    def __getattr__(name: str) -> Any:
        new = MOVED_NAMES.get((module_name, name))
        if new is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        _warn(f"{module_name}.{name}", f"{new}.{name}")
        return getattr(importlib.import_module(new), name)

    return __getattr__
