"""Reference architectures, each with an ordinary forward and a hand-batched one.

``forward(x)`` is the usual ``nn.Module`` call (used through ``torch.func.functional_call`` by the
vmap and loop paths). ``batched_forward(params, x)`` evaluates T tasks at once with per-task
parameters carrying a leading task dimension: Linear layers as ``baddbmm`` and 3x3 convolutions as
one grouped convolution with the tasks folded into channel groups (or, ``batched_conv="unfold"``,
as im2col + one batched matrix product, which runs on tensor cores in TF32).

The ConvNet's prediction for an image never depends on what else is in its batch. By default
(``norm="support"``) it batch-normalizes with the statistics of the task's support set, frozen for
the task's queries: the learner passes each task's support images as ``reference`` to the query
forwards, and a deployed model keeps them (``set_reference``, which ``prepare(support=...)``
calls). The per-example norms ``"group"`` and ``"layer"`` need no support set, but learn far
worse features (docs/benchmarks.md). ``norm="batch"`` (the statistics of the batch at hand, as in
MAML) stays as an explicit option, for old artifacts and comparisons.

Group normalization runs the fused ``group_norm`` kernel everywhere: its double backward is exact
also under ``vmap``. In the hand-batched forward the tasks are folded into the channels, task-major,
so the groups of one task never mix with another's and one ``group_norm`` call with ``T * groups``
groups normalizes every task with its own affine parameters.

Batch normalization uses the fused ``batch_norm`` kernel (and its native double backward) on
plain tensors, and primitive ops (mean/var) under a ``torch.func`` transform or ``torch.compile``:
the fused kernel's second-order gradients are wrong under vmap (functorch issue #534). The per-task
loop and the hand-batched path run outside vmap, where the fused kernel is exact: with the tasks
folded into channels, per-channel batch statistics are exactly per-task statistics. One fused
kernel replaces a dozen small ones in each of the forward, backward and double-backward passes.

Models that support a prototype-initialized head (Proto-MAML) accept ``head=False`` in both
forwards, returning the features the final linear layer ``head`` reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..imports import import_object

__all__ = [
    "MLP",
    "ConvNet",
    "FeatureClassifier",
    "BatchNorm2dStats",
    "CONVNET_NORMS",
    "build_model",
    "complete_spec",
    "register_model",
    "supports_batched",
]

_EPS = 1e-5


class MLP(nn.Module):
    """Fully connected network with ReLU between layers, e.g. ``sizes=[1, 40, 40, 1]``.

    Args:
        sizes: the width of every layer, inputs first and outputs last (at least two).

    Raises:
        ConfigError: fewer than two sizes, or a size below 1.
    """

    def __init__(self, sizes: Sequence[int] = (1, 40, 40, 1)) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ConfigError(f"MLP sizes must be at least two positive integers, got {sizes}")
        self.sizes = sizes
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[N, sizes[0]]`` -> ``[N, sizes[-1]]``."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x

    def batched_forward(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """``x``: [T, N, in]; every parameter has a leading T dimension."""
        last = len(self.layers) - 1
        for i in range(len(self.layers)):
            w = params[f"layers.{i}.weight"]
            b = params[f"layers.{i}.bias"]
            x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
            if i < last:
                x = F.relu(x)
        return x


class FeatureClassifier(nn.Module):
    """A classifier over fixed feature vectors (e.g. sentence embeddings): an optional ReLU MLP,
    a learned feature scale, and a linear ``head``.

    ``hidden=[]`` puts the head straight on the (scaled) inputs. The scale is a temperature: on
    unit-length embeddings the logits of a head initialized from prototypes (Proto-MAML) span only
    a few units, too flat for a softmax, so it starts at ``scale`` and is meta-learned.

    Args:
        in_features: the feature vectors' length.
        num_classes: outputs of the head (the episodes' ways).
        hidden: widths of the ReLU layers before the head (none by default).
        scale: the feature scale's initial value.
        encoder_name: the name of the encoder folder whose embeddings feed this model, or None.
        checksum: that folder's content checksum. Both are a record (see
            :mod:`~metaopt_tuner.models.text.identity`): the model reads no file; the folder a
            user gives for new features is checked against them (``Artifact.encoder``).

    Raises:
        ConfigError: a size below 1.
    """

    def __init__(self, in_features: int = 384, num_classes: int = 5, hidden: Sequence[int] = (),
                 scale: float = 10.0, encoder_name: str | None = None,
                 checksum: str | None = None) -> None:
        super().__init__()
        self.encoder_name, self.checksum = encoder_name, checksum
        sizes = [int(in_features), *[int(h) for h in hidden]]
        if any(s < 1 for s in sizes) or int(num_classes) < 1:
            raise ConfigError(
                f"FeatureClassifier sizes must be positive, got in_features={in_features}, "
                f"hidden={list(hidden)}, num_classes={num_classes}"
            )
        self.in_features, self.num_classes = sizes[0], int(num_classes)
        self.hidden = sizes[1:]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.scale = nn.Parameter(torch.full((1,), float(scale)))
        self.head = nn.Linear(sizes[-1], self.num_classes)

    def forward(self, x: Tensor, head: bool = True) -> Tensor:
        """Logits ``[N, num_classes]`` for features ``[N, in_features]`` (``head=False``: the
        scaled features the head reads)."""
        params = {n: p.unsqueeze(0) for n, p in self.named_parameters()}
        return self.batched_forward(params, x.unsqueeze(0), head=head).squeeze(0)

    def batched_forward(self, params: Mapping[str, Tensor], x: Tensor, head: bool = True) -> Tensor:
        """``x``: [T, N, in_features]; every parameter has a leading T dimension."""
        for i in range(len(self.layers)):
            w, b = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            x = F.relu(torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2)))
        x = x * params["scale"].view(-1, 1, 1)
        if not head:
            return x
        return torch.baddbmm(params["head.bias"].unsqueeze(1), x, params["head.weight"].transpose(1, 2))


def _plain_tensor(x: Tensor) -> bool:
    """True outside ``torch.compile`` tracing and every ``torch.func`` transform (vmap, grad)."""
    if torch.compiler.is_compiling():
        return False
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return wrapped is not None and not wrapped(x)


def _moments(x: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Mean and biased variance over ``dims`` (kept), from primitive ops."""
    mean = x.mean(dim=dims, keepdim=True)
    return mean, (x - mean).square().mean(dim=dims, keepdim=True)


