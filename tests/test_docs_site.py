"""The built documentation site: it builds strictly, and its reference pages read.

The site is built once for the module (``mkdocs build --strict``, a few seconds). The API page
renders the docstrings' Sphinx roles as links or code (``scripts/docs_sphinx_roles.py``), in the
order a user needs the names; the CLI reference (``scripts/docs_cli_reference.py``) keeps whole
summaries, Typer's option panels and flags as flags; the stylesheet keeps code and tables inside
the page.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
import typer

REPO = Path(__file__).resolve().parents[1]
#: Sphinx roles as text: in HTML a role's target is code (``:class:<code>X</code>``) or backticks
RAW_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|attr|exc|mod|obj|const):(?:`|<code>)")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the `docs` extra installs MkDocs (.ci/run builds the site)")
    pytest.importorskip("mkdocstrings", reason="the `docs` extra installs mkdocstrings")
    out = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _ids(html: str) -> list[str]:
    return re.findall(r'<h[2-5] id="([^"]+)"', html)


def test_docs_site_builds_strictly(site):
    assert (site / "api" / "index.html").read_text().count('id="metaopt_tuner.MetaSGD"') == 1


def test_no_page_shows_a_raw_sphinx_role(site):
    shown = {str(page.relative_to(site)): RAW_ROLE.findall(page.read_text())
             for page in site.rglob("*.html")}
    assert {page: roles for page, roles in shown.items() if roles} == {}


def test_roles_become_links_to_the_names_the_page_renders(site):
    """``:class:`~metaopt_tuner.artifact.Artifact``` in a docstring is a link to the entry of
    ``Artifact`` on the page (rendered as ``metaopt_tuner.Artifact``); an outside name is code."""
    html = (site / "api" / "index.html").read_text()
    links = set(re.findall(r'<a class="autorefs autorefs-internal"[^>]* href="#([^"]+)"[^>]*><code>', html))
    assert {"metaopt_tuner.Artifact", "metaopt_tuner.MetaSGD", "metaopt_tuner.train",
            "metaopt_tuner.compare.studies.open_storage"} <= links
    assert not links - set(_ids(html)), "a link to an entry the page lacks"


def test_every_role_in_the_package_is_one_the_extension_rewrites():
    pytest.importorskip("griffe", reason="the `docs` extra installs griffe (mkdocstrings' parser)")
    roles = _script("docs_sphinx_roles")
    used = set()
    for path in (REPO / "metaopt_tuner").rglob("*.py"):
        used |= set(re.findall(r":(?:py:)?([a-z]+):`", path.read_text()))
    # describe.py's docstring names the markup it strips as ":role:`~a.b.x`"
    assert used - {"role"} <= set(roles.ROLES), used - set(roles.ROLES)


def test_api_page_is_in_the_order_a_user_needs_it(site):
    ids = _ids((site / "api" / "index.html").read_text())
    order = ["metaopt_tuner.MetaSGD", "metaopt_tuner.prepare", "metaopt_tuner.load_artifact",
             "metaopt_tuner.Artifact", "metaopt_tuner.train", "metaopt_tuner.evaluate",
             "metaopt_tuner.compare.compare", "metaopt_tuner.compare.studies.open_storage",
             "metaopt_tuner.get_suite", "metaopt_tuner.tasks.recipe.Recipe",
             "metaopt_tuner.tasks.omniglot.ImageFolderSuite", "metaopt_tuner.MetaOptError"]
    assert [ids.index(name) for name in order] == sorted(ids.index(name) for name in order)
    import metaopt_tuner

    errors = [n for n in metaopt_tuner.__all__ if n.endswith(("Error", "Warning"))]
    first_error = min(ids.index(f"metaopt_tuner.{n}") for n in errors)
    top_level = [i for i in ids if i.count(".") == 1 and i.split(".")[1] not in errors]
    assert all(ids.index(i) < first_error for i in top_level), "errors come last"


def test_api_page_has_every_public_name_and_those_the_guides_use(site):
    import metaopt_tuner

    ids = set(_ids((site / "api" / "index.html").read_text()))
    rendered = {i.rsplit(".", 1)[-1] for i in ids}
    missing = [n for n in metaopt_tuner.__all__ if n != "__version__" and n not in rendered]
    assert not missing, missing
    guides = {"metaopt_tuner.tasks.recipe.Recipe", "metaopt_tuner.compare.compare",
              "metaopt_tuner.compare.ComparisonResult", "metaopt_tuner.compare.studies.open_storage",
              "metaopt_tuner.compare.studies.optimize", "metaopt_tuner.EncoderMismatchError",
              "metaopt_tuner.tasks.sinusoid.SinusoidSuite", "metaopt_tuner.tasks.omniglot.OmniglotSuite",
              "metaopt_tuner.tasks.omniglot.ImageFolderSuite", "metaopt_tuner.tasks.intents.IntentSuite"}
    assert guides <= ids, guides - ids


# ---------------------------------------------------------------------------------------------
# The CLI reference


def _panel(markdown: str, heading: str, panel: str) -> list[str]:
    """The items of one panel (``**Options**:``) of one command's section."""
    section = markdown.split(f"`{heading}`\n", 1)[1].split("\n## ", 1)[0]
    body = section.split(f"**{panel}**:\n\n", 1)[1].split("\n\n", 1)[0]
    return body.splitlines()


