"""MAML (second order) and first-order MAML: differentiate the query loss after adaptation."""

from __future__ import annotations

from typing import Any

import torch

from ..tasks.base import TaskBatch
from .base import MetaGradient, MetaLearner

__all__ = ["GradientMetaLearner", "MAML", "FOMAML"]


class GradientMetaLearner(MetaLearner):
    """Meta-gradient = gradient of the mean query loss after adaptation w.r.t. theta (and alpha).

    Second order unless ``first_order``: then inner gradients are constants and the meta-gradient
    for theta is the query-loss gradient at the adapted parameters.
    """

    def meta_gradient(self, batch: TaskBatch) -> MetaGradient:
        outcome = self.adapt_batch(batch, create_graph=not self.first_order, tail=self.trains_tail,
                                   anytime=self.trains_every_step)
        meta_loss = self.meta_loss(outcome)
        named = self.named_meta_parameters()
        grads = torch.autograd.grad(meta_loss, [p for _, p in named], allow_unused=True)
        return MetaGradient(
            loss=outcome.loss.mean().detach(),
            metric=outcome.metric.mean().detach(),
            grads={
                n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(named, grads)
            },
        )


class MAML(GradientMetaLearner):
    """Model-Agnostic Meta-Learning (Finn et al., 2017): learns theta, fixed scalar inner rate.

    Args:
        model: the model whose initial weights are meta-learned.
        loss_fn: ``loss_fn(prediction, target)``, one loss per example.
        metric_fn: the same for the reported metric (default: ``loss_fn``).
        **options: the keyword options of :class:`MetaLearner` (second order and fixed rates
            unless told otherwise).
    """

    learner_name = "maml"

    def __init__(self, model: torch.nn.Module, loss_fn: Any, metric_fn: Any = None,
                 **options: Any) -> None:
        options.setdefault("first_order", False)
        options.setdefault("learn_lrs", False)
        super().__init__(model, loss_fn, metric_fn, **options)


class FOMAML(MAML):
    """First-order MAML: inner gradients are treated as constants (no second derivatives).

    Args:
        model: the model whose initial weights are meta-learned.
        loss_fn: ``loss_fn(prediction, target)``, one loss per example.
        metric_fn: the same for the reported metric (default: ``loss_fn``).
        **options: the keyword options of :class:`MetaLearner` (``first_order`` is always True).
    """

    learner_name = "fomaml"

    def __init__(self, model: torch.nn.Module, loss_fn: Any, metric_fn: Any = None,
                 **options: Any) -> None:
        options["first_order"] = True
        super().__init__(model, loss_fn, metric_fn, **options)
