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

__all__ = ["TrainConfig", "LEARNER_NAMES", "BATCHING_MODES", "INNER_PARAMS", "HEAD_INITS", "HEAD_RATE_SCALES",
           "META_LR_SCHEDULES", "RATES_META_LR", "DTYPES", "COMPILABLE_LEARNERS"]

#: the learners ``build_learner`` knows, sorted (``learners.LEARNERS`` maps them to classes)
LEARNER_NAMES = ("fomaml", "maml", "metasgd", "reptile")
#: how a learner evaluates a meta-batch (see ``learners.base.MetaLearner``)
BATCHING_MODES = ("auto", "batched", "vmap", "loop")
#: what the inner loop adapts: every parameter, or the linear head alone on features computed
#: once per task (the body's rates are then zero: only the head moves)
INNER_PARAMS = ("all", "head")
#: how the head's rates follow the task's number of classes (``head_rate_scale``)
HEAD_RATE_SCALES = ("none", "classes")

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


def _option(default: Any, help: str) -> Any:
    """A TrainConfig field: its default (a callable such as ``dict`` makes a fresh value each
    time) and its help, the one description of the option."""
    if callable(default):
        return field(default_factory=default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything that determines a meta-training run (recorded in run.json and artifacts).

    The defaults here are the lowest layer: a suite's recipe and the options given override them
    (see ``training.recipes.resolve_train_config``; :func:`train` and ``metaopt train`` resolve
    that way). Each field's meaning is written once, in its ``help`` metadata
    (:meth:`TrainConfig.help`), which ``metaopt train --help`` prints for its flag.

    Raises:
        ConfigError: from :meth:`validate`, which the trainer calls, for an invalid option.
    """

    suite: str = _option(
        "sinusoid",
        "Task suite: a name from `metaopt suites` or module:Class (your own TaskSuite).")
    suite_options: dict[str, Any] = _option(
        dict, "The suite's constructor options (shots, data_dir, ...).")
    learner: str = _option("metasgd", "maml, fomaml, metasgd or reptile.")
    iterations: int = _option(1000, "Meta-iterations (outer steps) in total, exactly.")
    budget_seconds: float | None = _option(
        None,
        "Train for this many seconds instead of --iterations: a timed warm-up fixes the iteration "
        "count (budget / seconds per iteration, recorded in run.json for --resume; the rule is "
        "in metaopt_tuner.budget), and the schedule is laid over it.")
    meta_batch: int = _option(25, "Tasks per meta-iteration.")
    inner_steps: int = _option(
        1, "Inner (adaptation) steps per task: the horizon the rates are meta-trained for.")
    inner_lr: float = _option(0.01, "Inner learning rate (the initial value for learned rates).")
    meta_lr: float | None = _option(None, "Outer learning rate.")
    rates_meta_lr: float | None = _option(
        None,
        "Outer learning rate of the learned rates (Meta-SGD), which are stored as logarithms: "
        "steps are relative.")
    outer_optimizer: str | None = _option(None, "adam or sgd.")
    meta_lr_schedule: str = _option(
        "constant",
        "constant, or cosine: every outer rate annealed to zero over the iterations (raising "
        "--iterations on --resume stretches what is left).")
    clip_grad: float | None = _option(None, "Clip the meta-gradient's global norm to this value.")
    first_order: bool | None = _option(None, "Override the learner's order.")
    per_step_lrs: bool = _option(False, "Learn one set of rates per inner step (Meta-SGD).")
    lr_granularity: str | None = _option(
        None,
        "Inner rates: scalar (one), tensor (one per weight tensor) or element (one per weight).")
    batching: str = _option("auto", "auto, batched (hand-batched), vmap or loop.")
    head_init: str = _option(
        "theta",
        "theta (the meta-learned head) or prototypes (Proto-MAML: each task's head starts from "
        "its support-set class means; classification suites with a ConvNet).")
    inner_params: str = _option(
        "all",
        "What the inner loop adapts: all (every parameter) or head (the linear head alone, on "
        "features computed once per task; the other parameters' rates are zero).")
    step_loss_weight: float = _option(
        0.0,
        "Weight of the mean query loss after the steps before the horizon in the meta-loss, "
        "beside the horizon's: every step is meta-trained to help, so stopping after any step "
        "is safe (0: the horizon's loss alone; the sinusoid recipe's 0.05 is measured on the "
        "Benchmarks page).")
    head_rate_scale: str = _option(
        "none",
        "none or classes: the head's learned rates are multiplied by the task's number of "
        "classes, so that with the mean support loss a class row steps alike at any width "
        "(classification with a linear head; no recipe sets it: the step bound serves there).")
    head_step_bound: float | None = _option(
        None,
        "With a value, each step of a head class row (its weights and bias together) is at most "
        "a learned length per step, starting at this value: one bound serves every number of "
        "classes and shots, where rates alone overshoot at some (the intents encoder recipe sets "
        "it; none: unbounded).")
    head_whitening: float | None = _option(
        None,
        "With a value a, each task's prototype head is whitened by its support set's within-class "
        "covariance, shrunk toward the identity by a / (a + examples per class - 1): plain "
        "prototypes at one shot, a linear discriminant at many (head init prototypes; the "
        "omniglot recipe sets 6; none: plain prototypes).")
    eval_every: int = _option(500, "Evaluate on held-out validation tasks every N iterations.")
    eval_tasks: int = _option(100, "Number of fixed validation tasks.")
    checkpoint_every: int = _option(1000, "Write a checkpoint every N iterations.")
    log_every: int = _option(100, "Append a metrics line every N iterations.")
    seed: int = _option(0, "Random seed (task sampling and initialization).")
    device: str = _option("cpu", "Torch device: cpu, cuda, cuda:1, ...")
    dtype: str = _option("float32", "float32 or float64.")
    task_streams: int | None = _option(
        None,
        "Seeded task streams per meta-batch; equal values give equal runs on any number of "
        "processes.")
    cuda_graph: bool = _option(
        False,
        "Replay each meta-gradient from a CUDA graph (CUDA only): removes the launch overhead of "
        "thousands of small kernels.")
    compile: bool = _option(
        False,
        "Compute each meta-gradient with one torch.compile-d function (maml, fomaml, metasgd): "
        "fused kernels, for GPUs. The first meta-batch compiles (minutes for a 5-step ConvNet). "
        "Combines with --cuda-graph.")
    tf32: bool = _option(
        False,
        "Let float32 matrix products and convolutions use TF32 tensor cores (CUDA only). Faster, "
        "but second-order meta-gradients lose accuracy (see the Benchmarks page); for "
        "first-order learners.")

    @classmethod
    def field_names(cls) -> list[str]:
        """Every field's name, in order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def help(cls, name: str) -> str:
        """What field ``name`` means: the one description the CLI's help prints too."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}[name]

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid option."""
        positive = ("iterations", "meta_batch", "inner_steps", "eval_every", "eval_tasks",
                    "checkpoint_every", "log_every")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be an integer from 0 to 2**63 - 1, got {self.seed}")
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
        if self.head_rate_scale not in HEAD_RATE_SCALES:
            raise ConfigError(f"head rate scale must be one of {', '.join(HEAD_RATE_SCALES)}, "
                              f"got {self.head_rate_scale!r}")
        if self.head_step_bound is not None and not (
                isinstance(self.head_step_bound, (int, float))
                and math.isfinite(self.head_step_bound) and self.head_step_bound > 0):
            raise ConfigError(f"head-step-bound must be a positive number, got {self.head_step_bound}")
        if self.head_whitening is not None and not (
                isinstance(self.head_whitening, (int, float)) and not isinstance(self.head_whitening, bool)
                and math.isfinite(self.head_whitening) and self.head_whitening > 0):
            raise ConfigError(f"head-whitening must be a positive number, got {self.head_whitening}")
        if self.head_whitening is not None and self.head_init != "prototypes":
            raise ConfigError("head-whitening whitens a prototype head: it needs head init "
                              f"prototypes, got {self.head_init!r}")
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
        if self.step_loss_weight:  # passed only when used, as head_init
            options["step_loss_weight"] = self.step_loss_weight
        if self.head_rate_scale != "none":  # passed only when used, as head_init
            options["head_rate_scale"] = self.head_rate_scale
        if self.head_step_bound is not None:  # passed only when used, as head_init
            options["head_step_bound"] = self.head_step_bound
        if self.head_whitening is not None:  # passed only when used, as head_init
            options["head_whitening"] = self.head_whitening
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


def _args_section(cls: type) -> str:
    """The ``Args:`` section of ``cls``'s docstring, written from its fields' help."""
    lines = ["", "    Args:"]  # indented as the class docstring is
    for f in dataclasses.fields(cls):
        line = f"        {f.name}:"
        for word in f.metadata["help"].split():
            if len(line) + 1 + len(word) > 100:
                lines.append(line)
                line = "           "
            line += " " + word
        lines.append(line)
    return "\n".join(lines)


TrainConfig.__doc__ = (TrainConfig.__doc__ or "").rstrip() + "\n" + _args_section(TrainConfig)

