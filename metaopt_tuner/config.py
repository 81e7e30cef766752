"""The training configuration as a value: every option of a meta-training run, its default, its
help, and the vocabularies its options take.

It sits below the suites (whose recipes are TrainConfig values) and the learners and the trainer
(which read it), so that a suite's recipe never needs the trainer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .devices import resolve_device
from .errors import ConfigError
from .models.proto_head import HEAD_INITS

__all__ = ["TrainConfig", "LEARNER_NAMES", "BATCHING_MODES", "INNER_PARAMS", "HEAD_INITS",
           "META_LR_SCHEDULES", "RATES_META_LR", "DTYPES", "COMPILABLE_LEARNERS"]

#: the learners ``build_learner`` knows, sorted (``learners.LEARNERS`` maps them to classes)
LEARNER_NAMES = ("fomaml", "maml", "metasgd", "reptile")
#: how a learner evaluates a meta-batch (see ``learners.base.MetaLearner``)
BATCHING_MODES = ("auto", "batched", "vmap", "loop")
#: what the inner loop adapts: every parameter, or the linear head alone on features computed
#: once per task (the body's rates are then zero: only the head moves)
INNER_PARAMS = ("all", "head")

# Outer-loop defaults per learner: Adam 1e-3 as in MAML and Meta-SGD; Reptile's plain SGD step
# theta <- theta + eps * mean(theta' - theta) needs SGD for the update to be exactly the formula.
_OUTER_DEFAULTS = {"reptile": ("sgd", 0.1)}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
COMPILABLE_LEARNERS = ("maml", "fomaml", "metasgd")
#: options of older versions that are now always on (learned rates are positive by construction)
RETIRED_OPTIONS = frozenset({"nonnegative_lrs"})
#: the outer learning rate of the (log-space) learned inner rates; see ``resolved_rates_lr``
RATES_META_LR = 1e-2
#: how the outer learning rates change over a run (see ``meta_lr_factor``)
META_LR_SCHEDULES = ("constant", "cosine")


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
    #: let float32 matrix products and convolutions use TF32 tensor cores (CUDA only): faster, but
    #: second-order meta-gradients lose most of their accuracy (docs/benchmarks.md)
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
        if self.learner not in list(LEARNER_NAMES):
            raise ConfigError(
                f"unknown learner {self.learner!r}; available: {', '.join(list(LEARNER_NAMES))}"
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
        if self.outer_optimizer not in (None, "adam", "sgd"):
            raise ConfigError(f"outer optimizer must be 'adam' or 'sgd', got {self.outer_optimizer!r}")
        if self.meta_lr_schedule not in META_LR_SCHEDULES:
            raise ConfigError(
                f"meta-lr schedule must be one of {', '.join(META_LR_SCHEDULES)}, "
                f"got {self.meta_lr_schedule!r}"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.compile and self.learner not in COMPILABLE_LEARNERS:
            raise ConfigError(
                f"--compile needs a gradient-based learner ({', '.join(COMPILABLE_LEARNERS)}), "
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
        a rate per iteration at 1e-2) and one value serves every suite and model scale; 1e-2 is
        the largest measured rate that stays finite (docs/benchmarks.md).
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
        if self.first_order is not None:
            options["first_order"] = self.first_order
        if self.lr_granularity is not None:
            options["lr_granularity"] = self.lr_granularity
        return options

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-able (as run.json and manifests record it)."""
        return asdict(self)

    @staticmethod
    def upgrade(data: dict[str, Any]) -> dict[str, Any]:
        """A configuration dict an older version wrote, as this one reads it: options that are now
        always on are dropped (run.json, checkpoints and manifests all record this dict)."""
        return {k: v for k, v in data.items() if k not in RETIRED_OPTIONS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The configuration :meth:`to_dict` gave (retired options are dropped).

        Raises:
            ConfigError: an unknown field.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        data = cls.upgrade(data)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**data)
