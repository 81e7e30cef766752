"""Meta-training: the configuration resolved from a suite's recipe, the trainer loop with its run
folder and checkpoints, and the ways to run it (torch.distributed, torch.compile, CUDA graphs)."""

from __future__ import annotations

from ..config import META_LR_SCHEDULES, RATES_META_LR, TrainConfig
from .compiled import CompiledMetaGradient
from .cuda_graphs import GraphedMetaGradient
from .recipes import SOURCES, ResolvedConfig, recipe_for, resolve_train_config
from .trainer import (
    ARTIFACT,
    CHECKPOINT,
    MAX_NONFINITE_STREAK,
    METRICS,
    RUN_MARKER,
    MetaTrainer,
    TrainResult,
    build_outer_optimizer,
    meta_lr_factor,
    train,
)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "MetaTrainer",
    "train",
    "build_outer_optimizer",
    "meta_lr_factor",
    "META_LR_SCHEDULES",
    "RATES_META_LR",
    "MAX_NONFINITE_STREAK",
    "RUN_MARKER",
    "CHECKPOINT",
    "METRICS",
    "ARTIFACT",
    "ResolvedConfig",
    "resolve_train_config",
    "recipe_for",
    "SOURCES",
    "CompiledMetaGradient",
    "GraphedMetaGradient",
]
