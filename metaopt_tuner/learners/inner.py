"""The one functional inner loop every learner uses (its update is ``update_rule``'s, shared with
MetaSGD).

Parameters are dicts ``name -> Tensor``. Learning rates are dicts ``name -> Tensor`` whose first
dimension indexes the inner step (length 1 when one rate serves every step); the rest broadcasts
against the parameter (``()`` for one rate per tensor, the parameter's shape for one per element).
Step ``t`` uses row ``min(t, S - 1)``: the last learned step's rates carry on past the last step.

Steps at or past the horizon use the shrinking tail rates of ``update_rule``; before it nothing
changes: ``H`` optimizer steps reproduce the learner's ``H``-step adaptation exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from .._compat import module_getattr
from ..models.proto_head import HEAD_BIAS, HEAD_WEIGHT
from ..update_rule import (
    TAIL_DECAY,
    bounded_head_update,
    metasgd_update,
    rate_row,
    rates_at_step,
    tail_factor,
)

__all__ = [
    "Params",
    "GradFn",
    "autograd_grads",
    "functorch_grads",
    "adapt",
]

Params = dict[str, Tensor]

#: ``grad_fn(loss_of_params, params, create_graph) -> grads``: how the inner loop differentiates.
GradFn = Callable[[Callable[[Params], Tensor], Params, bool], Params]


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
    head_bound: Tensor | None = None,
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
        head_bound: the longest step a head's class row may take, ``(rate_steps,)`` (one per
            step, shrunk past the horizon as the rates are: :func:`~metaopt_tuner.update_rule.
            bound_head_steps`); None: unbounded.

    Returns:
        The adapted parameters (fewer steps are taken once the tail has ended).
    """
    names = list(params)
    has_head = HEAD_WEIGHT in params and HEAD_BIAS in params
    bounded = (HEAD_WEIGHT, HEAD_BIAS) if head_bound is not None and has_head else ()
    free = [n for n in names if n not in bounded]  # the plain Meta-SGD update's
    for t in range(first_step, first_step + steps):
        if tail_factor(t, horizon, decay) == 0.0:  # the tail has ended: nothing moves any more
            break
        grads = grad_fn(support_loss, params, create_graph)
        rates = rates_at_step(lrs, t, horizon, decay)
        new = dict(zip(free, metasgd_update(
            [params[n] for n in free], [grads[n] for n in free], [rates[n] for n in free]
        )))
        if bounded:
            w, b = bounded
            new[w], new[b] = bounded_head_update(
                params[w], params[b], grads[w], grads[b], rates[w], rates[b],
                rate_row(head_bound, t, horizon, decay))
        params = {n: new[n] for n in names}
    return params


__getattr__ = module_getattr(__name__)  # old paths of names that moved (see _compat)
