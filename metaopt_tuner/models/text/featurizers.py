"""Offline text featurization: hashed word and character n-grams, identical on every machine.

A text becomes a list of bucket ids in ``[1, buckets]`` (0 is the padding id). Buckets come from
``zlib.crc32`` of the UTF-8 bytes of a typed n-gram key, never Python's ``hash()``, whose value
changes from process to process (``PYTHONHASHSEED``): the same text gives the same ids in any
process, on any machine, so a meta-trained embedding table stays valid wherever it is loaded.
Nothing is downloaded; no vocabulary is fitted.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ...errors import ConfigError

__all__ = ["PAD_ID", "HashedNgrams", "pad_ids"]

#: the id that pads a text's bucket list; real n-grams hash to 1..buckets
PAD_ID = 0

_WORD = re.compile(r"\w+", re.UNICODE)


def _check_range(name: str, value: Sequence[int]) -> tuple[int, int]:
    lo, hi = (int(v) for v in value)
    if lo < 0 or hi < lo:
        raise ConfigError(f"{name} must be (min, max) with 0 <= min <= max, got {list(value)}")
    return lo, hi


@dataclass(frozen=True)
class HashedNgrams:
    """Word ``word_ngrams`` and in-word character ``char_ngrams`` n-grams hashed into ``buckets``.

    Text is NFKC-normalized and lower-cased; words are ``\\w+`` runs. Character n-grams are taken
    inside each word padded with one space either side (so prefixes and suffixes are marked), as
    scikit-learn's ``char_wb``. A range ``(0, 0)`` switches that kind of n-gram off. Texts longer
    than ``max_tokens`` ids keep their first ``max_tokens`` (word n-grams come first). With
    ``unique`` (the default) each id appears once per text: binary bag-of-n-gram features, which
    also keeps the padded lists short.
    """

    buckets: int = 1 << 15
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 4)
    max_tokens: int = 512
    unique: bool = True

    def __post_init__(self) -> None:
        if int(self.buckets) < 1:
            raise ConfigError(f"buckets must be a positive integer, got {self.buckets}")
        if int(self.max_tokens) < 1:
            raise ConfigError(f"max_tokens must be a positive integer, got {self.max_tokens}")
        object.__setattr__(self, "buckets", int(self.buckets))
        object.__setattr__(self, "max_tokens", int(self.max_tokens))
        object.__setattr__(self, "unique", bool(self.unique))
        object.__setattr__(self, "word_ngrams", _check_range("word_ngrams", self.word_ngrams))
        object.__setattr__(self, "char_ngrams", _check_range("char_ngrams", self.char_ngrams))

    def config(self) -> dict[str, object]:
        """JSON-able settings (rebuild with ``HashedNgrams(**config)``)."""
        out = asdict(self)
        out["word_ngrams"] = list(self.word_ngrams)
        out["char_ngrams"] = list(self.char_ngrams)
        return out

    @staticmethod
    def normalize(text: str) -> str:
        return unicodedata.normalize("NFKC", text).lower()

    def ngrams(self, text: str) -> list[str]:
        """The typed n-gram keys of ``text`` (``w2:book flight``, ``c3: bo``), in order."""
        words = _WORD.findall(self.normalize(text))
        keys: list[str] = []
        lo, hi = self.word_ngrams
        for n in range(max(lo, 1), hi + 1):
            keys.extend(f"w{n}:" + " ".join(words[i:i + n]) for i in range(len(words) - n + 1))
        lo, hi = self.char_ngrams
        if hi >= 1:
            for word in words:
                padded = f" {word} "
                for n in range(max(lo, 1), hi + 1):
                    keys.extend(f"c{n}:" + padded[i:i + n] for i in range(len(padded) - n + 1))
        return keys

    def ids(self, text: str) -> list[int]:
        """Bucket ids of ``text`` in ``[1, buckets]``; at most ``max_tokens`` of them."""
        b = self.buckets
        ids = [zlib.crc32(k.encode("utf-8")) % b + 1 for k in self.ngrams(text)]
        if self.unique:
            ids = list(dict.fromkeys(ids))
        return ids[: self.max_tokens]

    def encode(self, texts: Iterable[str]) -> Tensor:
        """Ids of every text, padded with :data:`PAD_ID` into one ``[len(texts), L]`` long tensor.

        Identical texts are hashed once (utterance datasets repeat many).
        """
        cache: dict[str, list[int]] = {}
        rows = []
        for text in texts:
            ids = cache.get(text)
            if ids is None:
                ids = cache[text] = self.ids(text)
            rows.append(ids)
        return pad_ids(rows)


def pad_ids(rows: Sequence[Sequence[int]]) -> Tensor:
    """Lists of ids as one long tensor padded with :data:`PAD_ID` to the longest (at least 1)."""
    width = max([len(r) for r in rows] + [1])
    out = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out
