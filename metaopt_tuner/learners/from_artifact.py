"""A learner rebuilt from an artifact: the learned theta and rates in a Meta-SGD learner, so that
its adaptation curve is the artifact's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ArtifactError
from ..models.text.encoders import is_encoder_folder
from .metasgd import MetaSGDLearner

if TYPE_CHECKING:
    from ..artifact import Artifact
    from ..tasks.base import TaskSuite

__all__ = ["learner_from_artifact"]


def learner_from_artifact(
    artifact: Artifact, suite: TaskSuite | None = None, **learner_overrides: Any
) -> MetaSGDLearner:
    """A Meta-SGD learner whose theta and rates are ``artifact``'s (``Artifact.to_learner``).

    ``suite`` provides the loss and metric (default ``artifact.build_suite()``);
    ``learner_overrides`` go to the learner (``inner_steps``, ``batching``, ``first_order``, ...).
    A suite of the user's that embeds texts with an encoder folder (its ``encoder``) is checked
    against the encoder the artifact records (``EncoderMismatchError``).
    """
    suite = artifact.build_suite() if suite is None else suite
    folder = getattr(suite, "encoder", None)
    if artifact.encoder is not None and is_encoder_folder(folder):
        artifact.encoder.check(folder)
    trained, asked = artifact.suite_options.get("ways"), getattr(suite, "ways", None)
    if not artifact.width_free and trained is not None and asked is not None and trained != asked:
        raise ArtifactError(
            f"this artifact's model has a fixed number of classes ({trained}): evaluate it at "
            f"ways={trained}, or meta-train a model with a linear head (width-free) for "
            f"{asked}-way tasks"
        )
    model = artifact.build_model().to(dtype=artifact.dtype)
    artifact.initialize(model)
    inner_steps = int(learner_overrides.pop("inner_steps", artifact.inner_steps))
    options: dict[str, Any] = {
        # per-step rates need as many learner steps as rate rows; inner_steps is reset below
        "inner_steps": artifact.rate_steps if artifact.rate_steps > 1 else inner_steps,
        "per_step_lrs": artifact.rate_steps > 1,
        "lr_granularity": "element",
        "head_init": artifact.learner_config.get("head_init", "theta"),
        "inner_params": artifact.learner_config.get("inner_params", "all"),
        "head_rate_scale": artifact.learner_config.get("head_rate_scale", "none"),
        "head_whitening": artifact.learner_config.get("head_whitening"),
    }
    bound = artifact.head_step_bound
    if bound is not None:
        options["head_step_bound"] = float(bound[0])  # the learned values are loaded below
    options.update(learner_overrides)
    learner = MetaSGDLearner(model, suite.loss_per_example, suite.metric_per_example, **options)
    learner.to(dtype=artifact.dtype)
    learner.rates.load_rates(artifact.rates)
    if bound is not None and learner.rates.head_bound is not None:
        learner.rates.load_head_bounds(bound)
    learner.inner_steps = inner_steps
    learner.horizon = artifact.horizon
    learner.tail_decay = artifact.tail_decay
    return learner
