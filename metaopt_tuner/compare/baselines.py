"""Ordinary optimizers as baselines: run them on held-out tasks, and the oracle that bounds them.

A baseline adapts every task from its support set for ``steps`` steps with an ordinary
``torch.optim`` optimizer and is scored on the task's query set, like the meta-learned optimizer.

Speed: Adam and SGD with momentum are element-wise (their state and update for one weight depend
only on that weight's gradients), so one optimizer over parameters stacked with a leading task
dimension ``[T, ...]``, stepped on the *sum* of the task losses, is exactly T independent per-task
runs (tests prove it against a loop). That makes 50 trials over 100 tasks affordable. Parameter-free
optimizers (Prodigy, D-Adaptation, Schedule-Free) keep statistics across all their parameters, so
they, and models without a hand-batched forward, run one optimizer per task.

Tuning them with Optuna is ``tuning``'s job; the oracle (a learning rate tuned on each test task
itself, a bound no real tuner reaches) is here, since it tunes nothing it keeps.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import optuna
import torch
from torch import Tensor, nn
from torch.func import functional_call

from .._compat import module_getattr
from ..errors import ConfigError
from ..models import supports_batched
from ..tasks.base import TaskBatch, TaskSuite
from ..tasks.stream import TaskStream

__all__ = [
    "OPTIMIZERS",
    "OptimizerSpec",
    "Baseline",
    "BASELINES",
    "Init",
    "SharedInit",
    "RandomInit",
    "Curve",
    "available_optimizers",
    "get_baseline",
    "run_optimizer",
    "baseline_curve",
    "batched_adam_curve",
    "oracle_tune",
    "optimizer_spec",
    "finite_or_diverged",
    "DIVERGED",
]

Params = dict[str, Tensor]
#: value given to a trial whose losses became NaN or infinite (TPE needs a finite number)
DIVERGED = 1e9


# --------------------------------------------------------------------------- optimizers
@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer a baseline can use: how to build it, its search space, whether it batches."""

    name: str
    label: str
    build: Callable[[Sequence[Tensor], Mapping[str, float]], torch.optim.Optimizer]
    space: Callable[[optuna.Trial], dict[str, float]] | None
    #: state and update per element: T stacked tasks in one optimizer == T separate runs
    elementwise: bool
    module: str | None = None
    defaults: Mapping[str, float] = field(default_factory=dict)

    def available(self) -> bool:
        if self.module is None:
            return True
        try:
            importlib.import_module(self.module)
        except ImportError:
            return False
        return True


def _adam(params: Sequence[Tensor], hp: Mapping[str, float]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=hp["lr"])


def _sgd(params: Sequence[Tensor], hp: Mapping[str, float]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=hp["lr"], momentum=hp.get("momentum", 0.0))


def _prodigy(params: Sequence[Tensor], hp: Mapping[str, float]) -> torch.optim.Optimizer:
    from prodigyopt import Prodigy

    return Prodigy(params, lr=hp.get("lr", 1.0))


def _dadapt(params: Sequence[Tensor], hp: Mapping[str, float]) -> torch.optim.Optimizer:
    from dadaptation import DAdaptAdam

    return DAdaptAdam(params, lr=hp.get("lr", 1.0))


def _schedulefree(params: Sequence[Tensor], hp: Mapping[str, float]) -> torch.optim.Optimizer:
    from schedulefree import AdamWScheduleFree

    opt = AdamWScheduleFree(params, **dict(hp))
    opt.train()
    return opt


def _space_adam(trial: optuna.Trial) -> dict[str, float]:
    return {"lr": trial.suggest_float("lr", 1e-5, 1.0, log=True)}