def _normalize_by(x: Tensor, stats: Tensor, dims: tuple[int, ...], weight: Tensor,
                  bias: Tensor) -> Tensor:
    """``x`` normalized by the mean and biased variance of ``stats`` (its reference examples)
    over ``dims``, then the affine (``weight`` and ``bias`` shaped to broadcast). The statistics
    and the affine are folded into one scale and shift, so ``x`` sees one full-size operation
    instead of four: the support-norm path's hot spot on CPU."""
    var, mean = torch.var_mean(stats, dim=dims, correction=0, keepdim=True)
    scale = weight * torch.rsqrt(var + _EPS)
    return torch.addcmul(bias - mean * scale, x, scale)


class BatchNorm2dStats(nn.Module):
    """Batch normalization with statistics of the current batch and a learnable affine.

    As in MAML, statistics always come from the batch at hand (no running averages), which keeps
    the module free of buffers. On plain tensors it runs the fused kernel (exact, and far fewer
    kernels); under vmap and the other ``torch.func`` transforms, or while ``torch.compile``
    traces, it is written from primitive ops, whose second-order gradients stay exact there
    (``fused = False`` forces those everywhere).
    """

    #: use the fused ``batch_norm`` kernel on plain tensors
    fused: bool = True

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, count: int | None = None) -> Tensor:
        """Normalize ``x`` with the statistics of its first ``count`` examples (default: all)."""
        weight, bias = self.weight.view(1, -1, 1, 1), self.bias.view(1, -1, 1, 1)
        if count is not None and count < x.shape[0]:
            return _normalize_by(x, x[:count], (0, 2, 3), weight, bias)
        # (one value per channel: the fused kernel refuses it, the primitive ops give zeros)
        if self.fused and x.numel() > x.shape[1] and _plain_tensor(x):
            return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=_EPS)
        mean, var = _moments(x, (0, 2, 3))
        return (x - mean) * torch.rsqrt(var + _EPS) * weight + bias


#: the ConvNet's normalizations: ``"support"`` (the default) takes its statistics from the task's
#: support set, ``"group"`` and ``"layer"`` from each example alone
CONVNET_NORMS = ("group", "layer", "support", "batch", "none")
#: channels per group of ``norm="group"`` (groups = filters // this, at least one)
GROUP_SIZE = 8


