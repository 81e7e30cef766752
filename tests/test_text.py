"""Hashed n-gram featurization (deterministic across processes) and the bag-of-n-grams model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import pytest
import torch
from torch.func import functional_call, vmap

from metaopt_tuner.errors import ConfigError
from metaopt_tuner.models import build_model, supports_batched
from metaopt_tuner.models.text import PAD_ID, HashedNgrams, pad_ids
from metaopt_tuner.models.text.models import TextBagClassifier

TEXTS = ["Book a flight to Paris", "what's my balance?", "ＨＥＬＬＯ Wörld", "", "a"]


def test_same_ids_in_another_process_with_another_hash_seed() -> None:
    feat = HashedNgrams(buckets=1000)
    here = [feat.ids(t) for t in TEXTS]
    code = (
        "import json, sys; from metaopt_tuner.models.text import HashedNgrams; "
        "print(json.dumps([HashedNgrams(buckets=1000).ids(t) for t in json.loads(sys.argv[1])]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(TEXTS)], env=env,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == here


def test_ids_are_pinned_crc32_values() -> None:
    # A change of hashing would silently invalidate every saved embedding table: pin a few ids.
    feat = HashedNgrams(buckets=1 << 14, word_ngrams=(1, 2), char_ngrams=(0, 0))
    assert feat.ngrams("Book a flight") == ["w1:book", "w1:a", "w1:flight", "w2:book a", "w2:a flight"]
    assert feat.ids("Book a flight") == [zlib.crc32(k.encode()) % (1 << 14) + 1
                                         for k in feat.ngrams("Book a flight")]
    assert feat.ids("book") == [zlib.crc32(b"w1:book") % (1 << 14) + 1] == [14810]


def test_ngrams_normalize_and_mark_word_boundaries() -> None:
    feat = HashedNgrams(word_ngrams=(1, 1), char_ngrams=(2, 3))
    assert feat.ngrams("ＨＩ") == feat.ngrams("hi") == ["w1:hi", "c2: h", "c2:hi", "c2:i ", "c3: hi",
                                                      "c3:hi "]
    assert feat.ngrams("") == [] and feat.ids("  !! ") == []


def test_unique_and_max_tokens() -> None:
    rep = "go go go"
    assert len(HashedNgrams(unique=False).ids(rep)) > len(HashedNgrams().ids(rep))
    assert len(set(HashedNgrams().ids(rep))) == len(HashedNgrams().ids(rep))
    assert len(HashedNgrams(max_tokens=4).ids(TEXTS[0])) == 4
    ids = HashedNgrams(buckets=7).ids(TEXTS[0])
    assert all(1 <= i <= 7 for i in ids)


def test_encode_pads_with_the_pad_id() -> None:
    feat = HashedNgrams(buckets=50)
    out = feat.encode(TEXTS)
    assert out.dtype == torch.long and out.shape[0] == len(TEXTS)
    for row, text in zip(out, TEXTS):
        ids = feat.ids(text)
        assert row[: len(ids)].tolist() == ids
        assert (row[len(ids):] == PAD_ID).all()
    assert pad_ids([]).shape == (0, 1)


@pytest.mark.parametrize("kwargs", [{"buckets": 0}, {"max_tokens": 0}, {"char_ngrams": (3, 2)},
                                    {"word_ngrams": (-1, 2)}])
def test_bad_featurizer_options(kwargs) -> None:
    with pytest.raises(ConfigError):
        HashedNgrams(**kwargs)


# ---------------------------------------------------------------------------------------- model


def _model(**kwargs) -> TextBagClassifier:
    torch.manual_seed(0)
    model = TextBagClassifier(buckets=30, num_classes=3, **kwargs).double()
    with torch.no_grad():  # leave the zero-initialized heads, so every branch matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _ids(t: int, n: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 31, (t, n, length), generator=g)
    keep = torch.rand(t, n, length, generator=g) < 0.7
    keep[..., 0] = True
    return ids * keep


def test_registered_and_zero_heads_give_uniform_logits() -> None:
    model = build_model({"name": "text_bag", "kwargs": {"buckets": 30, "num_classes": 4}})
    assert isinstance(model, TextBagClassifier) and supports_batched(model)
    out = model(_ids(1, 6, 5)[0])
    assert out.shape == (6, 4)
    assert torch.allclose(out, torch.zeros_like(out))


@pytest.mark.parametrize("kwargs", [{"embed_dim": 6}, {"embed_dim": 0},
                                    {"wide": False, "embed_dim": 6, "hidden": [5]}])
def test_batched_forward_matches_forward_and_vmap(kwargs) -> None:
    model = _model(**kwargs)
    x = _ids(4, 5, 7)
    params = {n: p.detach() + 0.05 * torch.randn(4, *p.shape, dtype=p.dtype)
              for n, p in model.named_parameters()}
    batched = model.batched_forward(params, x)
    looped = torch.stack([
        functional_call(model, {n: p[i] for n, p in params.items()}, (x[i],)) for i in range(4)
    ])
    mapped = vmap(lambda p, xi: functional_call(model, p, (xi,)))(params, x)
    assert batched.shape == (4, 5, 3)
    torch.testing.assert_close(batched, looped)
    torch.testing.assert_close(mapped, looped)


def test_extra_padding_changes_nothing() -> None:
    model = _model(embed_dim=6, hidden=[4])
    x = _ids(1, 5, 6)[0]
    padded = torch.cat([x, torch.zeros(5, 9, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(x), model(padded))


def test_bad_model_options() -> None:
    with pytest.raises(ConfigError):
        TextBagClassifier(buckets=0)
    with pytest.raises(ConfigError):
        TextBagClassifier(wide=False, embed_dim=0)