def _space_sgd(trial: optuna.Trial) -> dict[str, float]:
    return {
        "lr": trial.suggest_float("lr", 1e-5, 1.0, log=True),
        "momentum": trial.suggest_float("momentum", 0.0, 0.99),
    }


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adam": OptimizerSpec("adam", "Adam", _adam, _space_adam, True, defaults={"lr": 1e-3}),
    "sgd": OptimizerSpec("sgd", "SGD+momentum", _sgd, _space_sgd, True,
                         defaults={"lr": 1e-2, "momentum": 0.9}),
    "prodigy": OptimizerSpec("prodigy", "Prodigy", _prodigy, None, False, "prodigyopt"),
    "dadaptation": OptimizerSpec("dadaptation", "D-Adapt Adam", _dadapt, None, False, "dadaptation"),
    "schedulefree": OptimizerSpec("schedulefree", "Schedule-Free AdamW", _schedulefree, None, False,
                                  "schedulefree"),
}


def available_optimizers() -> list[str]:
    """Optimizers usable here (parameter-free ones need the optional extra ``baselines``)."""
    return [name for name, spec in OPTIMIZERS.items() if spec.available()]


def optimizer_spec(name: str) -> OptimizerSpec:
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; available: {', '.join(OPTIMIZERS)}")
    spec = OPTIMIZERS[name]
    if not spec.available():
        raise ConfigError(
            f"optimizer {name!r} needs the package {spec.module!r}: pip install 'metaopt-tuner[baselines]'"
        )
    return spec


# --------------------------------------------------------------------------- baselines
@dataclass(frozen=True)
class Baseline:
    """An optimizer, the initialization it starts from, and whether Optuna tunes it."""

    name: str
    optimizer: str
    init: str  # "scratch" (the suite's default random init) or "pretrained" (multi-task joint)
    tuned: bool

    @property
    def label(self) -> str:
        start = "pretrained init" if self.init == "pretrained" else "random init"
        how = "tuned" if self.tuned else "untuned"
        return f"{OPTIMIZERS[self.optimizer].label}, {start}, {how}"


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("adam", "adam", "scratch", True),
        Baseline("sgd", "sgd", "scratch", True),
        Baseline("adam-pretrained", "adam", "pretrained", True),
        Baseline("sgd-pretrained", "sgd", "pretrained", True),
        Baseline("prodigy", "prodigy", "scratch", False),
        Baseline("dadaptation", "dadaptation", "scratch", False),
        Baseline("schedulefree", "schedulefree", "scratch", False),
    )
}


def get_baseline(name: str) -> Baseline:
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; available: {', '.join(BASELINES)}")
    return BASELINES[name]


# --------------------------------------------------------------------------- initializations
class Init:
    """Per-task starting parameters: :meth:`params` returns tasks ``start:stop`` stacked ``[n, ...]``."""

    def params(self, start: int, stop: int) -> Params:
        raise NotImplementedError


class SharedInit(Init):
    """Every task starts from the same parameters (a pretrained or meta-learned theta)."""

    def __init__(self, params: Mapping[str, Tensor]) -> None:
        self.base = {k: v.detach().clone() for k, v in params.items()}

    def params(self, start: int, stop: int) -> Params:
        n = stop - start
        return {k: v.unsqueeze(0).expand(n, *v.shape).clone() for k, v in self.base.items()}


class RandomInit(Init):
    """Task ``i`` starts from the suite's default random initialization drawn with seed ``(seed, i)``.

    A fresh draw per task averages the result over initializations instead of betting on one; the
    draws do not touch the global RNG, and the same task always gets the same draw.
    """

    def __init__(self, build_model: Callable[[], nn.Module], seed: int = 0) -> None:
        self.build_model = build_model
        self.seed = int(seed)

    def params(self, start: int, stop: int) -> Params:
        draws = []
        for i in range(start, stop):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1_000_003 * self.seed + i)
                model = self.build_model()
            draws.append({k: v.detach() for k, v in model.named_parameters()})
        return {k: torch.stack([d[k] for d in draws]) for k in draws[0]}


# --------------------------------------------------------------------------- running an optimizer
@dataclass
class Curve:
    """Per-task query loss and metric after 0..steps steps, ``[T, steps + 1]``, and its cost."""

    loss: Tensor
    metric: Tensor
    grad_evals: int
    seconds: float


def _per_task(values: Tensor, num_tasks: int) -> Tensor:
    return values.reshape(num_tasks, -1).mean(1)


