"""A suite's options as a user reads them: name, type, default and one description each, taken
from the suite class's ``__init__`` signature and its docstrings (what ``metaopt suites NAME``
prints).

A description comes from an ``Args:`` section (Google style, in the class's or ``__init__``'s
docstring) when the suite has one; otherwise from the first sentence of the class docstring that
names the option as ````name````.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["SuiteOption", "describe_suite"]

_ARGS = re.compile(r"^(?:Args|Arguments|Parameters):\s*$", re.M)
_ENTRY = re.compile(r"^(\s+)(\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.*)$")
_BASE_MODULE = "metaopt_tuner.tasks.base"
_SENTENCE_END = re.compile(r"(?<=[.;])\s+(?=[A-Z`(\"])")


@dataclass(frozen=True)
class SuiteOption:
    """One constructor option of a task suite.

    Args:
        name: the option, as ``-o NAME=VALUE`` takes it.
        type: its annotation as written in the code ("" when it has none).
        default: its default, JSON where it can be (what ``-o`` would take), else ``repr``.
        help: one description from the docstrings, or None when they do not name it.
        path: a place on disk (the CLI's ``--data-dir`` sets ``data_dir``); never read from an
            artifact's manifest.
    """

    name: str
    type: str
    default: str
    help: str | None
    path: bool = False


def _plain(text: str) -> str:
    """Docstring markup as plain text: ``x`` and :role:`~a.b.x` become x, lines joined."""
    text = re.sub(r":\w+:`~?([^`]+)`", lambda m: m[1].rsplit(".", 1)[-1], text)
    text = text.replace("``", "")
    return " ".join(text.split())


def _args_section(doc: str) -> dict[str, str]:
    found: dict[str, str] = {}
    match = _ARGS.search(doc)
    if not match:
        return found
    indent, current = None, None
    for line in doc[match.end():].splitlines()[1:] if doc[match.end():].startswith("\n") else []:
        if not line.strip():
            continue
        entry = _ENTRY.match(line)
        depth = len(line) - len(line.lstrip())
        if indent is None and entry:
            indent = depth
        if indent is None or depth < indent:
            break
        if entry and depth == indent:
            current = entry[2].lstrip("*")
            found[current] = entry[3]
        elif current is not None:
            found[current] += " " + line.strip()
    return {name: _plain(text) for name, text in found.items()}


def _sentences(doc: str) -> list[str]:
    """The prose's sentences, lines joined (an ``Args:`` section is not prose)."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc)
                  if p.strip() and not _ARGS.match(p.strip())]
    return [s for p in paragraphs for s in _SENTENCE_END.split(p)]


def _default(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return "(required)"
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def describe_suite(name: str) -> tuple[str, list[SuiteOption]]:
    """A suite's one-paragraph summary and its options, in constructor order.

    Args:
        name: a registered suite (see ``list_suites``) or ``module:Class`` (imported: code you
            named yourself).

    Returns:
        The first paragraph of the class docstring, as plain text, and the options.

    Raises:
        SuiteError: an unknown name or a path that cannot be imported.
    """
    from . import suite_class

    cls = suite_class(name)
    class_doc = inspect.getdoc(cls) or ""
    # the suite's own docstrings first, then those of the suites it extends (image-folder's
    # options are the Omniglot suite's), never the protocol base classes'
    own = [c for c in cls.__mro__ if c.__module__ != _BASE_MODULE and c is not object]
    described: dict[str, str] = {}
    sentences: list[str] = []
    for c in reversed(own):
        doc = inspect.cleandoc(vars(c).get("__doc__") or "")
        init = vars(c).get("__init__")
        init_doc = inspect.cleandoc(init.__doc__ or "") if init is not None else ""
        described.update({**_args_section(init_doc), **_args_section(doc)})
    for c in own:
        sentences += _sentences(inspect.cleandoc(vars(c).get("__doc__") or ""))
    summary = _plain(re.split(r"\n\s*\n", class_doc)[0]) if class_doc else ""
    path_options = set(getattr(cls, "path_options", ()) or ())
    options = []
    for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        help_text = described.get(parameter.name)
        if help_text is None:
            mention = re.compile(rf"``{parameter.name}(?:=[^`]*)?``")
            help_text = next((_plain(s) for s in sentences if mention.search(s)), None)
        annotation = parameter.annotation
        kind = "" if annotation is parameter.empty else (
            annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation)))
        options.append(SuiteOption(parameter.name, kind, _default(parameter.default), help_text,
                                   parameter.name in path_options))
    return summary, options
