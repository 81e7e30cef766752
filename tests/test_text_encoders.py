"""The intents suite on sentence embeddings from a user's local encoder, and the feature model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metaopt_tuner.errors import ConfigError, DataError
from metaopt_tuner.learners import build_learner
from metaopt_tuner.tasks import get_suite

from . import fake_encoder
from .test_intents import make_clinc

ENCODER = "tests.fake_encoder:encode"


def _suite(root: Path, **options):
    base = dict(data_dir=str(root), ways=3, shots=1, query=2, val_domains=["dom2"],
                test_domains=["dom3"], encoder=ENCODER)
    base.update(options)
    return get_suite("intents", **base)


def test_embeddings_make_episodes_for_the_feature_model(tmp_path, monkeypatch):
    monkeypatch.setenv("METAOPT_CACHE_DIR", str(tmp_path / "cache"))
    suite = _suite(make_clinc(tmp_path / "c"))
    batch = suite.sample(4, torch.Generator().manual_seed(0))
    assert batch.x_support.shape == (4, 3, 16) and batch.x_query.shape == (4, 6, 16)
    norms = suite.token_ids.norm(dim=1)
    assert torch.allclose(norms[norms > 0], torch.ones_like(norms[norms > 0]))
    assert suite.model_spec()["name"] == "features"
    assert suite.options()["encoder"] == ENCODER
    assert list((tmp_path / "cache").glob("embeddings-*.pt"))  # cached for the next process


def test_cached_embeddings_are_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("METAOPT_CACHE_DIR", str(tmp_path / "cache"))
    from metaopt_tuner.models.text.encoders import encode_cached

    texts = ["a b", "c d e"]
    first = encode_cached(ENCODER, texts, tmp_path / "cache")
    calls = len(fake_encoder.CALLS)
    again = encode_cached(ENCODER, texts, tmp_path / "cache")
    assert len(fake_encoder.CALLS) == calls and torch.equal(first, again)
    encode_cached(ENCODER, texts + ["f"], tmp_path / "cache")  # other texts: another entry
    assert len(fake_encoder.CALLS) == calls + 1


def test_batching_paths_agree_with_a_prototype_head_on_embeddings(tmp_path, monkeypatch):
    monkeypatch.setenv("METAOPT_CACHE_DIR", str(tmp_path / "cache"))
    suite = _suite(make_clinc(tmp_path / "c"), hidden=[8])
    batch = suite.sample(3, torch.Generator().manual_seed(1)).to(dtype=torch.float64)
    grads = {}
    for mode in ("batched", "vmap", "loop"):
        torch.manual_seed(0)
        learner = build_learner("metasgd", suite, inner_steps=2, inner_lr=0.3, batching=mode,
                                head_init="prototypes").double()
        grads[mode] = learner.meta_gradient(batch).grads
    assert "model.head.weight" not in grads["batched"]  # frozen: the prototypes are the head
    for mode in ("vmap", "loop"):
        for name, g in grads["batched"].items():
            torch.testing.assert_close(grads[mode][name], g, msg=f"{mode} {name}")


def test_encoder_errors_are_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("METAOPT_CACHE_DIR", str(tmp_path / "cache"))
    root = make_clinc(tmp_path / "c")
    with pytest.raises(ConfigError, match="never downloaded"):
        _suite(root, encoder="sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(ConfigError, match="cannot import"):
        _suite(root, encoder="no_such_module_xyz:encode")
    with pytest.raises(DataError, match=r"must return a \["):
        _suite(root, encoder="tests.fake_encoder:wrong_shape")


def test_an_artifact_imports_its_encoder_code_only_when_trusted(tmp_path, monkeypatch):
    from metaopt_tuner.artifact import Artifact, load_artifact
    from metaopt_tuner.errors import ArtifactError

    monkeypatch.setenv("METAOPT_CACHE_DIR", str(tmp_path / "cache"))
    root = make_clinc(tmp_path / "c")
    suite = _suite(root)
    learner = build_learner("metasgd", suite, head_init="prototypes")
    Artifact.from_learner(learner, suite).save(tmp_path / "art")
    with pytest.raises(ArtifactError, match="trust_factory"):
        load_artifact(tmp_path / "art").build_suite(data_dir=str(root))
    trusted = load_artifact(tmp_path / "art", trust_factory=True)
    assert trusted.build_suite(data_dir=str(root)).encoder == ENCODER
    given = load_artifact(tmp_path / "art").build_suite(encoder=ENCODER, data_dir=str(root))
    assert given.encoder == ENCODER


def test_a_feature_model_records_its_encoder_and_reads_no_folder(tmp_path):
    """Embeddings from another encoder would be silently wrong: the feature model of an encoder
    folder records the folder's name and checksum (never its path), builds without the folder,
    and the identity checks a folder a user gives."""
    from metaopt_tuner.errors import EncoderMismatchError
    from metaopt_tuner.models import FeatureClassifier, build_model
    from metaopt_tuner.models.text import EncoderIdentity

    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    identity = EncoderIdentity.of_folder(folder)
    assert identity.name == f"{tmp_path.name}/encoder"
    spec = {"name": "features", "kwargs": {"in_features": 8, "num_classes": 3,
                                           "encoder_name": identity.name,
                                           "checksum": identity.checksum}}
    identity.check(folder)
    (folder / "config.json").write_text('{"hidden_size": 9}')
    with pytest.raises(EncoderMismatchError, match="differs from the one the artifact"):
        identity.check(folder)
    (folder / "config.json").unlink()
    folder.rmdir()
    model = build_model(spec)  # the model is data: no folder needed
    assert isinstance(model, FeatureClassifier) and model.checksum == identity.checksum
