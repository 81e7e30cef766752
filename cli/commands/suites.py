"""``metaopt suites``: list the registered task suites."""

from __future__ import annotations

import typer

from metaopt_tuner.tasks import list_suites


def suites() -> None:
    """List the task suites that `metaopt train --suite` accepts."""
    for name in list_suites():
        typer.echo(name)
