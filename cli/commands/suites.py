"""``metaopt suites [NAME]``: the registered task suites, or one suite's options."""

from __future__ import annotations

import textwrap
from typing import Annotated

import typer

from metaopt_tuner.tasks import list_suites
from metaopt_tuner.tasks.describe import describe_suite

from ..display import printable

_WIDTH = 80


def suites(
    name: Annotated[str | None, typer.Argument(
        help="A suite (or module:Class) whose options to print \\[default: list the suites].",
        show_default=False)] = None,
) -> None:
    """List the task suites that `metaopt train --suite` accepts; with NAME, its -o options."""
    if name is None:
        for suite in list_suites():
            typer.echo(suite)
        return
    summary, options = describe_suite(name)
    for line in textwrap.wrap(printable(f"{name}: {summary}" if summary else name), _WIDTH, break_on_hyphens=False):
        typer.echo(line)
    typer.echo("")
    typer.echo("options (-o KEY=VALUE; VALUE is read as JSON when it can be, e.g. -o shots=5):")
    shown: dict[str, str] = {}  # a description already printed -> the option it was printed for
    for option in options:
        head = f"  {option.name}: {option.type or 'any'} = {option.default}"
        if option.path:  # a place on disk: from the user, never from an artifact's manifest
            head += "  (--data-dir)" if option.name == "data_dir" else "  (a path)"
        typer.echo(printable(head))
        if option.help is None:
            continue
        text = f"(see {shown[option.help]})" if option.help in shown else option.help
        shown.setdefault(option.help, option.name)
        for line in textwrap.wrap(printable(text), _WIDTH - 6, break_on_hyphens=False):
            typer.echo(f"      {line}")
