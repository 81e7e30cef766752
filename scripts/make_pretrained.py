"""Regenerate the shipped pretrained artifact ``metaopt_tuner/pretrained/sinusoid``.

Meta-SGD on MAML's sinusoid regression (10-shot, the 1-40-40-1 MLP, one learned non-negative rate
per weight and per inner step for 10 steps, second order, meta-gradient clipped to norm 1, the
rates' outer step 3e-5), then an evaluation on held-out test tasks, recorded in the manifest with
how it was made::

    python scripts/make_pretrained.py                     # the shipped artifact (a few minutes)
    python scripts/make_pretrained.py --iterations 200 --out /tmp/sin   # a quick try

The run is seeded and runs on the CPU in float32, so it is reproducible on one machine.

Why these settings: Meta-SGD learns rates at the edge of stability for the number of steps it is
trained for: rates learned for one step overshoot from the second step on, and with free-signed
per-weight rates over several steps second-order training itself diverged (rates went negative,
i.e. gradient ascent, which compounds). Non-negative rates with a small outer step for them train
stably over 10 steps, and the last step's rates keep adapting past the 10th step; to go on much
longer, decay the optimizer's ``lr`` with a scheduler (see ``examples/with_scheduler.py``).
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
from metaopt_tuner.training import MetaTrainer, TrainConfig  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--meta-batch", type=int, default=25)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--inner-steps", type=int, default=10)
    parser.add_argument("--clip-grad", type=float, default=1.0)
    parser.add_argument("--rates-meta-lr", type=float, default=3e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-tasks", type=int, default=600)
    parser.add_argument("--eval-steps", type=int, default=None, help="[default: --inner-steps]")
    parser.add_argument("--out", type=Path, default=REPO / "metaopt_tuner" / "pretrained" / "sinusoid")
    args = parser.parse_args(argv)

    config = TrainConfig(
        suite="sinusoid",
        suite_options={"shots": args.shots},
        learner="metasgd",
        iterations=args.iterations,
        meta_batch=args.meta_batch,
        inner_steps=args.inner_steps,
        inner_lr=0.01,
        per_step_lrs=True,
        rates_meta_lr=args.rates_meta_lr,
        clip_grad=args.clip_grad,
        eval_every=max(args.iterations // 4, 1),
        eval_tasks=100,
        log_every=max(args.iterations // 20, 1),
        checkpoint_every=args.iterations,
        seed=args.seed,
    )
    eval_steps = args.inner_steps if args.eval_steps is None else args.eval_steps
    torch.set_num_threads(1)  # tiny model: threads cost more than they give, and results repeat
    start = time.perf_counter()
    trainer = MetaTrainer(config, None, progress=sys.stderr.isatty())
    result = trainer.run()
    seconds = time.perf_counter() - start
    curve = evaluate(result.learner, result.suite, num_tasks=args.eval_tasks, steps=eval_steps,
                     split="test", seed=0)
    metric = result.suite.metric_name
    metrics = {
        f"val_{metric}": result.final_metric,
        f"test_{metric}": curve.metric_mean[min(args.inner_steps, eval_steps)],
        f"test_{metric}_ci": curve.metric_ci[min(args.inner_steps, eval_steps)],
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
        "note": f"rates tuned for {args.inner_steps} steps; decay lr with a scheduler to go on",
    }
    artifact = Artifact.from_learner(result.learner, result.suite, config.to_dict(), metrics,
                                     provenance=provenance)
    path = artifact.save(args.out)
    load_artifact(path)  # verify what was written
    print(f"trained {args.iterations} iterations in {seconds:.0f} s; held-out test {metric} after "
          f"0..{eval_steps} steps: " + ", ".join(f"{v:.3f}" for v in curve.metric_mean))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
