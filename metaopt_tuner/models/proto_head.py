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

The head is **width-free**: since labels are shuffled in every episode, nothing learned can belong
to one class, so the head's learned values and rates are tied across classes (one row shared by
every class) and a task of any number of classes gets that row once per class
(:func:`head_at_width`). An artifact of any width serves tasks of any width.

With many examples per class, the class means are not all a support set says: its spread around
them has a shape, which a fitted logistic regression uses and the prototypes ignore. A
**whitened** prototype head (``whitening=a``) ranks classes by the Mahalanobis distance under the
support set's pooled within-class covariance, shrunk toward the identity the more the fewer
examples there are (:func:`whitening_matrix`): plain prototypes at one shot, a linear
discriminant at many, computed in closed form from the support set as the prototypes are.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

__all__ = ["HEAD_INITS", "HEAD_WEIGHT", "HEAD_BIAS", "supports_prototype_head", "prototype_head",
           "prototype_head_", "whitening_matrix", "is_head", "tie_classes", "head_at_width",
           "task_width", "resize_head_", "check_labels"]

HEAD_INITS = ("theta", "prototypes")
HEAD_WEIGHT, HEAD_BIAS = "head.weight", "head.bias"


def is_head(name: str) -> bool:
    """Whether parameter ``name`` belongs to the class-indexed head (its rows are classes)."""
    return name in (HEAD_WEIGHT, HEAD_BIAS)


def tie_classes(value: Tensor, class_dim: int = 0) -> Tensor:
    """One row for every class: ``value``'s class rows (dimension ``class_dim``, kept with size
    1) when they are all the same, else their mean (per-class rows of older artifacts: all that
    shuffled labels let them mean)."""
    first = value.narrow(class_dim, 0, 1)
    return first if bool((value == first).all()) else value.mean(class_dim, keepdim=True)


def head_at_width(value: Tensor, width: int, class_dim: int = 0) -> Tensor:
    """A head tensor (weight ``[C, F]``, bias ``[C]``, or their rates with a leading step
    dimension: ``class_dim=1``) for ``width`` classes: its class-tied row (:func:`tie_classes`)
    once per class. A tensor of that width already comes back as it is."""
    if value.shape[class_dim] == width:
        return value
    shape = list(value.shape)
    shape[class_dim] = width
    return tie_classes(value, class_dim).expand(shape)


def task_width(labels: Tensor) -> int:
    """The number of classes of integer ``labels`` ``0..C-1`` (the largest label plus one)."""
    return int(labels.max()) + 1 if labels.numel() else 0


def check_labels(labels: Tensor) -> int:
    """The number of classes ``C`` of a support set's ``labels``, which must be integers naming
    every class ``0..C-1``.

    Raises:
        ConfigError: float or negative labels, or a class number with no example (labels must be
            ``0..C-1``: map yours with ``torch.unique(y, return_inverse=True)``).
    """
    from ..errors import ConfigError

    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ConfigError(f"support labels must be integer class numbers 0..C-1, got {labels.dtype}")
    if labels.numel() == 0:
        raise ConfigError("the support set is empty")
    if int(labels.min()) < 0:
        raise ConfigError(f"support labels must be 0..C-1, got {int(labels.min())}")
    width = task_width(labels)
    present = torch.unique(labels)
    if len(present) != width:
        missing = sorted(set(range(width)) - set(present.tolist()))[:5]
        raise ConfigError(
            f"support labels must name every class 0..{width - 1}, but {missing} have no example; "
            "map yours with torch.unique(y, return_inverse=True)"
        )
    return width


@torch.no_grad()
def resize_head_(model: nn.Module, width: int) -> nn.Module:
    """Give ``model`` a head of ``width`` classes (a new ``nn.Linear``, its rows the mean of the
    old head's rows: the class-tied values); a head of that width already is left alone."""
    head = model.head
    if not isinstance(head, nn.Linear) or head.out_features == width:
        return model
    new = nn.Linear(head.in_features, width, bias=head.bias is not None,
                    device=head.weight.device, dtype=head.weight.dtype)
    new.weight.copy_(head_at_width(head.weight, width))
    if head.bias is not None:
        new.bias.copy_(head_at_width(head.bias, width))
    new.weight.requires_grad_(head.weight.requires_grad)
    if new.bias is not None:
        new.bias.requires_grad_(head.bias.requires_grad)
    model.head = new
    if hasattr(model, "num_classes"):
        model.num_classes = width
    return model


