"""The one functional inner loop every learner uses, and the update kernel it shares with MetaSGD.

Parameters are dicts ``name -> Tensor``. Learning rates are dicts ``name -> Tensor`` whose first
dimension indexes the inner step (length 1 when one rate serves every step); the rest broadcasts
against the parameter (``()`` for one rate per tensor, the parameter's shape for one per element).
Step ``t`` uses row ``min(t, S - 1)``: the last learned step's rates carry on past the last step.
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
    "autograd_grads",
    "functorch_grads",
    "adapt",
]

Params = dict[str, Tensor]
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

    Out of place it builds new tensors (differentiable, the inner loop); in place it updates the
    parameters (the optimizer), with one fused foreach call when ``foreach`` is set.
    """
    if inplace:
        if foreach and len(params) > 0:
            torch._foreach_addcmul_(list(params), list(grads), list(lrs), value=-scale)
        else:
            for p, g, lr in zip(params, grads, lrs):
                p.addcmul_(g, lr, value=-scale)
        return list(params)
    if scale == 1.0:
        return [p - lr * g for p, g, lr in zip(params, grads, lrs)]
    return [p - scale * (lr * g) for p, g, lr in zip(params, grads, lrs)]


def rates_at_step(lrs: Mapping[str, Tensor], step: int) -> dict[str, Tensor]:
    """The rates for inner step ``step`` (the last row once past the learned steps).

    A tensor shared by several parameters (one scalar rate for all) is indexed once, which keeps
    one node instead of one per parameter in the graph that second-order learners differentiate.
    """
    rows: dict[int, Tensor] = {}
    out = {}
    for name, r in lrs.items():
        row = rows.get(id(r))
        if row is None:
            row = rows[id(r)] = r[min(step, r.shape[0] - 1)]
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
) -> Params:
    """Take ``steps`` gradient steps on ``support_loss`` from ``params``; return the new params.

    ``create_graph=True`` keeps the graph through the gradients (second order: MAML, Meta-SGD);
    ``False`` treats each gradient as a constant (first order), while the adapted parameters stay
    differentiable in the initial parameters and in the rates.
    """
    names = list(params)
    for t in range(first_step, first_step + steps):
        grads = grad_fn(support_loss, params, create_graph)
        rates = rates_at_step(lrs, t)
        new = metasgd_update(
            [params[n] for n in names], [grads[n] for n in names], [rates[n] for n in names]
        )
        params = dict(zip(names, new))
    return params
