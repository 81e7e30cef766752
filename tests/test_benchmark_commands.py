"""Every benchmark command the site and the README print names a script of the tree, and runs.

A page that prints ``python benchmarks/NAME.py ...`` or ``bash benchmarks/NAME.sh ...`` (in a code
block or inline) must name a file that exists; each such Python script answers ``--help`` with exit
status 0 and each shell script ``-h``, run from the repository root as the pages print them (a
script whose optional imports are missing here is skipped, naming the module). Every other mention
of ``benchmarks/NAME.py`` or ``.sh`` on a page names an existing file too.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
#: a printed command: ``python benchmarks/NAME.py`` or ``bash benchmarks/NAME.sh``
COMMAND = re.compile(r"\b(python|bash) (benchmarks/[\w./-]+?\.(?:py|sh))\b")
#: any mention of a benchmark script
MENTION = re.compile(r"\bbenchmarks/[\w./-]+?\.(?:py|sh)\b")


def _printed(pattern: re.Pattern[str]) -> dict[str, list[str]]:
    """``what -> the pages that print it`` (``what``: the match's text)."""
    found: dict[str, list[str]] = {}
    for page in PAGES:
        for m in pattern.finditer(page.read_text()):
            found.setdefault(m[0], []).append(str(page.relative_to(REPO)))
    return found


COMMANDS = sorted(_printed(COMMAND))


def test_the_pages_print_benchmark_commands():
    """The scan finds what the pages print (a broken pattern would make the checks below vacuous)."""
    assert "python benchmarks/omniglot_small.py" in COMMANDS
    assert "bash benchmarks/device_omniglot.sh" in COMMANDS


def test_every_mentioned_benchmark_script_exists():
    missing = {path: pages for path, pages in _printed(MENTION).items() if not (REPO / path).is_file()}
    assert not missing, f"pages name benchmark scripts that are not in the tree: {missing}"


def _missing_optional_module(stderr: str) -> str | None:
    """The module a failed ``--help`` could not import, when this environment lacks it."""
    m = re.search(r"ModuleNotFoundError: No module named '([\w.]+)'", stderr)
    if m is None:
        return None
    top = m[1].split(".")[0]
    return top if importlib.util.find_spec(top) is None else None


@pytest.mark.parametrize("command", COMMANDS)
def test_benchmark_command_answers_help(command):
    runner, path = command.split(" ", 1)
    assert (REPO / path).is_file(), f"{command}: no such file"
    argv = [sys.executable, path, "--help"] if runner == "python" else ["bash", path, "-h"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        module = _missing_optional_module(done.stderr)
        if module is not None:
            pytest.skip(f"{path} imports {module}, which is not installed (an optional extra)")
    assert done.returncode == 0, f"{' '.join(argv[1:])} exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert "usage" in (done.stdout + done.stderr).lower(), done.stdout[-2000:]