def supports_prototype_head(model: nn.Module) -> bool:
    """Whether ``model`` has a linear ``head`` and a ``forward(x, head=False)`` giving features."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear) or head.bias is None:
        return False
    return "head" in inspect.signature(model.forward).parameters


def prototype_head(
    features: Tensor, labels: Tensor, weight: Tensor, bias: Tensor,
    whitening: float | None = None,
) -> tuple[Tensor, Tensor]:
    """The head for support ``features`` ``[..., N, F]`` with integer ``labels`` ``[..., N]``.

    Differentiable in every input and free of data-dependent shapes, so it works under ``vmap``.

    Args:
        features: the support set's features ``[..., N, F]``.
        labels: their integer labels ``[..., N]``.
        weight: the head's weight ``[..., C, F]`` (C classes).
        bias: the head's bias ``[..., C]``.
        whitening: None for plain prototypes; a positive ``a`` whitens them by the support set's
            own shape (:func:`whitening_matrix`): a shrunk linear discriminant.

    Returns:
        ``weight + 2 P`` and ``bias - |P|^2``, with ``P`` ``[..., C, F]`` the per-class mean
        features (a class without support examples gets a zero prototype); with ``whitening``,
        ``weight + 2 S^-1 P`` and ``bias - P.S^-1 P``, ``S`` the shrunk covariance, which ranks
        classes by the Mahalanobis distance ``(f - p_c) S^-1 (f - p_c)``.
    """
    classes = torch.arange(weight.shape[-2], device=labels.device)
    onehot = (labels.unsqueeze(-1) == classes).to(features.dtype)  # [..., N, C]
    counts = onehot.sum(-2).clamp(min=1.0).unsqueeze(-1)  # [..., C, 1]
    protos = onehot.transpose(-1, -2) @ features / counts  # [..., C, F]
    shrunk = None if whitening is None else whitening_matrix(
        features - onehot @ protos, weight.shape[-2], whitening)  # residuals: minus class means
    if shrunk is None:
        return weight + 2.0 * protos, bias - protos.square().sum(-1)
    directions = torch.linalg.solve(shrunk, protos.transpose(-1, -2)).transpose(-1, -2)
    return weight + 2.0 * directions, bias - (directions * protos).sum(-1)


def whitening_matrix(residuals: Tensor, classes: int, strength: float) -> Tensor | None:
    """The shrunk within-class covariance ``S`` ``[..., F, F]`` of a whitened prototype head, or
    None when every class has one example (``S`` would be the identity: the plain prototypes).

    With few examples per class the pooled covariance of the support ``residuals`` (examples minus
    their class means) is noise, with many it is the features' real shape, which a logistic
    regression also finds (its gain over the centroid on held-out classes at 5 and 15 shots: the
    Benchmarks page). So ``S = (1 - w) C / mean(diag C) + w I`` with
    ``w = strength / (strength + n)``, ``n`` the examples per class beyond the first: the identity
    (plain prototypes, at the prototypes' scale) at one shot, the data's covariance as ``n`` grows.
    ``strength`` counts prior examples per class; a shape-only weight keeps it free of the data.
    """
    if not strength > 0:
        raise ValueError(f"whitening strength must be positive, got {strength}")
    count, dim = residuals.shape[-2], residuals.shape[-1]
    beyond_first = max(count - classes, 0) / max(classes, 1)
    if beyond_first == 0:  # one example per class: no spread to learn from, nothing to solve
        return None
    eye = torch.eye(dim, dtype=residuals.dtype, device=residuals.device)
    weight = strength / (strength + beyond_first)
    cov = residuals.transpose(-1, -2) @ residuals / count
    # the floor's square is still a normal number, so a support set without spread (duplicates)
    # back-propagates zeros, not 0 / 0
    floor = torch.finfo(cov.dtype).tiny ** 0.5
    scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp(min=floor)
    return (1.0 - weight) * cov / scale[..., None, None] + weight * eye


@torch.no_grad()
def prototype_head_(model: nn.Module, x_support: Tensor, y_support: Tensor,
                    whitening: float | None = None) -> nn.Module:
    """Set ``model.head`` in place from one task's support set (for a Proto-MAML artifact).

    Call it once per new task after loading the artifact's theta and before the first optimizer
    step: it replaces the artifact's (zero) head with the task's prototype head, and gives a model
    that normalizes with its support set's statistics (``ConvNet(norm="support")``) this one.

    Args:
        model: a model with a Linear ``head`` and ``forward(x, head=False)`` giving features.
        x_support: the new task's support inputs.
        y_support: their integer labels.
        whitening: the artifact's ``head_whitening`` (see :func:`prototype_head`;
            :func:`~metaopt_tuner.optim.prepare` passes it).

    Returns:
        ``model``, its head set.

    A support set of another number of classes than the head has resizes the head first
    (:func:`resize_head_`).

    Raises:
        TypeError: the model has no prototype head.
        ConfigError: the labels are not ``0..C-1``.
    """
    if not supports_prototype_head(model):
        raise TypeError(f"{type(model).__name__} has no prototype head (forward(x, head=False))")
    resize_head_(model, check_labels(y_support))
    if getattr(model, "uses_reference", False):  # ConvNet(norm="support"): the task's statistics
        model.set_reference(x_support)  # type: ignore[operator]
    features = model(x_support, head=False)
    head: nn.Linear = model.head  # type: ignore[assignment]
    weight, bias = prototype_head(features, y_support, head.weight, head.bias, whitening)
    head.weight.copy_(weight)
    head.bias.copy_(bias)
    return model
