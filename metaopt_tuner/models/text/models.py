"""A bag-of-hashed-n-grams text classifier small enough to adapt per task, and hand-batched.

The input is a padded ``[N, L]`` tensor of bucket ids from
:mod:`metaopt_tuner.models.text.featurizers` (0 pads).
Two branches add their logits, both L2-normalized bags, so a text's length does not set its scale:

* **wide**: a linear classifier straight on the bag of n-grams, each bucket weighted by a learned
  ``gate`` (a meta-learned IDF). Its weights start at zero, so one inner step from theta turns it
  into a nearest-class-mean classifier on the gated features; Meta-SGD's per-weight rates then
  learn which n-grams matter.
* **deep** (``embed_dim > 0``): an EmbeddingBag (gate-weighted sum of embedding rows), then a
  small MLP whose last layer also starts at zero: a learned dense representation shared across
  tasks. Off by default: on CLINC150's held-out domains it overfit the training intents and cost
  ten times the compute (see benchmarks/intents_clinc.py).

Everything is computed by gathering table rows, never a dense ``[N, buckets]`` matrix, so a
per-task copy of the model costs ``buckets * (1 + classes + embed_dim)`` numbers.
``batched_forward`` evaluates T tasks with per-task parameters (leading T dim) in one go, and
``forward`` is the same code with T = 1, so both batching paths compute exactly the same thing
(and ``forward`` works under ``torch.func.vmap``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from .featurizers import PAD_ID

__all__ = ["TextBagClassifier"]

_EPS = 1e-6


def _rows(table: Tensor, ids: Tensor) -> Tensor:
    """``table[t, ids[t]]``: table ``[T, R, *F]``, ids ``[T, M]`` -> ``[T, M, *F]``."""
    if table.dim() == 2:
        return table.gather(1, ids)
    index = ids.reshape(*ids.shape, *(1,) * (table.dim() - 2)).expand(*ids.shape, *table.shape[2:])
    return table.gather(1, index)


class TextBagClassifier(nn.Module):
    """Gated wide bag-of-n-grams classifier plus an EmbeddingBag + MLP branch.

    ``buckets`` must match the featurizer's (ids run 1..buckets, 0 is padding). ``embed_dim=0``
    drops the deep branch; ``hidden`` are the MLP's hidden sizes after the embedding.
    ``logit_scale`` multiplies the summed logits (a learned temperature).
    """

    def __init__(
        self,
        buckets: int = 1 << 14,
        num_classes: int = 5,
        embed_dim: int = 0,
        hidden: Sequence[int] = (),
        wide: bool = True,
        logit_scale: float = 10.0,
    ) -> None:
        super().__init__()
        for label, value in (("buckets", buckets), ("num_classes", num_classes)):
            if int(value) < 1:
                raise ConfigError(f"TextBagClassifier {label} must be positive, got {value}")
        if int(embed_dim) < 0 or any(int(h) < 1 for h in hidden):
            raise ConfigError(
                f"TextBagClassifier embed_dim must be >= 0 and hidden sizes positive, got "
                f"{embed_dim} and {list(hidden)}"
            )
        if not wide and int(embed_dim) == 0:
            raise ConfigError("TextBagClassifier needs the wide branch or embed_dim > 0")
        self.buckets, self.num_classes = int(buckets), int(num_classes)
        self.embed_dim, self.hidden, self.wide = int(embed_dim), [int(h) for h in hidden], bool(wide)
        rows = self.buckets + 1
        self.gate = nn.Parameter(torch.ones(rows))
        self.logit_scale = nn.Parameter(torch.full((1,), float(logit_scale)))
        if self.wide:
            self.wide_weight = nn.Parameter(torch.zeros(self.num_classes, rows))
            self.wide_bias = nn.Parameter(torch.zeros(self.num_classes))
        if self.embed_dim:
            self.embedding = nn.Parameter(torch.randn(rows, self.embed_dim))
            sizes = [self.embed_dim, *self.hidden, self.num_classes]
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[N, L]`` bucket ids -> ``[N, num_classes]`` logits."""
        params = {n: p.unsqueeze(0) for n, p in self.named_parameters()}
        return self.batched_forward(params, x.unsqueeze(0)).squeeze(0)

    def batched_forward(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """``x``: ``[T, N, L]`` ids; every parameter has a leading T dimension."""
        t, n, length = x.shape
        ids = x.reshape(t, n * length)
        mask = (ids != PAD_ID).to(params["gate"].dtype)
        g = _rows(params["gate"], ids) * mask  # [T, N*L]
        norm = torch.rsqrt(g.view(t, n, length).square().sum(-1) + _EPS)  # [T, N]
        logits = 0
        if self.wide:
            w = params["wide_weight"]  # [T, C, R]
            c = w.shape[1]
            wg = w.gather(2, ids.unsqueeze(1).expand(t, c, n * length))  # [T, C, N*L]
            wide = (wg * g.unsqueeze(1)).view(t, c, n, length).sum(-1).transpose(1, 2)
            logits = wide * norm.unsqueeze(-1) + params["wide_bias"].unsqueeze(1)
        if self.embed_dim:
            e = _rows(params["embedding"], ids) * g.unsqueeze(-1)  # [T, N*L, D]
            h = e.view(t, n, length, -1).sum(2)
            h = h * torch.rsqrt(h.square().sum(-1, keepdim=True) + _EPS)
            last = len(self.layers) - 1
            for i in range(len(self.layers)):
                wt, b = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
                h = torch.baddbmm(b.unsqueeze(1), h, wt.transpose(1, 2))
                if i < last:
                    h = F.relu(h)
            logits = logits + h
        return logits * params["logit_scale"].view(t, 1, 1)

    def extra_repr(self) -> str:
        return (
            f"buckets={self.buckets}, num_classes={self.num_classes}, embed_dim={self.embed_dim}, "
            f"hidden={self.hidden}, wide={self.wide}"
        )
