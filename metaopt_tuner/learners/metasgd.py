"""Meta-SGD (Li et al., 2017): learn theta and a learning rate for every weight together."""

from __future__ import annotations

from typing import Any

import torch

from .maml import GradientMetaLearner

__all__ = ["MetaSGDLearner"]


class MetaSGDLearner(GradientMetaLearner):
    """MAML's meta-gradient, plus the per-element rates alpha as meta-parameters.

    ``per_step_lrs=True`` learns one set of rates per inner step (MAML++'s LSLR, per element).

    Args:
        model: the model whose initial weights are meta-learned.
        loss_fn: ``loss_fn(prediction, target)``, one loss per example.
        metric_fn: the same for the reported metric (default: ``loss_fn``).
        **options: the keyword options of :class:`MetaLearner` (rates always learned; one per
            weight and second order unless told otherwise).
    """

    learner_name = "metasgd"

    def __init__(self, model: torch.nn.Module, loss_fn: Any, metric_fn: Any = None,
                 **options: Any) -> None:
        options.setdefault("lr_granularity", "element")
        options.setdefault("first_order", False)
        options["learn_lrs"] = True
        super().__init__(model, loss_fn, metric_fn, **options)
