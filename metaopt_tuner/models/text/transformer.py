"""The top layers of a BERT-style sentence encoder, adapted per task, over cached lower layers.

Fine-tuning a pretrained encoder is where few-shot text classification gains over a frozen one, but
running the whole encoder in every inner step is far too slow on a CPU. The layers below the cut
are frozen, so their outputs (token hidden states and the attention mask) are computed once per
utterance and cached (:mod:`metaopt_tuner.models.text.encoder_states`); what is adapted, and meta-learned,
is only the top ``layers`` transformer layers and a classification ``head``.

The input ``x`` of one utterance is ``[L, H + 1]``: its ``L`` token states at the cut, with the
attention mask (1 for a token, 0 for padding) as the last channel, so a task's support set is one
``[N, L, H + 1]`` tensor that stacks into a :class:`~metaopt_tuner.tasks.base.TaskBatch`. After the
top layers come mean pooling over the real tokens and L2 normalization, exactly as
sentence-transformers does for all-MiniLM-L6-v2, then a learned ``scale`` (a temperature) and the
linear ``head``, which supports a prototype initialization (``forward(x, head=False)`` gives the
scaled embedding). Nothing depends on the rest of the batch: attention runs within an utterance,
layer norm within a token, and padding is masked out (no batch statistics, no dropout).

``batched_forward(params, x)`` evaluates T tasks with per-task parameters (a leading T dimension:
every linear layer is one ``baddbmm``), and ``forward`` is the same code with T = 1, so the
hand-batched, vmap and loop paths of the learners compute the same thing.

Parameter names follow Hugging Face's ``BertLayer`` under ``layers.J.`` (``layers.0.attention.
self.query.weight``, ...), so pretrained weights load by renaming ``encoder.layer.I.``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError

__all__ = ["EncoderTop", "BertLayerParams"]

#: (submodule path, Linear or LayerNorm) of one BERT layer, in Hugging Face's naming
_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value",
            "attention.output.dense", "intermediate.dense", "output.dense")
_NORMS = ("attention.output.LayerNorm", "output.LayerNorm")


class BertLayerParams(nn.Module):
    """The parameters of one BERT layer, named as Hugging Face's ``BertLayer`` names them.

    Only a container: :class:`EncoderTop` computes the layer functionally, so the same code serves
    one task and a stack of T tasks with per-task weights.
    """

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        shapes = {"intermediate.dense": (hidden, intermediate), "output.dense": (intermediate, hidden)}
        for path in _LINEARS:
            self._add(path, nn.Linear(*shapes.get(path, (hidden, hidden))))
        for path in _NORMS:
            self._add(path, nn.LayerNorm(hidden))

    def _add(self, path: str, module: nn.Module) -> None:
        *parents, leaf = path.split(".")
        owner: nn.Module = self
        for name in parents:
            if not hasattr(owner, name):
                owner.add_module(name, nn.Module())
            owner = getattr(owner, name)
        owner.add_module(leaf, module)


def _linear(x: Tensor, params: Mapping[str, Tensor], name: str) -> Tensor:
    """``x`` ``[T, M, in]`` through per-task ``name.weight`` ``[T, out, in]`` and ``name.bias``."""
    return torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), x, params[f"{name}.weight"].transpose(1, 2))


def _layer_norm(x: Tensor, params: Mapping[str, Tensor], name: str, eps: float) -> Tensor:
    x = F.layer_norm(x, x.shape[-1:], eps=eps)
    return x * params[f"{name}.weight"].unsqueeze(1) + params[f"{name}.bias"].unsqueeze(1)


class EncoderTop(nn.Module):
    """``layers`` BERT layers, mean pooling, L2 normalization, a scale and a linear head.

    Args:
        hidden_size, num_attention_heads, intermediate_size, layer_norm_eps: the encoder's
            configuration (its ``config.json``).
        layers: how many top layers are adapted (the cut sits below them).
        num_classes: the head's outputs (the episodes' ways).
        scale: the initial temperature multiplying the unit-length embedding.
        encoder_name: the name of the encoder folder whose lower layers feed this model, or None.
        checksum: that folder's content checksum (:func:`~metaopt_tuner.models.text.encoder_states.
            encoder_checksum`). Both are a record (see :mod:`~metaopt_tuner.models.text.identity`):
            the model reads no file; its pretrained weights come from the artifact's theta, or
            from the suite's folder when training starts.

    Raises:
        ConfigError: a non-positive size, or a hidden size the heads do not divide.
    """

    def __init__(
        self,
        hidden_size: int = 384,
        num_attention_heads: int = 12,
        intermediate_size: int = 1536,
        layers: int = 1,
        num_classes: int = 5,
        layer_norm_eps: float = 1e-12,
        scale: float = 10.0,
        encoder_name: str | None = None,
        checksum: str | None = None,
    ) -> None:
        super().__init__()
        sizes = {"hidden_size": hidden_size, "num_attention_heads": num_attention_heads,
                 "intermediate_size": intermediate_size, "layers": layers,
                 "num_classes": num_classes}
        bad = {k: v for k, v in sizes.items() if int(v) < 1}
        if bad:
            raise ConfigError(f"EncoderTop sizes must be positive, got {bad}")
        if int(hidden_size) % int(num_attention_heads):
            raise ConfigError(f"EncoderTop hidden_size {hidden_size} is not a multiple of "
                              f"num_attention_heads {num_attention_heads}")
        self.hidden_size, self.num_heads = int(hidden_size), int(num_attention_heads)
        self.intermediate_size, self.num_classes = int(intermediate_size), int(num_classes)
        self.eps, self.encoder_name, self.checksum = float(layer_norm_eps), encoder_name, checksum
        self.layers = nn.ModuleList(
            BertLayerParams(self.hidden_size, self.intermediate_size) for _ in range(int(layers))
        )
        self.scale = nn.Parameter(torch.full((1,), float(scale)))
        self.head = nn.Linear(self.hidden_size, self.num_classes)

    def forward(self, x: Tensor, head: bool = True) -> Tensor:
        """``x``: ``[N, L, H + 1]`` token states and mask -> ``[N, num_classes]`` logits (or the
        ``[N, H]`` scaled embeddings with ``head=False``)."""
        params = {n: p.unsqueeze(0) for n, p in self.named_parameters()}
        return self.batched_forward(params, x.unsqueeze(0), head=head).squeeze(0)

    def _attention(self, h: Tensor, mask: Tensor, params: Mapping[str, Tensor], prefix: str) -> Tensor:
        """Self-attention of ``h`` ``[T, N, L, H]`` within each utterance; padded keys masked."""
        t, n, length, hidden = h.shape
        heads, dim = self.num_heads, hidden // self.num_heads
        flat = h.reshape(t, n * length, hidden)

        def split(name: str) -> Tensor:
            y = _linear(flat, params, f"{prefix}attention.self.{name}")
            return y.view(t, n, length, heads, dim).transpose(2, 3)  # [T, N, heads, L, d]

        q, k, v = split("query"), split("key"), split("value")
        scores = q @ k.transpose(-1, -2) / math.sqrt(dim)
        blocked = (1.0 - mask).view(t, n, 1, 1, length) * torch.finfo(h.dtype).min
        ctx = torch.softmax(scores + blocked, dim=-1) @ v  # [T, N, heads, L, d]
        ctx = ctx.transpose(2, 3).reshape(t, n * length, hidden)
        out = _linear(ctx, params, f"{prefix}attention.output.dense") + flat
        return _layer_norm(out, params, f"{prefix}attention.output.LayerNorm", self.eps)

    def embed(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """``x`` ``[T, N, L, H + 1]`` -> unit-length sentence embeddings ``[T, N, H]``."""
        t, n, length, _ = x.shape
        h, mask = x[..., :-1], x[..., -1]
        for j in range(len(self.layers)):
            prefix = f"layers.{j}."
            a = self._attention(h, mask, params, prefix)  # [T, N*L, H]
            f = F.gelu(_linear(a, params, f"{prefix}intermediate.dense"))
            out = _linear(f, params, f"{prefix}output.dense") + a
            h = _layer_norm(out, params, f"{prefix}output.LayerNorm", self.eps).view(t, n, length, -1)
        m = mask.unsqueeze(-1)
        pooled = (h * m).sum(2) / m.sum(2).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    def batched_forward(self, params: Mapping[str, Tensor], x: Tensor, head: bool = True) -> Tensor:
        """``x``: ``[T, N, L, H + 1]``; every parameter has a leading T dimension."""
        feats = self.embed(params, x) * params["scale"].view(-1, 1, 1)
        if not head:
            return feats
        return torch.baddbmm(params["head.bias"].unsqueeze(1), feats,
                             params["head.weight"].transpose(1, 2))

    def extra_repr(self) -> str:
        return (f"hidden_size={self.hidden_size}, heads={self.num_heads}, "
                f"intermediate_size={self.intermediate_size}, num_classes={self.num_classes}, "
                f"encoder={self.encoder_name!r}")
