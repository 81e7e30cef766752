"""Reptile (Nichol et al., 2018): move theta toward the parameters adapted to each task."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ..tasks.base import TaskBatch
from .base import MetaGradient, MetaLearner

__all__ = ["Reptile"]


class Reptile(MetaLearner):
    """Meta-gradient ``theta - mean_i(theta'_i)``: an outer SGD step of size epsilon gives exactly
    ``theta <- theta + epsilon * mean_i(theta'_i - theta)``. First order by construction; rates are
    fixed.

    Args:
        model: the model whose initial weights are meta-learned.
        loss_fn: ``loss_fn(prediction, target)``, one loss per example.
        metric_fn: the same for the reported metric (default: ``loss_fn``).
        **options: the keyword options of :class:`MetaLearner` (always first order with fixed rates).

    Raises:
        ConfigError: ``head_init="prototypes"``: Reptile learns only from the support loss, which
            a prototype head already fits; ``inner_params="head"``: its body would never learn.
    """

    learner_name = "reptile"

    def __init__(self, model: torch.nn.Module, loss_fn: Any, metric_fn: Any = None,
                 **options: Any) -> None:
        options["first_order"] = True
        options["learn_lrs"] = False
        if options.get("head_init", "theta") != "theta":
            # Reptile learns from the support loss alone, which a prototype head already fits
            # (exactly, at one shot), so its steps would change nothing
            raise ConfigError("Reptile learns only from the support loss, which a prototype head "
                              "already fits; use maml, fomaml or metasgd with it")
        if options.get("inner_params", "all") != "all":
            # its meta-gradient is theta minus the adapted theta: a body that never moves in the
            # inner loop would never learn
            raise ConfigError("reptile adapts every parameter; inner params 'head' needs maml, "
                              "fomaml or metasgd")
        super().__init__(model, loss_fn, metric_fn, **options)

    def meta_gradient(self, batch: TaskBatch) -> MetaGradient:
        """``theta - mean(adapted theta)`` over the meta-batch (first order, no meta-graph)."""
        theta = self._detached()
        start = {k: v.clone().requires_grad_() for k, v in theta.items()}
        lrs = {k: v.detach() for k, v in self.learning_rates().items()}
        with torch.enable_grad():
            outcome = self.adapt_batch(batch, create_graph=False, params=start, lrs=lrs)
        assert outcome.adapted is not None
        grads = {
            f"model.{k}": theta[k] - outcome.adapted[k].detach().mean(0) for k in theta
        }
        return MetaGradient(
            loss=outcome.loss.mean().detach(), metric=outcome.metric.mean().detach(), grads=grads
        )