def run_optimizer(
    optimizer: str,
    hparams: Mapping[str, float],
    model: nn.Module,
    init: Init,
    suite: TaskSuite,
    tasks: TaskBatch | TaskStream,
    steps: int,
    *,
    chunk: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
    batched: bool | None = None,
) -> Curve:
    """Adapt every task of ``tasks`` from ``init`` with ``optimizer`` for ``steps`` steps.

    ``tasks`` is a batch (adapted ``chunk`` tasks at a time, default all) or a
    :class:`~metaopt_tuner.tasks.TaskStream` (built and adapted one of its chunks at a time).
    ``on_step(step, mean_query_loss)`` is called after every step (step 0 = before adapting) with
    the mean over all tasks, so a tuner can prune; it forces a single chunk. ``batched`` forces the
    stacked path (True) or the per-task loop (False); by default the stacked path is used when the
    optimizer is element-wise and the model has a hand-batched forward.
    """
    if steps < 0:
        raise ConfigError(f"steps must be non-negative, got {steps}")
    spec = optimizer_spec(optimizer)
    hp = {**spec.defaults, **dict(hparams)}
    if batched is None:
        batched = spec.elementwise and supports_batched(model)
    if batched and not spec.elementwise:
        raise ConfigError(f"{optimizer} keeps global statistics; it cannot run tasks stacked")
    n = len(tasks)
    start_time = time.perf_counter()
    losses, metrics = [], []
    for start, part in _parts(tasks, chunk, whole=on_step is not None):
        params = init.params(start, start + len(part))
        run = _run_stacked if batched else _run_loop
        loss, metric = run(spec, hp, model, params, suite, part, steps, on_step)
        losses.append(loss)
        metrics.append(metric)
    return Curve(torch.cat(losses), torch.cat(metrics), n * steps, time.perf_counter() - start_time)


def _parts(tasks: TaskBatch | TaskStream, chunk: int | None,
           whole: bool = False) -> Iterator[tuple[int, TaskBatch]]:
    """``(start, batch)`` of every chunk: ``chunk`` tasks at a time (default: all of a batch, a
    stream's own chunk), or every task at once when ``whole``."""
    n = len(tasks)
    if isinstance(tasks, TaskStream):
        if whole:
            yield 0, tasks.materialize()
            return
        stream = tasks if chunk is None else tasks.with_chunk(max(1, int(chunk)))
        for start, stop in stream.ranges():
            yield start, stream.tasks(start, stop)
        return
    size = n if (chunk is None or whole) else max(1, int(chunk))
    for start in range(0, n, size):
        yield start, tasks.slice(start, min(n, start + size))


def _run_stacked(
    spec: OptimizerSpec,
    hp: Mapping[str, float],
    model: nn.Module,
    params: Params,
    suite: TaskSuite,
    tasks: TaskBatch,
    steps: int,
    on_step: Callable[[int, float], None] | None,
) -> tuple[Tensor, Tensor]:
    n = len(tasks)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    opt = spec.build(list(leaves.values()), hp)
    forward = model.batched_forward  # type: ignore[attr-defined]

    def query() -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            out = forward(leaves, tasks.x_query, **_reference(model, tasks.x_support))
            return (_per_task(suite.loss_per_example(out, tasks.y_query), n),
                    _per_task(suite.metric_per_example(out, tasks.y_query), n))

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        out = forward(leaves, tasks.x_support)
        _per_task(suite.loss_per_example(out, tasks.y_support), n).sum().backward()
        opt.step()

    return _curve(steps, query, train_step, on_step)


def _reference(model: nn.Module, x_support: Tensor) -> dict[str, Tensor]:
    """The query forward's keyword for a model normalizing with its support set's statistics."""
    return {"reference": x_support} if getattr(model, "uses_reference", False) else {}