def test_cli_reference_summaries_are_whole_sentences():
    from cli.app import app

    markdown = _script("docs_cli_reference").cli_reference()
    commands = _panel("## `metaopt`\n" + markdown, "metaopt", "Commands")
    group = typer.main.get_command(app)
    assert [line.split("`")[1] for line in commands] == list(group.commands)
    for line in commands:
        assert line.count("`") % 2 == 0 and not line.endswith("...") and line.endswith("."), line
    assert ("* `suites`: List the task suites that `metaopt train --suite` accepts; with NAME, its -o "
            "options.") in commands


def test_cli_reference_keeps_option_panels_and_shows_flags_as_flags():
    markdown = _script("docs_cli_reference").cli_reference()
    options = _panel(markdown, "metaopt train", "Options")
    advanced = _panel(markdown, "metaopt train",
                      "Advanced (the suite's recipe sets these; see --show-config)")
    tracking = _panel(markdown, "metaopt train", "Tracking and registry")
    assert any(line.startswith("* `--resume`: ") for line in options)
    assert any(line.startswith("* `--per-step-lrs / --shared-lrs`: ") for line in advanced)
    assert any(line.startswith("* `-k, --inner-steps <int>`: ") for line in advanced)
    assert [line.split("`")[1] for line in tracking] == ["--tracking-uri <str>"]
    assert not [line for line in options if "--inner-steps" in line or "--tracking-uri" in line]
    assert "<bool>" not in markdown and "<boolean>" not in markdown


def test_cli_reference_of_any_typer_app():
    """The renderer on an app of its own: a flag pair, a flag, a panel, a group."""
    app = typer.Typer()
    sub = typer.Typer(help="Things to do with the registry.")

    @app.command()
    def run(
        resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue.")] = False,
        force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite.")] = False,
        level: Annotated[int, typer.Option("--level", rich_help_panel="Tuning", help="How much.")] = 1,
    ) -> None:
        """Run it, with `a code span` in its first sentence that is long enough to be cut. Then more."""

    @sub.command("list")
    def list_(name: Annotated[str, typer.Argument(help="Which one.")] = "x") -> None:
        """List them."""

    app.add_typer(sub, name="registry")
    markdown = _script("docs_cli_reference").cli_reference(app, name="tool")
    assert ("* `run`: Run it, with `a code span` in its first sentence that is long enough to be "
            "cut.") in markdown
    assert "* `--resume / --no-resume`: Continue." in markdown
    assert "* `-f, --force`: Overwrite." in markdown
    assert _panel(markdown, "tool run", "Tuning")[0].startswith("* `--level <int>`: How much.")
    assert "## `tool registry`" in markdown and "### `tool registry list`" in markdown
    assert "* `list`: List them." in markdown


