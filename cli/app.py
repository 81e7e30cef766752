"""The Typer app, the command registry and the one table mapping library errors to exit codes."""

from __future__ import annotations

import sys
import warnings

import typer
from rich.console import Console

from metaopt_tuner.errors import DistributedError, MetaOptError, MetaOptWarning, NonFiniteLossError

from .commands.compare import compare
from .commands.download import download
from .commands.evaluate import evaluate
from .commands.inspect import inspect
from .commands.publish import publish
from .commands.registry import registry
from .commands.suites import suites
from .commands.train import train
from .commands.tune import tune
from .display import printable

app = typer.Typer(
    name="metaopt",
    help="Meta-learn initial weights and per-weight learning rates; use them as an optimizer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("suites")(suites)
app.command("train")(train)
app.command("download")(download)
app.command("evaluate")(evaluate)
app.command("inspect")(inspect)
app.command("compare")(compare)
app.command("tune")(tune)
app.command("publish")(publish)
app.add_typer(registry, name="registry")

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

#: library error -> exit code. Bad input is 2 (like a usage error); a run that failed is 1.
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (NonFiniteLossError, 1),
    (DistributedError, 1),
    (MetaOptError, 2),
]


def exit_code_for(exc: BaseException) -> int | None:
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return None


def _show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
    """The library's own warnings as one ``warning:`` line; others as Python prints them."""
    if issubclass(category, MetaOptWarning):
        err_console.print(f"warning: {printable(message)}", markup=False)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning library errors into one line and an exit code."""
    warnings.showwarning = _show_warning
    try:
        app(args=argv, standalone_mode=False)
    except MetaOptError as exc:
        err_console.print(f"error: {printable(exc)}", markup=False)
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        sys.exit(130)
    except typer.Abort:
        sys.exit(1)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", None)
        sys.exit(code if code is not None else getattr(exc, "code", 0))
    except Exception as exc:
        # Usage errors (a bad option value, an unknown option): click's ClickException, which
        # recent Typer versions vendor under another module, so it is recognized by its interface.
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise
