"""The CLI reference, rendered from the Typer app itself (so it cannot drift from the code).

As a MkDocs hook (``hooks:`` in mkdocs.yml) it replaces the line ``<!-- cli-reference -->`` in a
page with the Markdown reference of every ``metaopt`` command, and ``<!-- suite-options -->`` with
every built-in suite's options (what ``metaopt suites NAME`` prints); run as a script it prints that
Markdown (``python scripts/docs_cli_reference.py``).
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

MARKER = "<!-- cli-reference -->"
SUITES_MARKER = "<!-- suite-options -->"


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


def suite_options_reference() -> str:
    """Markdown for every built-in suite's ``-o`` options, from the same source as ``metaopt
    suites NAME`` (``metaopt_tuner.tasks.describe``): the constructor's signature and docstrings."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from metaopt_tuner.tasks import list_suites
    from metaopt_tuner.tasks.describe import describe_suite

    parts = []
    for name in list_suites():
        summary, options = describe_suite(name)
        parts += [f"## {name}", "", html.escape(summary, quote=False), "",
                  f"`metaopt suites {name}` prints the same.", ""]
        shown: dict[str, str] = {}
        for option in options:
            line = f"- `{option.name}`: `{option.type or 'any'}`, default `{option.default}`"
            if option.path:
                line += " (a path, given with `--data-dir`)" if option.name == "data_dir" else " (a path)"
            if option.help is not None:
                text = f"see `{shown[option.help]}`" if option.help in shown else option.help
                shown.setdefault(option.help, option.name)
                line += ". " + html.escape(text, quote=False)
            parts.append(line)
        parts.append("")
    return "\n".join(parts)


MARKERS = {MARKER: cli_reference, SUITES_MARKER: suite_options_reference}


def on_page_markdown(markdown: str, **_: object) -> str:
    """MkDocs hook: fill the markers."""
    for marker, render in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown


if __name__ == "__main__":
    sys.stdout.write(cli_reference())
