"""Multi-task pretrained initialization: the strong baseline of "a good embedding is all you need".

Ordinary joint training of the suite's model on the pooled support and query data of meta-training
tasks (Adam, a fixed budget), with no adaptation inside the loop. Fine-tuning from it with a tuned
ordinary optimizer is the baseline the meta-learned initialization must beat to be worth its cost.
For classification suites whose labels are per-episode, pooling mixes label meanings; the baseline
then learns features and a head that fine-tuning must re-fit, which is the usual protocol.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ArtifactError, ConfigError
from ..tasks.base import TaskSuite

__all__ = ["Pretrained", "pretrain", "load_or_pretrain"]


@dataclass
class Pretrained:
    """Jointly trained parameters and what they cost (gradient evaluations = tasks x steps)."""

    params: dict[str, Tensor]
    steps: int
    tasks_per_step: int
    lr: float
    seed: int
    grad_evals: int
    seconds: float
    final_loss: float

    def cost(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k != "params"}


def pretrain(
    suite: TaskSuite,
    *,
    steps: int = 2000,
    tasks_per_step: int = 25,
    lr: float = 1e-3,
    seed: int = 0,
) -> Pretrained:
    """Train the suite's model on pooled meta-training data for ``steps`` Adam steps."""
    if steps < 1 or tasks_per_step < 1:
        raise ConfigError(f"pretraining needs positive steps and tasks, got {steps}, {tasks_per_step}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = suite.build_model()
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    begun = time.perf_counter()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        batch = suite.sample(tasks_per_step, generator, split="train")
        x = torch.cat([batch.x_support, batch.x_query], 1).flatten(0, 1)
        y = torch.cat([batch.y_support, batch.y_query], 1).flatten(0, 1)
        opt.zero_grad(set_to_none=True)
        loss = suite.loss_per_example(model(x), y).mean()
        loss.backward()
        opt.step()
    return Pretrained(
        params={k: v.detach().clone() for k, v in model.named_parameters()},
        steps=steps,
        tasks_per_step=tasks_per_step,
        lr=lr,
        seed=seed,
        grad_evals=steps * tasks_per_step,
        seconds=time.perf_counter() - begun,
        final_loss=float(loss.detach()),
    )


def load_or_pretrain(suite: TaskSuite, folder: Path, **options: int | float) -> Pretrained:
    """Pretrain once per output folder and settings; a re-run (resume) loads the saved result.

    The baselines tuned from this init must see the very same parameters after a resume.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save

    from ..atomic import atomic_write_bytes, atomic_write_text

    key = json.dumps({"suite": suite.name, "options": suite.options(), **options}, sort_keys=True)
    tensors_path = folder / "pretrained_init.safetensors"
    meta_path = folder / "pretrained_init.json"
    if tensors_path.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") == key:
                return Pretrained(params=load_file(str(tensors_path)), **meta["cost"])
        except (ValueError, KeyError, TypeError, OSError, SafetensorError) as exc:
            raise ArtifactError(f"cannot read the saved pretrained init in {folder}: {exc}") from None
    result = pretrain(suite, **options)  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in result.params.items()}
    atomic_write_bytes(tensors_path, save(tensors))
    atomic_write_text(meta_path, json.dumps({"key": key, "cost": result.cost()}, indent=2))
    return result