def _run_loop(
    spec: OptimizerSpec,
    hp: Mapping[str, float],
    model: nn.Module,
    params: Params,
    suite: TaskSuite,
    tasks: TaskBatch,
    steps: int,
    on_step: Callable[[int, float], None] | None,
) -> tuple[Tensor, Tensor]:
    n = len(tasks)
    per_task = [{k: v[i].detach().clone().requires_grad_() for k, v in params.items()} for i in range(n)]
    opts = [spec.build(list(p.values()), hp) for p in per_task]

    def query(i: int) -> tuple[Tensor, Tensor]:
        opt = opts[i]
        if hasattr(opt, "eval"):  # Schedule-Free evaluates at its averaged point
            opt.eval()
        with torch.no_grad():
            out = functional_call(model, per_task[i], (tasks.x_query[i],),
                                  _reference(model, tasks.x_support[i]))
            result = (suite.loss_per_example(out, tasks.y_query[i]).mean(),
                      suite.metric_per_example(out, tasks.y_query[i]).mean())
        if hasattr(opt, "train"):
            opt.train()
        return result

    def query_all() -> tuple[Tensor, Tensor]:
        scores = [query(i) for i in range(n)]
        return torch.stack([s[0] for s in scores]), torch.stack([s[1] for s in scores])

    def train_step() -> None:
        for i in range(n):
            opts[i].zero_grad(set_to_none=True)
            out = functional_call(model, per_task[i], (tasks.x_support[i],))
            suite.loss_per_example(out, tasks.y_support[i]).mean().backward()
            opts[i].step()

    return _curve(steps, query_all, train_step, on_step)


def _curve(
    steps: int,
    query: Callable[[], tuple[Tensor, Tensor]],
    train_step: Callable[[], None],
    on_step: Callable[[int, float], None] | None,
) -> tuple[Tensor, Tensor]:
    """Per-task query loss and metric before each of ``steps`` optimizer steps and after the
    last, ``[T, steps + 1]``: the loop both ways of running a baseline share."""
    losses, metrics = [], []
    for t in range(steps + 1):
        q_loss, q_metric = query()
        losses.append(q_loss)
        metrics.append(q_metric)
        if on_step is not None:
            on_step(t, float(q_loss.mean()))
        if t == steps:
            break
        train_step()
    return torch.stack(losses, 1), torch.stack(metrics, 1)


def baseline_curve(
    baseline: Baseline | str,
    hparams: Mapping[str, float],
    model: nn.Module,
    init: Init,
    suite: TaskSuite,
    tasks: TaskBatch | TaskStream,
    steps: int,
    *,
    chunk: int | None = None,
) -> Curve:
    """Adapt held-out ``tasks`` with a baseline's (tuned) configuration: its adaptation curve.

    ``chunk``: tasks adapted at a time (default: 100 of a batch, a stream's own chunk)."""
    if chunk is None and isinstance(tasks, TaskBatch):
        chunk = 100
    baseline = get_baseline(baseline) if isinstance(baseline, str) else baseline
    return run_optimizer(baseline.optimizer, hparams, model, init, suite, tasks, steps, chunk=chunk)


def finite_or_diverged(x: float) -> float:
    """``x``, or :data:`DIVERGED` for NaN or infinity (TPE needs a finite objective)."""
    return x if math.isfinite(x) else DIVERGED


# --------------------------------------------------------------------------- the oracle
def batched_adam_curve(
    model: nn.Module,
    params: Params,
    lr: Tensor,
    suite: TaskSuite,
    tasks: TaskBatch,
    steps: int,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> tuple[Tensor, Tensor]:
    """Adam with one learning rate *per task* (``lr``: ``[T]``) on stacked parameters ``[T, ...]``.

    The same update as ``torch.optim.Adam`` (tests check it); a per-task rate lets the oracle try a
    different rate on every task in one batched run. Returns query loss and metric ``[T, steps+1]``.
    """
    n = len(tasks)
    p = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    v2 = {k: torch.zeros_like(v) for k, v in p.items()}
    b1, b2 = betas
    forward = model.batched_forward  # type: ignore[attr-defined]
    losses, metrics = [], []
    for t in range(steps + 1):
        with torch.no_grad():
            out = forward(p, tasks.x_query, **_reference(model, tasks.x_support))
            losses.append(_per_task(suite.loss_per_example(out, tasks.y_query), n))
            metrics.append(_per_task(suite.metric_per_example(out, tasks.y_query), n))
        if t == steps:
            break
        out = forward(p, tasks.x_support)
        loss = _per_task(suite.loss_per_example(out, tasks.y_support), n).sum()
        grads = torch.autograd.grad(loss, list(p.values()))
        k = t + 1
        with torch.no_grad():
            for (name, w), g in zip(p.items(), grads):
                m[name].lerp_(g, 1 - b1)
                v2[name].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v2[name].sqrt() / math.sqrt(1 - b2**k)).add_(eps)
                step = (lr / (1 - b1**k)).view(n, *([1] * (w.dim() - 1)))
                w.sub_(step * m[name] / denom)
    return torch.stack(losses, 1), torch.stack(metrics, 1)


