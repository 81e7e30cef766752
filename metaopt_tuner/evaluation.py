"""Adaptation curves on held-out tasks: query loss and metric after 0..K steps, mean and 95% CI.

``evaluate(artifact_or_path_or_learner, num_tasks=600, steps=5)`` adapts from the learned theta
with the learned rates on ``suite.fixed_tasks(num_tasks, split, seed)`` (the same tasks on every
machine) and reports, for every step count, the mean over tasks and the half-width of a normal
95% confidence interval (``1.96 * std / sqrt(n)``). The tasks are drawn, built and adapted a chunk
at a time (a :class:`~metaopt_tuner.tasks.TaskStream`), so memory stays bounded however many
there are, with results identical to adapting them all at once.

``query_metric_alone(learner, tasks, steps)`` scores each query on its own after adaptation, beside
the score of the queries as one batch: a model whose prediction depends on its batch (transductive
batch norm) shows it as a gap between the two.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from . import json_text
from .artifact import Artifact
from .devices import resolve_device
from .errors import ConfigError
from .learners.base import MetaLearner
from .resolver import resolve_artifact
from .stats import mean_ci
from .tasks.base import TaskBatch, TaskSuite
from .tasks.stream import TaskStream

__all__ = ["EvaluationResult", "evaluate", "mean_ci", "query_metric_alone", "suite_for_split"]



@dataclass
class EvaluationResult:
    """Per-step curves (index ``t`` = after ``t`` inner steps, ``t = 0..steps``) over the tasks.

    Args:
        steps: the inner steps adapted for.
        num_tasks: the held-out tasks the curves average over.
        metric_name: the suite's metric (``"mse"``, ``"accuracy"``, ...).
        loss_mean: mean query loss after each step.
        loss_ci: its 95% confidence half-width.
        metric_mean: mean query metric after each step.
        metric_ci: its 95% confidence half-width.
        split: the split the tasks came from (``"test"``, ``"val"`` or ``"all"``).
        seed: the seed of the fixed tasks.
        metric_higher_is_better: whether a larger metric is better.
        num_classes: classes the tasks were drawn from (None for generated tasks).
        num_examples: examples the tasks were drawn from (None for generated tasks).
    """

    steps: int
    num_tasks: int
    metric_name: str
    loss_mean: list[float]
    loss_ci: list[float]
    metric_mean: list[float]
    metric_ci: list[float]
    split: str = "test"
    seed: int = 0
    metric_higher_is_better: bool = False
    #: classes and examples the tasks were drawn from (None for generated tasks: the sinusoid)
    num_classes: int | None = None
    num_examples: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (non-finite numbers become None)."""
        return json_text.finite(asdict(self))


def suite_for_split(artifact: Artifact, split: str, **overrides: Any) -> TaskSuite:
    """The artifact's suite with ``overrides`` (e.g. a new ``data_dir``) for held-out ``split``.

    For ``split="all"`` (every class of the data: data the artifact was not trained on) the
    options that named or sized the training data's splits take the values the suite declares
    for that case (``TaskSuite.split_options``), unless given again in ``overrides``.
    """
    if split != "all":
        return artifact.build_suite(**overrides)
    return artifact.build_suite(**{**artifact.suite_class().split_options, **overrides})


