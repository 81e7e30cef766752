"""An encoder artifact's folder comes from the user, never from its manifest (issue 30).

The artifact records the encoder's name and checksum; a path in a manifest (written by an older
version, or crafted) is never opened, not even stat'ed. A tiny folder stands in for a
sentence-transformers model: loading it is replaced by the deterministic fake encoder.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from metaopt_tuner.artifact import MANIFEST, Artifact, load_artifact, seal_manifest
from metaopt_tuner.errors import EncoderMismatchError
from metaopt_tuner.evaluation import evaluate
from metaopt_tuner.learners import build_learner
from metaopt_tuner.models import FeatureClassifier
from metaopt_tuner.models.text import encoders
from metaopt_tuner.models.text.encoder_states import encoder_checksum
from metaopt_tuner.optim import prepare
from metaopt_tuner.tasks import get_suite

from . import fake_encoder
from .helpers import run_cli
from .test_intents import make_clinc

SPLITS = {"ways": 3, "shots": 1, "query": 2, "val_domains": ["dom2"], "test_domains": ["dom3"]}


@pytest.fixture
def encoder_artifact(tmp_path, monkeypatch):
    """(artifact folder, data folder, encoder folder, folders the fake loader was asked for)."""
    monkeypatch.setenv("METAOPT_CACHE_DIR", str(tmp_path / "cache"))
    loaded: list[str] = []

    def fake_sentence_transformer(folder):
        loaded.append(str(folder))
        return fake_encoder.encode

    monkeypatch.setattr(encoders, "_sentence_transformer", fake_sentence_transformer)
    folder = tmp_path / "minilm"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 16}')
    (folder / "model.safetensors").write_bytes(b"weights")
    root = make_clinc(tmp_path / "data")
    suite = get_suite("intents", data_dir=str(root), encoder=str(folder), **SPLITS)
    torch.manual_seed(0)
    learner = build_learner("metasgd", suite, inner_steps=2, head_init="prototypes")
    Artifact.from_learner(learner, suite).save(tmp_path / "art")
    loaded.clear()
    return tmp_path / "art", root, folder, loaded


def _copy_as_before(art: Path, target: Path, encoder: Path) -> Path:
    """The artifact as an older version wrote it (or an attacker would): the model spec and the
    suite options name ``encoder``'s path; sealed again."""
    shutil.copytree(art, target)
    manifest = json.loads((target / MANIFEST).read_text())
    kwargs = manifest["model"]["kwargs"]
    del kwargs["encoder_name"]
    kwargs["encoder"] = manifest["suite"]["options"]["encoder"] = str(encoder)
    (target / MANIFEST).write_text(json.dumps(seal_manifest(manifest)))
    return target


@pytest.fixture
def touched(monkeypatch):
    """Every path the code under test stats, lists or opens (from Python), recorded."""
    seen: list[str] = []

    def spy(fn):
        def wrapper(path, *args, **kwargs):
            if isinstance(path, (str, os.PathLike)):
                seen.append(os.fspath(path))
            return fn(path, *args, **kwargs)
        return wrapper

    for owner, name in ((os, "stat"), (os, "lstat"), (os, "scandir"), (os, "listdir"),
                        (io, "open"), (builtins, "open")):
        monkeypatch.setattr(owner, name, spy(getattr(owner, name)))
    return seen


def test_the_manifest_records_the_encoder_not_its_path(encoder_artifact):
    art, _, folder, _ = encoder_artifact
    manifest = json.loads((art / MANIFEST).read_text())
    kwargs = manifest["model"]["kwargs"]
    name = f"{folder.parent.name}/minilm"  # the last two parts of its path: never the path
    assert kwargs["encoder_name"] == name and kwargs["checksum"] == encoder_checksum(folder)
    assert "encoder" not in kwargs and str(folder) not in json.dumps(manifest["model"])
    identity = load_artifact(art).encoder
    assert identity is not None and identity.name == name


def test_a_path_in_the_manifest_is_never_read(encoder_artifact, tmp_path, touched, capsys):
    """The manifest names a folder outside the artifact whose checksum is right: used, it would
    work silently. It is never looked at; the user's folder is asked for instead."""
    art, root, folder, loaded = encoder_artifact
    outside = tmp_path / "outside-encoder"
    shutil.copytree(folder, outside)
    evil = _copy_as_before(art, tmp_path / "evil", outside)
    touched.clear()
    loaded_art = load_artifact(evil)
    assert loaded_art.encoder is not None
    assert loaded_art.encoder.name == f"{tmp_path.name}/outside-encoder"
    with pytest.raises(EncoderMismatchError, match="-o encoder=FOLDER"):
        loaded_art.build_suite(data_dir=str(root))
    assert isinstance(loaded_art.build_model(), FeatureClassifier)
    code, out, err = run_cli(capsys, "inspect", str(evil))
    assert code == 0, err
    code, _, err = run_cli(capsys, "evaluate", str(evil), "--data-dir", str(root), "--tasks", "2")
    assert code == 2 and "outside-encoder" in err, err
    suite = loaded_art.build_suite(data_dir=str(root), encoder=str(folder))  # the user's: works
    assert suite.encoder == str(folder)
    assert not [p for p in touched if "outside-encoder" in p], touched
    assert not [p for p in loaded if "outside" in p]


def test_a_missing_encoder_is_one_line_naming_it(encoder_artifact, capsys):
    art, root, folder, _ = encoder_artifact
    checksum = encoder_checksum(folder)
    code, _, err = run_cli(capsys, "evaluate", str(art), "--data-dir", str(root), "--tasks", "2")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"minilm (checksum {checksum[:12]})" in lines[0] and "-o encoder=FOLDER" in lines[0]
    code, _, err = run_cli(capsys, "compare", "--artifact", str(art), "--data-dir", str(root),
                           "--out", str(art.parent / "report"), "--tasks", "2")
    assert code == 2 and "-o encoder=FOLDER" in err, err


def test_the_folder_the_user_gives_is_used(encoder_artifact, capsys):
    art, root, folder, loaded = encoder_artifact
    code, out, err = run_cli(capsys, "evaluate", str(art), "--data-dir", str(root), "--tasks", "2",
                             "-o", f"encoder={folder}", "--json")
    assert code == 0, err
    assert json.loads(out)["num_tasks"] == 2
    assert all(Path(p) == folder for p in loaded)


def test_another_folder_is_an_encoder_mismatch(encoder_artifact, tmp_path, capsys):
    art, root, folder, _ = encoder_artifact
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    (other / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(EncoderMismatchError, match="differs from the one the artifact"):
        load_artifact(art).build_suite(data_dir=str(root), encoder=str(other))
    code, _, err = run_cli(capsys, "evaluate", str(art), "--data-dir", str(root), "--tasks", "2",
                           "-o", f"encoder={other}")
    assert code == 2 and re.search(r"differs .* \([^ ()]+/minilm\)", err), err
    # a suite of the user's own is checked as well
    theirs = get_suite("intents", data_dir=str(root), encoder=str(other), **SPLITS)
    with pytest.raises(EncoderMismatchError, match="differs"):
        evaluate(load_artifact(art), theirs, num_tasks=2)


def test_prepare_on_features_the_user_embeds_needs_no_encoder(encoder_artifact):
    art, _, folder, loaded = encoder_artifact
    shutil.rmtree(folder)
    x, y = torch.nn.functional.normalize(torch.randn(6, 16), dim=1), torch.arange(3).repeat(2)
    model, opt = prepare(None, art, support=(x, y))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert isinstance(model, FeatureClassifier) and not loaded
