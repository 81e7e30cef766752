"""Executed documentation: the code blocks of README.md and docs/ run, so they cannot rot.

Python blocks of a page run in order in one namespace (like a notebook), in a fresh folder, at tiny
settings: counts such as ``iterations=2000`` or ``range(2000)`` are cut to a few (``TINY``), so the
default run takes seconds; what is checked is that the code runs as written, not its figures. The
guides' shell blocks (getting started, how-tos) and the README's run in slow tests, with ``metaopt``
meaning this checkout's CLI and the same cuts for ``--iterations``, ``--trials`` and ``--tasks``,
``--budget`` cut to a few seconds, and a ``train`` that trains for its recipe's length given
``--iterations``; ``pip install ... &&`` before a command is left out (this environment is the
installation). The registry and caches live in the test's folder, never in ``~/.metaopt``.

Notes on the line before a block: ``<!-- docs-test: skip (needs two machines) -->`` leaves it out
and says why; ``<!-- docs-test: file=NAME -->`` also writes it to NAME, for the blocks after it to
import; ``<!-- docs-test: needs MODULE -->`` marks a block that needs an optional package: where
MODULE cannot be imported, the page's test is skipped with that reason; ``<!-- docs-test: output
-->`` before a ``text`` block says it is exactly what the block before it prints (compared line by
line, trailing spaces aside: Python blocks in the default run, shell blocks in the slow one, at 80
columns).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
#: pages whose shell blocks run (the slow test): the guides; the Benchmarks page's need data folders
GUIDES = [*(REPO / "docs" / f"{name}.md" for name in ("install", "quick-tour", "getting-started",
                                                      "troubleshooting")),
          *sorted((REPO / "docs" / "how-to").glob("*.md"))]
TINY = 3  # what iteration, trial and task counts become

_FENCE = re.compile(r"(?:^<!-- docs-test: (?P<note>[^>]*) -->\n)?^```(?P<lang>\w*)\n(?P<code>.*?)^```$",
                    re.M | re.S)


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    skip: str | None  # the reason, when the page says to leave the block out
    file: str | None  # where the page says to write the block
    needs: str | None = None  # an optional module the block imports or its commands use
    output: bool = False  # a text block that is exactly what the block before it prints


def blocks(page: Path) -> list[Block]:
    found = []
    for m in _FENCE.finditer(page.read_text()):
        note = (m["note"] or "").strip()
        skip = note[len("skip"):].strip(" ()") if note.startswith("skip") else None
        file = note[len("file="):] if note.startswith("file=") else None
        needs = note[len("needs"):].strip() if note.startswith("needs") else None
        output = note == "output"
        if note and skip is None and file is None and needs is None and not output:
            raise ValueError(f"{page.name}: unknown docs-test note {note!r}")
        if skip == "" or needs == "":
            raise ValueError(f"{page.name}: a skipped block must say why, a needs note what")
        if output and (m["lang"] != "text" or not found or found[-1].lang not in ("python", "bash")):
            raise ValueError(f"{page.name}: an output note goes on a text block after a python or bash block")
        found.append(Block(m["lang"], m["code"], skip, file, needs, output))
    return found


def expected_output(page_blocks: list[Block], block: Block) -> str | None:
    """The text block the page shows as ``block``'s exact output, or None."""
    index = next(i for i, b in enumerate(page_blocks) if b is block)
    after = page_blocks[index + 1] if index + 1 < len(page_blocks) else None
    return after.code if after is not None and after.output else None


def assert_same_output(shown: str, printed: str, what: str) -> None:
    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip("\n").splitlines()]

    assert lines(printed) == lines(shown), f"{what}: the page shows\n{shown}\nbut it printed\n{printed}"


def skip_unless_installed(page_blocks: list[Block]) -> None:
    """Skip the test when a block of the page needs a package this environment lacks."""
    for block in page_blocks:
        if block.needs and block.skip is None and importlib.util.find_spec(block.needs) is None:
            pytest.skip(f"a block needs {block.needs}, which is not installed (an optional extra)")


def tiny_python(code: str) -> str:
    code = re.sub(r"\b(iterations|trials|num_tasks|tasks|budget_seconds)=\d[\d_.]*", rf"\1={TINY}", code)
    return re.sub(r"\brange\((\d{3,})\)", f"range({TINY})", code)


