"""MetaTrainer: the outer loop, with checkpoints that resume exactly, progress and NaN guards.

A run lives in one output folder::

    run.json          marks the folder as a metaopt run and records the configuration
    checkpoint.pt     learner, outer optimizer and task-sampler state (written atomically)
    metrics.jsonl     one JSON object per logged iteration (loss, metric, held-out metric, it/s)

Resuming restores all three states, so an interrupted run ends with exactly the parameters of an
uninterrupted one (on CPU with the same seed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, NonFiniteLossError, RunDirError
from .learners import BATCHING_MODES, MetaLearner, build_learner, list_learners
from .tasks import TaskSuite, get_suite

__all__ = ["TrainConfig", "TrainResult", "MetaTrainer", "train", "RUN_MARKER"]

RUN_MARKER = "run.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
_PROGRAM = "metaopt-tuner"

# Outer-loop defaults per learner: Adam 1e-3 as in MAML and Meta-SGD; Reptile's plain SGD step
# theta <- theta + eps * mean(theta' - theta) needs SGD for the update to be exactly the formula.
_OUTER_DEFAULTS = {"reptile": ("sgd", 0.1)}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class TrainConfig:
    """Everything that determines a meta-training run (recorded in run.json and artifacts)."""

    suite: str = "sinusoid"
    suite_options: dict[str, Any] = field(default_factory=dict)
    learner: str = "metasgd"
    iterations: int = 1000
    meta_batch: int = 25
    inner_steps: int = 1
    inner_lr: float = 0.01
    meta_lr: float | None = None
    outer_optimizer: str | None = None
    clip_grad: float | None = None
    first_order: bool | None = None
    per_step_lrs: bool = False
    lr_granularity: str | None = None
    batching: str = "auto"
    eval_every: int = 500
    eval_tasks: int = 100
    checkpoint_every: int = 1000
    log_every: int = 100
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid option."""
        positive = ("iterations", "meta_batch", "inner_steps", "eval_every", "eval_tasks",
                    "checkpoint_every", "log_every")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value}")
        if self.learner not in list_learners():
            raise ConfigError(
                f"unknown learner {self.learner!r}; available: {', '.join(list_learners())}"
            )
        if self.batching not in BATCHING_MODES:
            raise ConfigError(
                f"unknown batching {self.batching!r}; expected one of {', '.join(BATCHING_MODES)}"
            )
        for name in ("inner_lr", "meta_lr", "clip_grad"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name.replace('_', '-')} must be a positive number, got {value}")
        if self.outer_optimizer not in (None, "adam", "sgd"):
            raise ConfigError(f"outer optimizer must be 'adam' or 'sgd', got {self.outer_optimizer!r}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        try:
            device = torch.device(self.device)
        except RuntimeError as exc:
            raise ConfigError(f"invalid device {self.device!r}: {exc}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was requested but CUDA is not available here")

    def resolved_outer(self) -> tuple[str, float]:
        name, lr = _OUTER_DEFAULTS.get(self.learner, ("adam", 1e-3))
        return self.outer_optimizer or name, self.meta_lr if self.meta_lr is not None else lr

    def learner_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "inner_steps": self.inner_steps,
            "inner_lr": self.inner_lr,
            "per_step_lrs": self.per_step_lrs,
            "batching": self.batching,
        }
        if self.first_order is not None:
            options["first_order"] = self.first_order
        if self.lr_granularity is not None:
            options["lr_granularity"] = self.lr_granularity
        return options

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**data)


@dataclass
class TrainResult:
    """What a finished run leaves: the learner, its suite and the logged history."""

    learner: MetaLearner
    suite: TaskSuite
    config: TrainConfig
    history: list[dict[str, Any]]
    out_dir: Path | None
    final_metric: float | None


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    _atomic_write_bytes(path, lambda fh: fh.write(text.encode()))


