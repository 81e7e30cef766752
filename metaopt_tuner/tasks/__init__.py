"""Task distributions, registered by name: ``get_suite("sinusoid", shots=10)``.

Wherever a suite name is accepted, ``"package.module:Class"`` names a :class:`TaskSuite`
subclass importable in the environment (a user's own suite) just as well. Such a name is code:
an artifact's manifest that names one is imported only with the user's explicit trust (see
``Artifact.suite_class``); registered names (the built-ins and :func:`register_suite`'s) are not.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import MetaOptError, SuiteError
from ..imports import import_object
from .base import ClassificationSuite, Task, TaskBatch, TaskDraw, TaskSuite
from .stream import TaskStream

__all__ = [
    "Task",
    "TaskBatch",
    "TaskDraw",
    "TaskStream",
    "TaskSuite",
    "ClassificationSuite",
    "get_suite",
    "is_registered_suite",
    "list_suites",
    "register_suite",
    "unregister_suite",
    "suite_class",
    "suite_ref",
    "suite_from_class",
]

# name -> "module:Class", imported lazily so a suite's optional dependencies load only when used.
_REGISTRY: dict[str, str] = {
    "sinusoid": "metaopt_tuner.tasks.sinusoid:SinusoidSuite",
    "omniglot": "metaopt_tuner.tasks.omniglot:OmniglotSuite",
    "image-folder": "metaopt_tuner.tasks.omniglot:ImageFolderSuite",
    "intents": "metaopt_tuner.tasks.intents:IntentSuite",
}


def register_suite(name: str, target: str | type[TaskSuite]) -> None:
    """Register a suite class (or its ``"module:Class"`` path) under ``name``.

    Args:
        name: the name ``get_suite`` and ``metaopt train --suite`` take.
        target: a :class:`TaskSuite` subclass, or its ``"module:Class"`` path (imported lazily).
    """
    if isinstance(target, type):
        target = f"{target.__module__}:{target.__qualname__}"
    _REGISTRY[name] = target


def unregister_suite(name: str) -> None:
    """Forget the suite registered as ``name`` (nothing happens for an unknown name)."""
    _REGISTRY.pop(name, None)


def list_suites() -> list[str]:
    """Names of every registered suite, sorted.

    Returns:
        The suite names.
    """
    return sorted(_REGISTRY)


def is_registered_suite(name: str) -> bool:
    """Whether ``name`` is registered (a built-in or :func:`register_suite`'s), not ``module:Class``."""
    return isinstance(name, str) and name in _REGISTRY


def suite_class(name: str) -> type[TaskSuite]:
    """The class of the suite registered as ``name``, or imported from ``"module:Class"``.

    Raises:
        SuiteError: an unknown name, a path that cannot be imported, or not a TaskSuite.
    """
    if name in _REGISTRY:
        target = _REGISTRY[name]
    elif ":" in name:
        target = name
    else:
        raise SuiteError(f"unknown suite {name!r}; available: {', '.join(list_suites())} "
                         "(or module:Class for your own)")
    try:
        obj: Any = import_object(target)
    except Exception as exc:  # ImportError, AttributeError, or the module's own failure
        raise SuiteError(f"cannot import suite {name!r}: {type(exc).__name__}: {exc}") from None
    if not (isinstance(obj, type) and issubclass(obj, TaskSuite)):
        raise SuiteError(f"suite {name!r} is not a TaskSuite subclass")
    return obj


def suite_ref(suite: TaskSuite) -> str:
    """The name that rebuilds ``suite`` with :func:`get_suite`: its registered name, or
    ``"module:Class"`` for a suite that is not registered under its ``name``."""
    cls = type(suite)
    if suite.name in _REGISTRY and _REGISTRY[suite.name] == f"{cls.__module__}:{cls.__qualname__}":
        return suite.name
    return f"{cls.__module__}:{cls.__qualname__}"


def get_suite(name: str, **options: Any) -> TaskSuite:
    """Build the suite registered as ``name`` with ``options``; unknown options are an error.

    Args:
        name: a registered suite (see :func:`list_suites`) or ``module:Class``.
        **options: the suite's constructor arguments (``shots``, ``data_dir``, ...).

    Returns:
        The suite.

    Raises:
        SuiteError: an unknown suite, an option it does not accept, or an invalid value.
        DataError: a file-backed suite's data is missing or malformed (when it reads them early).
    """
    return suite_from_class(suite_class(name), name, **options)


def suite_from_class(cls: type[TaskSuite], name: str, /, **options: Any) -> TaskSuite:
    """Build suite class ``cls`` (called ``name`` in errors) with ``options``, checked as
    :func:`get_suite` checks them."""
    accepted = inspect.signature(cls.__init__).parameters
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(k for k in options if k not in accepted and not has_var_kw)
    if unknown:
        valid = sorted(k for k in accepted if k != "self")
        raise SuiteError(
            f"suite {name!r} does not accept option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(valid)}"
        )
    try:
        return cls(**options)
    except MetaOptError:
        raise
    except Exception as exc:
        if ":" in name:  # a user's suite: the error may be in its own code, not in the options
            given = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "none"
            raise SuiteError(f"suite {name!r}: its constructor raised {type(exc).__name__}: {exc} "
                             f"(options: {given})") from None
        if isinstance(exc, (TypeError, ValueError)):
            # e.g. shots="abc": int() or float() on a wrongly typed option value
            raise SuiteError(f"suite {name!r}: invalid option value ({exc})") from None
        raise