def test_cli_reference_page_is_the_generated_one(site):
    html = (site / "cli" / "index.html").read_text()
    assert "Advanced (the suite&#x27;s recipe sets these; see --show-config)" in html or \
        "Advanced (the suite's recipe sets these; see --show-config)" in html
    assert "<code>--resume</code>" in html and "&lt;bool&gt;" not in html


# ---------------------------------------------------------------------------------------------
# Benchmark scripts as the site prints them


def test_device_script_without_arguments_prints_its_usage():
    script = REPO / "benchmarks" / "device_omniglot.sh"
    bare = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=REPO)
    assert bare.returncode == 2
    assert "unbound variable" not in bare.stderr
    assert "usage: bash benchmarks/device_omniglot.sh DATA_DIR [OUT_DIR [PARTS]]" in bare.stderr
    assert "error: DATA_DIR (the Omniglot folder) is required" in bare.stderr
    shown = subprocess.run(["bash", str(script), "-h"], capture_output=True, text=True, cwd=REPO)
    assert shown.returncode == 0 and "proto5s" in shown.stdout and "set -u" not in shown.stdout
    missing = subprocess.run(["bash", str(script), "no/such/folder"], capture_output=True, text=True,
                             cwd=REPO)
    assert missing.returncode == 2 and "no/such/folder is not a folder" in missing.stderr
    page = (REPO / "docs" / "benchmarks.md").read_text()
    printed = re.findall(r"`([^`]*device_omniglot\.sh[^`]*)`", page)
    assert printed and all("device_omniglot.sh DIR" in c or c.endswith(" -h") for c in printed), printed


# ---------------------------------------------------------------------------------------------
# In the browser: docs/stylesheets/extra.css


def _css_rules(text: str) -> dict[str, dict[str, str]]:
    """``selector -> {property: value}`` of a plain stylesheet (no nesting; comments dropped)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    rules: dict[str, dict[str, str]] = {}
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", text):
        declarations = dict(tuple(part.strip() for part in d.split(":", 1))
                            for d in body.split(";") if ":" in d)
        for selector in selectors.split(","):
            rules.setdefault(" ".join(selector.split()), {}).update(declarations)
    return rules


def test_code_and_tables_stay_in_the_page_and_shell_digits_are_plain(site):
    index = (site / "index.html").read_text()
    assert 'href="stylesheets/extra.css"' in index
    rules = _css_rules((site / "stylesheets" / "extra.css").read_text())
    for lang in ("bash", "console"):  # shell lines wrap
        assert rules[f".md-typeset .language-{lang} pre > code"]["white-space"] == "pre-wrap"
        for token in ("m", "mi", "mf"):  # numbers are not coloured like errors
            assert rules[f".md-typeset .language-{lang}.highlight .{token}"]["color"] == "inherit"
    code = rules[".md-typeset pre > code"]  # other code scrolls, with a visible scrollbar
    assert code["overflow-x"] == "auto" and "transparent" not in code["scrollbar-color"].split()[0]
    table = rules[".md-typeset table:not([class])"]  # a wide table scrolls inside its box
    assert table["display"] == "block" and table["max-width"] == "100%" and table["overflow-x"] == "auto"
    # the boxes carry their language (what the rules select), and shell blocks use bash or console
    benchmarks = (site / "benchmarks" / "index.html").read_text()
    assert '<div class="language-bash highlight">' in benchmarks
    languages = set(re.findall(r'<div class="language-(\w+) highlight">', "".join(
        page.read_text() for page in site.rglob("*.html"))))
    assert languages <= {"bash", "console", "python", "text"}, languages
