"""Every benchmark command the site and the README print names a script of the tree, and runs.

A page that prints ``python benchmarks/NAME.py ...`` or ``bash benchmarks/NAME.sh ...`` (in a code
block or inline) must name a file that exists; each such Python script answers ``--help`` with exit
status 0 and each shell script ``-h``, run from the repository root as the pages print them (a
script whose optional imports are missing here is skipped, naming the module). Every other mention
of ``benchmarks/NAME.py`` or ``.sh`` on a page names an existing file too.

Every table of measured figures (the Benchmarks page, What to expect, the README) says, between its
section's heading and the table, the code it was measured on: ``commit`` and a hash of 7 or more
hex digits, which must name a commit of this repository when the tests run in a full git checkout.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_docs import PAGES, REPO

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


#: pages whose tables hold measured figures
MEASURED = [REPO / "docs" / "benchmarks.md", REPO / "docs" / "expectations.md", REPO / "README.md"]
#: ``commit abc1234``: the code a table's figures were measured on
STAMP = re.compile(r"\bcommit\s+`?([0-9a-f]{7,40})\b")


def _tables(page: Path) -> list[tuple[int, str]]:
    """``(line, section)`` for each markdown table of ``page``: the line it starts on and the text
    between the heading before it and the table (headings inside fenced code blocks are not)."""
    tables: list[tuple[int, str]] = []
    section: list[str] = []
    fenced = in_table = False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            section, in_table = [], False
            continue
        row = not fenced and line.startswith("|")
        if row and not in_table:
            tables.append((number, "\n".join(section)))
        in_table = row
        section.append(line)
    return tables


TABLES = {f"{page.relative_to(REPO)}:{line}": section
          for page in MEASURED for line, section in _tables(page)}


def test_the_pages_have_tables():
    """The scan finds the tables (a broken scan would make the checks below vacuous)."""
    assert sum(name.startswith("docs/benchmarks.md:") for name in TABLES) >= 20
    assert any(name.startswith("README.md:") for name in TABLES)


def test_every_table_names_the_commit_it_was_measured_at():
    unstamped = [name for name, section in TABLES.items() if not STAMP.search(section)]
    assert not unstamped, (
        "tables with no 'commit <hash>' (the code their figures were measured on) between their "
        f"section's heading and the table: {unstamped}")


def test_every_named_commit_exists():
    """Each ``commit <hash>`` before a table names one commit of this repository (skipped outside a
    git checkout, and in a shallow clone, which lacks the older commits)."""
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the commits cannot be looked up")
    shallow = subprocess.run([git, "rev-parse", "--is-shallow-repository"], cwd=REPO,
                             capture_output=True, text=True)
    if shallow.returncode != 0 or shallow.stdout.strip() != "false":
        pytest.skip("a shallow clone (or git could not say): older commits may be absent")
    named: dict[str, list[str]] = {}
    for name, section in TABLES.items():
        for commit in STAMP.findall(section):
            named.setdefault(commit, []).append(name)
    asked = "".join(f"{commit}^{{commit}}\n" for commit in named)
    done = subprocess.run([git, "cat-file", "--batch-check"], cwd=REPO, input=asked,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answers = done.stdout.splitlines()
    assert len(answers) == len(named), done.stdout
    unknown = {commit: tables for (commit, tables), answer in zip(named.items(), answers)
               if answer.split()[1:2] != ["commit"]}
    assert not unknown, f"tables name commits this repository does not have (or ambiguous): {unknown}"
