"""Executed documentation: the code blocks of README.md and docs/ run, so they cannot rot.

Python blocks of a page run in order in one namespace (like a notebook), in a fresh folder, at tiny
settings: counts such as ``iterations=2000`` or ``range(2000)`` are cut to a few (``TINY``), so the
default run takes seconds; what is checked is that the code runs as written, not its figures. The
how-to guides' shell blocks run in a slow test, with ``metaopt`` meaning this checkout's CLI and
the same cuts for ``--iterations``, ``--trials`` and ``--tasks``. A block is left out only when the
line before it says why: ``<!-- docs-test: skip (needs two machines) -->``; a block preceded by
``<!-- docs-test: file=NAME -->`` is also written to NAME, for the blocks after it to import.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
HOW_TOS = sorted((REPO / "docs" / "how-to").glob("*.md"))
TINY = 3  # what iteration, trial and task counts become

_FENCE = re.compile(r"(?:^<!-- docs-test: (?P<note>[^>]*) -->\n)?^```(?P<lang>\w*)\n(?P<code>.*?)^```$",
                    re.M | re.S)


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    skip: str | None  # the reason, when the page says to leave the block out
    file: str | None  # where the page says to write the block


def blocks(page: Path) -> list[Block]:
    found = []
    for m in _FENCE.finditer(page.read_text()):
        note = (m["note"] or "").strip()
        skip = note[len("skip"):].strip(" ()") if note.startswith("skip") else None
        file = note[len("file="):] if note.startswith("file=") else None
        if note and skip is None and file is None:
            raise ValueError(f"{page.name}: unknown docs-test note {note!r}")
        if skip == "":
            raise ValueError(f"{page.name}: a skipped block must say why")
        found.append(Block(m["lang"], m["code"], skip, file))
    return found


def tiny_python(code: str) -> str:
    code = re.sub(r"\b(iterations|trials|num_tasks|tasks)=\d[\d_]*", rf"\1={TINY}", code)
    return re.sub(r"\brange\((\d{3,})\)", f"range({TINY})", code)


def tiny_shell(code: str) -> str:
    return re.sub(r"(--(?:iterations|trials|tasks|val-tasks|oracle-tasks|pretrain-steps)) \d+", rf"\1 {TINY}",
                  code)


def run_python_blocks(page: Path, folder: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for index, block in enumerate(b for b in blocks(page) if b.lang == "python" and b.skip is None):
        if block.file:
            (folder / block.file).write_text(block.code)
        exec(compile(tiny_python(block.code), f"{page.name} python block {index + 1}", "exec"), namespace)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _pages_with(lang: str, pages: list[Path]) -> list[Path]:
    return [p for p in pages if any(b.lang == lang for b in blocks(p))]


@pytest.mark.parametrize("page", _pages_with("python", PAGES), ids=lambda p: str(p.relative_to(REPO)))
def test_python_blocks_run(page, in_tmp, capsys):
    run_python_blocks(page, in_tmp)


def test_every_page_has_a_checked_block_or_none_to_check():
    """Every fenced block is Python, shell or plain output, and every skip says why (parsing checks)."""
    for page in PAGES:
        for block in blocks(page):
            assert block.lang in {"python", "bash", "console", "text", ""}, (page, block.lang)


def test_how_to_shell_commands_are_tiny_after_the_cuts():
    shell = tiny_shell("metaopt train --iterations 2000 --trials 50")
    assert shell == "metaopt train --iterations 3 --trials 3"
    python = tiny_python("train(iterations=2_000)\nfor i in range(2000):")
    assert python == "train(iterations=3)\nfor i in range(3):"


def test_docs_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="the `docs` extra installs MkDocs (.ci/run builds the site)")
    pytest.importorskip("mkdocstrings", reason="the `docs` extra installs mkdocstrings")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "api" / "index.html").read_text().count('id="metaopt_tuner.MetaSGD"') == 1


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages_with("bash", HOW_TOS), ids=lambda p: p.name)
def test_how_to_shell_commands_run(page, in_tmp):
    bin_dir = in_tmp / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "metaopt"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cli "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(in_tmp)]), "OMP_NUM_THREADS": "1"}
    run_python_blocks(page, in_tmp)  # the data and files the commands use
    for block in blocks(page):
        if block.lang != "bash" or block.skip is not None:
            continue
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", tiny_shell(block.code)], cwd=in_tmp, env=env,
                              capture_output=True, text=True, timeout=900)
        output = f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        assert done.returncode == 0, f"{page.name}:\n{block.code}\n{output}"