def check_convnet_options(norm: str, feature_gain: float) -> None:
    """Raise :class:`ConfigError` for a ConvNet ``norm`` or ``feature_gain`` it cannot take (the
    Omniglot suite checks its options with it before any data is read)."""
    if norm not in CONVNET_NORMS:
        raise ConfigError(f"ConvNet norm must be one of {', '.join(CONVNET_NORMS)}, got {norm!r}")
    if not (math.isfinite(feature_gain) and feature_gain > 0):
        raise ConfigError(f"ConvNet feature_gain must be positive, got {feature_gain}")


def _norm_groups(norm: str, channels: int) -> int:
    """Groups of the per-example norms: ``"layer"`` is one group (all channels of an image)."""
    return 1 if norm == "layer" else max(1, channels // GROUP_SIZE)


class ConvNet(nn.Module):
    """The standard few-shot 4-block ConvNet: [3x3 conv, norm, ReLU, 2x2 max-pool] x blocks, linear.

    ``norm``:

    * ``"support"`` (default): batch norm with the statistics of a task's support set (the
      *reference*), frozen for its queries: ``forward(x, reference=x_support)``, or
      :meth:`set_reference` once per task (``prepare(..., support=...)`` does). Without a
      reference the batch given is taken as the support set (as in the inner loop's support
      forward). Each call also runs the reference through the network;
    * ``"group"``: ``nn.GroupNorm`` with groups of 8 channels, per example;
    * ``"layer"``: one group, every channel of an image (``nn.GroupNorm(1, filters)``);
    * ``"batch"``: statistics of the current batch (:class:`BatchNorm2dStats`), transductive: an
      image's output depends on the rest of its batch. For old artifacts and comparisons;
    * ``"none"``.

    Args:
        in_channels: image channels (1 for Omniglot, 3 for RGB).
        num_classes: outputs of the head (the episodes' ways).
        filters: channels of every convolution.
        blocks: conv-norm-ReLU-pool blocks.
        image_size: the images' side in pixels (square).
        norm: ``"support"``, ``"group"``, ``"layer"``, ``"batch"`` or ``"none"``.
        feature_gain: the initial scale of the last norm layer, and so of the features. A
            prototype head's logits are quadratic in the features, so this sets their initial
            temperature (``feature_gain ** 2``); the scale is learned from there.

    Raises:
        ConfigError: an unknown ``norm``, a size below 1, or images too small for the blocks.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 5,
        filters: int = 64,
        blocks: int = 4,
        image_size: int = 28,
        norm: str = "support",
        feature_gain: float = 1.0,
    ) -> None:
        super().__init__()
        check_convnet_options(norm, feature_gain)
        for label, value in (("in_channels", in_channels), ("num_classes", num_classes),
                             ("filters", filters), ("blocks", blocks), ("image_size", image_size)):
            if int(value) < 1:
                raise ConfigError(f"ConvNet {label} must be positive, got {value}")
        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.filters, self.blocks, self.image_size, self.norm = int(filters), int(blocks), int(
            image_size), norm
        chans = [self.in_channels] + [self.filters] * self.blocks
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size=3, padding=1) for a, b in zip(chans[:-1], chans[1:])
        )
        self.norms = nn.ModuleList(self._norm_layer() for _ in range(self.blocks))
        self.feature_gain = float(feature_gain)
        last = self.norms[-1]
        if isinstance(getattr(last, "weight", None), Tensor):
            with torch.no_grad():
                last.weight.fill_(self.feature_gain)
        side = self.image_size
        for _ in range(self.blocks):
            side //= 2
        if side < 1:
            raise ConfigError(f"image_size {image_size} is too small for {blocks} pooling blocks")
        self.feature_dim = self.filters * side * side
        self.head = nn.Linear(self.feature_dim, self.num_classes)

    _reference: Tensor | None = None

    @property
    def uses_reference(self) -> bool:
        """Whether queries are normalized with a reference (support) batch's statistics."""
        return self.norm == "support"

    def set_reference(self, x_support: Tensor | None) -> None:
        """The support images whose statistics normalize every later call (``norm="support"``)."""
        self._reference = None if x_support is None else x_support.detach()

    def _norm_layer(self) -> nn.Module:
        if self.norm in ("batch", "support"):
            return BatchNorm2dStats(self.filters)
        if self.norm == "none":
            return nn.Identity()
        return nn.GroupNorm(_norm_groups(self.norm, self.filters), self.filters, eps=_EPS)

    #: how ``batched_forward`` convolves: "grouped" (one grouped conv), "unfold" (im2col + one
    #: batched product per task), "unfold_nt" (im2col + one product per image and task: no
    #: transposes) or "auto" (unfold_nt on CUDA, where cuDNN's grouped kernels are slow; grouped
    #: elsewhere; docs/benchmarks.md)
    batched_conv: str = "auto"
    #: how ``batched_forward`` batch-normalizes (``norm="batch"``): the fused kernel (True) or
    #: primitive ops (False)
    fused_norm: bool = True

    def features(self, x: Tensor, reference: Tensor | None = None,
                 with_reference: bool = False) -> Tensor:
        """The flattened features ``[N, feature_dim]`` the head reads, for images ``[N, C, H, W]``
        (normalized by ``reference``'s statistics with ``norm="support"``; ``with_reference``:
        the reference's features first, from the same pass)."""
        if not self.uses_reference:
            for conv, norm in zip(self.convs, self.norms):
                x = F.max_pool2d(F.relu(norm(conv(x))), 2)
            return x.flatten(1)
        reference = self._reference if reference is None else reference
        if reference is None and not self.training:
            # in eval mode a prediction must not depend on what else is in its batch
            raise ConfigError(
                "this ConvNet normalizes with its task's support set (norm='support'): in eval "
                "mode give it one with model.set_reference(x_support), prepare(..., "
                "support=(x, y)) or model(x, reference=x_support)"
            )
        count = None
        if reference is not None:  # normalized along with x, by the reference's statistics
            count = reference.shape[0]
            x = torch.cat([reference.to(x), x])
        for conv, norm in zip(self.convs, self.norms):
            x = F.max_pool2d(F.relu(norm(conv(x), count)), 2)
        return x[0 if with_reference else count or 0:].flatten(1)

    def forward(self, x: Tensor, head: bool = True, reference: Tensor | None = None,
                with_reference: bool = False) -> Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, C, H, W]`` (``head=False``: the features;
        ``with_reference``: for the reference's images first, then ``x``'s, from one pass)."""
        feats = self.features(x, reference, with_reference)
        return self.head(feats) if head else feats

    def _batched_conv(self, h: Tensor, w: Tensor, b: Tensor, t: int) -> Tensor:
        """3x3 'same' convolution of ``h`` [N, T*C, H, W] with per-task ``w`` [T, O, C, 3, 3]."""
        conv = self.batched_conv
        if conv == "auto":
            conv = "unfold_nt" if h.is_cuda else "grouped"
        if conv == "grouped":
            return F.conv2d(h, w.reshape(-1, *w.shape[2:]), b.reshape(-1), padding=1, groups=t)
        n, _, height, width = h.shape
        out_c = w.shape[1]
        if conv == "unfold_nt":  # one small product per (image, task): no transposes
            cols = F.unfold(h, 3, padding=1).view(n, t, -1, height * width)  # [N, T, C*9, L]
            y = torch.matmul(w.reshape(t, out_c, -1), cols) + b.view(1, t, out_c, 1)
            return y.view(n, t * out_c, height, width)
        if conv != "unfold":
            raise ConfigError(
                f"batched_conv must be 'auto', 'grouped', 'unfold' or 'unfold_nt', got {conv!r}"
            )
        cols = F.unfold(h, 3, padding=1)  # [N, T*C*9, L]
        cols = cols.view(n, t, -1, height * width).permute(1, 2, 0, 3).reshape(t, -1, n * height * width)
        y = torch.baddbmm(b.unsqueeze(-1), w.reshape(t, out_c, -1), cols)  # [T, O, N*L]
        return y.view(t, out_c, n, height, width).permute(2, 0, 1, 3, 4).reshape(
            n, t * out_c, height, width)

    def batched_forward(self, params: Mapping[str, Tensor], x: Tensor, head: bool = True,
                        reference: Tensor | None = None, with_reference: bool = False) -> Tensor:
        """``x``: [T, N, C, H, W]; tasks are folded into the channels: [N, T*C, H, W].

        ``reference`` [T, K, C, H, W] (``norm="support"``): each task's support images, whose
        statistics normalize its ``x`` (``with_reference``: their outputs first, then ``x``'s)."""
        count = None
        if self.uses_reference and reference is not None:
            count = reference.shape[1]
            x = torch.cat([reference.to(x), x], dim=1)
        t, n = x.shape[:2]
        h = x.transpose(0, 1).reshape(n, t * x.shape[2], *x.shape[3:])
        for i in range(self.blocks):
            h = self._batched_conv(h, params[f"convs.{i}.weight"], params[f"convs.{i}.bias"], t)
            if self.norm in ("group", "layer"):
                groups = t * _norm_groups(self.norm, self.filters)
                h = F.group_norm(h, groups, params[f"norms.{i}.weight"].reshape(-1),
                                 params[f"norms.{i}.bias"].reshape(-1), eps=_EPS)
            elif self.norm in ("batch", "support"):
                weight, bias = params[f"norms.{i}.weight"], params[f"norms.{i}.bias"]
                if self.fused_norm and count is None:
                    h = F.batch_norm(h, None, None, weight.reshape(-1), bias.reshape(-1),
                                     training=True, eps=_EPS)
                else:
                    g = h.view(n, t, self.filters, *h.shape[2:])
                    weight, bias = weight.view(1, t, -1, 1, 1), bias.view(1, t, -1, 1, 1)
                    if count is not None:  # the support's statistics, as BatchNorm2dStats
                        g = _normalize_by(g, g[:count], (0, 3, 4), weight, bias)
                    else:
                        mean, var = _moments(g, (0, 3, 4))
                        g = (g - mean) * torch.rsqrt(var + _EPS) * weight + bias
                    h = g.view(n, t * self.filters, *h.shape[2:])
            h = F.max_pool2d(F.relu(h), 2)
        feats = h.view(n, t, -1).transpose(0, 1)[:, 0 if with_reference else count or 0:]
        if not head:
            return feats
        w, b = params["head.weight"], params["head.bias"]
        return torch.baddbmm(b.unsqueeze(1), feats, w.transpose(1, 2))


_MODELS: dict[str, Callable[..., nn.Module] | str] = {
    "mlp": MLP, "convnet": ConvNet, "features": FeatureClassifier,
}
_MODELS["text_bag"] = "metaopt_tuner.models.text.models:TextBagClassifier"
_MODELS["encoder_top"] = "metaopt_tuner.models.text.transformer:EncoderTop"


def register_model(name: str, factory: Callable[..., nn.Module] | str) -> None:
    """Register a reference architecture (a class, a factory, or its ``"module:attr"`` path)."""
    _MODELS[name] = factory


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """Build ``{"name": "mlp", "kwargs": {...}}`` from the registry of reference architectures.

    Args:
        spec: ``{"name": ..., "kwargs": {...}}`` (``mlp``, ``convnet``, ``feature_classifier``, ...).

    Returns:
        The model.

    Raises:
        ConfigError: an unknown architecture, or invalid sizes for a reference one.
    """
    name = spec.get("name")
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(_MODELS))}")
    factory = _MODELS[name]
    if isinstance(factory, str):
        factory = import_object(factory)
    return factory(**dict(spec.get("kwargs", {})))


