"""Sinusoid quality: MAML and Meta-SGD meta-trained as in the papers, evaluated after one step.

1-40-40-1 MLP, meta-batch 25, Adam 1e-3, one inner step (alpha = 0.01 for MAML, the initial value
of Meta-SGD's learned rates), K support and K query points in training; evaluation on 600 fixed
held-out tasks with 100 query points each, after one inner step (as in the Meta-SGD paper).

    python benchmarks/sinusoid_quality.py --iterations 20000
    python benchmarks/sinusoid_quality.py --iterations 70000 --meta-lr-schedule cosine

The ``reference`` column is the project's own bar: a hand-batched second-order Meta-SGD (MAML at
K = 10) trained for 70,000 iterations of the same meta-batch and Adam rate.

Measured 2026-11-27, 70,000 iterations, one thread of the 2-core CPU, about 3 minutes per K:
Meta-SGD 0.425 / 0.204 / 0.120 at K = 5 / 10 / 20 (cosine: 0.429 / 0.197 / 0.111), MAML 0.319 at
K = 10 (cosine: 0.347). The README has the table with the 20,000-iteration figures beside it.
"""

from __future__ import annotations

import argparse
import time

import torch

from metaopt_tuner.evaluation import mean_ci
from metaopt_tuner.tasks import get_suite
from metaopt_tuner.training import MetaTrainer, TrainConfig

PAPER = {"maml": {5: 1.13, 10: 0.77, 20: 0.48}, "metasgd": {5: 0.90, 10: 0.53, 20: 0.31}}
REFERENCE = {"maml": {10: 0.32}, "metasgd": {5: 0.39, 10: 0.21, 20: 0.12}}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--learners", nargs="+", default=["maml", "metasgd"])
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--meta-lr-schedule", default="constant", choices=("constant", "cosine"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for learner in args.learners:
        for k in args.shots:
            config = TrainConfig(learner=learner, iterations=args.iterations, meta_batch=25, inner_steps=1,
                                 inner_lr=0.01, meta_lr=1e-3, meta_lr_schedule=args.meta_lr_schedule,
                                 suite_options={"shots": k},
                                 eval_every=max(1, args.iterations // 4), eval_tasks=100,
                                 checkpoint_every=args.iterations, log_every=1000, seed=args.seed)
            start = time.perf_counter()
            result = MetaTrainer(config, progress=False).run()
            minutes = (time.perf_counter() - start) / 60
            test_suite = get_suite("sinusoid", shots=k, query=100)
            tasks = test_suite.fixed_tasks(args.tasks, split="test")
            curve = result.learner.adaptation_curve(tasks, steps=1)
            mean, ci = mean_ci(curve.metric[:, 1])
            rows.append((learner, k, float(mean), float(ci), PAPER[learner][k],
                         REFERENCE[learner].get(k), minutes))
            print(f"  {learner} K={k}: {mean:.3f} ± {ci:.3f} ({minutes:.1f} min)", flush=True)

    print(f"\nSinusoid, 1 inner step at test time, {args.tasks} held-out tasks x 100 query points, "
          f"{args.iterations} meta-iterations ({args.meta_lr_schedule} meta-lr), {args.threads} thread(s)")
    print(f"{'learner':<9} {'K':>3} {'MSE (mean ± 95% CI)':>22} {'paper':>7} {'<= paper':>9} "
          f"{'reference':>10} {'minutes':>8}")
    for learner, k, mean, ci, paper, reference, minutes in rows:
        ok = "yes" if mean <= paper else "no"
        ref = "-" if reference is None else f"{reference:.2f}"
        print(f"{learner:<9} {k:>3} {mean:>13.3f} ± {ci:<6.3f} {paper:>7.2f} {ok:>9} {ref:>10} "
              f"{minutes:>8.1f}")


if __name__ == "__main__":
    main()
