"""The issue's headline comparison: meta-learned optimizer vs Optuna-tuned baselines on sinusoids.

Sinusoid regression, 10-shot, K = 10 adaptation steps for every method, 50 Optuna trials per
tuned baseline (on 100 meta-validation tasks), scored on >= 500 held-out test tasks::

    python benchmarks/compare_sinusoid.py                      # about 3 minutes on 2 CPU cores
    python benchmarks/compare_sinusoid.py --artifact runs/x/artifact
    python benchmarks/compare_sinusoid.py --shipped            # the shipped artifact, whatever K

It uses the shipped ``metaopt_tuner.pretrained("sinusoid")`` when that was meta-trained for at
least K steps; otherwise (the shipped one is trained for 3 steps, and its learned rates diverge past
about 5) it first meta-trains a K-step artifact: Meta-SGD's second-order meta-gradient with a
learned rate per layer and per step (``--lr-granularity element`` for one per weight, which diverged
in meta-training at 10 steps here), 3000 iterations, meta-lr 3e-4, gradient clipping 0.1.

Prints the table and the targets; the report goes to ``--out``
(studies too, so a re-run resumes). Targets: the meta-learned query MSE is at most half of the best
from-scratch tuned baseline, and below the pretrained-initialization + tuned Adam baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metaopt_tuner.artifact import Artifact, list_pretrained, pretrained  # noqa: E402
from metaopt_tuner.compare import compare, table_rows  # noqa: E402
from metaopt_tuner.training import MetaTrainer, TrainConfig  # noqa: E402


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _artifact(args: argparse.Namespace) -> Artifact | str:
    if args.artifact is not None:
        return str(args.artifact)
    if args.train_iterations is None and "sinusoid" in list_pretrained():
        shipped = pretrained("sinusoid")
        if shipped.inner_steps >= args.steps or args.shipped:
            print(f"artifact: the shipped pretrained('sinusoid') ({shipped.inner_steps} inner steps)")
            return shipped
        print(f"the shipped artifact is meta-trained for {shipped.inner_steps} steps, fewer than K = "
              f"{args.steps}: meta-training a K-step artifact (--shipped: use it anyway)")
    iterations = args.train_iterations or 3000
    config = TrainConfig(suite="sinusoid", suite_options={"shots": 10}, learner="metasgd",
                         iterations=iterations, meta_batch=25, inner_steps=args.train_inner_steps,
                         per_step_lrs=args.per_step_lrs, clip_grad=args.clip_grad, meta_lr=args.train_meta_lr,
                         rates_meta_lr=args.rates_meta_lr,
                         inner_lr=args.train_inner_lr, first_order=True if args.first_order else None,
                         lr_granularity=args.lr_granularity, eval_every=iterations, eval_tasks=100,
                         log_every=max(1, iterations // 10), checkpoint_every=iterations,
                         seed=args.seed)
    start = time.perf_counter()
    result = MetaTrainer(config, None, progress=sys.stderr.isatty()).run()
    seconds = time.perf_counter() - start
    print(f"artifact: meta-trained Meta-SGD, {iterations} iterations, {args.train_inner_steps} inner steps"
          f"{' (per-step rates)' if args.per_step_lrs else ''}, {seconds:.0f} s")
    art = Artifact.from_learner(result.learner, result.suite, config.to_dict(),
                                {"val_mse": result.final_metric},
                                provenance={"script": "benchmarks/compare_sinusoid.py",
                                            "train_seconds": round(seconds, 1)})
    return art.save(args.out / "artifact")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=None)
    parser.add_argument("--train-iterations", type=int, default=None,
                        help="meta-train a fresh artifact for this many iterations")
    parser.add_argument("--shipped", action="store_true", help="use the shipped artifact whatever K is")
    parser.add_argument("--train-inner-steps", type=int, default=None, help="[default: --steps]")
    parser.add_argument("--per-step-lrs", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--train-meta-lr", type=float, default=3e-4)
    parser.add_argument("--train-inner-lr", type=float, default=0.01)
    parser.add_argument("--rates-meta-lr", type=float, default=None, help="[default: --train-meta-lr]")
    parser.add_argument("--clip-grad", type=float, default=0.1)
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument("--lr-granularity", default="tensor",
                        help="tensor (one rate per layer and step: stable over 10 steps), element or scalar")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--val-tasks", type=int, default=100)
    parser.add_argument("--oracle-tasks", type=int, default=100)
    parser.add_argument("--pretrain-steps", type=int, default=2000)
    parser.add_argument("--storage", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/metaopt_compare_sinusoid"))
    args = parser.parse_args(argv)
    args.train_inner_steps = args.train_inner_steps or args.steps
    torch.set_num_threads(1)  # tiny model: threads cost more than they give

    art = _artifact(args)
    start = time.perf_counter()
    result = compare(art, args.out, steps=args.steps, tasks=args.tasks, trials=args.trials,
                     val_tasks=args.val_tasks, oracle_tasks=args.oracle_tasks,
                     pretrain_steps=args.pretrain_steps, storage=args.storage, seed=args.seed,
                     progress=sys.stderr.isatty())
    data = result.data
    print(f"\nsinusoid {data['suite']['options']['shots']}-shot, K = {args.steps}, {args.trials} trials per "
          f"tuned baseline, {args.tasks} test tasks ({time.perf_counter() - start:.0f} s)\n")
    print(f"{'method':<16} {'query MSE':>22} {'trials':>7} {'tuning grad evals':>18} {'tuning s':>9}")
    for row in table_rows(data):
        mse = f"{_num(row[3]):>12} ± {_num(row[4]):<7}"
        print(f"{row[0]:<16} {mse} {row[6]:>7} {row[7]:>18} {_num(row[9]):>9}")
    print("\ntargets:")
    for t in data["targets"]:
        if t.get("met") is None:
            print(f"  {t['target']}: not measured")
            continue
        print(f"  {t['target']} ({t['reference']}): {_num(t['meta_loss'])} vs {_num(t['reference_loss'])} "
              f"(ratio {_num(t['ratio'])}) -> {'MET' if t['met'] else 'NOT MET'} {t.get('note') or ''}")
    b = data["break_even"]
    print(f"\nbreak-even vs {b.get('reference')}: {b.get('tasks')} tasks ({b.get('note') or b.get('bound')})")
    print(f"report: {result.paths['html']}")


if __name__ == "__main__":
    main()
