"""The one functional inner loop every learner uses, and the update kernel it shares with MetaSGD.

Parameters are dicts ``name -> Tensor``. Learning rates are dicts ``name -> Tensor`` whose first
dimension indexes the inner step (length 1 when one rate serves every step); the rest broadcasts
against the parameter (``()`` for one rate per tensor, the parameter's shape for one per element).
Step ``t`` uses row ``min(t, S - 1)``: the last learned step's rates carry on past the last step.

Past the horizon ``H`` the rates were meta-trained for (the learner's inner steps), step ``t >= H``
multiplies them by ``TAIL_DECAY ** (t - H + 1)`` (:func:`tail_factor`): all the steps past the horizon
together move a weight at most ``TAIL_DECAY / (1 - TAIL_DECAY)`` times as far as one last learned step
would, so no number of steps can run away, and learners meta-train the rates through a short tail of
such steps (:data:`TAIL_STEPS`) so that those steps keep lowering the loss. Before the horizon nothing
changes: ``H`` optimizer steps reproduce the learner's ``H``-step adaptation exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "Params",
    "GradFn",
    "metasgd_update",
    "rates_at_step",
    "tail_factor",
    "TAIL_DECAY",
    "TAIL_STEPS",
    "TAIL_CUTOFF",
    "autograd_grads",
    "functorch_grads",
    "adapt",
]

Params = dict[str, Tensor]

#: the factor by which each step past the trained horizon shrinks the rates of the one before
TAIL_DECAY = 0.5
#: steps past the horizon that meta-training adapts through (first order) to train the tail, at
#: most as many as the horizon. Measured on the sinusoid (Meta-SGD, rates' outer rate 1e-2):
#: horizon 10, 5,000 iterations: MSE after 10 steps 0.0054 with 4 tail steps, 0.082 with none, and
#: past the horizon never above its value at 10; horizon 1, 2,000 iterations: after 1 / 10 steps
#: 0.31 / 0.157 with 1 tail step (19 s), 0.35 / 0.165 with 4 (34 s), 0.36 / 0.195 with none (15 s)
TAIL_STEPS = 4
#: a tail factor below this ends the tail: a step that small changes no float32 weight (2**-40
#: relative), so after about 40 steps past the horizon (at decay 0.5) nothing moves any more
TAIL_CUTOFF = 2.0**-40
#: ``grad_fn(loss_of_params, params, create_graph) -> grads``: how the inner loop differentiates.
GradFn = Callable[[Callable[[Params], Tensor], Params, bool], Params]


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


def tail_factor(step: int, horizon: int | None, decay: float = TAIL_DECAY) -> float:
    """The multiplier of the rates at 0-based ``step``: 1 before ``horizon``, then ``decay ** k``
    for the ``k``-th step past it (``horizon=None``: always 1), and exactly 0 once that is below
    :data:`TAIL_CUTOFF`: the weights then stop moving, and nothing needs computing."""
    if horizon is None or step < horizon:
        return 1.0
    factor = float(decay) ** (step - horizon + 1)
    return factor if factor >= TAIL_CUTOFF else 0.0


def rates_at_step(
    lrs: Mapping[str, Tensor], step: int, horizon: int | None = None, decay: float = TAIL_DECAY
) -> dict[str, Tensor]:
    """The rates for inner step ``step``: the last row once past the learned steps, shrunk by
    :func:`tail_factor` once past ``horizon``.

    A tensor shared by several parameters (one scalar rate for all) is indexed once, which keeps
    one node instead of one per parameter in the graph that second-order learners differentiate.
    """
    factor = tail_factor(step, horizon, decay)
    rows: dict[int, Tensor] = {}
    out = {}
    for name, r in lrs.items():
        row = rows.get(id(r))
        if row is None:
            row = r[min(step, r.shape[0] - 1)]
            if factor != 1.0:
                row = row * factor
            rows[id(r)] = row
        out[name] = row
    return out


def autograd_grads(
    loss_of: Callable[[Params], Tensor], params: Params, create_graph: bool
) -> Params:
    """Gradients through ``torch.autograd.grad`` (plain and hand-batched paths)."""
    loss = loss_of(params)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    return dict(zip(params.keys(), grads))


def functorch_grads(
    loss_of: Callable[[Params], Tensor], params: Params, create_graph: bool
) -> Params:
    """Gradients through ``torch.func.grad``: works inside ``vmap`` and composes with autograd."""
    grads = torch.func.grad(loss_of)(params)
    if not create_graph:
        grads = {k: g.detach() for k, g in grads.items()}
    return grads


def adapt(
    params: Params,
    lrs: Mapping[str, Tensor],
    support_loss: Callable[[Params], Tensor],
    steps: int,
    *,
    create_graph: bool = True,
    grad_fn: GradFn = autograd_grads,
    first_step: int = 0,
    horizon: int | None = None,
    decay: float = TAIL_DECAY,
) -> Params:
    """Take ``steps`` gradient steps on ``support_loss`` from ``params``; return the new params.

    ``create_graph=True`` keeps the graph through the gradients (second order: MAML, Meta-SGD);
    ``False`` treats each gradient as a constant (first order), while the adapted parameters stay
    differentiable in the initial parameters and in the rates. Steps numbered from ``first_step``
    at or past ``horizon`` use the shrinking tail rates (:func:`rates_at_step`).

    Args:
        params: the starting parameters, ``name -> Tensor``.
        lrs: the rates, ``name -> (rate_steps, *broadcast shape)``.
        support_loss: the support loss as a function of the parameters.
        steps: how many steps to take.
        create_graph: keep the graph through the gradients (second order).
        grad_fn: how to differentiate (:func:`autograd_grads`, or :func:`functorch_grads` under
            ``vmap``).
        first_step: the 0-based number of the first step (which row of rates it uses).
        horizon: the steps the rates were meta-trained for; later steps shrink them (None: never).
        decay: the tail's factor per step past the horizon.

    Returns:
        The adapted parameters (fewer steps are taken once the tail has ended).
    """
    names = list(params)
    for t in range(first_step, first_step + steps):
        if tail_factor(t, horizon, decay) == 0.0:  # the tail has ended: nothing moves any more
            break
        grads = grad_fn(support_loss, params, create_graph)
        rates = rates_at_step(lrs, t, horizon, decay)
        new = metasgd_update(
            [params[n] for n in names], [grads[n] for n in names], [rates[n] for n in names]
        )
        params = dict(zip(names, new))
    return params
