"""Small task suites for exactness tests (float64-friendly, fast)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from metaopt_tuner.learners import build_learner
from metaopt_tuner.tasks.base import ClassificationSuite, TaskBatch, TaskSuite


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
            r.uniform_(math.log(0.01), math.log(0.1))  # learned rates are stored as logarithms
    return learner, suite


class LeastSquaresSuite(TaskSuite):
    """Linear least squares ``y = x . w`` with one feature ``scale`` times larger than the others:
    the support loss's largest curvature is about ``2 * scale**2``, so a constant rate above
    ``1 / scale**2`` provably diverges."""

    name = "least-squares"
    metric_name = "mse"
    metric_higher_is_better = False

    def __init__(self, features: int = 4, shots: int = 8, scale: float = 8.0) -> None:
        self.features, self.shots, self.scale = features, shots, scale

    def sample(self, num_tasks: int, generator: torch.Generator, split: str = "train") -> TaskBatch:
        n = 2 * self.shots
        x = torch.randn(num_tasks, n, self.features, generator=generator)
        x[..., -1] *= self.scale
        w = torch.randn(num_tasks, self.features, 1, generator=generator)
        y = x @ w
        k = self.shots
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:])

    def model_spec(self) -> dict[str, Any]:
        return {"name": "mlp", "kwargs": {"sizes": [self.features, 1]}}

    def loss_per_example(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (prediction - target).square().squeeze(-1)

    def metric_per_example(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (prediction - target).square().squeeze(-1)

    def options(self) -> dict[str, Any]:
        return {"features": self.features, "shots": self.shots, "scale": self.scale}


def run_cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    """Run ``metaopt ARGS`` in this process: exit code, stdout and stderr."""
    from cli.app import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


# --------------------------------------------------------------------------- learner checks
def float64_batch(suite, n=3, seed=0):
    """``n`` tasks of ``suite`` in float64."""
    return suite.sample(n, torch.Generator().manual_seed(seed)).to(dtype=torch.float64)


def seeded_learner(name, suite, batching, steps, seed=0, **kw):
    """A float64 learner with seeded weights and non-uniform learned rates."""
    torch.manual_seed(seed)
    learner = build_learner(name, suite, inner_steps=steps, batching=batching, inner_lr=0.05, **kw)
    learner.double()
    if learner.rates.learnable:  # non-uniform learned rates make the test sharper
        with torch.no_grad():
            for r in learner.rates.values:
                r.uniform_(math.log(0.01), math.log(0.1))  # stored as logarithms
    return learner


def meta_loss(learner, batch):
    """The meta-loss of ``batch`` without a graph (a float)."""
    return learner.meta_loss(learner.adapt_batch(batch, create_graph=False)).item()


def directional_fd(learner, batch, direction, eps):
    """Central finite difference of the meta-loss along ``direction`` (dict name -> tensor)."""
    named = dict(learner.named_meta_parameters())
    values = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for n, p in named.items():
                p.add_(direction[n], alpha=sign * eps)
        values.append(meta_loss(learner, batch))
        with torch.no_grad():
            for n, p in named.items():
                p.sub_(direction[n], alpha=sign * eps)
    return (values[0] - values[1]) / (2 * eps)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str, monkeypatch: Any = None) -> ModuleType:
    """``benchmarks/NAME.py`` as a module. With pytest's ``monkeypatch``, ``benchmarks/`` is
    importable for the test's duration, as it is for the script (siblings import each other)."""
    if monkeypatch is not None:
        monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