#: a command that meta-trains: ``metaopt train``, ``python -m cli train``, ``python launcher.py train``
_TRAIN = re.compile(r"(?:\bmetaopt|-m cli|\.py) train\b")
#: what decides a training run's length when given (else its recipe decides; --resume reads run.json)
_LENGTH = re.compile(r"(?:--iterations|--budget|-n|--resume|--show-config)\b")


def tiny_shell(code: str) -> str:
    code = re.sub(r"(--(?:iterations|trials|tasks|val-tasks|oracle-tasks|pretrain-steps)) \d+", rf"\1 {TINY}",
                  code)
    code = re.sub(r"--budget \S+", f"--budget {TINY}s", code)
    lines = code.replace("\\\n", " ").splitlines()  # one command a line
    return "\n".join(
        _TRAIN.sub(lambda m: f"{m[0]} --iterations {TINY}", line, count=1)
        if _TRAIN.search(line) and not _LENGTH.search(line) else line
        for line in lines
    ) + "\n"


def run_python_blocks(page: Path, folder: Path) -> None:
    """Run the page's Python blocks in order in one namespace; a block whose output the page shows
    (an ``output`` note) must print exactly that."""
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    page_blocks = blocks(page)
    for index, block in enumerate(b for b in page_blocks if b.lang == "python" and b.skip is None):
        if block.file:
            (folder / block.file).write_text(block.code)
        what = f"{page.name} python block {index + 1}"
        shown = expected_output(page_blocks, block)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed) if shown is not None else contextlib.nullcontext():
            exec(compile(tiny_python(block.code), what, "exec"), namespace)
        if shown is not None:
            assert_same_output(shown, printed.getvalue(), what)


#: where the embedded registry, caches and MLflow settings point during the tests
_ISOLATED = ("METAOPT_HOME", "METAOPT_CACHE_DIR")
_UNSET = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in _ISOLATED:
        monkeypatch.setenv(name, str(tmp_path / f".{name.lower()}"))
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _pages_with(lang: str, pages: list[Path]) -> list[Path]:
    return [p for p in pages if any(b.lang == lang for b in blocks(p))]


@pytest.mark.parametrize("page", _pages_with("python", PAGES), ids=lambda p: str(p.relative_to(REPO)))
def test_python_blocks_run(page, in_tmp, capsys):
    skip_unless_installed([b for b in blocks(page) if b.lang == "python"])
    run_python_blocks(page, in_tmp)


def test_every_page_has_a_checked_block_or_none_to_check():
    """Every fenced block is Python, shell or plain output, and every skip says why (parsing checks)."""
    for page in PAGES:
        for block in blocks(page):
            assert block.lang in {"python", "bash", "console", "text", ""}, (page, block.lang)


def test_how_to_shell_commands_are_tiny_after_the_cuts():
    shell = tiny_shell("metaopt train --iterations 2000 --trials 50")
    assert shell == "metaopt train --iterations 3 --trials 3\n"
    budget = tiny_shell("metaopt train --suite s --budget 20m --out o")
    assert budget == "metaopt train --suite s --budget 3s --out o\n"
    recipe = tiny_shell("metaopt train --suite s \\\n    --out o   # the recipe\n"
                        "metaopt train --out o --resume")
    assert recipe.split("\n") == ["metaopt train --iterations 3 --suite s      --out o   # the recipe",
                                   "metaopt train --out o --resume", ""]
    assert tiny_shell("python -m cli train --suite s --show-config --out o") == (
        "python -m cli train --suite s --show-config --out o\n")
    installed = without_installs('pip install torch==2.13.0 && pip install -e ".[dev]" && '
                                 'metaopt train --out o\npip install -e ".[mlflow]"   # the extra')
    assert installed == "metaopt train --out o\n:"
    python = tiny_python("train(iterations=2_000, budget_seconds=90)\nfor i in range(2000):")
    assert python == "train(iterations=3, budget_seconds=3)\nfor i in range(3):"


def _shell_env(folder: Path) -> dict[str, str]:
    """The environment of a page's shell commands: ``metaopt`` is this checkout's CLI, one thread."""
    bin_dir = folder / ".bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "metaopt"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cli "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join([str(REPO), str(folder)]), "OMP_NUM_THREADS": "1",
            "COLUMNS": "80"}


