"""Second-order MAML meta-iterations/s on the sinusoid (meta-batch 25, K = 10).

Columns: the hand-batched path, the vmap path, the plain loop over tasks, and `higher` when it is
installed (the usual library approach: a Python loop over tasks with a differentiable optimizer);
a CUDA column for the hand-batched and vmap paths when a GPU is present. Each figure is a full
meta-iteration: sampling, the meta-gradient, and the outer Adam step.

    python benchmarks/throughput.py            # one thread, as the targets are stated
"""

from __future__ import annotations

import argparse
import time

import torch

from metaopt_tuner.learners import build_learner
from metaopt_tuner.tasks import get_suite
from metaopt_tuner.training import TrainConfig, build_outer_optimizer

TARGETS = {1: 500.0, 5: 150.0}


def _library_iteration(batching: str, steps: int, device: str):
    suite = get_suite("sinusoid", shots=10)
    learner = build_learner("maml", suite, inner_steps=steps, batching=batching).to(device)
    named = learner.named_meta_parameters()
    outer = build_outer_optimizer(TrainConfig(), named)
    gen = torch.Generator().manual_seed(0)

    def iteration() -> None:
        batch = suite.sample(25, gen).to(device)
        grads = learner.meta_gradient(batch).grads
        for n, p in named:
            p.grad = grads[n]
        outer.step()

    return iteration


def _higher_iteration(steps: int):
    import higher  # noqa: PLC0415 - optional

    suite = get_suite("sinusoid", shots=10)
    model = suite.build_model()
    outer = torch.optim.Adam(model.parameters(), 1e-3)
    inner = torch.optim.SGD(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)

    def iteration() -> None:
        batch = suite.sample(25, gen)
        outer.zero_grad()
        for i in range(len(batch)):
            task = batch.task(i)
            with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (fmodel, diffopt):
                for _ in range(steps):
                    diffopt.step(suite.loss_per_example(fmodel(task.x_support), task.y_support).mean())
                loss = suite.loss_per_example(fmodel(task.x_query), task.y_query).mean() / len(batch)
                loss.backward()
        outer.step()

    return iteration


def _rate(iteration, seconds: float, device: str) -> float:
    for _ in range(5):
        iteration()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        iteration()
        n += 1
    sync()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import higher  # noqa: F401
        has_higher = True
    except ImportError:
        has_higher = False
    has_cuda = torch.cuda.is_available()

    columns = ["batched", "vmap", "loop"] + (["higher"] if has_higher else [])
    columns += ["cuda batched", "cuda vmap"] if has_cuda else []
    rows = []
    for steps in args.steps:
        row = {}
        for col in columns:
            if col == "higher":
                it = _higher_iteration(steps)
                device = "cpu"
            else:
                device = "cuda" if col.startswith("cuda") else "cpu"
                it = _library_iteration(col.split()[-1], steps, device)
            row[col] = _rate(it, args.seconds, device)
        rows.append((steps, row))

    print(f"Second-order MAML, sinusoid, meta-batch 25, K=10, {args.threads} CPU thread(s): "
          "meta-iterations/s")
    print(f"{'inner steps':>11} " + " ".join(f"{c:>13}" for c in columns) + f" {'target':>8} {'met':>4}")
    for steps, row in rows:
        target = TARGETS.get(steps)
        met = "" if target is None else ("yes" if row["batched"] >= target else "no")
        print(f"{steps:>11} " + " ".join(f"{row[c]:>13.1f}" for c in columns)
              + f" {target if target else '':>8} {met:>4}")


if __name__ == "__main__":
    main()
