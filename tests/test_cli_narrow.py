"""Terminal output at 80 columns and through a pipe: `metaopt inspect` and `metaopt registry list`
never cut the identifying column (tensor, name, version); they print plain ``key: value`` lines
when their table would be cut or when stdout is not a terminal."""

from __future__ import annotations

import pytest
from rich.console import Console

from metaopt_tuner.registry import RegisteredVersion

from .helpers import run_cli

LONG_NAME = "omniglot-20way-1shot-head-alone-recipe-with-a-long-name"


@pytest.fixture
def terminal(monkeypatch):
    """Make rich see a terminal of a given width (``terminal(80)``)."""

    def make(width: int) -> None:
        monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
        monkeypatch.setenv("COLUMNS", str(width))
        monkeypatch.setenv("NO_COLOR", "1")

    return make


def test_inspect_piped_prints_whole_lines(capsys):
    code, out, err = run_cli(capsys, "inspect", "sinusoid")
    assert code == 0, err
    assert "…" not in out and "┃" not in out  # plain lines, nothing cut
    lines = out.splitlines()
    assert "model: mlp(sizes=[1, 40, 40, 1])" in lines
    for name, shape in [("layers.0.weight", "40×1"), ("layers.1.weight", "40×40"), ("layers.2.bias", "1")]:
        assert f"{name} ({shape})" in lines
    assert sum(line.startswith("  step 9: ") for line in lines) == 6  # every tensor, every step
    assert "(101 values)" in out  # a metric per step shows its first and last values, not 101


@pytest.mark.parametrize("width", [80, 120])
def test_inspect_on_a_narrow_terminal_falls_back_to_lines(terminal, capsys, width):
    terminal(width)
    code, out, err = run_cli(capsys, "inspect", "sinusoid")
    assert code == 0, err
    assert "…" not in out and "layers.1.weight (40×40)" in out.splitlines()


def test_inspect_on_a_wide_terminal_prints_tables_whole(terminal, capsys):
    terminal(400)
    code, out, err = run_cli(capsys, "inspect", "sinusoid")
    assert code == 0, err
    assert "┏" in out and "…" not in out and "layers.1.weight" in out


def _versions(monkeypatch, rows):
    import cli.commands.registry as registry_command

    monkeypatch.setattr(registry_command, "list_versions", lambda name=None, tracking_uri=None: rows)


ROWS = [
    RegisteredVersion(LONG_NAME, "12", ["prod", "candidate"], "omniglot", "metasgd", "1",
                      "ab" * 32, "Meta-SGD, prototype head, the omniglot recipe at 20-way 1-shot"),
    RegisteredVersion("other", "1", [], None, None, None, None, "a plain MLflow model", is_artifact=False),
]


def test_registry_list_piped_keeps_whole_names(monkeypatch, capsys):
    _versions(monkeypatch, ROWS)
    code, out, err = run_cli(capsys, "registry", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert f"{LONG_NAME} version 12" in lines and "other version 1" in lines
    assert "  aliases: prod, candidate" in lines and "  suite: (not a metaopt artifact)" in lines
    assert "  aliases: -" in lines  # an empty value is a dash, not a trailing space
    assert "…" not in out


def test_registry_list_at_80_columns_keeps_whole_names(terminal, monkeypatch, capsys):
    terminal(80)
    _versions(monkeypatch, ROWS)
    code, out, err = run_cli(capsys, "registry", "list")
    assert code == 0, err
    assert f"{LONG_NAME} version 12" in out.splitlines() and "…" not in out


def test_registry_list_on_a_wide_terminal_is_a_table(terminal, monkeypatch, capsys):
    terminal(300)
    _versions(monkeypatch, ROWS)
    code, out, err = run_cli(capsys, "registry", "list")
    assert code == 0, err
    assert "┏" in out and LONG_NAME in out and "…" not in out


def test_registry_list_escapes_names_in_plain_lines(monkeypatch, capsys):
    _versions(monkeypatch, [RegisteredVersion("evil\x1b[2J", "1", description="[red]x[/red]")])
    code, out, err = run_cli(capsys, "registry", "list")
    assert code == 0, err
    assert "\x1b" not in out and "evil\\x1b[2J version 1" in out and "[red]x[/red]" in out
