"""A prototype-initialized classification head (Proto-MAML, Triantafillou et al., 2020).

Labels are shuffled per episode, so a head meta-learned as ordinary weights can only learn to be
neutral: its meta-gradient averages to noise. Initializing the head of each task from the class
means (prototypes) of its support features instead makes the model a Prototypical Network before
the first inner step: the logit of class ``c`` is ``2 f.p_c - |p_c|^2``, which ranks classes by
squared Euclidean distance ``|f - p_c|^2`` (the ``|f|^2`` term is the same for every class). The
inner loop then fine-tunes from there, and the meta-gradient flows through the prototypes into the
feature extractor. Theta keeps its ``head`` (so its layout and the learned per-weight rates are
unchanged), but a learner with a prototype head zeroes and freezes it: the head is the
prototypes' alone, and :func:`prototype_head` adds theta's (zero) head as an offset.

A model supports it when ``forward`` / ``batched_forward`` accept ``head=False`` (returning the
features) and its last layer is an ``nn.Linear`` named ``head``.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

__all__ = ["HEAD_INITS", "HEAD_WEIGHT", "HEAD_BIAS", "supports_prototype_head", "prototype_head",
           "prototype_head_"]

HEAD_INITS = ("theta", "prototypes")
HEAD_WEIGHT, HEAD_BIAS = "head.weight", "head.bias"


def supports_prototype_head(model: nn.Module) -> bool:
    """Whether ``model`` has a linear ``head`` and a ``forward(x, head=False)`` giving features."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear) or head.bias is None:
        return False
    return "head" in inspect.signature(model.forward).parameters


def prototype_head(
    features: Tensor, labels: Tensor, weight: Tensor, bias: Tensor
) -> tuple[Tensor, Tensor]:
    """The head for support ``features`` ``[..., N, F]`` with integer ``labels`` ``[..., N]``.

    Differentiable in every input and free of data-dependent shapes, so it works under ``vmap``.

    Args:
        features: the support set's features ``[..., N, F]``.
        labels: their integer labels ``[..., N]``.
        weight: the head's weight ``[..., C, F]`` (C classes).
        bias: the head's bias ``[..., C]``.

    Returns:
        ``weight + 2 P`` and ``bias - |P|^2``, with ``P`` ``[..., C, F]`` the per-class mean
        features (a class without support examples gets a zero prototype).
    """
    classes = torch.arange(weight.shape[-2], device=labels.device)
    onehot = (labels.unsqueeze(-1) == classes).to(features.dtype)  # [..., N, C]
    counts = onehot.sum(-2).clamp(min=1.0).unsqueeze(-1)  # [..., C, 1]
    protos = onehot.transpose(-1, -2) @ features / counts  # [..., C, F]
    return weight + 2.0 * protos, bias - protos.square().sum(-1)


@torch.no_grad()
def prototype_head_(model: nn.Module, x_support: Tensor, y_support: Tensor) -> nn.Module:
    """Set ``model.head`` in place from one task's support set (for a Proto-MAML artifact).

    Call it once per new task after loading the artifact's theta and before the first optimizer
    step: it replaces the artifact's (zero) head with the task's prototype head, and gives a model
    that normalizes with its support set's statistics (``ConvNet(norm="support")``) this one.

    Args:
        model: a model with a Linear ``head`` and ``forward(x, head=False)`` giving features.
        x_support: the new task's support inputs.
        y_support: their integer labels.

    Returns:
        ``model``, its head set.

    Raises:
        TypeError: the model has no prototype head.
    """
    if not supports_prototype_head(model):
        raise TypeError(f"{type(model).__name__} has no prototype head (forward(x, head=False))")
    if getattr(model, "uses_reference", False):  # ConvNet(norm="support"): the task's statistics
        model.set_reference(x_support)  # type: ignore[operator]
    features = model(x_support, head=False)
    head: nn.Linear = model.head  # type: ignore[assignment]
    weight, bias = prototype_head(features, y_support, head.weight, head.bias)
    head.weight.copy_(weight)
    head.bias.copy_(bias)
    return model
