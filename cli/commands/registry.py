"""``metaopt registry list|alias``: the registered models, their versions and aliases."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from metaopt_tuner.registry import list_versions, set_alias

from ..display import cell, fits, print_lines, printable
from ..options import JsonOut, RegistryUri

registry = typer.Typer(help="The model registry: list registered artifacts, move aliases.",
                       no_args_is_help=True)


@registry.command("list")
def list_(
    name: Annotated[str | None, typer.Argument(help="A registered model \\[default: all].", show_default=False)] = None,
    tracking_uri: RegistryUri = None,
    json_out: JsonOut = False,
) -> None:
    """List registered models: names, versions, aliases, suites."""
    rows = list_versions(name, tracking_uri=tracking_uri)
    if json_out:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    columns = ("name", "version", "aliases", "suite", "learner", "steps", "sha256", "description")
    records = []
    for r in rows:
        suite = r.suite if r.is_artifact else "(not a metaopt artifact)"
        records.append((r.name, r.version, ", ".join(r.aliases), suite or "-", r.learner or "-",
                        r.steps or "-", (r.sha256 or "-")[:12], r.description or ""))
    console = Console(highlight=False)
    if not rows:
        console.print("no registered models")
        return
    table = Table()
    for column in columns:
        table.add_column(column, justify="right" if column in ("version", "steps") else "left",
                         no_wrap=column in ("name", "version"))
    for record in records:
        table.add_row(*(cell(c) for c in record))
    if fits(console, table):
        console.print(table)
        return
    # piped, or a terminal too narrow for the table: a heading per version, then key: value lines
    print_lines([(f"{record[0]} version {record[1]}", list(zip(columns[2:], record[2:]))) for record in records])


@registry.command("alias")
def alias(
    name: Annotated[str, typer.Argument(help="Registered model name.", show_default=False)],
    version: Annotated[int, typer.Argument(help="Version the alias should point to.", show_default=False)],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="Alias to set or move (e.g. prod).", show_default=False)],
    tracking_uri: RegistryUri = None,
) -> None:
    """Point ALIAS of NAME at VERSION (moving it from the version it named before)."""
    moved = set_alias(name, version, alias_name, tracking_uri=tracking_uri)
    typer.echo(printable(f"models:/{name}@{alias_name} -> version {moved.version}"))
