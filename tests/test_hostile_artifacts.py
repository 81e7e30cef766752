"""Hostile artifacts, crafted here as an attacker would: loading one runs no code and touches no
path outside it; names and text from files print without terminal escapes."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from metaopt_tuner.artifact import MANIFEST, TENSORS, load_artifact, pretrained, seal_manifest
from metaopt_tuner.errors import ArtifactError, RegistryError
from metaopt_tuner.evaluation import suite_for_split
from metaopt_tuner.registry import parse_model_uri, publish

from .helpers import run_cli

# A module that leaves a mark when imported: the attacker's payload.
_PAYLOAD = """
from pathlib import Path
Path({mark!r}).write_text("imported")
from metaopt_tuner.tasks.sinusoid import SinusoidSuite as Suite
"""


def _craft(tmp_path: Path, edit) -> Path:
    """A copy of the shipped artifact whose manifest ``edit`` changed, sealed again (an attacker
    can compute the checksum as well as anyone)."""
    target = tmp_path / "evil"
    shutil.copytree(pretrained("sinusoid").path, target)
    manifest = json.loads((target / MANIFEST).read_text())
    edit(manifest)
    (target / MANIFEST).write_text(json.dumps(seal_manifest(manifest)))
    return target


@pytest.fixture
def payload(tmp_path, monkeypatch):
    """The name of an importable payload module and the file its import would create."""
    mark = tmp_path / "imported.txt"
    package = tmp_path / "payload_pkg"
    package.mkdir()
    (package / "evil_payload_mod.py").write_text(_PAYLOAD.format(mark=str(mark)))
    monkeypatch.syspath_prepend(str(package))
    yield "evil_payload_mod", mark
    sys.modules.pop("evil_payload_mod", None)


def _suite_named(name: str):
    def edit(manifest):
        manifest["suite"]["name"] = name
    return edit


def test_a_manifest_naming_a_module_imports_nothing(tmp_path, payload, capsys, monkeypatch):
    module, mark = payload
    evil = _craft(tmp_path, _suite_named(f"{module}:Suite"))
    art = load_artifact(evil)  # loading is fine: it is data
    for use in (art.build_suite, art.suite_class, lambda: suite_for_split(art, "all"),
                lambda: suite_for_split(art, "test")):
        with pytest.raises(ArtifactError, match="trust_factory"):
            use()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for command in (["evaluate", str(evil), "--tasks", "2"],
                    ["compare", "--artifact", str(evil), "--out", str(work / "report"), "--tasks", "2"]):
        code, _, err = run_cli(capsys, *command)
        assert code == 2 and "trust" in err, err
    assert not mark.exists() and module not in sys.modules
    assert list(work.iterdir()) == []  # nothing written where the user stands
    assert sorted(p.name for p in evil.iterdir()) == [MANIFEST, TENSORS]


def test_the_same_suite_loads_with_explicit_trust(tmp_path, payload):
    module, mark = payload
    evil = _craft(tmp_path, _suite_named(f"{module}:Suite"))
    suite = load_artifact(evil, trust_factory=True).build_suite()
    assert mark.exists() and suite.shots > 0  # the user said they trust it: it runs


def test_the_venv_module_from_the_issue_is_refused(tmp_path, capsys, monkeypatch):
    evil = _craft(tmp_path, _suite_named("venv.__main__:X"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, _, err = run_cli(capsys, "evaluate", str(evil))
    assert code == 2 and "not a registered suite" in err
    assert list(work.iterdir()) == [] and not (evil / "bin").exists()


def test_an_edited_manifest_is_refused(tmp_path):
    target = tmp_path / "edited"
    pretrained("sinusoid").save(target)  # written now: sealed
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["suite"]["options"]["shots"] = 1
    (target / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="manifest_sha256"):
        load_artifact(target)


def test_suite_names_outside_both_forms_are_refused(tmp_path):
    evil = tmp_path / "e"
    for name in ("a b", "../x", "x\x1b[2J", "mod:"):
        shutil.rmtree(evil, ignore_errors=True)
        evil = _craft(tmp_path, _suite_named(name))
        with pytest.raises(ArtifactError, match="suite.name"):
            load_artifact(evil)


def test_paths_in_a_manifest_are_never_used(tmp_path):
    outside = tmp_path / "outside"

    def edit(manifest):
        manifest["suite"] = {"name": "omniglot", "options": {"data_dir": "/", "cache_dir": str(outside)},
                             "metric_name": "accuracy", "metric_higher_is_better": True}

    art = load_artifact(_craft(tmp_path, edit))
    suite = art.build_suite()
    assert suite.data_dir is None and suite.cache_dir is None
    mine = tmp_path / "mine"
    suite = art.build_suite(data_dir=str(mine))
    assert suite.data_dir == str(mine) and suite.cache_dir is None
    assert art.suite_options["data_dir"] == "/"  # kept as a record, shown by inspect
    assert not outside.exists()


@pytest.mark.parametrize("field, value, named", [
    ("inner_steps", 10**18, "inner_steps"),
    ("rate_steps", 10**6, "rate_steps"),
    ("tail", {"horizon": 10**9, "decay": 0.5}, "horizon"),
])
def test_step_counts_out_of_bounds_are_refused(tmp_path, field, value, named):
    def edit(manifest):
        manifest[field] = value

    with pytest.raises(ArtifactError, match=named):
        load_artifact(_craft(tmp_path, edit))


def test_huge_shapes_are_refused_before_any_allocation(tmp_path):
    def edit(manifest):
        manifest["parameters"][0]["shape"] = [2**20, 2**20, 2**10]

    with pytest.raises(ArtifactError, match="implausibly large"):
        load_artifact(_craft(tmp_path, edit))


def test_a_huge_tensor_file_is_refused_without_reading_it(tmp_path):
    evil = _craft(tmp_path, lambda manifest: None)
    with open(evil / TENSORS, "r+b") as fh:
        fh.truncate(8 * 2**30)  # sparse: 8 GiB that reading would have to materialize
    with pytest.raises(ArtifactError, match="bytes but the manifest says"):
        load_artifact(evil)


@pytest.mark.parametrize("name", ["x\x1b]0;owned\x07", "a\x00b", "line\nbreak", "rtl\u202egnp.exe",
                                  "a" * 101, " lead", "x/y", "x@y"])
def test_unsafe_model_names_are_refused_before_any_request(name):
    with pytest.raises(RegistryError, match="not a usable model name"):
        publish("sinusoid", name, tracking_uri="http://127.0.0.1:9")


@pytest.mark.parametrize("alias", ["a" * 65, "pr\x1bod", "prod\n"])
def test_unsafe_aliases_are_refused_before_any_request(alias):
    with pytest.raises(RegistryError, match="not a usable alias"):
        publish("sinusoid", "ok-name", alias=alias, tracking_uri="http://127.0.0.1:9")


@pytest.mark.parametrize("uri", ["models:/name/\u00b2", "models:/name/\u0661", "models:/name/1" + "0" * 20])
def test_versions_are_ascii_digits(uri):
    with pytest.raises(RegistryError, match="not a model URI"):
        parse_model_uri(uri)


def test_inspect_prints_manifest_text_without_escapes(tmp_path, capsys):
    hostile = "\x1b[2J\x1b]0;title\x07[red]markup[/red]\u202e"

    def edit(manifest):
        manifest["metrics"] = {hostile: 1.0}
        manifest["provenance"] = {"script": hostile}

    code, out, err = run_cli(capsys, "inspect", str(_craft(tmp_path, edit)))
    assert code == 0, err
    assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
    assert "[red]markup[/red]" in out  # shown as text, not read as markup
    assert "\\x1b" in out  # the escape is visible, not acted on


def test_error_lines_print_without_escapes(tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "no\x1b[2Jsuch"))
    assert code == 2 and "\x1b" not in err and "\\x1b" in err



def test_deeply_nested_metrics_are_refused_not_a_recursion_error(tmp_path, capsys):
    def edit(manifest):
        nested: dict = {}
        for _ in range(600):  # JSON reads it; printing it recursed past Python's limit
            nested = {"x": nested}
        manifest["metrics"] = nested

    code, _, err = run_cli(capsys, "inspect", str(_craft(tmp_path, edit)))
    assert code == 2 and "nests deeper" in err, err


def test_an_archive_member_too_large_for_an_image_is_refused_without_reading_it(tmp_path, monkeypatch):
    import zipfile

    from metaopt_tuner.errors import DataError
    from metaopt_tuner.tasks import get_suite, image_cache

    monkeypatch.setattr(image_cache, "MAX_IMAGE_BYTES", 1000)  # a 3 GiB member, in miniature
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for c in range(3):
            for i in range(3):
                zf.writestr(f"bomb/Alpha/character{c:02d}/{i}.png", b"\\0" * 5000)
    suite = get_suite("omniglot", data_dir=str(archive), ways=2, query=1, split_by="class",
                      cache=False)
    with pytest.raises(DataError, match="larger than"):
        suite.load()
