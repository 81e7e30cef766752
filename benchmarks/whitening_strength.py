"""The whitened prototype head's strength on frozen features: the measurement behind a recipe's value.

Reads a features file (``body_features.py``: an image artifact's body on every drawing, labels and
a split by alphabet) and scores, on seeded episodes of ``--split`` at each ``--ways`` x
``--shots``, the nearest centroid, the library's whitened prototype head
(``prototype_head(..., whitening=a)``) at every ``--strengths`` value, and logistic regression
(scikit-learn, L-BFGS, ``C`` 1 and 10) on the same episodes; each row's paired difference to the
centroid with its 95% CI, and the heads' mean query cross-entropy (the prototype heads' logits as
the artifact's step starts from them). Pick the strength on ``--split val``; check it on ``--split test``.

    python benchmarks/body_features.py --artifact RUN/artifact --data-dir ../shared/data/omniglot \\
        --test Balinese,Korean --val Tagalog --out runs/omniglot-features.pt
    python benchmarks/whitening_strength.py --features runs/omniglot-features.pt --split val \\
        --ways 17 5 --shots 2 5 15
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from metaopt_tuner.models.proto_head import prototype_head


def draw(emb: torch.Tensor, rows: list[list[int]], ways: int, shots: int, query: int,
         rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """One episode: ``ways`` of the classes (``rows``: each class's example indices)."""
    xs, ys, xq, yq = [], [], [], []
    for label, c in enumerate(rng.choice(len(rows), ways, replace=False)):
        order = rng.permutation(rows[c])
        xs.append(emb[order[:shots]])
        xq.append(emb[order[shots:shots + query]])
        ys += [label] * shots
        yq += [label] * len(xq[-1])
    return torch.cat(xs), torch.tensor(ys), torch.cat(xq), torch.tensor(yq)


def head_scores(xs, ys, xq, yq, ways: int, whitening: float | None) -> tuple[float, float]:
    """Query accuracy and mean query cross-entropy of the (whitened) prototype head."""
    zero = torch.zeros(ways, xs.shape[1], dtype=xs.dtype)
    weight, bias = prototype_head(xs, ys, zero, zero[:, 0], whitening)
    logits = xq @ weight.T + bias
    return (float((logits.argmax(-1) == yq).double().mean()),
            float(torch.nn.functional.cross_entropy(logits, yq)))


def logreg_accuracy(xs, ys, xq, yq, c: float) -> float:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=5000).fit(xs.numpy(), ys.numpy())
    return float((model.predict(xq.numpy()) == yq.numpy()).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", required=True, help="a body_features.py file")
    p.add_argument("--split", choices=("train", "val", "test"), default="val")
    p.add_argument("--ways", type=int, nargs="+", default=[5, 20],
                   help="classes per episode (capped at the split's)")
    p.add_argument("--shots", type=int, nargs="+", default=[2, 5, 15])
    p.add_argument("--query", type=int, default=5, help="queries per class (at most)")
    p.add_argument("--strengths", type=float, nargs="+", default=[1, 2, 4, 6, 8, 12, 20])
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = torch.load(args.features)
    emb = data["emb"].double()
    index: dict[str, list[int]] = {}
    for i, label in enumerate(data["labels"]):
        index.setdefault(label, []).append(i)
    rows = [index[name] for name in data["split"][args.split]]
    print(f"{args.features}: {args.split} split, {len(rows)} classes, {emb.shape[1]} features")
    print("| episodes | head | accuracy % | vs centroid (paired) | query loss |")
    print("|---|---|---|---|---|")
    for ways in args.ways:
        ways = min(ways, len(rows))
        for shots in args.shots:
            rng = np.random.default_rng(args.seed)
            scores: dict[str, list[float]] = {}
            losses: dict[str, list[float]] = {}
            for _ in range(args.episodes):
                episode = draw(emb, rows, ways, shots, args.query, rng)
                heads = {"nearest centroid": None, **{f"whitened, strength {a:g}": a
                                                      for a in args.strengths}}
                for name, whitening in heads.items():
                    accuracy, loss = head_scores(*episode, ways, whitening)
                    scores.setdefault(name, []).append(accuracy)
                    losses.setdefault(name, []).append(loss)
                for c in (1.0, 10.0):
                    scores.setdefault(f"logistic regression, C = {c:g}", []).append(
                        logreg_accuracy(*episode, c))
            base = np.array(scores["nearest centroid"]) * 100
            for name, values in scores.items():
                v = np.array(values) * 100
                d = v - base
                ci = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
                loss = f"{np.mean(losses[name]):.3f}" if name in losses else ""
                print(f"| {ways}-way {shots}-shot | {name} | {v.mean():.1f} | {d.mean():+.2f} ± {ci:.2f} "
                      f"| {loss} |", flush=True)


if __name__ == "__main__":
    main()
