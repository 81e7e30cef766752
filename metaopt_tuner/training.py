"""MetaTrainer: the outer loop, with checkpoints that resume exactly, progress and NaN guards.

A run lives in one output folder::

    run.json          marks the folder as a metaopt run and records the configuration
    checkpoint.pt     learner, outer optimizer and task-sampler state (written atomically)
    metrics.jsonl     one JSON object per logged iteration (loss, metric, held-out metric, it/s)
    artifact/         the learned theta and rates with their manifest (see ``artifact``), written
                      with every checkpoint and at the end

Resuming restores all three states, so an interrupted run ends with exactly the parameters of an
uninterrupted one (on CPU with the same seed).

Under ``torchrun`` the trainer joins the process group (see ``distributed``): each process samples
and differentiates its own task streams, the meta-gradients are summed by one all-reduce, every
process takes the same outer step, and rank 0 alone writes the folder.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .artifact import Artifact
from .atomic import atomic_write, atomic_write_text
from .budget import MIN_TIMED_STEPS, BudgetPlan, iterations_for_budget, warmup_seconds
from .compiled import CompiledMetaGradient
from .cuda_graphs import GraphedMetaGradient
from .devices import resolve_device
from .errors import ConfigError, DistributedError, MetaOptError, NonFiniteLossError, RunDirError
from .learners import BATCHING_MODES, MetaGradient, MetaLearner, build_learner, list_learners
from .learners.base import INNER_PARAMS
from .learners.proto_head import HEAD_INITS
from .tasks import TaskBatch, TaskSuite, get_suite

__all__ = ["TrainConfig", "TrainResult", "MetaTrainer", "train", "RUN_MARKER", "META_LR_SCHEDULES",
           "meta_lr_factor"]

RUN_MARKER = "run.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
ARTIFACT = "artifact"
_PROGRAM = "metaopt-tuner"

# Outer-loop defaults per learner: Adam 1e-3 as in MAML and Meta-SGD; Reptile's plain SGD step
# theta <- theta + eps * mean(theta' - theta) needs SGD for the update to be exactly the formula.
_OUTER_DEFAULTS = {"reptile": ("sgd", 0.1)}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_COMPILABLE_LEARNERS = ("maml", "fomaml", "metasgd")
#: options of older versions that are now always on (learned rates are positive by construction)
_RETIRED_OPTIONS = frozenset({"nonnegative_lrs"})
#: non-finite meta-iterations in a row (each one skipped) after which a run stops as diverged
MAX_NONFINITE_STREAK = 10
#: the outer learning rate of the (log-space) learned inner rates; see ``resolved_rates_lr``
RATES_META_LR = 1e-2
#: how the outer learning rates change over a run (see ``meta_lr_factor``)
META_LR_SCHEDULES = ("constant", "cosine")


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
class TrainConfig:
    """Everything that determines a meta-training run (recorded in run.json and artifacts).

    The defaults here are the lowest layer: a suite's recipe and the options given override them
    (see ``recipes.resolve_train_config``; :func:`train` and ``metaopt train`` resolve that way).

    Args:
        suite: a registered suite name or ``"module:Class"``.
        suite_options: the suite's constructor options (``shots``, ``data_dir``, ...).
        learner: ``"maml"``, ``"fomaml"``, ``"metasgd"`` or ``"reptile"``.
        iterations: meta-iterations (outer steps) in total.
        budget_seconds: train for this many seconds instead; ``iterations`` is then fixed by a
            timed warm-up (see ``budget``).
        meta_batch: tasks per meta-iteration.
        inner_steps: adaptation steps per task: the horizon the rates are meta-trained for.
        inner_lr: the inner rate (the initial value of learned rates).
        meta_lr: the outer rate (None: 1e-3 with Adam; Reptile 0.1 with SGD).
        rates_meta_lr: the learned rates' outer rate (None: :data:`RATES_META_LR`, 1e-2).
        outer_optimizer: ``"adam"`` or ``"sgd"`` (None: the learner's).
        meta_lr_schedule: ``"constant"`` or ``"cosine"``.
        clip_grad: clip the meta-gradient's global norm to this (None: no clipping).
        first_order: override the learner's order (None: the learner's).
        per_step_lrs: learn one set of rates per inner step.
        lr_granularity: ``"scalar"``, ``"tensor"`` or ``"element"`` (None: the learner's).
        batching: ``"auto"``, ``"batched"``, ``"vmap"`` or ``"loop"``.
        head_init: ``"theta"`` or ``"prototypes"``.
        inner_params: ``"all"`` or ``"head"`` (what the inner loop adapts).
        step_loss_weight: weight of the mean query loss after the steps before the horizon in
            the meta-loss (0: the horizon's loss alone; see ``MetaLearner``).
        eval_every: evaluate on held-out validation tasks every this many iterations.
        eval_tasks: the number of fixed validation tasks.
        checkpoint_every: write a checkpoint every this many iterations.
        log_every: append a line to ``metrics.jsonl`` every this many iterations.
        seed: the seed of task sampling and initialization.
        device: the torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        dtype: ``"float32"`` or ``"float64"``.
        task_streams: seeded task streams per meta-batch (None: one per process).
        cuda_graph: replay each meta-gradient from a CUDA graph (CUDA only).
        compile: compute each meta-gradient with one ``torch.compile``-d function.
        tf32: let float32 products use TF32 tensor cores (CUDA only).

    Raises:
        ConfigError: from :meth:`validate`, which the trainer calls, for an invalid option.
    """

    suite: str = "sinusoid"
    suite_options: dict[str, Any] = field(default_factory=dict)
    learner: str = "metasgd"
    iterations: int = 1000
    #: train for this many seconds instead: ``iterations`` is fixed from a timed warm-up before
    #: the first step (the rule is in ``metaopt_tuner.budget``) and recorded for a resume
    budget_seconds: float | None = None
    meta_batch: int = 25
    inner_steps: int = 1
    inner_lr: float = 0.01
    meta_lr: float | None = None
    #: outer step size of the learned rates (Meta-SGD); None: see ``resolved_rates_lr``
    rates_meta_lr: float | None = None
    outer_optimizer: str | None = None
    #: "constant" or "cosine" (every outer rate annealed to zero over ``iterations``)
    meta_lr_schedule: str = "constant"
    clip_grad: float | None = None
    first_order: bool | None = None
    per_step_lrs: bool = False
    lr_granularity: str | None = None
    batching: str = "auto"
    #: "theta" (the meta-learned head) or "prototypes" (Proto-MAML: from each task's support set)
    head_init: str = "theta"
    #: "all" (every parameter adapts in the inner loop) or "head" (the linear head alone, on
    #: features computed once per task; models with a Linear ``head``)
    inner_params: str = "all"
    #: weight of the query loss after every step before the horizon (anytime steps); 0: the
    #: horizon's loss alone
    step_loss_weight: float = 0.0
    eval_every: int = 500
    eval_tasks: int = 100
    checkpoint_every: int = 1000
    log_every: int = 100
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    #: independent seeded task streams a meta-batch is drawn from; None: one per process. The
    #: same value and seed give the same run on any number of processes (up to this many).
    task_streams: int | None = None
    #: replay each meta-gradient from a CUDA graph (CUDA only; see ``cuda_graphs``)
    cuda_graph: bool = False
    #: compute each meta-gradient with one ``torch.compile``-d function (maml, fomaml, metasgd;
    #: see ``compiled``): fused kernels; the first meta-batch of each shape pays the compilation
    compile: bool = False
    #: let float32 matrix products and convolutions use TF32 tensor cores (CUDA only). Measured on
    #: Omniglot (second-order MAML, 5 steps, H100): 25.3 instead of 23.4 it/s, but a meta-gradient
    #: 19-79% off (relative norm) against float64, where FP32 is 3e-5 off.
    tf32: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid option."""
        positive = ("iterations", "meta_batch", "inner_steps", "eval_every", "eval_tasks",
                    "checkpoint_every", "log_every")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value}")
        if self.task_streams is not None and (
            not isinstance(self.task_streams, int) or isinstance(self.task_streams, bool)
            or not 1 <= self.task_streams <= self.meta_batch
        ):
            raise ConfigError(
                f"task-streams must be an integer from 1 to meta-batch ({self.meta_batch}), "
                f"got {self.task_streams}"
            )
        if self.learner not in list_learners():
            raise ConfigError(
                f"unknown learner {self.learner!r}; available: {', '.join(list_learners())}"
            )
        if self.batching not in BATCHING_MODES:
            raise ConfigError(
                f"unknown batching {self.batching!r}; expected one of {', '.join(BATCHING_MODES)}"
            )
        for name in ("inner_lr", "meta_lr", "rates_meta_lr", "clip_grad", "budget_seconds"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name.replace('_', '-')} must be a positive number, got {value}")
        if self.head_init not in HEAD_INITS:
            raise ConfigError(
                f"head init must be one of {', '.join(HEAD_INITS)}, got {self.head_init!r}"
            )
        if self.inner_params not in INNER_PARAMS:
            raise ConfigError(
                f"inner params must be one of {', '.join(INNER_PARAMS)}, got {self.inner_params!r}"
            )
        if not (isinstance(self.step_loss_weight, (int, float)) and math.isfinite(self.step_loss_weight)
                and self.step_loss_weight >= 0):
            raise ConfigError(f"step-loss-weight must be a non-negative number, got {self.step_loss_weight}")
        if self.outer_optimizer not in (None, "adam", "sgd"):
            raise ConfigError(f"outer optimizer must be 'adam' or 'sgd', got {self.outer_optimizer!r}")
        if self.meta_lr_schedule not in META_LR_SCHEDULES:
            raise ConfigError(
                f"meta-lr schedule must be one of {', '.join(META_LR_SCHEDULES)}, "
                f"got {self.meta_lr_schedule!r}"
            )
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.compile and self.learner not in _COMPILABLE_LEARNERS:
            raise ConfigError(
                f"--compile needs a gradient-based learner ({', '.join(_COMPILABLE_LEARNERS)}), "
                f"not {self.learner}"
            )
        if self.compile and self.batching == "loop":
            raise ConfigError("--compile needs batching 'auto', 'batched' or 'vmap', not 'loop'")
        device = resolve_device(self.device)
        for name in ("cuda_graph", "tf32"):
            if getattr(self, name) and device.type != "cuda":
                raise ConfigError(
                    f"--{name.replace('_', '-')} needs a CUDA device, got --device {self.device}"
                )

    def resolved_outer(self) -> tuple[str, float]:
        """The outer optimizer's name and rate, defaults resolved for the learner."""
        name, lr = _OUTER_DEFAULTS.get(self.learner, ("adam", 1e-3))
        return self.outer_optimizer or name, self.meta_lr if self.meta_lr is not None else lr

    def resolved_rates_lr(self) -> float:
        """The learned rates' outer step size (default :data:`RATES_META_LR`, whatever the meta-lr).

        Learned rates are stored as logarithms, so Adam's steps on them are relative (about 1% of
        a rate per iteration at 1e-2) and one value serves every suite and model scale. Measured on
        the sinusoid (Meta-SGD, 10 inner steps, per-step per-weight rates, 5,000 iterations, clip
        1.0): held-out MSE after 10 steps 0.062 at 1e-3, 0.019 at 3e-3, 0.0054 at 1e-2; at 3e-2 the
        meta-gradient became NaN within 300 iterations.
        """
        if self.rates_meta_lr is not None:
            return self.rates_meta_lr
        return RATES_META_LR

    def learner_options(self) -> dict[str, Any]:
        """The keyword options ``build_learner`` gets from this configuration."""
        options: dict[str, Any] = {
            "inner_steps": self.inner_steps,
            "inner_lr": self.inner_lr,
            "per_step_lrs": self.per_step_lrs,
            "batching": self.batching,
        }
        if self.head_init != "theta":  # passed only when used: learners registered by users may lack it
            options["head_init"] = self.head_init
        if self.inner_params != "all":  # passed only when used, as head_init
            options["inner_params"] = self.inner_params
        if self.step_loss_weight:  # passed only when used, as head_init
            options["step_loss_weight"] = self.step_loss_weight
        if self.first_order is not None:
            options["first_order"] = self.first_order
        if self.lr_granularity is not None:
            options["lr_granularity"] = self.lr_granularity
        return options

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-able (as run.json and manifests record it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The configuration :meth:`to_dict` gave (retired options are dropped).

        Raises:
            ConfigError: an unknown field.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k not in _RETIRED_OPTIONS}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**data)


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
        self.dtype = _DTYPES[config.dtype]
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
        out = self.out_dir
        if out is None:
            if resume:
                raise ConfigError("resume needs an output folder")
            return
        marker = out / RUN_MARKER
        if out.exists() and not out.is_dir():
            raise RunDirError(f"--out {out} exists and is not a folder")
        if resume:
            if not marker.is_file():
                raise RunDirError(f"--resume was given but {out} holds no metaopt run to resume")
            self._check_same_run(marker)
            return
        if marker.exists():
            raise RunDirError(
                f"{out} already holds a metaopt run; pass --resume to continue it or choose "
                "another --out"
            )
        if out.exists() and any(out.iterdir()):
            raise RunDirError(f"--out {out} exists, is not empty and is not a metaopt run")
        try:
            out.mkdir(parents=True, exist_ok=True)
            self._write_marker()
        except OSError as exc:
            raise RunDirError(f"cannot write to {out}: {exc.strerror or exc}") from None

    def _write_marker(self) -> None:
        """run.json: the configuration, where each value came from, and a budget's plan."""
        assert self.out_dir is not None
        record: dict[str, Any] = {"program": _PROGRAM, "kind": "run", "format": 1,
                                  "config": self.config.to_dict()}
        if self.sources is not None:
            record["sources"] = self.sources
        if self.budget_plan is not None:
            record["budget"] = dataclasses.asdict(self.budget_plan)
        atomic_write_text(self.out_dir / RUN_MARKER, json.dumps(record, indent=2))

    def _check_same_run(self, marker: Path) -> None:
        try:
            saved = json.loads(marker.read_text())
            if saved.get("program") != _PROGRAM:
                raise ValueError
            saved_config = saved["config"]
        except (ValueError, KeyError, TypeError, OSError):
            raise RunDirError(f"{marker} is not a metaopt run marker") from None
        current = self.config.to_dict()
        defaults = TrainConfig().to_dict()  # options newer than the saved run take their default
        # The number of iterations may grow on resume, and how the GPU executes the same
        # arithmetic may change; everything else must match.
        free = {"iterations", "budget_seconds", "cuda_graph", "tf32", "compile"}
        differ = sorted(
            k for k in current
            if k not in free and saved_config.get(k, defaults.get(k)) != current[k]
        )
        if differ:
            raise ConfigError(
                f"cannot resume {marker.parent}: option(s) differ from the saved run: "
                f"{', '.join(differ)}"
            )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds: iteration, learner, outer optimizer, generators, ..."""
        return {
            "iteration": self.iteration,
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "budget_iterations": self._budget_iterations,
            # a batch sampled ahead (see ``step``) is not saved: its streams are saved as before it
            "generators": self._prefetch_states or [g.get_state() for g in self.generators],
            "config": self.config.to_dict(),
            "train_seconds": self.train_seconds,
            "skipped": self.skipped,
            "nonfinite_streak": self._nonfinite_streak,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (a resumed run continues bit for bit)."""
        self.learner.load_state_dict(state["learner"])
        self.optimizer.load_state_dict(state["optimizer"])
        states = state.get("generators") or [state["generator"]]
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
        self._budget_iterations = state.get("budget_iterations")
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.skipped = int(state.get("skipped", 0))
        self._nonfinite_streak = int(state.get("nonfinite_streak", 0))

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
        atomic_write(self.out_dir / CHECKPOINT, lambda fh: torch.save(state, fh))
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
        path = self.out_dir / CHECKPOINT
        if path.is_file():
            try:
                state = torch.load(path, map_location=self.device, weights_only=True)
                self.load_state_dict(state)
            except Exception as exc:  # corrupted checkpoint: say so plainly
                raise RunDirError(f"cannot read checkpoint {path}: {exc}") from None
        metrics = self.out_dir / METRICS
        if metrics.is_file():
            kept = []
            for line in metrics.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if record.get("iteration", 0) <= self.iteration:
                    kept.append(record)
            self.history = kept
            atomic_write_text(metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if not self.dist.is_main:
            return
        if self.out_dir is not None:
            with open(self.out_dir / METRICS, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.callback is not None:
            self.callback(record)

    # ------------------------------------------------------------------ evaluation
    _no_val = False

    def evaluate(self) -> float | None:
        """Mean held-out metric after ``inner_steps`` steps on the fixed validation tasks (None
        when the suite has no validation split, e.g. ``val_fraction=0``: training goes on)."""
        if self._no_val:
            return None
        if self._val_tasks is None:
            try:
                tasks = self.suite.fixed_tasks(self.config.eval_tasks, split="val")
            except ConfigError as exc:  # no validation split: nothing to evaluate on
                self._no_val = True
                warnings.warn(f"no validation tasks, so no held-out metric: {exc}", stacklevel=2)
                return None
            self._val_tasks = tasks.to(self.device, self.dtype)
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
        self.config = dataclasses.replace(self.config, iterations=self._budget_iterations)
        if self.sources is not None:
            self.sources["iterations"] = "budget"
        if self.out_dir is not None and self.dist.is_main and self.budget_plan is not None:
            self._write_marker()

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
            while self.iteration < cfg.iterations:
                began = time.perf_counter()
                loss, metric = self.step()
                self.train_seconds += time.perf_counter() - began
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
