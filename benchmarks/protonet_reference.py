"""A Prototypical Network written outside the framework: a check on the framework's own figures.

The README compares Meta-SGD + prototype head with a Prototypical Network trained in the framework
(``fomaml``, prototype head, inner lr ~0). This script trains one the textbook way instead: a plain
conv4 with ``nn.GroupNorm`` (each image alone; ``--norm batch`` for ``nn.BatchNorm2d``), squared
Euclidean distances to class means, Adam 1e-3 with a cosine schedule, one episode per step. Only the
episodes come from the library (the same Omniglot suite, splits and rotations as
``omniglot_small.py``), so any difference lies in the learner, not the data. With batch norm it also
tries the two choices a ProtoNet implementation can make: support and query normalized as one batch
or separately, and batch or population (running) statistics at test time.

``omniglot_small.py`` trains it (:func:`train_protonet`, 60-way episodes) for the learners'
wall-clock time and scores it on their test episodes (:func:`protonet_accuracy`): its ProtoNet row.

    python benchmarks/protonet_reference.py --data-dir DIR [--episodes 1500] [--ways 20]

Measured 2026-11-27 (one thread of the shared 2-core CPU, 64 filters, 1,500 20-way 1-shot
episodes with 5 queries per class, 500 test episodes): see the README's Omniglot section.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaopt_tuner.budget import MIN_TIMED_STEPS, iterations_for_budget, warmup_seconds
from metaopt_tuner.evaluation import mean_ci
from metaopt_tuner.tasks import get_suite


def conv4(filters: int, norm: str = "group") -> nn.Module:
    """The standard embedding: 4 x [3x3 conv, norm, ReLU, 2x2 max-pool], flattened.

    ``norm`` is ``"group"`` (GroupNorm, up to 8 groups: an image's embedding does not depend on its
    batch) or ``"batch"`` (``nn.BatchNorm2d``, the original paper's).
    """
    layers: list[nn.Module] = []
    for i in range(4):
        normalize = (nn.GroupNorm(math.gcd(8, filters), filters) if norm == "group"
                     else nn.BatchNorm2d(filters))
        layers += [nn.Conv2d(1 if i == 0 else filters, filters, 3, padding=1), normalize,
                   nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten())


def episode_logits(net: nn.Module, xs: Tensor, ys: Tensor, xq: Tensor, ways: int,
                   joint: bool) -> Tensor:
    """Negative squared distances of the query embeddings to the support class means."""
    if joint:
        emb = net(torch.cat([xs, xq]))
        fs, fq = emb[: len(xs)], emb[len(xs):]
    else:
        fs, fq = net(xs), net(xq)
    counts = torch.bincount(ys, minlength=ways).clamp(min=1).unsqueeze(1)
    protos = fs.new_zeros(ways, fs.shape[1]).index_add_(0, ys, fs) / counts
    return -torch.cdist(fq, protos).square()


def _episode_step(net: nn.Module, opt: torch.optim.Optimizer, suite: Any,
                  gen: torch.Generator, joint: bool) -> float:
    b = suite.sample(1, gen, split="train").to(next(net.parameters()).device)
    logits = episode_logits(net, b.x_support[0], b.y_support[0], b.x_query[0], suite.ways, joint)
    loss = F.cross_entropy(logits, b.y_query[0])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def train_protonet(suite: Any, filters: int, seconds: float | None = None,
                   episodes: int | None = None, norm: str = "group", joint: bool = False,
                   seed: int = 0, log_every: int = 0, device: str | torch.device = "cpu",
                   ) -> tuple[nn.Module, int, float]:
    """Train a ProtoNet on ``suite``'s training episodes, one per step.

    Args:
        suite: the training suite (its ways, shots and query are the episodes').
        filters: conv4 width.
        seconds: a wall-clock budget, by the library's ``--budget`` rule: a timed warm-up on a
            copy fixes the episode count, so the cosine schedule is laid over it from the start.
        episodes: the episode count instead of ``seconds``.
        norm: ``"group"`` or ``"batch"`` (see :func:`conv4`).
        joint: with batch norm, normalize support and query as one batch.
        seed: initialization and episode stream.
        log_every: print the mean loss every this many episodes (0: never).
        device: where to train.

    Returns:
        ``(net, episodes, train seconds)``; the seconds include the warm-up.
    """
    torch.manual_seed(seed)
    net = conv4(filters, norm).to(device)
    begun = time.perf_counter()
    if episodes is None:
        if seconds is None:
            raise ValueError("give seconds or episodes")
        probe = copy.deepcopy(net)
        probe_opt = torch.optim.Adam(probe.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(seed + 1)
        _episode_step(probe, probe_opt, suite, gen, joint)  # untimed: allocation
        timed_from, timed = time.perf_counter(), 0
        while timed < MIN_TIMED_STEPS or time.perf_counter() - timed_from < warmup_seconds(seconds):
            _episode_step(probe, probe_opt, suite, gen, joint)
            timed += 1
        now = time.perf_counter()
        episodes = iterations_for_budget(seconds, now - begun, timed, now - timed_from).iterations
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, episodes)
    gen, losses = torch.Generator().manual_seed(seed), []
    for step in range(1, episodes + 1):
        losses.append(_episode_step(net, opt, suite, gen, joint))
        sched.step()
        if log_every and step % log_every == 0:
            print(f"episode {step}: loss {sum(losses[-log_every:]) / log_every:.3f}, "
                  f"{time.perf_counter() - begun:.0f} s", flush=True)
    return net.eval(), episodes, time.perf_counter() - begun


@torch.no_grad()
def protonet_accuracy(net: nn.Module, tasks: Any, ways: int) -> Tensor:
    """Query accuracy ``[tasks]`` of ``net`` (in its current mode) on a batch of test episodes."""
    tasks = tasks.to(next(net.parameters()).device)
    return torch.stack([
        (episode_logits(net, tasks.x_support[i], tasks.y_support[i], tasks.x_query[i], ways, False)
         .argmax(1) == tasks.y_query[i]).float().mean()
        for i in range(tasks.y_query.shape[0])]).cpu()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder with images_background_small1/2 (zips or folders)")
    p.add_argument("--episodes", type=int, default=1500, help="training episodes (one per step)")
    p.add_argument("--ways", type=int, default=20, help="training ways (tests are 20-way 1-shot)")
    p.add_argument("--query", type=int, default=5, help="query images per class")
    p.add_argument("--filters", type=int, default=64)
    p.add_argument("--norm", choices=("group", "batch"), default="group")
    p.add_argument("--joint-norm", action="store_true",
                   help="with --norm batch: normalize support and query as one batch (train and test)")
    p.add_argument("--test-episodes", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from omniglot_small import (  # the same data and test episodes
        data_source,
        held_out_suites,
        resolve_data_dir,
    )

    if args.joint_norm and args.norm != "batch":
        p.error("--joint-norm needs --norm batch")
    data_dir = resolve_data_dir(args.data_dir)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train = get_suite("omniglot", data_dir=data_source(data_dir, "images_background_small1"),
                      val_fraction=0, test_fraction=0, ways=args.ways, shots=1, query=args.query)
    tests = held_out_suites(data_source(data_dir, "images_background_small2"),
                         {"ways": 20, "shots": 1, "query": args.query, "filters": args.filters},
                         rotated=True)
    net, _, train_s = train_protonet(train, args.filters, episodes=args.episodes, norm=args.norm,
                                     joint=args.joint_norm, seed=args.seed, log_every=250)
    print(f"\n{args.episodes} {args.ways}-way episodes, {args.filters} filters, {args.norm} norm, "
          f"{train_s:.0f} s; "
          f"20-way 1-shot test, {args.test_episodes} episodes, accuracy % ± 95% CI\n")
    print("| test statistics | " + " | ".join(tests) + " |")
    print("|---" * (len(tests) + 1) + "|")
    with torch.no_grad():
        # population first: in training mode, batch norm would fold test batches into its running
        # statistics
        modes = (("population (running)", False), ("batch", True)) if args.norm == "batch" else (
            ("each image alone (GroupNorm)", False),)
        for label, training_mode in modes:
            net.train(training_mode)
            cells = []
            for suite in tests.values():
                gen_test = torch.Generator().manual_seed(123)
                accs = []
                for _ in range(args.test_episodes):
                    b = suite.sample(1, gen_test, split="test")
                    logits = episode_logits(net, b.x_support[0], b.y_support[0], b.x_query[0], 20,
                                            args.joint_norm)
                    accs.append((logits.argmax(1) == b.y_query[0]).float().mean())
                mean, ci = mean_ci(torch.stack(accs))
                cells.append(f"{100 * float(mean):.1f} ± {100 * float(ci):.1f}")
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
