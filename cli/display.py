"""Text from files and servers made safe to print: no terminal escapes, no markup."""

from __future__ import annotations

from rich.markup import escape


def printable(value: object) -> str:
    """``str(value)`` with every non-printable character (ESC, NUL, newlines, bidirectional
    overrides, ...) written as its Python escape, so text from a manifest or a registry cannot
    clear a screen, set a window title or reorder what the user reads."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def cell(value: object) -> str:
    """:func:`printable` text for a rich table cell: square brackets are not read as markup."""
    return escape(printable(value))