def oracle_tune(
    model: nn.Module,
    init: Init,
    suite: TaskSuite,
    tasks: TaskBatch | TaskStream,
    steps: int,
    trials: int,
    *,
    seed: int = 0,
    on_trial: Callable[[int, int], None] | None = None,
) -> tuple[Curve, Tensor]:
    """Tune Adam's lr separately on every task *against its own query set*: an upper bound.

    One in-memory Optuna study per task (TPE, seeded per task), asked in lock-step so every round
    is one batched run with a different rate per task; a :class:`~metaopt_tuner.tasks.TaskStream`
    is tuned one chunk at a time (every task's study is its own, so the rates are the same).
    Returns the curve of each task's best rate and those rates. Fast enough to recompute, so it
    is not stored.
    """
    if not supports_batched(model):
        raise ConfigError("the oracle needs a model with a hand-batched forward")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n = len(tasks)
    begun = time.perf_counter()
    ranges = list(tasks.ranges()) if isinstance(tasks, TaskStream) else [(0, n)]
    losses, metrics, rates = [], [], []
    for c, (start, stop) in enumerate(ranges):
        part = tasks.tasks(start, stop) if isinstance(tasks, TaskStream) else tasks
        loss, metric, best_lr = _oracle_chunk(
            model, init.params(start, stop), suite, part, steps, trials, seed, start,
            None if on_trial is None else
            (lambda r, c=c: on_trial(c * trials + r, len(ranges) * trials)))
        losses.append(loss)
        metrics.append(metric)
        rates.append(best_lr)
    seconds = time.perf_counter() - begun
    return (Curve(torch.cat(losses), torch.cat(metrics), n * steps * (trials + 1), seconds),
            torch.cat(rates))


def _oracle_chunk(model: nn.Module, params: Params, suite: TaskSuite, tasks: TaskBatch, steps: int,
                  trials: int, seed: int, first: int,
                  on_round: Callable[[int], None] | None) -> tuple[Tensor, Tensor, Tensor]:
    """The oracle on tasks ``first, first + 1, ...``: their query curves and best rates."""
    n = len(tasks)
    studies = [
        optuna.create_study(direction="minimize",
                            sampler=optuna.samplers.TPESampler(seed=1_000_003 * seed + first + i))
        for i in range(n)
    ]
    best = torch.full((n,), math.inf)
    best_lr = torch.full((n,), 1e-3)
    for r in range(trials):
        asked = [s.ask() for s in studies]
        lr = torch.tensor([t.suggest_float("lr", 1e-5, 1.0, log=True) for t in asked])
        loss, _ = batched_adam_curve(model, params, lr, suite, tasks, steps)
        final = loss[:, -1]
        for s, t, value in zip(studies, asked, final.tolist()):
            s.tell(t, finite_or_diverged(value))
        better = torch.nan_to_num(final, nan=math.inf) < best
        best = torch.where(better, final, best)
        best_lr = torch.where(better, lr, best_lr)
        if on_round is not None:
            on_round(r + 1)
    loss, metric = batched_adam_curve(model, params, best_lr, suite, tasks, steps)
    return loss, metric, best_lr


__getattr__ = module_getattr(__name__)  # old paths of names that moved (see _compat)
