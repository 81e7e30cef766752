"""Regenerate the shipped pretrained artifact ``metaopt_tuner/pretrained/sinusoid``.

The sinusoid suite's recipe, nothing else (what ``metaopt train --suite sinusoid`` does: Meta-SGD,
10 inner steps with a learned positive rate per weight and per step, second order, meta-gradient
clipped to norm 1; see ``metaopt_tuner/tasks/sinusoid.py``), then an evaluation on held-out test
tasks far past the trained horizon, recorded in the manifest with how it was made::

    python scripts/make_pretrained.py                     # the shipped artifact (a few minutes)
    python scripts/make_pretrained.py --iterations 200 --out /tmp/sin   # a quick try

The run is seeded and runs on the CPU in float32 on one thread, so it is reproducible on one
machine. Past its 10 trained steps the optimizer shrinks the last step's rates by half at every
step (the artifact's tail rule), so any number of steps is safe.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metaopt_tuner import __version__  # noqa: E402
from metaopt_tuner.artifact import Artifact, load_artifact  # noqa: E402
from metaopt_tuner.evaluation import evaluate  # noqa: E402
from metaopt_tuner.training import MetaTrainer, resolve_train_config  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=None, help="[default: the recipe's]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-tasks", type=int, default=600)
    parser.add_argument("--eval-steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "metaopt_tuner" / "pretrained" / "sinusoid")
    args = parser.parse_args(argv)

    resolved = resolve_train_config("sinusoid", {"iterations": args.iterations, "seed": args.seed})
    config = resolved.config
    inner_steps = config.inner_steps
    eval_steps = args.eval_steps
    torch.set_num_threads(1)  # tiny model: threads cost more than they give, and results repeat
    start = time.perf_counter()
    trainer = MetaTrainer(config, None, progress=sys.stderr.isatty(), sources=resolved.sources)
    result = trainer.run()
    seconds = time.perf_counter() - start
    curve = evaluate(result.learner, result.suite, num_tasks=args.eval_tasks, steps=eval_steps,
                     split="test", seed=0)
    metric = result.suite.metric_name
    metrics = {
        f"val_{metric}": result.final_metric,
        f"test_{metric}": curve.metric_mean[min(inner_steps, eval_steps)],
        f"test_{metric}_ci": curve.metric_ci[min(inner_steps, eval_steps)],
        f"test_{metric}_by_step": curve.metric_mean,
        "eval_tasks": args.eval_tasks,
        "eval_split": "test",
        "eval_seed": 0,
    }
    command = "python scripts/make_pretrained.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
        if k != "out" and v is not None
    )
    provenance = {
        "script": "scripts/make_pretrained.py",
        "command": command,
        "train_seconds": round(seconds, 1),
        "torch_version": torch.__version__,
        "library_version": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "note": f"rates meta-trained for {inner_steps} steps; past them they halve at every step",
    }
    artifact = Artifact.from_learner(result.learner, result.suite, config.to_dict(), metrics,
                                     provenance=provenance)
    path = artifact.save(args.out)
    load_artifact(path)  # verify what was written
    print(f"trained {config.iterations} iterations in {seconds:.0f} s; held-out test {metric} after "
          f"0..{eval_steps} steps: " + ", ".join(f"{v:.3f}" for v in curve.metric_mean))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
