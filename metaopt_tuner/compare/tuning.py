"""Baselines tuned with Optuna: one study per (suite, baseline, protocol), TPE seeded, a median
pruner fed with the mean query loss after every step, in any Optuna storage (a SQLite file by
default). Re-running with the same study name resumes it: finished trials count toward the
requested number.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from torch import nn

from ..errors import ConfigError, MetaOptError, StudyStorageError
from ..tasks.base import TaskBatch, TaskSuite
from . import studies
from .baselines import (
    Baseline,
    Init,
    RandomInit,
    SharedInit,
    finite_or_diverged,
    get_baseline,
    optimizer_spec,
    run_optimizer,
)

__all__ = [
    "TuneResult",
    "StudyStorageError",
    "tune",
    "tune_on_suite",
    "open_study",
    "study_name_for",
    "finished_trials",
    "STARTUP_TRIALS",
    "pruner_warmup",
    "pruner_kwargs",
    "describe_pruner",
    "retry_locked",
    "FINISHED",
]

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def study_name_for(suite: TaskSuite, method: str, **protocol: Any) -> str:
    """A study name derived from the suite, the method and everything that changes the objective,
    so a re-run with the same settings resumes the same study and other settings get their own."""
    # an option left at None is the same protocol as one not given
    protocol = {k: v for k, v in protocol.items() if v is not None}
    key = json.dumps({"suite": suite.options(), **protocol}, sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    return f"{suite.name}-{method}-{digest}"


def _is_locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc) or "database is busy" in str(exc)


def _storage(url: str | None) -> optuna.storages.BaseStorage | None:
    """In memory for None; else an RDB storage with heartbeats, so a dead worker's trial is
    retried instead of left RUNNING forever (see ``studies.open_storage``)."""
    return None if url is None else studies.open_storage(url)


def retry_locked(fn: Callable[[], Any], what: str, attempts: int = 8) -> Any:
    """``fn()``, retried while the study's SQLite storage reports "database is locked"."""
    try:
        return studies.retry(fn, _is_locked, attempts=attempts, max_delay=5.0)
    except Exception as exc:
        if not _is_locked(exc):
            raise
        raise StudyStorageError(
            f"{what}: the study database stayed locked after {attempts} attempts; "
            "another process holds it (use a PostgreSQL --storage for many workers)"
        ) from None


#: finished trials the sampler and the pruner wait for before they act on what they have seen
STARTUP_TRIALS = 10


def pruner_warmup(steps: int) -> int:
    """The steps a tuning study of ``steps``-step adaptation waits before it prunes: half of them
    (early in adaptation a large learning rate often looks worse than a small one and then
    overtakes it)."""
    return steps // 2


def pruner_kwargs(warmup_steps: int) -> dict[str, int]:
    """The median pruner's settings: wait for :data:`STARTUP_TRIALS` finished trials and
    ``warmup_steps`` steps."""
    return {"n_startup_trials": STARTUP_TRIALS, "n_warmup_steps": warmup_steps}


def describe_pruner(warmup_steps: int) -> str:
    """The pruner as the report prints it: ``MedianPruner(n_startup_trials=10, ...)``."""
    settings = ", ".join(f"{k}={v}" for k, v in pruner_kwargs(warmup_steps).items())
    return f"MedianPruner({settings})"


def open_study(
    name: str, storage: str | None, *, seed: int = 0, warmup_steps: int = 1
) -> optuna.Study:
    """Create or load (resume) study ``name``: TPE seeded, median pruning on intermediate losses.

    The pruner waits as :func:`pruner_kwargs` says.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
    pruner = optuna.pruners.MedianPruner(**pruner_kwargs(warmup_steps))
    store = _storage(storage)
    return retry_locked(
        lambda: optuna.create_study(storage=store, sampler=sampler, pruner=pruner, study_name=name,
                                    direction="minimize", load_if_exists=True),
        f"opening study {name!r}",
    )


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete and pruned trials: those a re-run keeps and counts."""
    return retry_locked(lambda: study.get_trials(deepcopy=False, states=FINISHED), "reading trials")


@dataclass
class TuneResult:
    """A tuned baseline: best configuration and value, and what tuning cost in total (all runs)."""

    baseline: str
    study_name: str
    best_params: dict[str, float]
    best_value: float
    trials: int
    pruned: int
    grad_evals: int
    seconds: float
    #: (trial number, value or None, state) for every finished trial, in order
    history: list[tuple[int, float | None, str]]
    new_trials: list[int] = field(default_factory=list)


