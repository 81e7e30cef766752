"""The update rule: the per-weight step, the rates of each step and the rule past the horizon.

The one kernel the inner loop (``learners.inner.adapt``), the artifact (which records the tail)
and :class:`~metaopt_tuner.optim.MetaSGD` all call, so that ``H`` optimizer steps reproduce a
learner's ``H``-step adaptation exactly.

Rates are tensors whose first dimension indexes the inner step (length 1 when one rate serves
every step); the rest broadcasts against the parameter. Step ``t`` uses row ``min(t, S - 1)``: the
last learned step's rates carry on past the last step.

Past the horizon ``H`` the rates were meta-trained for (the learner's inner steps), step ``t >= H``
multiplies them by ``TAIL_DECAY ** (t - H + 1)`` (:func:`tail_factor`): all the steps past the
horizon together move a weight at most :func:`tail_reach` (``d / (1 - d)``) times as far as one
last learned step would, so no number of steps can run away, and learners meta-train the rates through a
short tail of such steps (:data:`TAIL_STEPS`) so that those steps keep lowering the loss. Before
the horizon nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "metasgd_update",
    "bound_head_steps",
    "bounded_head_update",
    "tail_factor",
    "tail_reach",
    "rate_row",
    "rates_at_step",
    "TAIL_DECAY",
    "TAIL_STEPS",
    "TAIL_CUTOFF",
]

#: the factor by which each step past the trained horizon shrinks the rates of the one before
TAIL_DECAY = 0.5
#: steps past the horizon that meta-training adapts through (first order) to train the tail, at
#: most as many as the horizon (the measurements behind 4: docs/benchmarks.md)
TAIL_STEPS = 4
#: a tail factor below this ends the tail: a step that small changes no float32 weight (2**-40
#: relative), so after about 40 steps past the horizon (at decay 0.5) nothing moves any more
TAIL_CUTOFF = 2.0**-40

def metasgd_update(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    lrs: Sequence[Tensor],
    *,
    scale: float = 1.0,
    inplace: bool = False,
    foreach: bool = False,
) -> list[Tensor]:
    """``p <- p - scale * lr * g`` for every parameter: the inner loop's and MetaSGD's update.

    Out of place it builds new tensors (differentiable: the inner loop; MetaSGD, which checks them
    before it writes them), with fused foreach calls when ``foreach`` is set; in place it updates
    the parameters.
    """
    if inplace:
        if foreach and len(params) > 0:
            torch._foreach_addcmul_(list(params), list(grads), list(lrs), value=-scale)
        else:
            for p, g, lr in zip(params, grads, lrs):
                p.addcmul_(g, lr, value=-scale)
        return list(params)
    if foreach and len(params) > 0:
        steps = torch._foreach_mul(list(lrs), list(grads))
        if scale != 1.0:
            torch._foreach_mul_(steps, scale)
        return list(torch._foreach_sub(list(params), steps))
    if scale == 1.0:
        return [p - lr * g for p, g, lr in zip(params, grads, lrs)]
    return [p - scale * (lr * g) for p, g, lr in zip(params, grads, lrs)]


def bound_head_steps(
    weight_step: Tensor, bias_step: Tensor, radius: Tensor
) -> tuple[Tensor, Tensor]:
    """The head's steps with each class row's step at most ``radius`` long.

    Row ``c``'s step is its weight row and bias entry together, ``[dW_c, db_c]``; one longer than
    ``radius`` is shortened to it, direction kept. A bound on each row is the same at any number
    of classes and shots, where one set of rates alone is not: with the mean support loss, rates
    that suit 45 classes overshoot at 5 (docs/benchmarks.md, "Any task shape").

    Args:
        weight_step: the weight's step ``[..., C, F]`` (rate times gradient).
        bias_step: the bias's step ``[..., C]``.
        radius: the longest step a row may take (a scalar tensor).
    """
    # clamped before the root: a row that does not move (a saturated support loss) has a zero
    # step, and the root's gradient at zero is infinite (NaN meta-gradients)
    tiny = torch.finfo(weight_step.dtype).tiny
    length = (weight_step.square().sum(-1) + bias_step.square()).clamp(min=tiny).sqrt()
    factor = (radius / length).clamp(max=1.0)
    return weight_step * factor.unsqueeze(-1), bias_step * factor


def bounded_head_update(
    weight: Tensor, bias: Tensor, weight_grad: Tensor, bias_grad: Tensor, weight_lr: Tensor,
    bias_lr: Tensor, radius: Tensor, scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """The head's new weight and bias after one step whose class rows are bounded: ``rate *
    grad`` per weight, each row shortened by :func:`bound_head_steps`, times ``scale``. The
    inner loop's and MetaSGD's update of a bounded head (the rest goes through
    :func:`metasgd_update`)."""
    dw, db = bound_head_steps(weight_lr * weight_grad, bias_lr * bias_grad, radius)
    if scale != 1.0:
        dw, db = scale * dw, scale * db
    return weight - dw, bias - db


def tail_factor(step: int, horizon: int | None, decay: float = TAIL_DECAY) -> float:
    """The multiplier of the rates at 0-based ``step``: 1 before ``horizon``, then ``decay ** k``
    for the ``k``-th step past it (``horizon=None``: always 1), and exactly 0 once that is below
    :data:`TAIL_CUTOFF`: the weights then stop moving, and nothing needs computing."""
    if horizon is None or step < horizon:
        return 1.0
    factor = float(decay) ** (step - horizon + 1)
    return factor if factor >= TAIL_CUTOFF else 0.0


def tail_reach(decay: float = TAIL_DECAY) -> float:
    """How far all the steps past the horizon together can move a weight, in units of one last
    learned step: the geometric sum ``decay + decay**2 + ... = decay / (1 - decay)``."""
    return float(decay) / (1.0 - float(decay))


def rate_row(
    rates: Tensor, step: int, horizon: int | None = None, decay: float = TAIL_DECAY
) -> Tensor:
    """One rate tensor's rates for 0-based ``step``: its row ``min(step, rows - 1)``, times
    :func:`tail_factor` once past ``horizon``."""
    factor = tail_factor(step, horizon, decay)
    row = rates[min(step, rates.shape[0] - 1)]
    return row if factor == 1.0 else row * factor


def rates_at_step(
    lrs: Mapping[str, Tensor], step: int, horizon: int | None = None, decay: float = TAIL_DECAY
) -> dict[str, Tensor]:
    """The rates for inner step ``step``: the last row once past the learned steps, shrunk by
    :func:`tail_factor` once past ``horizon``.

    A tensor shared by several parameters (one scalar rate for all) is indexed once, which keeps
    one node instead of one per parameter in the graph that second-order learners differentiate.
    """
    rows: dict[int, Tensor] = {}
    out = {}
    for name, r in lrs.items():
        row = rows.get(id(r))
        if row is None:
            row = rows[id(r)] = rate_row(r, step, horizon, decay)
        out[name] = row
    return out
