"""A Prototypical Network written outside the framework: a check on the framework's own figures.

The README compares Meta-SGD + prototype head with a Prototypical Network trained in the framework
(``fomaml``, prototype head, inner lr ~0). This script trains one the textbook way instead: a plain
conv4 with ``nn.BatchNorm2d``, squared Euclidean distances to class means, Adam 1e-3 with a cosine
schedule, one episode per step. Only the episodes come from the library (the same Omniglot suite,
splits and rotations as ``omniglot_small.py``), so any difference lies in the learner, not the data.
It also tries the two batch-norm choices a ProtoNet implementation can make: support and query
normalized as one batch or separately, and batch or population (running) statistics at test time.

    python benchmarks/protonet_reference.py --data-dir DIR [--episodes 1500] [--ways 20]

Measured 2026-11-27 (one thread of the shared 2-core CPU, 64 filters, 1,500 20-way 1-shot
episodes with 5 queries per class, 500 test episodes): see the README's Omniglot section.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omniglot_small import _data_dir, _source, _test_suites  # the same data and test episodes
from torch import Tensor, nn

from metaopt_tuner.evaluation import mean_ci
from metaopt_tuner.tasks import get_suite


def conv4(filters: int) -> nn.Module:
    """The standard embedding: 4 x [3x3 conv, batch norm, ReLU, 2x2 max-pool], flattened."""
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(1 if i == 0 else filters, filters, 3, padding=1),
                   nn.BatchNorm2d(filters), nn.ReLU(), nn.MaxPool2d(2)]
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder with images_background_small1/2 (zips or folders)")
    p.add_argument("--episodes", type=int, default=1500, help="training episodes (one per step)")
    p.add_argument("--ways", type=int, default=20, help="training ways (tests are 20-way 1-shot)")
    p.add_argument("--query", type=int, default=5, help="query images per class")
    p.add_argument("--filters", type=int, default=64)
    p.add_argument("--joint-norm", action="store_true",
                   help="normalize support and query as one batch (train and test)")
    p.add_argument("--test-episodes", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    data_dir = _data_dir(args.data_dir)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train = get_suite("omniglot", data_dir=_source(data_dir, "images_background_small1"),
                      val_fraction=0, test_fraction=0, ways=args.ways, shots=1, query=args.query)
    tests = _test_suites(_source(data_dir, "images_background_small2"),
                         {"ways": 20, "shots": 1, "query": args.query, "filters": args.filters},
                         rotated=True)
    net = conv4(args.filters)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.episodes)
    gen = torch.Generator().manual_seed(args.seed)
    begun, losses = time.perf_counter(), []
    for step in range(1, args.episodes + 1):
        b = train.sample(1, gen, split="train")
        logits = episode_logits(net, b.x_support[0], b.y_support[0], b.x_query[0], args.ways,
                                args.joint_norm)
        loss = F.cross_entropy(logits, b.y_query[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 250 == 0:
            print(f"episode {step}: loss {sum(losses[-250:]) / 250:.3f}, "
                  f"{time.perf_counter() - begun:.0f} s", flush=True)
    train_s = time.perf_counter() - begun

    print(f"\n{args.episodes} {args.ways}-way episodes, {args.filters} filters, {train_s:.0f} s; "
          f"20-way 1-shot test, {args.test_episodes} episodes, accuracy % ± 95% CI\n")
    print("| test statistics | " + " | ".join(tests) + " |")
    print("|---" * (len(tests) + 1) + "|")
    with torch.no_grad():
        # population first: in training mode, batch norm would fold test batches into its running
        # statistics
        for label, training_mode in (("population (running)", False), ("batch", True)):
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
