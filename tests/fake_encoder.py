"""A deterministic stand-in for a sentence encoder (``module:function`` form), for tests."""

from __future__ import annotations

import zlib

import torch

CALLS: list[int] = []


def encode(texts: list[str]) -> torch.Tensor:
    """Bag of crc32-hashed words in 16 dimensions (not normalized: the suite normalizes)."""
    CALLS.append(len(texts))
    out = torch.zeros(len(texts), 16)
    for i, text in enumerate(texts):
        for word in text.split():
            out[i, zlib.crc32(word.encode()) % 16] += 1.0
    return out


def wrong_shape(texts: list[str]) -> torch.Tensor:
    return torch.zeros(len(texts) + 1, 4)