def without_installs(code: str) -> str:
    """Each line without its leading ``pip install ... &&`` commands: the tests' environment is
    already what they install."""
    lines = [re.sub(r"^(?:\s*pip install [^&]*&&)+\s*", "", line) for line in code.splitlines()]
    return "\n".join(":" if line.lstrip().startswith("pip install ") else line for line in lines)


def _run_shell(code: str, folder: Path, what: str, shown: str | None = None) -> None:
    code = tiny_shell(without_installs(code))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=folder,
                          env=_shell_env(folder), capture_output=True, text=True, timeout=900)
    output = f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"{what}:\n{code}\n{output}"
    if shown is not None:
        assert_same_output(shown, done.stdout, what)


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages_with("bash", GUIDES), ids=lambda p: p.name)
def test_guide_shell_commands_run(page, in_tmp):
    skip_unless_installed(blocks(page))
    run_python_blocks(page, in_tmp)  # the data and files the commands use
    page_blocks = blocks(page)
    for block in page_blocks:
        if block.lang == "bash" and block.skip is None:
            _run_shell(block.code, in_tmp, page.name, expected_output(page_blocks, block))


def _write_image_tree(root: Path, groups: int = 10, classes: int = 6, images: int = 8) -> None:
    """A few small noisy images of one colour per class, in ``root/<group>/<class>/`` (the
    layout the README's ``photos/`` stands for)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for group in range(groups):
        for label in range(classes):
            folder = root / f"group{group}" / f"class{label}"
            folder.mkdir(parents=True)
            colour = rng.integers(0, 256, (1, 1, 3))
            for index in range(images):
                pixels = np.clip(colour + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype("uint8")
                Image.fromarray(pixels).save(folder / f"{index}.png")


@pytest.mark.slow
def test_readme_shell_blocks_run(in_tmp):
    """The README's shell blocks after the first, after the first block's training line (what makes
    ``runs/sinusoid``; its installs are this environment), on a small synthetic ``photos/`` tree."""
    setup, *commands = [b for b in blocks(README) if b.lang == "bash"]
    skip_unless_installed(commands)
    _write_image_tree(in_tmp / "photos")
    train_line = without_installs(setup.code.splitlines()[0])
    assert train_line.startswith("metaopt train"), train_line
    _run_shell(train_line, in_tmp, "README, first block")
    for index, block in enumerate(commands):
        if block.skip is None:
            _run_shell(block.code, in_tmp, f"README, shell block {index + 2}")


# ---------------------------------------------------------------------------------------------
# The API reference renders the docstrings of metaopt_tuner.__all__: they must be complete.


def _public_api() -> list[tuple[str, object]]:
    import metaopt_tuner

    found = [(name, getattr(metaopt_tuner, name)) for name in metaopt_tuner.__all__]
    return [(name, obj) for name, obj in found if inspect.isclass(obj) or inspect.isfunction(obj)]


def _takes_arguments(function: object) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name not in ("self", "cls") for p in parameters)


def test_public_api_has_complete_docstrings():
    """Every public function and class has a docstring, with an ``Args:`` section when it takes
    arguments (a class: in its own or its ``__init__``'s docstring, for its constructor), and the
    public methods a class defines have one too."""
    missing = []
    for name, obj in _public_api():
        doc = inspect.getdoc(obj) or ""
        if not doc.strip():
            missing.append(f"{name}: no docstring")
            continue
        if inspect.isfunction(obj):
            if _takes_arguments(obj) and "Args:" not in doc:
                missing.append(f"{name}: no Args: section")
            continue
        init = obj.__dict__.get("__init__")
        own_init = init is not None or "__dataclass_fields__" in obj.__dict__
        if own_init and _takes_arguments(obj) and "Args:" not in doc + (inspect.getdoc(init) or ""):
            missing.append(f"{name}: the constructor's arguments have no Args: section")
        for attr, value in vars(obj).items():
            function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if not attr.startswith("_") and inspect.isfunction(function) and not function.__doc__:
                missing.append(f"{name}.{attr}: no docstring")
    assert not missing, "\n".join(missing)
