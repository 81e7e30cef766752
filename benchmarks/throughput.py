"""Second-order MAML meta-iterations/s on the sinusoid (meta-batch 25, K = 10).

Columns: the hand-batched path, the vmap path, the plain loop over tasks, and `higher` when it is
installed (the usual library approach: a Python loop over tasks with a differentiable optimizer);
a CUDA column for the hand-batched and vmap paths when a GPU is present. Each figure is a full
meta-iteration: sampling, the meta-gradient, and the outer Adam step.

    python benchmarks/throughput.py            # one thread, as the targets are stated
    python benchmarks/throughput.py --convnet  # and the Omniglot ConvNet per normalization

``--convnet`` adds a table for the Omniglot ConvNet (second-order MAML, 5-way 1-shot, 5 queries
per class, 28x28 images, meta-batch 4, 32 filters: the ``omniglot_small.py`` cpu preset's shape;
random pixels, since speed does not depend on them) with each normalization: ``group`` (the
default, per example), ``layer``, ``support`` (support-set statistics) and the transductive
``batch``.

Measured 2026-12-03, ``--convnet-only --seconds 5 --repeats 3`` (one thread of the shared 2-core
machine), meta-iterations/s, batched / vmap / loop: support 7.67 / 6.06 / 7.55, batch (the old
default) 9.96 / 6.12 / 8.07, group 12.42 / 10.27 / 8.44, layer 11.32 / 8.63 / 8.99. ``support``
costs the query forwards a pass of the support set (and primitive-op statistics instead of the
fused kernel there); the loop, which ``--batching auto`` picks on CPU, is 6% slower than before.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from metaopt_tuner.learners import build_learner
from metaopt_tuner.tasks import get_suite
from metaopt_tuner.tasks.base import TaskBatch
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


def _convnet_iteration(batching: str, steps: int, norm: str, filters: int, meta_batch: int):
    """One Omniglot-shaped ConvNet meta-iteration (no data needed: random pixels)."""
    ways, query = 5, 5
    suite = get_suite("omniglot", ways=ways, shots=1, query=query, filters=filters, norm=norm)
    learner = build_learner("maml", suite, inner_steps=steps, batching=batching, inner_lr=0.4)
    named = learner.named_meta_parameters()
    outer = build_outer_optimizer(TrainConfig(), named)
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(ways)

    def iteration() -> None:
        xs = torch.rand(meta_batch, ways, 1, 28, 28, generator=gen)
        xq = torch.rand(meta_batch, ways * query, 1, 28, 28, generator=gen)
        batch = TaskBatch(xs, labels.expand(meta_batch, ways), xq,
                          labels.repeat(query).expand(meta_batch, ways * query))
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


def _rate(iteration, seconds: float, device: str, warmup: int = 5) -> float:
    for _ in range(warmup):
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
    parser.add_argument("--convnet", action="store_true",
                        help="also time the Omniglot ConvNet with each normalization")
    parser.add_argument("--convnet-only", action="store_true", help="only the ConvNet table")
    parser.add_argument("--convnet-steps", type=int, default=1)
    parser.add_argument("--convnet-filters", type=int, default=32)
    parser.add_argument("--convnet-meta-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="ConvNet: timings per cell (median)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.convnet_only:
        sinusoid_table(args)
    if args.convnet or args.convnet_only:
        convnet_table(args)


def convnet_table(args: argparse.Namespace) -> None:
    """Meta-iterations/s of the Omniglot ConvNet per normalization (rows) and path (columns).

    Every cell is timed ``--repeats`` times, interleaved with the others (so that load from other
    processes hits them all alike), and the median is printed.
    """
    columns, norms = ["batched", "vmap", "loop"], ["group", "layer", "support", "batch"]
    cells = {(norm, col): _convnet_iteration(col, args.convnet_steps, norm, args.convnet_filters,
                                             args.convnet_meta_batch)
             for norm in norms for col in columns}
    for iteration in cells.values():  # warm-up
        iteration()
    rates: dict[tuple[str, str], list[float]] = {cell: [] for cell in cells}
    for _ in range(args.repeats):
        for cell, iteration in cells.items():
            rates[cell].append(_rate(iteration, args.seconds, "cpu", warmup=0))
    print(f"\nSecond-order MAML, Omniglot ConvNet ({args.convnet_filters} filters), 5-way 1-shot, "
          f"5 queries/class, meta-batch {args.convnet_meta_batch}, {args.convnet_steps} inner "
          f"step(s), {args.threads} CPU thread(s): meta-iterations/s, median of {args.repeats}")
    print(f"{'norm':>11} " + " ".join(f"{c:>13}" for c in columns))
    for norm in norms:
        print(f"{norm:>11} " + " ".join(f"{statistics.median(rates[norm, c]):>13.2f}"
                                          for c in columns))


def sinusoid_table(args: argparse.Namespace) -> None:
    """The sinusoid MLP's meta-iterations/s per path and inner step count."""
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
