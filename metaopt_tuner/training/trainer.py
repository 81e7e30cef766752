"""MetaTrainer: the outer loop, with checkpoints that resume exactly, progress and NaN guards.

A run lives in one output folder (see ``run_folder``). Resuming restores the learner, the outer
optimizer and the task samplers, so an interrupted run ends with exactly the parameters of an
uninterrupted one (on CPU with the same seed).

Under ``torchrun`` the trainer joins the process group (see ``distributed``): each process samples
and differentiates its own task streams, the meta-gradients are summed by one all-reduce, every
process takes the same outer step, and rank 0 alone writes the folder.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..artifact import Artifact
from ..budget import (
    MIN_TIMED_STEPS,
    BudgetPlan,
    iterations_for_budget,
    look_every,
    replanned_iterations,
    warmup_seconds,
)
from ..config import DTYPES, TrainConfig
from ..errors import ConfigError, DistributedError, MetaOptError, NonFiniteLossError, RunDirError
from ..learners import MetaGradient, MetaLearner, build_learner
from ..tasks import TaskBatch, TaskSuite, get_suite
from . import distributed
from .compiled import CompiledMetaGradient
from .cuda_graphs import GraphedMetaGradient
from .run_folder import (
    ARTIFACT,
    CHECKPOINT,
    METRICS,
    RUN_MARKER,
    append_metrics,
    keep_metrics,
    prepare_run_folder,
    read_checkpoint,
    upgrade_checkpoint,
    write_checkpoint,
    write_run_marker,
)

__all__ = ["TrainResult", "MetaTrainer", "train", "build_outer_optimizer", "meta_lr_factor", "RUN_MARKER",
           "CHECKPOINT", "METRICS", "ARTIFACT", "MAX_NONFINITE_STREAK"]


#: non-finite meta-iterations in a row (each one skipped) after which a run stops as diverged
MAX_NONFINITE_STREAK = 10
def meta_lr_factor(schedule: str, iteration: int, total: int) -> float:
    """The multiplier of every outer learning rate for step ``iteration`` (0-based) of ``total``.

    ``cosine`` anneals from the full rate to zero over the run (no restarts). It depends only on
    the iteration, so a resumed run follows the same schedule; raising ``iterations`` on resume
    stretches what is left of it.
    """
    if schedule == "constant" or total <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(iteration, total) / total))



@dataclass
class TrainResult:
    """What a finished run leaves: the learner, its suite and the logged history.

    Args:
        learner: the trained learner (theta and the rates).
        suite: the suite it was trained on.
        config: the configuration used.
        history: every logged record (loss, held-out metric, iterations/s, ...).
        out_dir: the run folder, or None for a run in memory.
        final_metric: the held-out metric at the end (None when not evaluated).
    """

    learner: MetaLearner
    suite: TaskSuite
    config: TrainConfig
    history: list[dict[str, Any]]
    out_dir: Path | None
    final_metric: float | None


def build_outer_optimizer(
    config: TrainConfig, named: list[tuple[str, torch.nn.Parameter]]
) -> torch.optim.Optimizer:
    """The outer optimizer over a learner's named meta-parameters: initial weights in one group,
    learned rates (names under ``rates.``) in a second with their own step size."""
    name, lr = config.resolved_outer()
    weights = [p for n, p in named if not n.startswith("rates.")]
    rates = [p for n, p in named if n.startswith("rates.")]
    groups: list[dict[str, Any]] = [{"params": weights}]
    if rates:
        groups.append({"params": rates, "lr": config.resolved_rates_lr()})
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    try:  # the fused kernel cuts the per-step overhead that dominates small models
        return torch.optim.Adam(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(groups, lr=lr)


class MetaTrainer:
    """Run meta-training for a :class:`TrainConfig`, optionally in an output folder.

    ``out_dir=None`` trains in memory (no checkpoints). ``progress`` shows a rich progress bar;
    ``callback(record)`` receives every logged record (dict) as it is produced (on rank 0 only
    under torchrun). ``dist_timeout`` bounds every collective in seconds (default
    ``$METAOPT_DIST_TIMEOUT`` or 300). ``sources`` (field -> "default", "recipe" or "flag", see
    ``recipes``) is recorded in run.json. ``clock`` times the warm-up of a budget run (tests
    inject one).

    Args:
        config: the run's configuration (validated here).
        out_dir: the run folder (None: in memory).
        progress: show a progress bar.
        callback: called with every logged record.
        dist_timeout: seconds a collective waits under torchrun.
        sources: where each configuration value came from, for run.json.
        clock: the clock that times a budget's warm-up.

    Raises:
        ConfigError: an invalid option.
        SuiteError: an unknown suite or suite option.
        DataError: the suite's data is missing or malformed.
        DistributedError: under torchrun, the process group could not form.
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | os.PathLike[str] | None = None,
        *,
        progress: bool = True,
        callback: Callable[[dict[str, Any]], None] | None = None,
        dist_timeout: float | None = None,
        sources: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        config.validate()
        self.config = config
        self.dist, self.device = distributed.init_from_env(config.device, dist_timeout)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.callback = callback
        self.sources = dict(sources) if sources is not None else None
        self.clock = clock
        self.budget_plan: BudgetPlan | None = None
        self._budget_iterations: int | None = None  # fixed by a budget (restored on resume)
        self._budget_spent: float | None = None  # the budget's seconds spent, warm-up included
        #: the budget's re-plans: ``{"iteration", "iterations", "seconds_per_iteration"}``
        self.budget_replans: list[dict[str, Any]] = []
        self._budget_next_look: int | None = None  # the iteration of the budget's next look
        self.dtype = DTYPES[config.dtype]
        self.suite = get_suite(config.suite, **config.suite_options).load()
        torch.manual_seed(config.seed)
        self.learner = build_learner(config.learner, self.suite, **config.learner_options())
        self.learner.to(device=self.device, dtype=self.dtype)
        self._graphed: GraphedMetaGradient | None = None
        self._compiled: CompiledMetaGradient | None = None
        if config.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if config.cuda_graph:
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
        self.optimizer = build_outer_optimizer(config, self.learner.named_meta_parameters())
        self._base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self._set_streams(config.task_streams or self.dist.world_size)
        self.iteration = 0
        #: meta-iterations skipped because their meta-loss or meta-gradient was not finite
        self.skipped = 0
        self._nonfinite_streak = 0
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0  # wall time spent in meta-iterations, across resumes
        self._val_tasks = None
        # the validation episodes are drawn now: a split too narrow for the episodes is an error
        # before the first iteration, not at the first evaluation minutes later
        self._load_val_tasks()
        # On a GPU the next meta-batch is sampled while the device computes the current one.
        self._prefetch = self.device.type == "cuda"
        self._prefetched: list[TaskBatch] | None = None
        self._prefetch_states: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ task streams
    def _set_streams(self, count: int) -> None:
        """Seed ``count`` task streams and pick the block this process samples."""
        world = self.dist.world_size
        if count < world:
            raise ConfigError(
                f"{count} task stream(s) cannot be split across {world} processes; use at most "
                f"{count} process(es) or more --task-streams"
            )
        seed = self.config.seed
        self.generators = [
            torch.Generator().manual_seed(distributed.stream_seed(seed, s)) for s in range(count)
        ]
        self.generator = self.generators[0]  # the only stream of a default one-process run
        self._stream_tasks = distributed.split_tasks(self.config.meta_batch, count)
        self._owned = distributed.owned_streams(count, self.dist.rank, world)

    # ------------------------------------------------------------------ run folder
    def _prepare_out_dir(self, resume: bool) -> None:
        if self.out_dir is None:
            if resume:
                raise ConfigError("resume needs an output folder")
            return
        prepare_run_folder(self.out_dir, resume, self.config, self._write_marker)

    def _write_marker(self) -> None:
        """run.json: the configuration, where each value came from, and a budget's plan."""
        assert self.out_dir is not None
        write_run_marker(self.out_dir, self.config, self.sources, self.budget_plan)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds: iteration, learner, outer optimizer, generators, ..."""
        return {
            "iteration": self.iteration,
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "budget_iterations": self._budget_iterations,
            "budget_spent": self._budget_spent,
            "budget_replans": list(self.budget_replans),
            "budget_next_look": self._budget_next_look,
            # a batch sampled ahead (see ``step``) is not saved: its streams are saved as before it
            "generators": self._prefetch_states or [g.get_state() for g in self.generators],
            "config": self.config.to_dict(),
            "train_seconds": self.train_seconds,
            "skipped": self.skipped,
            "nonfinite_streak": self._nonfinite_streak,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (a resumed run continues bit for bit)."""
        state = upgrade_checkpoint(state)
        self.learner.load_state_dict(state["learner"])
        self.optimizer.load_state_dict(state["optimizer"])
        states = state["generators"]
        if len(states) != len(self.generators):  # resuming with another number of processes
            if self.config.task_streams is not None:
                raise ConfigError(
                    f"the checkpoint holds {len(states)} task stream(s), the run asks for "
                    f"{self.config.task_streams}"
                )
            self._set_streams(len(states))
        for generator, saved in zip(self.generators, states):
            generator.set_state(saved)
        self._prefetched = self._prefetch_states = None
        self.iteration = int(state["iteration"])
        self._budget_iterations = state["budget_iterations"]
        self._budget_spent = state["budget_spent"]
        self.budget_replans = list(state["budget_replans"])
        self._budget_next_look = state["budget_next_look"]
        self.train_seconds = float(state["train_seconds"])
        self.skipped = int(state["skipped"])
        self._nonfinite_streak = int(state["nonfinite_streak"])

    def save_checkpoint(self) -> None:
        """Write the checkpoint atomically (a crash mid-write keeps the previous one)."""
        if self.out_dir is None:
            return
        state = self.state_dict()
        if self.dist.is_distributed:  # each stream's state lives on the process that samples it
            owned = {s: self.generators[s].get_state() for s in self._owned}
            merged: dict[int, torch.Tensor] = {}
            for part in distributed.all_gather_object(owned, self.dist, "the checkpoint gather"):
                merged.update(part)
            state["generators"] = [merged[s] for s in range(len(self.generators))]
            state["generator"] = state["generators"][0]
            if not self.dist.is_main:
                return
        write_checkpoint(self.out_dir, state)
        if self.skipped < self.iteration:  # an artifact only once something was learned
            self._save_outputs()

    def _save_outputs(self) -> None:
        """Write the artifact to ``OUT/artifact`` (atomically) beside each checkpoint."""
        key = "val_" + self.suite.metric_name
        metrics: dict[str, Any] = {"iteration": self.iteration,
                                   "train_seconds": round(self.train_seconds, 3)}
        last = next((r for r in reversed(self.history) if key in r), None)
        if last is not None:
            metrics.update({
                key: last[key],
                "evaluated_at": last["iteration"],
                "eval_split": "val",
                "eval_tasks": self.config.eval_tasks,
                "eval_steps": self.config.inner_steps,
            })
        artifact = Artifact.from_learner(self.learner, self.suite, self.config.to_dict(), metrics)
        artifact.save(self.out_dir / ARTIFACT)

    def _restore(self) -> None:
        assert self.out_dir is not None
        state = read_checkpoint(self.out_dir, self.device)
        if state is not None:
            try:
                self.load_state_dict(state)
            except Exception as exc:  # corrupted checkpoint: say so plainly
                raise RunDirError(f"cannot read checkpoint {self.out_dir / CHECKPOINT}: {exc}") from None
        kept = keep_metrics(self.out_dir, self.iteration)
        if kept is not None:
            self.history = kept

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if not self.dist.is_main:
            return
        if self.out_dir is not None:
            append_metrics(self.out_dir, record)
        if self.callback is not None:
            self.callback(record)

    # ------------------------------------------------------------------ evaluation
    _no_val = False

    def _load_val_tasks(self) -> None:
        """The fixed validation tasks (none, with a warning, when the suite has no validation
        split, e.g. ``val_fraction=0``: training goes on)."""
        try:
            tasks = self.suite.fixed_tasks(self.config.eval_tasks, split="val")
        except ConfigError as exc:  # no validation split: nothing to evaluate on
            self._no_val = True
            warnings.warn(f"no validation tasks, so no held-out metric: {exc}", stacklevel=3)
            return
        self._val_tasks = tasks.to(self.device, self.dtype)

    def evaluate(self) -> float | None:
        """Mean held-out metric after ``inner_steps`` steps on the fixed validation tasks (None
        when the suite has no validation split, e.g. ``val_fraction=0``: training goes on)."""
        if self._no_val or self._val_tasks is None:
            return None
        curve = self.learner.adaptation_curve(self._val_tasks, self.config.inner_steps)
        return float(curve.metric[:, -1].mean())

    # ------------------------------------------------------------------ the loop
    def sample_shards(self) -> list[TaskBatch]:
        """This process's tasks of the next meta-batch: one batch per task stream it owns."""
        return [
            self.suite.sample(self._stream_tasks[s], self.generators[s], split="train").to(
                self.device, self.dtype
            )
            for s in self._owned
        ]

    def sample_batch(self) -> TaskBatch:
        """This process's next meta-batch, from its task streams."""
        shards = self.sample_shards()
        return shards[0] if len(shards) == 1 else TaskBatch.concat(shards)

    def _meta_gradient(
        self, shards: list[TaskBatch], named: list[tuple[str, torch.nn.Parameter]]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Loss, metric and meta-gradient: the task-weighted mean over streams and processes.

        Every stream is differentiated on its own and the sums are added in stream order (one
        all-reduce across processes), so one process with S streams and S processes with one
        stream each add the same numbers.
        """
        if len(shards) == 1 and not self.dist.is_distributed:
            result = self._learner_meta_gradient(shards[0])
            return result.loss, result.metric, [result.grads[n] for n, _ in named]
        total: torch.Tensor | None = None
        for batch in shards:
            result = self._learner_meta_gradient(batch)
            parts = [result.grads[n].reshape(-1) for n, _ in named]
            extra = torch.stack([result.loss.detach(), result.metric.detach()]).to(parts[0])
            flat = torch.cat([*parts, extra]) * len(batch)
            total = flat if total is None else total + flat
        assert total is not None
        distributed.all_reduce_sum(
            total, self.dist, f"the meta-gradient all-reduce of iteration {self.iteration + 1}"
        )
        total = total / self.config.meta_batch
        sizes = [p.numel() for _, p in named]
        grads = [g.view_as(p) for g, (_, p) in zip(total[:-2].split(sizes), named)]
        return total[-2], total[-1], grads

    def _learner_meta_gradient(self, batch: TaskBatch) -> MetaGradient:
        if self.config.compile and self._compiled is None:
            self._compiled = CompiledMetaGradient(self.learner)
        fn = self._compiled or self.learner.meta_gradient
        if not self.config.cuda_graph:
            return fn(batch)
        if self._graphed is None:  # built on first use: after any restore, on the final storage
            self._graphed = GraphedMetaGradient(self.learner, fn=fn)
        return self._graphed(batch)

    def step(self) -> tuple[float, float]:
        """One meta-iteration: sample, meta-gradient (all-reduced), finite check, clip, step."""
        named = self.learner.named_meta_parameters()
        shards = self._prefetched if self._prefetched is not None else self.sample_shards()
        self._prefetched = self._prefetch_states = None
        loss_t, metric_t, grads = self._meta_gradient(shards, named)
        if self._prefetch:  # the GPU works asynchronously: sample the next batch meanwhile
            self._prefetch_states = [g.get_state() for g in self.generators]
            self._prefetched = self.sample_shards()
        # one device-to-host transfer for the loss, the metric and the finite check of every grad
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).all() if grads else None
        values = [loss_t.detach(), metric_t.detach()] + ([finite] if finite is not None else [])
        host = torch.stack([v.to(loss_t.device, torch.float64) for v in values]).tolist()
        loss, metric = host[0], host[1]
        if not math.isfinite(loss) or (finite is not None and not host[2]):
            # One meta-batch whose inner loop overflowed (a rare task, rates at their edge) is
            # skipped, as mixed-precision training skips an overflowing step; a run that keeps
            # producing them has diverged and stops.
            self.skipped += 1
            self._nonfinite_streak += 1
            self.iteration += 1
            if self._nonfinite_streak >= MAX_NONFINITE_STREAK:
                raise NonFiniteLossError(
                    f"the meta-loss or its gradient was not finite for {self._nonfinite_streak} "
                    f"meta-iterations in a row (the last: iteration {self.iteration}, loss {loss})"
                    + self._kept_checkpoint_note()
                )
            return math.nan, math.nan
        self._nonfinite_streak = 0
        for (_, p), g in zip(named, grads):
            p.grad = g
        if self.config.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_([p for _, p in named], self.config.clip_grad)
        self._schedule_lrs()
        self.optimizer.step()
        self.iteration += 1
        return loss, metric

    def _schedule_lrs(self) -> None:
        """Set the outer rates for this step from the schedule (a no-op when constant)."""
        cfg = self.config
        if cfg.meta_lr_schedule == "constant":
            return
        factor = meta_lr_factor(cfg.meta_lr_schedule, self.iteration, cfg.iterations)
        for group, base in zip(self.optimizer.param_groups, self._base_lrs):
            group["lr"] = base * factor

    @property
    def meta_lr(self) -> float:
        """The outer learning rate of the initial weights at the current iteration."""
        factor = meta_lr_factor(self.config.meta_lr_schedule, self.iteration, self.config.iterations)
        return self._base_lrs[0] * factor

    def _start(self, resume: bool) -> None:
        """Prepare the folder (and restore) on rank 0; every other process starts from its state."""
        if not self.dist.is_distributed:
            self._prepare_out_dir(resume)
            if resume:
                self._restore()
            return
        payload: Any = None
        if self.dist.is_main:
            error: MetaOptError | None = None
            try:
                self._prepare_out_dir(resume)
                if resume:
                    self._restore()
            except MetaOptError as exc:
                error = exc
            except OSError as exc:
                error = RunDirError(f"cannot use {self.out_dir}: {exc.strerror or exc}")
            payload = (error, _to_cpu(self.state_dict()), self.history)
        error, state, history = distributed.broadcast_object(payload, self.dist, "start-up")
        if error is not None:
            raise error
        if not self.dist.is_main:
            self.load_state_dict(state)
            self.history = list(history)

    def _fix_budget_iterations(self) -> None:
        """Fix ``iterations`` for ``budget_seconds`` (see ``budget``): the count a resumed run
        recorded, else one measured on a warm-up whose steps are undone afterwards."""
        budget = self.config.budget_seconds
        if budget is None:
            return
        if self._budget_iterations is None:
            snapshot = copy.deepcopy(self.state_dict())
            began = self.clock()
            self.step()  # untimed: allocation, compilation, graph capture
            timed_from, timed = self.clock(), 0
            while True:
                self.step()
                timed += 1
                now = self.clock()
                if timed >= MIN_TIMED_STEPS and now - timed_from >= warmup_seconds(budget):
                    break
            plan = iterations_for_budget(budget, now - began, timed, now - timed_from)
            self.load_state_dict(snapshot)
            self.budget_plan = distributed.broadcast_object(plan, self.dist, "the budget plan")
            self._budget_iterations = self.budget_plan.iterations
            self._budget_spent = self.budget_plan.warmup_seconds
            self._budget_next_look = self.iteration + look_every(
                budget, self.budget_plan.seconds_per_iteration, self._budget_iterations)
        elif self._budget_spent is not None and self._budget_next_look is None:
            # a checkpoint from before looks were spaced in seconds: the next 1/REPLANS of the count
            self._budget_next_look = self.iteration + look_every(budget, 0.0, self._budget_iterations)
        self.config = dataclasses.replace(self.config, iterations=self._budget_iterations)
        if self.sources is not None:
            self.sources["iterations"] = "budget"
        if self.out_dir is not None and self.dist.is_main and self.budget_plan is not None:
            self._write_marker()

    def _replan(self, since: tuple[int, float]) -> TrainConfig:
        """Look again at a budget run's speed (see ``budget``): the count for the seconds left at
        the speed of the steps since the last look, recorded when it changes, and the iteration
        of the next look (1/REPLANS of the budget's seconds away at that speed)."""
        budget = self.config.budget_seconds
        assert budget is not None and self._budget_spent is not None
        steps = self.iteration - since[0]
        rate = since[1] / steps if steps > 0 else 0.0
        count = replanned_iterations(budget, self._budget_spent, self.iteration,
                                     self.config.iterations, rate)
        count, self._budget_next_look = distributed.broadcast_object(
            (count, self.iteration + look_every(budget, rate, count)), self.dist,
            "the budget re-plan")
        if count != self.config.iterations:
            self.budget_replans.append({"iteration": self.iteration, "iterations": count,
                                        "seconds_per_iteration": rate})
            self._budget_iterations = count
            self.config = dataclasses.replace(self.config, iterations=count)
        return self.config

    def _kept_checkpoint_note(self) -> str:
        if self.out_dir is not None and (self.out_dir / CHECKPOINT).is_file():
            return f"; the last good checkpoint is kept in {self.out_dir / CHECKPOINT}"
        return "; no checkpoint had been written yet"

    def run(self, resume: bool = False) -> TrainResult:
        """Train to ``config.iterations``; with ``resume`` continue from the folder's checkpoint."""
        try:
            return self._run(resume)
        except DistributedError as exc:  # any collective (all-reduce, checkpoint gather, ...)
            raise DistributedError(f"{exc}{self._kept_checkpoint_note()}") from None

    def _run(self, resume: bool) -> TrainResult:
        self._start(resume)
        self._fix_budget_iterations()
        cfg = self.config
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (TextColumn("[bold]meta-train"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
        window_loss, window_metric, window_start = 0.0, 0.0, time.perf_counter()
        window_n = window_finite = 0
        last_val: float | None = None
        show = self.progress and self.dist.is_main
        with Progress(*columns, disable=not show, transient=False) as bar:
            # the first step of a compiled run compiles for minutes: say so until the first log
            info = "compiling the meta-gradient (minutes)" if cfg.compile else ""
            task = bar.add_task("train", total=cfg.iterations, completed=self.iteration, info=info)
            since_replan = (self.iteration, 0.0)  # iteration and budget seconds at the last look
            # a budget run resumed with a count instead trains to that count: no more looks
            budgeted = cfg.budget_seconds is not None and self._budget_spent is not None
            while self.iteration < cfg.iterations:
                began = time.perf_counter()
                ticked = self.clock() if budgeted else 0.0
                loss, metric = self.step()
                self.train_seconds += time.perf_counter() - began
                if budgeted:
                    assert self._budget_spent is not None
                    step_seconds = self.clock() - ticked
                    self._budget_spent += step_seconds
                    since_replan = (since_replan[0], since_replan[1] + step_seconds)
                    assert self._budget_next_look is not None
                    if self.iteration >= self._budget_next_look:
                        cfg = self._replan(since_replan)
                        since_replan = (self.iteration, 0.0)
                        bar.update(task, total=cfg.iterations)
                window_n += 1
                if math.isfinite(loss):  # a skipped (non-finite) meta-batch adds nothing
                    window_loss += loss
                    window_metric += metric
                    window_finite += 1
                it = self.iteration
                record: dict[str, Any] | None = None
                if it % cfg.eval_every == 0 or it == cfg.iterations:
                    last_val = self.evaluate()
                    if last_val is not None:
                        record = {"iteration": it, "val_" + self.suite.metric_name: last_val}
                if it % cfg.log_every == 0 or record is not None:
                    elapsed = time.perf_counter() - window_start
                    record = {
                        "iteration": it,
                        "loss": window_loss / window_finite if window_finite else math.nan,
                        self.suite.metric_name: (
                            window_metric / window_finite if window_finite else math.nan),
                        "it_per_s": window_n / max(elapsed, 1e-9),
                        **(record or {}),
                    }
                    if self.skipped:
                        record["skipped_nonfinite"] = self.skipped
                    if cfg.meta_lr_schedule != "constant":
                        record["meta_lr"] = self.meta_lr
                    self._log(record)
                    info = f"loss {record['loss']:.4g}  {record['it_per_s']:.0f} it/s"
                    if last_val is not None:
                        info += f"  val {self.suite.metric_name} {last_val:.4g}"
                    bar.update(task, info=info)
                    window_loss, window_metric, window_n, window_finite = 0.0, 0.0, 0, 0
                    window_start = time.perf_counter()
                if it % cfg.checkpoint_every == 0 or it == cfg.iterations:
                    self.save_checkpoint()
                bar.update(task, completed=it)
        if self.iteration > 0 and self.skipped >= self.iteration:
            raise NonFiniteLossError(
                f"every one of the {self.iteration} meta-batches had a non-finite meta-loss or "
                "gradient and was skipped: nothing was learned, so no artifact is written (a "
                "smaller --inner-lr or --meta-lr, or --clip-grad, may help)"
            )
        if last_val is None:
            last_val = self.evaluate()
        return TrainResult(self.learner, self.suite, cfg, self.history, self.out_dir, last_val)


def _to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor moved to the CPU (to pickle it for other processes)."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def train(
    config: TrainConfig | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Meta-train in one call: ``train(suite="sinusoid", budget_seconds=90, out_dir="runs/a")``.

    Without ``config`` the configuration resolves as on the command line: TrainConfig's defaults,
    then the suite's recipe, then ``overrides`` (each keyword counts as a flag; see ``recipes``),
    and run.json records where each value came from. With ``config``, that configuration is used
    as it is, with ``overrides`` applied. Under torchrun the process group this call joins is left
    again when it returns or fails.

    Args:
        config: the run's configuration, used as it is (default: resolved from the suite's recipe).
        out_dir: folder for ``run.json``, checkpoints, ``metrics.jsonl`` and the artifact; None
            trains in memory.
        resume: continue the run saved in ``out_dir`` from its last checkpoint.
        progress: show a progress bar.
        **overrides: :class:`TrainConfig` fields: flags over the recipe, or replacements of ``config``'s.

    Returns:
        The trained learner, its suite, the configuration and the logged history.

    Raises:
        ConfigError: an option has an invalid value.
        SuiteError: an unknown suite or a suite option it does not accept.
        DataError: the suite's data folder is missing or malformed.
        RunDirError: ``out_dir`` cannot hold this run (another run, not ours, not writable).
        NonFiniteLossError: the meta-loss became NaN or infinite (the last good checkpoint is kept).
        DistributedError: under torchrun, a peer died or the process group could not form.
    """
    sources = None
    if config is None:
        from .recipes import resolve_train_config

        resolved = resolve_train_config(flags=overrides, suite_options=overrides.get("suite_options"))
        config, sources = resolved.config, resolved.sources
    else:
        config = dataclasses.replace(config, **overrides)
    ok = False
    try:
        result = MetaTrainer(config, out_dir, progress=progress, sources=sources).run(resume=resume)
        ok = True
        return result
    finally:
        distributed.shutdown(wait_for_peers=ok)
