"""MAML's sinusoid regression: y = A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5]."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import EVAL_SPLITS, TaskBatch, TaskSuite
from .recipe import Recipe

__all__ = ["SinusoidSuite", "RECIPE"]

#: the shipped artifact's settings (docs/benchmarks.md: the Optuna comparison, and the
#: step-loss weight under "Anytime steps"): every step before the horizon is meta-trained too,
#: so a user who stops early never ends worse than one who stopped sooner
RECIPE = Recipe(
    config={"learner": "metasgd", "inner_steps": 10, "per_step_lrs": True,
            "lr_granularity": "element", "clip_grad": 1.0, "step_loss_weight": 0.05,
            "iterations": 5000},
    source="docs/benchmarks.md: the 10-step sinusoid artifact (5,000 iterations) and the "
           "anytime step-loss weight (benchmarks/anytime.py)",
)


class SinusoidSuite(TaskSuite):
    """Regress a sine wave of random amplitude and phase from ``shots`` points.

    Every split draws from the same distribution (as in MAML); held-out sets differ from training
    draws because :meth:`fixed_tasks` seeds a separate stream per split. Tasks are generated on the
    CPU in float64 from the generator, so they are identical on every machine.

    Args:
        shots: support points per task (the points a task adapts on).
        query: query points per task, which score the adapted model [default: ``shots``].
        hidden: hidden layer widths of the reference MLP.
        amplitude: the range each task's amplitude is drawn from, uniformly.
        phase: the range each task's phase is drawn from, uniformly (radians).
        x_range: the range the x coordinates are drawn from, uniformly.
    """

    name = "sinusoid"
    model_options = ("hidden",)
    metric_name = "mse"
    metric_higher_is_better = False
    recipe = RECIPE

    def __init__(
        self,
        shots: int = 10,
        query: int | None = None,
        hidden: tuple[int, ...] | list[int] = (40, 40),
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
    ) -> None:
        if int(shots) < 1:
            raise ConfigError(f"shots must be a positive integer, got {shots}")
        if query is not None and int(query) < 1:
            raise ConfigError(f"query must be a positive integer, got {query}")
        self.shots = int(shots)
        self.query = int(query) if query is not None else self.shots
        self.hidden = tuple(int(h) for h in hidden)
        self.amplitude = (float(amplitude[0]), float(amplitude[1]))
        self.phase = (float(phase[0]), float(phase[1]))
        self.x_range = (float(x_range[0]), float(x_range[1]))

    def sample(
        self, num_tasks: int, generator: torch.Generator, split: str = "train"
    ) -> TaskBatch:
        if split not in EVAL_SPLITS:
            raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(EVAL_SPLITS)}")
        if num_tasks < 1:
            raise ConfigError(f"num_tasks must be positive, got {num_tasks}")
        n = self.shots + self.query
        u = torch.rand(num_tasks, 2 + n, generator=generator, dtype=torch.float64)
        amp = self.amplitude[0] + (self.amplitude[1] - self.amplitude[0]) * u[:, :1]
        phase = self.phase[0] + (self.phase[1] - self.phase[0]) * u[:, 1:2]
        x = self.x_range[0] + (self.x_range[1] - self.x_range[0]) * u[:, 2:]
        y = amp * torch.sin(x - phase)
        x = x.to(torch.float32).unsqueeze(-1)
        y = y.to(torch.float32).unsqueeze(-1)
        k = self.shots
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:])

    def model_spec(self) -> dict[str, Any]:
        return {"name": "mlp", "kwargs": {"sizes": [1, *self.hidden, 1]}}

    def loss_per_example(self, prediction: Tensor, target: Tensor) -> Tensor:
        return (prediction - target).square().squeeze(-1)

    def metric_per_example(self, prediction: Tensor, target: Tensor) -> Tensor:
        return (prediction - target).square().squeeze(-1)

    def options(self) -> dict[str, Any]:
        return {
            "shots": self.shots,
            "query": self.query,
            "hidden": list(self.hidden),
            "amplitude": list(self.amplitude),
            "phase": list(self.phase),
            "x_range": list(self.x_range),
        }
