"""The CLI reference, rendered from the Typer app itself (so it cannot drift from the code).

As a MkDocs hook (``hooks:`` in mkdocs.yml) it replaces the line ``<!-- cli-reference -->`` in a
page with the Markdown reference of every ``metaopt`` command, and ``<!-- suite-options -->`` with
every built-in suite's options (what ``metaopt suites NAME`` prints); run as a script it prints that
Markdown (``python scripts/docs_cli_reference.py``).
"""

from __future__ import annotations

import html
import inspect
import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- cli-reference -->"
SUITES_MARKER = "<!-- suite-options -->"


def cli_reference(app: Any = None, name: str = "metaopt") -> str:
    """Markdown for every command of a Typer app (``metaopt``'s by default): its whole help,
    usage, then its arguments and options by panel (Typer's ``rich_help_panel``, as
    ``metaopt COMMAND --help`` groups them), and a group's commands, each with its summary."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import typer

    if app is None:
        from cli.app import app
    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name=name)
    return "\n".join(_command_docs(command, ctx, name, level=1)).strip() + "\n"


#: the panels of parameters that name none, as ``--help`` calls them
DEFAULT_PANELS = {"argument": "Arguments", "option": "Options"}


def summary(command: Any) -> str:
    """A command's one-line summary: the first sentence of its help, whole (click's own short
    help cuts it at 45 characters, even inside a `code` span)."""
    return command.get_short_help_str(limit=10**6)


def param_name(param: Any, ctx: Any) -> str:
    """How a parameter is written: ``-n, --iterations <int>``; a flag without a value
    (``--resume``, ``--progress / --no-progress``); an argument's metavar."""
    record = param.get_help_record(ctx)
    assert record is not None
    flag = getattr(param, "is_flag", False) or getattr(param, "secondary_opts", [])
    if param.param_type_name == "option" and flag and not getattr(param, "count", False):
        on = ", ".join(sorted(param.opts, key=len))
        return f"{on} / {', '.join(param.secondary_opts)}" if param.secondary_opts else on
    return record[0]


def panels(command: Any, ctx: Any) -> dict[str, list[tuple[str, str]]]:
    """``panel title -> [(name, help)]``: the default panels first, then the others in the order
    of their first parameter."""
    found: dict[str, list[tuple[str, str]]] = {title: [] for title in DEFAULT_PANELS.values()}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        title = getattr(param, "rich_help_panel", None) or DEFAULT_PANELS[param.param_type_name]
        found.setdefault(title, []).append((param_name(param, ctx), record[1]))
    return {title: rows for title, rows in found.items() if rows}


def _command_docs(command: Any, parent: Any, path: str, level: int) -> list[str]:
    ctx = command.context_class(command, info_name=path.rsplit(" ", 1)[-1], parent=parent) \
        if level > 1 else parent
    lines = [f"{'#' * level} `{path}`", ""] if level > 1 else []
    if command.help:
        lines += [inspect.cleandoc(command.help), ""]
    lines += ["**Usage**:", "", "```console", f"$ {path} {' '.join(command.collect_usage_pieces(ctx))}",
              "```", ""]
    for title, rows in panels(command, ctx).items():
        lines += [f"**{title}**:", ""]
        lines += [f"* `{name}`" + (f": {text}" if text else "") for name, text in rows]
        lines.append("")
    if command.epilog:
        lines += [command.epilog, ""]
    if hasattr(command, "list_commands"):  # a group (Typer bundles its own click)
        names = command.list_commands(ctx)
        lines += ["**Commands**:", ""]
        lines += [f"* `{name}`: {summary(command.get_command(ctx, name))}" for name in names]
        lines.append("")
        for name in names:
            lines += _command_docs(command.get_command(ctx, name), ctx, f"{path} {name}", level + 1)
    return lines


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
