"""How meta-parameters are learned: MAML, first-order MAML, Meta-SGD and Reptile."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..config import BATCHING_MODES, LEARNER_NAMES
from ..errors import ConfigError
from ..tasks.base import TaskSuite
from ..update_rule import metasgd_update, rates_at_step
from .base import AdaptationOutcome, MetaGradient, MetaLearner
from .from_artifact import learner_from_artifact
from .inner import adapt
from .maml import FOMAML, MAML, GradientMetaLearner
from .metasgd import MetaSGDLearner
from .rates import LearningRates
from .reptile import Reptile

__all__ = [
    "MetaLearner",
    "MetaGradient",
    "AdaptationOutcome",
    "GradientMetaLearner",
    "MAML",
    "FOMAML",
    "MetaSGDLearner",
    "Reptile",
    "LearningRates",
    "BATCHING_MODES",
    "LEARNERS",
    "adapt",
    "metasgd_update",
    "rates_at_step",
    "build_learner",
    "learner_from_artifact",
    "list_learners",
]

#: the learner of every name in ``config.LEARNER_NAMES`` (the vocabulary TrainConfig checks)
LEARNERS: dict[str, type[MetaLearner]] = dict(
    zip(LEARNER_NAMES, (FOMAML, MAML, MetaSGDLearner, Reptile), strict=True)
)


def list_learners() -> list[str]:
    """Names :func:`build_learner` accepts, sorted.

    Returns:
        The learner names.
    """
    return sorted(LEARNERS)


def build_learner(
    name: str, suite: TaskSuite, model: nn.Module | None = None, **options: Any
) -> MetaLearner:
    """Build learner ``name`` for ``suite``'s model (or ``model``), loss and metric.

    Args:
        name: ``maml``, ``fomaml``, ``metasgd`` or ``reptile`` (see :func:`list_learners`).
        suite: the task suite whose loss and metric (and, without ``model``, model) are used.
        model: your own ``nn.Module`` instead of the suite's reference architecture.
        **options: learner options (``inner_steps``, ``inner_lr``, ``lr_granularity``, ...).

    Returns:
        The learner, holding theta (the model) and the inner rates.

    Raises:
        ConfigError: an unknown learner or an invalid option.
    """
    if name not in LEARNERS:
        raise ConfigError(f"unknown learner {name!r}; available: {', '.join(list_learners())}")
    model = suite.build_model() if model is None else model
    return LEARNERS[name](model, suite.loss_per_example, suite.metric_per_example, **options)