#: constructor arguments whose default changed, with the value a spec that omits them meant
#: before: artifacts written before group norm became the ConvNet's default rebuild as they were
#: trained (every spec written since names its ``norm``)
_FORMER_DEFAULTS: dict[str, dict[str, Any]] = {"convnet": {"norm": "batch"}}


def complete_spec(spec: Mapping[str, Any], model: nn.Module | None = None) -> dict[str, Any]:
    """``spec`` with every argument whose default changed spelled out.

    With ``model`` (writing an artifact), an omitted argument takes the model's value; without
    (reading one), the value it meant before the default changed. Factory specs pass unchanged.

    Args:
        spec: ``{"name": ..., "kwargs": {...}}`` (or a ``factory`` spec).
        model: the model built from ``spec``, when there is one.

    Returns:
        A new spec dict.
    """
    out = dict(spec)
    former = _FORMER_DEFAULTS.get(out.get("name"), {}) if "factory" not in out else {}
    kwargs = dict(out.get("kwargs") or {})
    for key, value in former.items():
        if key not in kwargs:
            kwargs[key] = getattr(model, key) if model is not None else value
    if former:
        out["kwargs"] = kwargs
    return out


def supports_batched(model: nn.Module) -> bool:
    """Whether ``model`` has a hand-batched forward (per-task parameters with a task dim)."""
    return callable(getattr(model, "batched_forward", None))