def build_outer_optimizer(config: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    name, lr = config.resolved_outer()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    try:  # the fused kernel cuts the per-step overhead that dominates small models
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


class MetaTrainer:
    """Run meta-training for a :class:`TrainConfig`, optionally in an output folder.

    ``out_dir=None`` trains in memory (no checkpoints). ``progress`` shows a rich progress bar;
    ``callback(record)`` receives every logged record (dict) as it is produced.
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | os.PathLike[str] | None = None,
        *,
        progress: bool = True,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.callback = callback
        self.device = torch.device(config.device)
        self.dtype = _DTYPES[config.dtype]
        self.suite = get_suite(config.suite, **config.suite_options)
        torch.manual_seed(config.seed)
        self.learner = build_learner(config.learner, self.suite, **config.learner_options())
        self.learner.to(device=self.device, dtype=self.dtype)
        self.optimizer = build_outer_optimizer(config, [p for _, p in self.learner.named_meta_parameters()])
        self.generator = torch.Generator().manual_seed(config.seed)
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self._val_tasks = None

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
            atomic_write_text(marker, json.dumps(
                {"program": _PROGRAM, "kind": "run", "format": 1,
                 "config": self.config.to_dict()}, indent=2))
        except OSError as exc:
            raise RunDirError(f"cannot write to {out}: {exc.strerror or exc}") from None

    def _check_same_run(self, marker: Path) -> None:
        try:
            saved = json.loads(marker.read_text())
            if saved.get("program") != _PROGRAM:
                raise ValueError
            saved_config = saved["config"]
        except (ValueError, KeyError, TypeError, OSError):
            raise RunDirError(f"{marker} is not a metaopt run marker") from None
        current = self.config.to_dict()
        # The number of iterations may grow on resume; everything else must match.
        differ = sorted(
            k for k in current if k != "iterations" and saved_config.get(k) != current[k]
        )
        if differ:
            raise ConfigError(
                f"cannot resume {marker.parent}: option(s) differ from the saved run: "
                f"{', '.join(differ)}"
            )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.iteration = int(state["iteration"])

    def save_checkpoint(self) -> None:
        """Write the checkpoint atomically (a crash mid-write keeps the previous one)."""
        if self.out_dir is None:
            return
        state = self.state_dict()
        _atomic_write_bytes(self.out_dir / CHECKPOINT, lambda fh: torch.save(state, fh))
        self._save_outputs()

    def _save_outputs(self) -> None:
        """Hook for outputs written beside each checkpoint (the artifact)."""

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
        if self.out_dir is not None:
            with open(self.out_dir / METRICS, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.callback is not None:
            self.callback(record)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> float:
        """Mean held-out metric after ``inner_steps`` steps on the fixed validation tasks."""
        if self._val_tasks is None:
            self._val_tasks = self.suite.fixed_tasks(self.config.eval_tasks, split="val").to(
                self.device, self.dtype
            )
        curve = self.learner.adaptation_curve(self._val_tasks, self.config.inner_steps)
        return float(curve.metric[:, -1].mean())

    # ------------------------------------------------------------------ the loop
    def sample_batch(self):
        return self.suite.sample(self.config.meta_batch, self.generator, split="train").to(
            self.device, self.dtype
        )

    def step(self) -> tuple[float, float]:
        """One meta-iteration: sample, meta-gradient, finite check, clip, outer step."""
        batch = self.sample_batch()
        result = self.learner.meta_gradient(batch)
        loss = float(result.loss)
        named = self.learner.named_meta_parameters()
        grads = [result.grads[n] for n, _ in named]
        if not math.isfinite(loss) or not all(bool(torch.isfinite(g).all()) for g in grads):
            raise NonFiniteLossError(
                f"the meta-loss became {loss} at iteration {self.iteration + 1}"
                + self._kept_checkpoint_note()
            )
        if self.config.clip_grad is not None:
            total = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads])
            )
            scale = (self.config.clip_grad / (total + 1e-6)).clamp(max=1.0)
            grads = [g * scale for g in grads]
        for (_, p), g in zip(named, grads):
            p.grad = g
        self.optimizer.step()
        self.iteration += 1
        return loss, float(result.metric)

    def _kept_checkpoint_note(self) -> str:
        if self.out_dir is not None and (self.out_dir / CHECKPOINT).is_file():
            return f"; the last good checkpoint is kept in {self.out_dir / CHECKPOINT}"
        return "; no checkpoint had been written yet"

    def run(self, resume: bool = False) -> TrainResult:
        """Train to ``config.iterations``; with ``resume`` continue from the folder's checkpoint."""
        self._prepare_out_dir(resume)
        if resume:
            self._restore()
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
        window_n = 0
        last_val: float | None = None
        with Progress(*columns, disable=not self.progress, transient=False) as bar:
            task = bar.add_task("train", total=cfg.iterations, completed=self.iteration, info="")
            while self.iteration < cfg.iterations:
                loss, metric = self.step()
                window_loss += loss
                window_metric += metric
                window_n += 1
                it = self.iteration
                record: dict[str, Any] | None = None
                if it % cfg.eval_every == 0 or it == cfg.iterations:
                    last_val = self.evaluate()
                    record = {"iteration": it, "val_" + self.suite.metric_name: last_val}
                if it % cfg.log_every == 0 or record is not None:
                    elapsed = time.perf_counter() - window_start
                    record = {
                        "iteration": it,
                        "loss": window_loss / window_n,
                        self.suite.metric_name: window_metric / window_n,
                        "it_per_s": window_n / max(elapsed, 1e-9),
                        **(record or {}),
                    }
                    self._log(record)
                    info = f"loss {record['loss']:.4g}  {record['it_per_s']:.0f} it/s"
                    if last_val is not None:
                        info += f"  val {self.suite.metric_name} {last_val:.4g}"
                    bar.update(task, info=info)
                    window_loss, window_metric, window_n = 0.0, 0.0, 0
                    window_start = time.perf_counter()
                if it % cfg.checkpoint_every == 0 or it == cfg.iterations:
                    self.save_checkpoint()
                bar.update(task, completed=it)
        if last_val is None:
            last_val = self.evaluate()
        return TrainResult(self.learner, self.suite, cfg, self.history, self.out_dir, last_val)


def train(
    config: TrainConfig | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Meta-train in one call: ``train(learner="metasgd", iterations=2000, out_dir="runs/a")``."""
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    return MetaTrainer(config, out_dir, progress=progress).run(resume=resume)
