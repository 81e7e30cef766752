"""A run's output folder, and one ``upgrade`` per file it holds that older versions wrote::

    run.json          marks the folder as a metaopt run and records the configuration
    checkpoint.pt     learner, outer optimizer and task-sampler state (written atomically)
    metrics.jsonl     one JSON object per logged iteration (loss, metric, held-out metric, it/s)
    artifact/         the learned theta and rates with their manifest (see ``artifact``), written
                      with every checkpoint and at the end
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .. import json_text
from ..atomic import atomic_write, atomic_write_text
from ..budget import BudgetPlan
from ..config import TrainConfig
from ..errors import ConfigError, RunDirError

__all__ = ["RUN_MARKER", "CHECKPOINT", "METRICS", "ARTIFACT", "prepare_run_folder",
           "write_run_marker", "check_same_run", "upgrade_checkpoint", "write_checkpoint",
           "read_checkpoint", "keep_metrics", "append_metrics"]

RUN_MARKER = "run.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
ARTIFACT = "artifact"
_PROGRAM = "metaopt-tuner"
#: options that may change when a run resumes: how long it trains, and how the GPU executes the
#: same arithmetic
_FREE_ON_RESUME = {"iterations", "budget_seconds", "cuda_graph", "tf32", "compile"}


def prepare_run_folder(out: Path, resume: bool, config: TrainConfig,
                       write_marker: Callable[[], None]) -> None:
    """Check that ``out`` can hold this run (a new folder, or the same run to resume) and, for a
    new run, create it and ``write_marker()``."""
    marker = out / RUN_MARKER
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} exists and is not a folder")
    if resume:
        if not marker.is_file():
            raise RunDirError(f"--resume was given but {out} holds no metaopt run to resume")
        check_same_run(marker, config)
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
        write_marker()
    except OSError as exc:
        raise RunDirError(f"cannot write to {out}: {exc.strerror or exc}") from None


def write_run_marker(out: Path, config: TrainConfig, sources: Mapping[str, str] | None,
                     budget_plan: BudgetPlan | None) -> None:
    """run.json: the configuration, where each value came from, and a budget's plan."""
    record: dict[str, Any] = {"program": _PROGRAM, "kind": "run", "format": 1,
                              "config": config.to_dict()}
    if sources is not None:
        record["sources"] = sources
    if budget_plan is not None:
        record["budget"] = dataclasses.asdict(budget_plan)
    atomic_write_text(out / RUN_MARKER, json_text.dumps(record, indent=2))


def check_same_run(marker: Path, config: TrainConfig) -> None:
    """Raise unless the run recorded in ``marker`` has ``config`` (what may change aside)."""
    try:
        saved = json.loads(marker.read_text())
        if saved.get("program") != _PROGRAM:
            raise ValueError
        saved_config = saved["config"]
    except (ValueError, KeyError, TypeError, OSError):
        raise RunDirError(f"{marker} is not a metaopt run marker") from None
    current = config.to_dict()
    saved_config = {**TrainConfig().to_dict(), **TrainConfig.upgrade(saved_config)}
    differ = sorted(
        k for k in current if k not in _FREE_ON_RESUME and saved_config.get(k) != current[k]
    )
    if differ:
        raise ConfigError(
            f"cannot resume {marker.parent}: option(s) differ from the saved run: "
            f"{', '.join(differ)}"
        )


def upgrade_checkpoint(state: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint as this version reads it: what older versions left out, with the value it
    meant (one task stream, no budget, no time or skipped iterations counted)."""
    out = dict(state)
    if not out.get("generators"):
        out["generators"] = [state["generator"]]
    out.setdefault("budget_iterations", None)
    out.setdefault("budget_spent", None)  # the budget's seconds spent (None: fixed once, not tracked)
    out.setdefault("budget_replans", [])
    out.setdefault("budget_next_look", None)  # None: spaced by the count (see MetaTrainer)
    out.setdefault("train_seconds", 0.0)
    out.setdefault("skipped", 0)
    out.setdefault("nonfinite_streak", 0)
    return out


def write_checkpoint(out: Path, state: Mapping[str, Any]) -> None:
    """Write the checkpoint atomically (a crash mid-write keeps the previous one)."""
    atomic_write(out / CHECKPOINT, lambda fh: torch.save(dict(state), fh))


def read_checkpoint(out: Path, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint in ``out`` (tensors only: never unpickles code), or None when there is none."""
    path = out / CHECKPOINT
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # corrupted checkpoint: say so plainly
        raise RunDirError(f"cannot read checkpoint {path}: {exc}") from None


def keep_metrics(out: Path, iteration: int) -> list[dict[str, Any]] | None:
    """The metrics log's records up to ``iteration`` (those a resumed run keeps), written back
    without the later ones; None when there is no log."""
    metrics = out / METRICS
    if not metrics.is_file():
        return None
    kept = []
    for line in metrics.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("iteration", 0) <= iteration:
            kept.append(record)
    atomic_write_text(metrics, "".join(json_text.dumps(r) + "\n" for r in kept))
    return kept


def append_metrics(out: Path, record: Mapping[str, Any]) -> None:
    """Append one record to the metrics log."""
    with open(out / METRICS, "a") as fh:
        fh.write(json_text.dumps(record) + "\n")
