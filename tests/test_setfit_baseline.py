"""The SetFit baseline: one episode from a tiny local encoder folder, nothing written outside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from metaopt_tuner.compare.setfit_baseline import setfit_accuracy
from metaopt_tuner.errors import ConfigError
from metaopt_tuner.tasks.intents import TextEpisode

WORDS = ["alpha", "bravo", "charlie", "delta", "please", "now", "tell", "me", "about"]


def _tiny_encoder(path: Path) -> Path:
    """A randomly initialized two-layer BERT with a word-level vocabulary: a folder SetFit loads
    offline (no weights downloaded)."""
    transformers = pytest.importorskip("transformers")
    path.mkdir(parents=True)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    transformers.BertTokenizer(str(vocab)).save_pretrained(path)
    config = transformers.BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16,
                                     num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    transformers.BertModel(config).save_pretrained(path)
    return path


def test_setfit_on_one_episode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("setfit")
    encoder = _tiny_encoder(tmp_path / "encoder")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    episode = TextEpisode(
        support_texts=["please alpha", "alpha now", "tell me bravo", "bravo about"],
        support_labels=[0, 0, 1, 1],
        query_texts=["alpha", "now alpha please", "bravo", "about bravo me"],
        query_labels=[0, 0, 1, 1])
    accuracy = setfit_accuracy(str(encoder), episode)
    assert accuracy in (0.0, 0.25, 0.5, 0.75, 1.0)
    # a share of the pairs trains fewer steps and still answers every query
    assert setfit_accuracy(str(encoder), episode, pairs_fraction=0.5) in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert os.listdir(work) == []  # no checkpoints, no tracking database in the working folder


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_pairs_fraction_is_checked(fraction: float) -> None:
    episode = TextEpisode(["a"], [0], ["a"], [0])
    with pytest.raises(ConfigError, match="pairs_fraction"):
        setfit_accuracy("unused", episode, pairs_fraction=fraction)
