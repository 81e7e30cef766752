"""Anytime steps: is the held-out query loss non-increasing from every step to the next?

Meta-trains the sinusoid recipe once per ``--weights`` value of ``step_loss_weight`` (the weight of
the mean query loss after the steps before the horizon in the meta-loss; 0 is the horizon's loss
alone), with everything else from the recipe, then adapts 300 held-out tasks for ``--steps`` steps
and prints the mean query MSE after every step, the steps where it rose by more than its 95% CI,
and the loss at the horizon. ``--artifact`` scores a saved artifact instead of training.

    python benchmarks/anytime.py --weights 0 1 --iterations 5000
    python benchmarks/anytime.py --artifact metaopt_tuner/pretrained/sinusoid
"""

from __future__ import annotations

import argparse
import time

import torch

from metaopt_tuner.artifact import load_artifact
from metaopt_tuner.evaluation import evaluate
from metaopt_tuner.training import train


def rises(mean: list[float], ci: list[float]) -> list[int]:
    """Steps k whose mean loss exceeds the loss after step k - 1 by more than both CIs."""
    return [k for k in range(1, len(mean)) if mean[k] - mean[k - 1] > ci[k] + ci[k - 1]]


def report(label: str, source, steps: int, tasks: int, seconds: float | None) -> None:
    result = evaluate(source, num_tasks=tasks, steps=steps)
    mean, ci = result.loss_mean, result.loss_ci
    shown = ", ".join(f"{k}: {mean[k]:.4g}" for k in range(len(mean)))
    took = f"{seconds:.0f} s" if seconds is not None else "-"
    horizon = getattr(source, "horizon", None)
    at_h = f"{mean[horizon]:.4g} ± {ci[horizon]:.2g}" if horizon is not None and horizon <= steps else "-"
    print(f"| {label} | {at_h} | {rises(mean, ci) or 'none'} | {took} | {shown} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--iterations", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--artifact", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| run | query MSE at the horizon | steps where it rose | train time | after step k |")
    print("|---|---|---|---|---|")
    if args.artifact:
        art = load_artifact(args.artifact)
        report(args.artifact, art, args.steps, args.tasks, None)
        return
    for weight in args.weights:
        overrides = {"iterations": args.iterations} if args.iterations else {}
        start = time.perf_counter()
        result = train(suite="sinusoid", step_loss_weight=weight, **overrides)
        seconds = time.perf_counter() - start
        from metaopt_tuner.artifact import Artifact

        art = Artifact.from_learner(result.learner, result.suite, result.config.to_dict())
        report(f"step_loss_weight={weight:g}", art, args.steps, args.tasks, seconds)


if __name__ == "__main__":
    main()
