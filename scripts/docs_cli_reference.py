"""The CLI reference, rendered from the Typer app itself (so it cannot drift from the code).

As a MkDocs hook (``hooks:`` in mkdocs.yml) it replaces the line ``<!-- cli-reference -->`` in a
page with the Markdown reference of every ``metaopt`` command; run as a script it prints that
Markdown (``python scripts/docs_cli_reference.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

MARKER = "<!-- cli-reference -->"


def cli_reference() -> str:
    """Markdown for every command: usage, arguments and options, from Typer's own docs renderer."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import typer
    import typer.cli

    from cli.app import app

    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="metaopt")
    text = typer.cli.get_docs_for_click(obj=command, ctx=ctx, name="metaopt")
    return text.replace("# `metaopt`", "", 1).strip() + "\n"


def on_page_markdown(markdown: str, **_: object) -> str:
    """MkDocs hook: fill the marker."""
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown


if __name__ == "__main__":
    sys.stdout.write(cli_reference())
