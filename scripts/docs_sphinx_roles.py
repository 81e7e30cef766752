"""A Griffe extension for the API page: the docstrings' Sphinx roles become links or code.

The package's docstrings cross-reference with Sphinx roles (``:class:`~metaopt_tuner.artifact.Artifact```,
``:func:`train```, ``:meth:`step```), which read well in ``help()`` and an editor but are raw text
to mkdocstrings. mkdocs.yml loads this extension (``extensions:`` of the Python handler), and it
rewrites every role, once the package is loaded, into

- a link to the object's entry on the site when the target resolves to an object of the package
  (an optional autoref, by the object's canonical path, so a re-exported name links to where the
  page renders it, and a target the site does not render is shown as code, without a warning);
- code (``Artifact``) when it does not (an outside name such as ``torch.optim.Optimizer``).

The text shown is Sphinx's: the target as written, or its last part after ``~``. Resolution is
Sphinx's too: a dotted path from a top-level package, or a name looked up from the docstring's
object outwards (its class, then its module and the packages above it).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

#: ``:class:`x```, ``:py:meth:`~a.b```; the roles the package uses (a test checks no other is)
ROLES = ("class", "func", "meth", "attr", "data", "mod", "exc", "obj", "const")
ROLE = re.compile(r":(?:py:)?(?P<role>" + "|".join(ROLES) + r"):`(?P<tilde>~?)(?P<target>[^`<>]+)`")


def _member(obj: griffe.Object | griffe.Alias, name: str) -> griffe.Object | griffe.Alias | None:
    """``obj``'s member ``name`` (inherited members included), or None."""
    try:
        members = obj.members
        if name in members:
            return members[name]
        if isinstance(obj, griffe.Class) or (isinstance(obj, griffe.Alias) and obj.is_class):
            return obj.all_members.get(name)
    except (griffe.AliasResolutionError, griffe.CyclicAliasError, KeyError):
        return None
    return None


def _walk(start: griffe.Object | griffe.Alias, parts: list[str]) -> griffe.Object | griffe.Alias | None:
    found: griffe.Object | griffe.Alias | None = start
    for part in parts:
        found = _member(found, part) if found is not None else None
    return found


def resolve(owner: griffe.Object, target: str, collection: griffe.ModulesCollection) -> str | None:
    """The canonical path of the object ``target`` names in ``owner``'s docstring, or None."""
    parts = target.lstrip(".").split(".")
    if parts[0] in collection.members:
        found = _walk(collection.members[parts[0]], parts[1:])
    else:
        found = None
        scope: griffe.Object | None = owner
        while scope is not None and found is None:
            found = _walk(scope, parts)
            scope = scope.parent
    if found is None:
        return None
    try:
        return found.final_target.path if isinstance(found, griffe.Alias) else found.path
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None  # a name imported from outside the package


def rewrite(text: str, owner: griffe.Object, collection: griffe.ModulesCollection) -> str:
    """``text`` with every role replaced by an optional autoref (or code, when unresolved)."""

    def replace(match: re.Match[str]) -> str:
        target = match["target"].strip()
        shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
        path = resolve(owner, target, collection)
        if path is None:
            return f"`{shown}`"
        return (f'<autoref identifier="{html.escape(path)}" optional>'
                f"<code>{html.escape(shown)}</code></autoref>")

    return ROLE.sub(replace, text)


def _objects(obj: griffe.Object) -> list[griffe.Object]:
    """``obj`` and everything defined under it (not the aliases: they share their target's docstring)."""
    found = [obj]
    for member in obj.members.values():
        if not isinstance(member, griffe.Alias):
            found += _objects(member)
    return found


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles of a loaded package's docstrings (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for obj in _objects(pkg):
            if obj.docstring is not None and ":`" in obj.docstring.value:
                obj.docstring.value = rewrite(obj.docstring.value, obj, loader.modules_collection)
