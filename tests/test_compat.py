"""Old import paths (one release): each names the very module or object at its new path, and
says so with a DeprecationWarning."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

from metaopt_tuner import _compat


@pytest.mark.parametrize("old, new", sorted(_compat.MOVED_MODULES.items()))
def test_an_old_module_path_is_the_new_module(old, new):
    for key in [k for k in sys.modules if k == old or k.startswith(old + ".")]:
        del sys.modules[key]  # an alias an earlier test made: import the old path afresh
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__name__ == new and module.__spec__.name == new


@pytest.mark.parametrize("where, name", sorted(_compat.MOVED_NAMES))
def test_an_old_name_is_the_new_object(where, name):
    new = _compat.MOVED_NAMES[(where, name)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old_value = getattr(importlib.import_module(where), name)
    assert old_value is getattr(importlib.import_module(new), name)


def test_old_import_statements_keep_working():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from metaopt_tuner.recipes import Recipe, resolve_train_config
        from metaopt_tuner.report import compare, table_rows
        from metaopt_tuner.text.encoders import load_encoder

        from metaopt_tuner.artifact import resolve_artifact
    from metaopt_tuner.compare import compare as new_compare
    from metaopt_tuner.models.text.encoders import load_encoder as new_load_encoder
    from metaopt_tuner.resolver import resolve_artifact as new_resolve
    from metaopt_tuner.tasks.recipe import Recipe as NewRecipe
    assert (resolve_artifact, compare, load_encoder, Recipe) == (
        new_resolve, new_compare, new_load_encoder, NewRecipe)
    assert callable(resolve_train_config) and callable(table_rows)
