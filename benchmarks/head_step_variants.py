"""Variants of the head's inner steps on frozen sentence embeddings (issue 27, item 4): a probe.

Outside the library, in feature space, so one variant meta-trains in minutes: CLINC150's in-scope
utterances embedded once by a local sentence-transformers folder (``--encoder``, cached in
``--cache``), the intents suite's default domain split (test: auto_and_commute, credit_cards,
work; validation: travel; training: the other six), and a prototype head adapted by ``--steps``
Meta-SGD steps with per-feature rates shared across classes (one row per step), meta-trained with
Adam on episodes of 2-45 classes and 1-``--max-shots`` shots, the feature scale (the logits'
temperature) learned from ``--s0``. Variants:

* ``--loss``: the support loss's reduction: ``mean`` over examples (the library's), ``classsum``
  (per-class means summed: a class row's step does not shrink as classes are added),
  ``sqrtclass`` (the mean times the square root of the number of classes: between the two) or
  ``sum``;
* ``--learn-tau``: a learned temperature per step on the support logits (from ``--tau0``), which
  keeps the support loss from saturating;
* ``--anytime``: the weight of the query loss after each step before the last;
* ``--head-whitening A``: the steps start from the library's whitened prototype head
  (``prototype_head(..., whitening=A)``) instead of the plain one.

``--features FILE`` replaces CLINC150 by any saved features with their labels and split (an
image artifact's body through ``body_features.py``; ``--query`` queries per class).

It prints, for test episodes of each ``--ways`` (45) and ``--shots``: nearest centroid, the adapted head,
logistic regression (scikit-learn, ``C`` picked on six 15-way validation tasks) with the paired
difference, and the mean query loss after each step. Measured variants: the Benchmarks page, "Any
task shape (issue 27)".

    python benchmarks/head_step_variants.py --data-dir DATA/clinc150 --encoder MINILM_FOLDER \\
        --loss mean --s0 4 --anytime 0.1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from metaopt_tuner.models.proto_head import prototype_head

TEST_DOMAINS, VAL_DOMAINS = ("auto_and_commute", "credit_cards", "work"), ("travel",)
QUERY = 15


def embeddings(args: argparse.Namespace) -> tuple[torch.Tensor, list[str]]:
    """Every in-scope CLINC150 utterance embedded once (unit length), cached in ``--cache``."""
    if not os.path.exists(args.cache):
        from sentence_transformers import SentenceTransformer

        with open(os.path.join(args.data_dir, "data_full.json")) as fh:
            data = json.load(fh)
        rows = data["train"] + data["val"] + data["test"]
        model = SentenceTransformer(args.encoder, device="cpu")
        emb = model.encode([r[0] for r in rows], batch_size=256, convert_to_tensor=True,
                           normalize_embeddings=True, show_progress_bar=False)
        os.makedirs(os.path.dirname(args.cache) or ".", exist_ok=True)
        torch.save({"emb": emb.float(), "labels": [r[1] for r in rows]}, args.cache)
    saved = torch.load(args.cache)
    return saved["emb"], saved["labels"]


class Episodes:
    """Seeded episodes of the default domain split's classes (or of ``--features``' split)."""

    query = QUERY

    def __init__(self, args: argparse.Namespace) -> None:
        if args.features:  # {"emb", "labels", "split": {"train", "val", "test": [label, ...]}}
            saved = torch.load(args.features)
            self.emb, labels, self.split = saved["emb"], saved["labels"], saved["split"]
            self._rows(labels)
            return
        self.emb, labels = embeddings(args)
        with open(os.path.join(args.data_dir, "domains.json")) as fh:
            domains = json.load(fh)
        held = TEST_DOMAINS + VAL_DOMAINS
        self.split = {"test": [c for d in TEST_DOMAINS for c in domains[d]],
                      "val": [c for d in VAL_DOMAINS for c in domains[d]],
                      "train": [c for d in domains if d not in held for c in domains[d]]}
        self._rows(labels)

    def _rows(self, labels: list[str]) -> None:
        rows: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            rows.setdefault(label, []).append(i)
        self.rows = {k: torch.tensor(v) for k, v in rows.items()}

    def draw(self, split: str, ways: int, shots: int, gen: torch.Generator):
        classes = self.split[split]
        xs, ys, xq, yq = [], [], [], []
        for j, c in enumerate(torch.randperm(len(classes), generator=gen)[:ways].tolist()):
            ix = self.rows[classes[c]]
            ix = ix[torch.randperm(len(ix), generator=gen)[: shots + self.query]]
            xs.append(self.emb[ix[:shots]])
            xq.append(self.emb[ix[shots:]])
            ys += [j] * shots
            yq += [j] * self.query
        return torch.cat(xs), torch.tensor(ys), torch.cat(xq), torch.tensor(yq)


class HeadSteps(torch.nn.Module):
    """The meta-parameters: log feature scale, per-step log temperatures and log rates."""

    def __init__(self, args: argparse.Namespace, features: int) -> None:
        super().__init__()
        k = args.steps
        self.args = args
        self.log_s = torch.nn.Parameter(torch.tensor(math.log(args.s0)))
        self.log_tau = torch.nn.Parameter(torch.full((k,), math.log(args.tau0)),
                                          requires_grad=bool(args.learn_tau))
        self.log_rw = torch.nn.Parameter(torch.full((k, features), math.log(args.lr0)))
        self.log_rb = torch.nn.Parameter(torch.full((k,), math.log(args.lr0)))
        self.log_trust = torch.nn.Parameter(torch.full((k,), math.log(args.trust0)),
                                            requires_grad=bool(args.trust))
        self.log_nu = torch.nn.Parameter(torch.tensor(math.log(args.nu0)),
                                         requires_grad=args.whiten != "none")
        self.log_var = torch.nn.Parameter(torch.tensor(math.log(args.var0)),
                                          requires_grad=args.whiten != "none")
        # per-step pull of the head back toward its prototype start (an L2 prior's fixed point)
        self.decay_logit = torch.nn.Parameter(torch.full((k,), math.log(args.decay0 / (1 - args.decay0))),
                                              requires_grad=bool(args.decay))

    def whitened(self, xs, onehot, xq):
        """Features whitened by the support set's shrunk covariance: ``L^-1 x`` for
        ``S = (nu I + D^T D / var) / (nu + n) = L L^T``, with ``D`` the support features minus
        their class means (``within``) or their mean (``total``), ``n`` its degrees of freedom;
        with no spread (1 shot, ``within``) ``S = I`` and nothing changes."""
        if self.args.whiten == "none":
            return xs, xq
        if self.args.whiten == "within":
            means = onehot @ (onehot.t() @ xs / onehot.sum(0)[:, None])
            dof = len(xs) - onehot.shape[1]
        else:
            means = xs.mean(0, keepdim=True)
            dof = len(xs) - 1
        d = xs - means
        nu = self.log_nu.exp()
        eye = torch.eye(xs.shape[1], dtype=xs.dtype)
        cov = (nu * eye + d.t() @ d / self.log_var.exp()) / (nu + dof)
        chol = torch.linalg.cholesky(cov)
        solve = lambda x: torch.linalg.solve_triangular(chol, x.t(), upper=False).t()  # noqa: E731
        return solve(xs), solve(xq)

    def forward(self, xs, ys, xq, ways: int) -> list[torch.Tensor]:
        """Query logits after 0..steps steps from the prototype head."""
        s = self.log_s.exp()
        onehot = F.one_hot(ys, ways).float()
        xs, xq = self.whitened(xs, onehot, xq)
        fs, fq = s * xs, s * xq
        zero = torch.zeros(ways, fs.shape[1], dtype=fs.dtype)  # the library's prototype head
        w, b = prototype_head(fs, ys, zero, zero[:, 0], self.args.head_whitening)
        w0, b0 = w, b
        out = [fq @ w.t() + b]
        n = len(ys)
        reduction = {"sum": 1.0, "classsum": ways / n, "sqrtclass": ways ** 0.5 / n,
                     "mean": 1.0 / n}[self.args.loss]
        self.support_curve = []
        for k in range(self.args.steps):
            tau = self.log_tau[k].exp()
            logits = tau * (fs @ w.t() + b)
            self.support_curve.append(F.cross_entropy(logits, ys))
            residual = logits.softmax(-1) - onehot  # d CE / d logits
            scale = tau * reduction
            dw = self.log_rw[k].exp() * (scale * residual.t() @ fs)
            db = self.log_rb[k].exp() * (scale * residual.sum(0))
            if self.args.trust:  # each class row's step at most the learned radius long
                radius = self.log_trust[k].exp()
                norm = (dw.square().sum(1) + db.square()).clamp(min=1e-24).sqrt()
                shrink = (radius / norm).clamp(max=1.0)
                dw, db = dw * shrink[:, None], db * shrink
            before = self.support_curve[-1]
            for _ in range(self.args.safe):  # halve the step while the support loss would rise
                after = F.cross_entropy(tau * (fs @ (w - dw).t() + (b - db)), ys)
                keep = (after <= before).to(dw.dtype)
                dw, db = dw * (keep + (1 - keep) * 0.5), db * (keep + (1 - keep) * 0.5)
            w, b = w - dw, b - db
            if self.args.decay:
                lam = torch.sigmoid(self.decay_logit[k])
                w, b = w - lam * (w - w0), b - lam * (b - b0)
            out.append(fq @ w.t() + b)
        return out


def logreg_accuracy(xs, ys, xq, yq, c: float) -> float:
    model = LogisticRegression(C=c, max_iter=2000).fit(xs.numpy(), ys.numpy())
    return float((model.predict(xq.numpy()) == yq.numpy()).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="the CLINC150 folder (data_full.json, "
                   "domains.json)")
    p.add_argument("--encoder", help="a local sentence-transformers folder")
    p.add_argument("--features", help="instead of CLINC150: a torch file of features, their "
                   "labels and a train / val / test split of the labels (e.g. an image body's)")
    p.add_argument("--query", type=int, default=QUERY, help="queries per class")
    p.add_argument("--val-ways", type=int, default=15, help="widths of the LR's tuning tasks")
    p.add_argument("--cache", default="runs/clinc150-embeddings.pt")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--iters", type=int, default=1500)
    p.add_argument("--meta-batch", type=int, default=4)
    p.add_argument("--loss", choices=("mean", "classsum", "sqrtclass", "sum"), default="mean")
    p.add_argument("--learn-tau", type=int, default=0)
    p.add_argument("--tau0", type=float, default=1.0)
    p.add_argument("--s0", type=float, default=4.0)
    p.add_argument("--lr0", type=float, default=1.0)
    p.add_argument("--anytime", type=float, default=0.1)
    p.add_argument("--whiten", choices=("none", "within", "total"), default="none",
                   help="whiten the features by the support set's shrunk covariance")
    p.add_argument("--head-whitening", type=float, default=None,
                   help="start from the library's whitened prototype head at this strength")
    p.add_argument("--nu0", type=float, default=10.0, help="the covariance prior's strength")
    p.add_argument("--var0", type=float, default=1.0 / 768, help="its variance per feature")
    p.add_argument("--safe", type=int, default=0,
                   help="halve a step up to this many times while the support loss would rise")
    p.add_argument("--trust", type=int, default=0, help="bound each class row's step length")
    p.add_argument("--trust0", type=float, default=1.0, help="the bound's initial value")
    p.add_argument("--decay", type=int, default=0,
                   help="learn a per-step pull of the head back toward its prototype start")
    p.add_argument("--decay0", type=float, default=0.01, help="the pull's initial fraction")
    p.add_argument("--save", help="save the meta-trained head's state here")
    p.add_argument("--load", help="load a saved head's state instead of meta-training")
    p.add_argument("--skip-logreg", action="store_true", help="no logistic regression column")
    p.add_argument("--max-shots", type=int, default=50)
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--shots", type=int, nargs="*", default=[1, 5, 20, 50])
    p.add_argument("--ways", type=int, nargs="*", default=[45], help="test widths")
    args = p.parse_args()
    if not args.features and not (args.data_dir and args.encoder):
        p.error("give --features, or --data-dir and --encoder")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    episodes = Episodes(args)
    episodes.query = args.query
    max_ways = min(45, len(episodes.split["train"]))
    head = HeadSteps(args, episodes.emb.shape[1])
    opt = torch.optim.Adam([q for q in head.parameters() if q.requires_grad], lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    began = time.time()
    if args.load:
        head.load_state_dict(torch.load(args.load))
    for it in range(0 if args.load else args.iters):
        loss = torch.zeros(())
        for _ in range(args.meta_batch):
            ways = int(torch.randint(2, max_ways + 1, (1,), generator=gen))
            shots = int(torch.randint(1, args.max_shots + 1, (1,), generator=gen))
            xs, ys, xq, yq = episodes.draw("train", ways, shots, gen)
            out = head(xs, ys, xq, ways)
            task = F.cross_entropy(out[-1], yq)
            task = task + args.anytime * sum(F.cross_entropy(o, yq) for o in out[:-1])
            loss = loss + task / args.meta_batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 250 == 0 or it == args.iters - 1:
            taus = [round(t, 3) for t in head.log_tau.exp().tolist()]
            print(f"iteration {it}: meta-loss {loss.item():.4f}, scale {head.log_s.exp().item():.2f}"
                  f", temperatures {taus}, nu {head.log_nu.exp().item():.3g}, var "
                  f"{head.log_var.exp().item():.3g} ({time.time() - began:.0f} s)", flush=True)
    if args.save:
        torch.save(head.state_dict(), args.save)
    for ways, shots in [(w, k) for w in args.ways for k in args.shots]:
        val_gen = torch.Generator().manual_seed(100 + shots)
        val = [episodes.draw("val", args.val_ways, shots, val_gen) for _ in range(6)]
        grid = [1.0, 10.0, 100.0, 1000.0] if shots > 1 else [1.0, 10.0]
        scores = {} if args.skip_logreg else {c: np.mean([logreg_accuracy(*t, c) for t in val]) for c in grid}
        best = max(scores, key=scores.get) if not args.skip_logreg else 1.0
        test_gen = torch.Generator().manual_seed(1000 + shots)
        centroid, adapted, logreg, curve = [], [], [], np.zeros(args.steps + 1)
        support_curve = np.zeros(args.steps)
        for _ in range(args.episodes):
            xs, ys, xq, yq = episodes.draw("test", ways, shots, test_gen)
            with torch.no_grad():
                out = head(xs, ys, xq, ways)
            centroid.append(float((out[0].argmax(1) == yq).float().mean()))
            adapted.append(float((out[-1].argmax(1) == yq).float().mean()))
            logreg.append(0.0 if args.skip_logreg else logreg_accuracy(xs, ys, xq, yq, best))
            curve += np.array([float(F.cross_entropy(o, yq)) for o in out])
            support_curve += np.array([float(v) for v in head.support_curve])
        c, a, lr = (np.array(v) * 100 for v in (centroid, adapted, logreg))
        d = a - lr
        ci = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
        print(f"{ways}-way {shots}-shot: centroid {c.mean():.1f}, adapted head {a.mean():.1f}, "
              f"logistic regression (C = {best:g}) {lr.mean():.1f}, head - LR {d.mean():+.2f} "
              f"± {ci:.2f}; query loss by step {np.round(curve / args.episodes, 3).tolist()}; "
              f"support loss before each step "
              f"{np.round(support_curve / args.episodes, 3).tolist()}",
              flush=True)


if __name__ == "__main__":
    main()