def evaluate(
    source: Artifact | MetaLearner | str | os.PathLike[str],
    suite: TaskSuite | None = None,
    *,
    num_tasks: int = 600,
    steps: int | None = None,
    split: str = "test",
    seed: int = 0,
    device: str | torch.device | None = None,
    chunk: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> EvaluationResult:
    """Adapt ``source`` on ``num_tasks`` held-out tasks; curves of query loss and metric.

    ``source``: an Artifact, an artifact path (or pretrained name), or a MetaLearner (then
    ``suite`` is required). ``suite`` defaults to the artifact's suite; ``steps`` to the number of
    inner steps it was trained for; ``split`` is "test", "val", or "all" (every class of the
    data, for data the artifact was not trained on; see :func:`suite_for_split`). ``device``
    defaults to the learner's (the CPU for an artifact); a learner passed in is moved there.

    Args:
        source: an Artifact, an artifact path or pretrained name, or a MetaLearner.
        suite: the task suite (required with a MetaLearner).
        num_tasks: held-out tasks to adapt.
        steps: inner steps (default: the artifact's).
        split: ``"test"``, ``"val"`` or ``"all"`` (every class, for new data).
        seed: which fixed set of held-out tasks.
        device: where to adapt.
        chunk: tasks drawn and adapted at a time (default: derived from the tasks' size, see
            :class:`~metaopt_tuner.tasks.TaskStream`); any chunk gives the same results.
        on_progress: called as ``on_progress(done, total)`` after every chunk.

    Returns:
        Per-step query loss and metric, mean and 95% CI half-width over the tasks.

    Raises:
        ArtifactError: the artifact cannot be loaded.
        ConfigError: a MetaLearner without a suite, or an invalid count, chunk or split.
    """
    if not isinstance(num_tasks, int) or isinstance(num_tasks, bool) or num_tasks < 1:
        raise ConfigError(f"the number of tasks must be a positive integer, got {num_tasks}")
    if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
        raise ConfigError(f"the chunk must be a positive number of tasks, got {chunk!r}")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
        raise ConfigError(f"steps must be a non-negative integer, got {steps}")
    if isinstance(source, MetaLearner):
        if suite is None:
            raise ConfigError("evaluating a learner needs its suite: evaluate(learner, suite)")
        learner = source
    else:
        artifact = resolve_artifact(source)
        suite = suite_for_split(artifact, split) if suite is None else suite
        learner = artifact.to_learner(suite=suite)
    steps = learner.inner_steps if steps is None else steps
    theta = next(iter(learner.initial_params().values()))
    if device is not None:
        device = resolve_device(device)
        learner.to(device)
    device, dtype = theta.device if device is None else device, theta.dtype
    tasks = TaskStream(suite, num_tasks, split=split, seed=seed, chunk=chunk, device=device,
                       dtype=dtype)
    curve = learner.adaptation_curve(tasks, steps, on_progress=on_progress)
    loss_mean, loss_ci = mean_ci(curve.loss)
    metric_mean, metric_ci = mean_ci(curve.metric)
    summary = suite.split_summary(split) or {}
    return EvaluationResult(
        steps=steps,
        num_tasks=num_tasks,
        metric_name=suite.metric_name,
        loss_mean=loss_mean.tolist(),
        loss_ci=loss_ci.tolist(),
        metric_mean=metric_mean.tolist(),
        metric_ci=metric_ci.tolist(),
        split=split,
        seed=seed,
        metric_higher_is_better=bool(suite.metric_higher_is_better),
        num_classes=summary.get("num_classes"),
        num_examples=summary.get("num_examples"),
    )


def query_metric_alone(
    learner: MetaLearner, tasks: TaskBatch, steps: int | None = None
) -> tuple[Tensor, Tensor]:
    """Mean query metric per task after ``steps`` inner steps: queries as one batch, and alone.

    Both score the same adapted parameters; "alone" calls the model on a batch of one query at a
    time (vectorized with ``vmap``, which keeps every query its own batch). A batch-independent
    model gives equal figures.

    Args:
        learner: the learner to adapt with (its theta and rates; nothing is updated).
        tasks: the tasks to adapt to and score.
        steps: inner steps (default: the learner's).

    Returns:
        ``(batched, alone)``, each of shape ``[T]``.
    """
    steps = learner.inner_steps if steps is None else int(steps)
    params = {k: v.detach().requires_grad_() for k, v in learner.initial_params().items()}
    lrs = {k: v.detach() for k, v in learner.learning_rates().items()}
    with torch.enable_grad():
        out = learner.adapt_batch(tasks, steps, create_graph=False, params=params, lrs=lrs)
    assert out.adapted is not None
    adapted = {k: v.detach() for k, v in out.adapted.items()}
    alone = []
    with torch.no_grad():
        for i in range(len(tasks)):
            task_params = {k: v[i] for k, v in adapted.items()}
            kwargs = ({"reference": tasks.x_support[i]}
                      if getattr(learner.model, "uses_reference", False) else {})

            def one(x: Tensor, p: dict[str, Tensor] = task_params,
                    kw: dict[str, Tensor] = kwargs) -> Tensor:
                return functional_call(learner.model, p, (x.unsqueeze(0),), kw).squeeze(0)

            logits = vmap(one)(tasks.x_query[i])
            alone.append(learner.metric_fn(logits, tasks.y_query[i]).mean(-1))
    return out.metric.detach(), torch.stack(alone)
