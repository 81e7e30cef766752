"""Small task suites for exactness tests (float64-friendly, fast)."""

from __future__ import annotations

from typing import Any

import torch

from metaopt_tuner.tasks.base import ClassificationSuite, TaskBatch


class TinyImageSuite(ClassificationSuite):
    """Random N-way image episodes for a small ConvNet (``norm``: the ConvNet's; None leaves it
    out of the model spec, the ConvNet's default)."""

    name = "tiny-image"

    def __init__(self, ways: int = 3, shots: int = 2, query: int = 2, size: int = 8,
                 norm: str | None = None) -> None:
        self.ways, self.shots, self.query, self.size, self.norm = ways, shots, query, size, norm

    def sample(self, num_tasks: int, generator: torch.Generator, split: str = "train") -> TaskBatch:
        n_s, n_q = self.ways * self.shots, self.ways * self.query
        x = torch.randn(num_tasks, n_s + n_q, 1, self.size, self.size, generator=generator)
        ways = torch.arange(self.ways)
        y = torch.cat([ways.repeat(self.shots), ways.repeat(self.query)])
        y = y.expand(num_tasks, -1).clone()
        return TaskBatch(x[:, :n_s], y[:, :n_s], x[:, n_s:], y[:, n_s:])

    def model_spec(self) -> dict[str, Any]:
        kwargs = {"num_classes": self.ways, "filters": 4, "blocks": 2, "image_size": self.size}
        if self.norm is not None:
            kwargs["norm"] = self.norm
        return {"name": "convnet", "kwargs": kwargs}

    def options(self) -> dict[str, Any]:
        return {"ways": self.ways, "shots": self.shots, "query": self.query, "size": self.size,
                "norm": self.norm}


def small_metasgd(steps: int = 2, per_step: bool = True, dtype: torch.dtype = torch.float64,
                  seed: int = 0, hidden: tuple[int, ...] = (8,)):
    """A sinusoid Meta-SGD learner (tiny MLP) with random non-uniform rates, and its suite."""
    from metaopt_tuner.learners import build_learner
    from metaopt_tuner.tasks import get_suite

    suite = get_suite("sinusoid", shots=5, hidden=list(hidden))
    torch.manual_seed(seed)
    learner = build_learner("metasgd", suite, inner_steps=steps, per_step_lrs=per_step)
    learner.to(dtype=dtype)
    with torch.no_grad():
        for r in learner.rates.values:
            r.uniform_(0.01, 0.1)
    return learner, suite
