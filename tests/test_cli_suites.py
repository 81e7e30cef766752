"""`metaopt suites [NAME]`: the suite names, or one suite's options with type, default and a
description from its docstrings (metaopt_tuner.tasks.describe)."""

from __future__ import annotations

import pytest

from metaopt_tuner.tasks import TaskSuite, list_suites
from metaopt_tuner.tasks.describe import describe_suite

from .helpers import run_cli


class DocumentedSuite(TaskSuite):
    """A suite whose options are documented in its constructor's docstring."""

    name = "documented"

    def __init__(self, shots: int = 3, scale: float = 0.5, path_like: str | None = None) -> None:
        """Build it.

        Args:
            shots: support examples per task,
                on two lines.
            scale: how much to scale.
        """

    def sample(self, num_tasks, generator, split="train"):  # pragma: no cover - never sampled
        raise NotImplementedError

    def model_spec(self):  # pragma: no cover
        return {"name": "mlp", "kwargs": {"sizes": [1, 1]}}


def test_suites_lists_the_names(capsys):
    code, out, err = run_cli(capsys, "suites")
    assert code == 0, err
    assert out.split() == list_suites()


def test_suites_name_prints_each_option_with_type_default_and_description(capsys):
    code, out, err = run_cli(capsys, "suites", "sinusoid")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("sinusoid: Regress a sine wave")
    for head in ("  shots: int = 10", "  query: int | None = null",
                 "  hidden: tuple[int, ...] | list[int] = [40, 40]",
                 "  x_range: tuple[float, float] = [-5.0, 5.0]"):
        assert head in lines, head
    described = lines[lines.index("  shots: int = 10") + 1].strip()
    assert described == "support points per task (the points a task adapts on)."


@pytest.mark.parametrize("name", list_suites())
def test_every_built_in_suite_prints_every_option_within_80_columns(capsys, name):
    code, out, err = run_cli(capsys, "suites", name)
    assert code == 0, err
    _, options = describe_suite(name)
    heads = [line.split(":")[0].strip() for line in out.splitlines() if line.startswith("  ") and
             not line.startswith("      ")]
    assert heads == [o.name for o in options]
    assert [o.name for o in options if not o.help] == []  # every option is described
    too_wide = [line for line in out.splitlines() if len(line) > 80]
    assert not too_wide, too_wide


def test_image_folder_options_say_how_to_split_by_class(capsys):
    code, out, err = run_cli(capsys, "suites", "image-folder")
    assert code == 0, err
    lines = out.splitlines()
    at = lines.index("  split_by: str | None = null")
    assert "auto" in " ".join(lines[at + 1:at + 6])
    assert "  data_dir: str | None = null  (--data-dir)" in lines
    assert "(see jitter_degrees)" in out  # one sentence for several options is printed once


def test_args_sections_and_module_class_suites(capsys):
    summary, options = describe_suite(f"{__name__}:DocumentedSuite")
    assert summary == "A suite whose options are documented in its constructor's docstring."
    by = {o.name: o for o in options}
    assert by["shots"].help == "support examples per task, on two lines." and by["shots"].default == "3"
    assert by["scale"].type == "float" and by["scale"].default == "0.5"
    assert by["path_like"].help is None and by["path_like"].default == "null"


def test_an_unknown_suite_is_one_line_and_exit_2(capsys):
    code, out, err = run_cli(capsys, "suites", "no-such-suite")
    assert code == 2 and "unknown suite 'no-such-suite'" in err and err.count("\n") == 1
