"""Text from files and servers made safe to print (no terminal escapes, no markup), and tables that
fall back to plain lines when they would be cut."""

from __future__ import annotations

import io

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text


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


def fits(console: Console, table: Table) -> bool:
    """Whether ``table`` prints on ``console`` with nothing cut: the console is a terminal (piped
    output goes to programs and pagers, which get plain lines) and, with the table laid out at the
    terminal's width, every word of every cell shows whole (rich cuts a cell to an ellipsis or
    squeezes a column to nothing when the table is too wide)."""
    if not console.is_terminal:
        return False
    trial = Console(file=io.StringIO(), width=console.width, color_system=None, highlight=False)
    trial.print(table)
    shown = trial.file.getvalue()
    for column in table.columns:
        for value in column.cells:
            plain = Text.from_markup(value).plain if isinstance(value, str) else str(value)
            if any(word not in shown for word in plain.split()):
                return False
    return True


def print_lines(records: list[tuple[str | None, list[tuple[str, object]]]], title: str | None = None) -> None:
    """The plain form of a table: a record is a heading line (None: no heading) and its
    ``key: value`` lines (indented under a heading), every text made :func:`printable`; nothing is
    cut or wrapped, so ``| grep`` and ``| cat`` see whole names."""
    if title:
        typer.echo(printable(title))
    for heading, fields in records:
        indent = ""
        if heading is not None:
            typer.echo(printable(heading))
            indent = "  "
        for key, value in fields:
            text = printable(value)
            typer.echo(f"{indent}{printable(key)}: {text if text.strip() else '-'}")