def tune(
    baseline: Baseline | str,
    model: nn.Module,
    init: Init,
    suite: TaskSuite,
    tasks: TaskBatch,
    steps: int,
    trials: int,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int = 0,
    on_trial: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> TuneResult:
    """Tune a baseline on ``tasks`` (meta-validation): objective = mean query loss after ``steps``.

    Resumes study ``study_name`` (derived from the suite, baseline and protocol by default) and runs
    only the trials still missing to reach ``trials`` finished ones; several processes may share
    one study, finishing exactly ``trials`` together (see ``studies``). ``workers > 1`` starts
    that many worker processes in all (this one included) on a shared ``storage``.
    ``on_trial(done, total)`` reports progress.
    """
    baseline = get_baseline(baseline) if isinstance(baseline, str) else baseline
    spec = optimizer_spec(baseline.optimizer)
    if not baseline.tuned or spec.space is None:
        raise ConfigError(f"baseline {baseline.name!r} is not tuned")
    if trials < 1:
        raise ConfigError(f"trials must be a positive integer, got {trials}")
    if steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps}")
    if workers < 1 or (workers > 1 and storage is None):
        raise ConfigError(
            f"workers must be 1, or more with a --storage every worker reaches (a SQLite file or "
            f"postgresql://...), got {workers} with storage {storage!r}"
        )
    name = study_name or study_name_for(suite, baseline.name, steps=steps, val_tasks=len(tasks),
                                        seed=seed)
    study = open_study(name, storage, seed=seed, warmup_steps=pruner_warmup(steps))
    new: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        hp = spec.space(trial)
        begun = time.perf_counter()

        def record_cost(step: int) -> None:
            # Stored with the trial, so a resumed run still counts what killed runs spent.
            trial.set_user_attr("grad_evals", step * len(tasks))
            trial.set_user_attr("seconds", time.perf_counter() - begun)

        def on_step(step: int, value: float) -> None:
            if step == 0:
                return
            trial.report(finite_or_diverged(value), step)
            if step < steps and trial.should_prune():
                record_cost(step)
                raise optuna.TrialPruned()

        new.append(trial.number)
        curve = run_optimizer(baseline.optimizer, hp, model, init, suite, tasks, steps,
                              on_step=on_step)
        record_cost(steps)
        return finite_or_diverged(float(curve.loss[:, -1].mean()))

    def report(_trial: optuna.trial.FrozenTrial | None = None) -> None:
        if on_trial is not None:
            on_trial(min(len(finished_trials(study)), trials), trials)

    before = {t.number for t in finished_trials(study)}
    # Tickets, not study.optimize: N workers finish exactly `trials`, a dead one's trial is retried.
    studies.reserve_trials(study, trials)
    pool = None
    if workers > 1:
        pool = studies.WorkerPool(workers - 1, _tune_worker, baseline.name, model, init, suite, tasks,
                                  steps, trials, storage, name, seed)
    with pool or contextlib.nullcontext():
        report()
        studies.run_trials(study, objective, on_trial=report)
        if pool is not None:
            pool.wait(timeout=60)
    if workers > 1:  # this process's trials and its workers' (and any other worker's meanwhile)
        new = [t.number for t in finished_trials(study) if t.number not in before]
    return _result(study, baseline.name, name, new)


def tune_on_suite(
    suite: TaskSuite,
    optimizer: str = "adam",
    *,
    init: str = "scratch",
    steps: int = 10,
    trials: int = 50,
    val_tasks: int = 100,
    pretrain_steps: int = 2000,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int = 0,
    workers: int = 1,
    on_trial: Callable[[int, int], None] | None = None,
) -> tuple[Baseline, TuneResult]:
    """Tune ``optimizer`` ("adam", "sgd") from the suite's random init (``init="scratch"``) or a
    multi-task pretrained one (``"pretrained"``) on ``val_tasks`` fixed meta-validation tasks.

    The study name is derived from the same protocol fields as ``report.compare`` uses, so the two
    share and resume each other's studies on one storage.
    """
    if init not in ("scratch", "pretrained"):
        raise ConfigError(f"init must be scratch or pretrained, got {init!r}")
    if val_tasks < 1 or pretrain_steps < 1:
        raise ConfigError(
            f"val_tasks and pretrain_steps must be positive, got {val_tasks} and {pretrain_steps}"
        )
    baseline = get_baseline(optimizer if init == "scratch" else f"{optimizer}-pretrained")
    start: Init
    if init == "pretrained":
        from .pretraining import pretrain

        start = SharedInit(pretrain(suite, steps=pretrain_steps, seed=seed).params)
    else:
        start = RandomInit(suite.build_model, seed=seed)
    name = study_name or study_name_for(suite, baseline.name, steps=steps, val_tasks=val_tasks, seed=seed,
                                        pretrain_steps=pretrain_steps if init == "pretrained" else None)
    val = suite.fixed_tasks(val_tasks, split="val", seed=seed)
    result = tune(baseline, suite.build_model(), start, suite, val, steps, trials, storage=storage,
                  study_name=name, seed=seed, on_trial=on_trial, workers=workers)
    return baseline, result


def _tune_worker(index: int, baseline: str, model: nn.Module, init: Init, suite: TaskSuite,
                 tasks: TaskBatch, steps: int, trials: int, storage: str, name: str, seed: int) -> None:
    """One extra worker process of ``tune(workers=N)``: the same study, its own trials."""
    tune(baseline, model, init, suite, tasks, steps, trials, storage=storage, study_name=name, seed=seed)


def _result(study: optuna.Study, baseline: str, name: str, new: list[int]) -> TuneResult:
    finished = finished_trials(study)
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise MetaOptError(f"study {name!r} has no completed trial")
    best = min(complete, key=lambda t: t.value)
    history = [
        (t.number, t.value if t.state == optuna.trial.TrialState.COMPLETE else
         (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None),
         t.state.name)
        for t in sorted(finished, key=lambda t: t.number)
    ]
    return TuneResult(
        baseline=baseline,
        study_name=name,
        best_params=dict(best.params),
        best_value=float(best.value),
        trials=len(finished),
        pruned=len(finished) - len(complete),
        grad_evals=int(sum(t.user_attrs.get("grad_evals", 0) for t in finished)),
        seconds=float(sum(t.user_attrs.get("seconds", 0.0) for t in finished)),
        history=history,
        new_trials=sorted(new),
    )
