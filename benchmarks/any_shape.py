"""Any task shape (issue 27): one artifact against the baselines at every width and shot count.

For an artifact made by ``metaopt train`` (``--suite omniglot``: held-out alphabets; ``--suite
intents`` with the encoder recipe: held-out CLINC150 domains, frozen all-MiniLM-L6-v2 lower
layers), one table over widths (``--ways``: 5, 20 and ``all``, the test split's number of
classes) x shots (``--shots``: 1, 5, 20 and 50 for intents; 1, 5 and 15 for Omniglot, whose
characters have 20 drawings, 5 of them queries; a cell the classes cannot fill is skipped). Rows
of every cell, all on the same held-out episodes (episode ``i`` is the artifact's suite's
``fixed_tasks(1, split, seed=SEED + i)`` at that shape, the library's seeded draw):

* nearest centroid on the artifact's features;
* logistic regression on the same features (scikit-learn, L-BFGS to convergence: up to 10,000
  iterations; its ``C`` picked from 1e-2 .. 1e4 on validation tasks of the same shape);
* AdamW fine-tuning of exactly the parameters the artifact adapts (the head alone, on the same
  features, for the head-alone recipes; else every weight), from the artifact's starting head
  (its prototypes, whitened where it whitens them), its learning rate, weight decay and step
  count (1 to 100) tuned by Optuna (``--adamw-trials``) on validation tasks of the same shape;
  its tuning seconds are printed with the table;
* SetFit (``--setfit``, intents only, the ``setfit`` extra; very slow): the encoder folder
  fine-tuned on each episode's texts, ``suite.fixed_episode_texts`` of the same episodes;
* the artifact at 0 steps and after its steps (``--steps``, default the artifact's), adapted by
  the library (``Artifact.to_learner(suite).adaptation_curve``).

"The same features": the baselines read the artifact's own feature extractor (its meta-learned
theta, ``forward(x, head=False)``, the support set's statistics normalizing the queries where the
model does so), as the head-alone recipes of both suites adapt the head on those features.
Validation tasks come from the artifact's validation split at the same shots and the same width,
or at the split's width where it has fewer classes (CLINC150's default validation domain holds 15
intents; the line under the table says so); a split without classes falls back to the training
split, also said there.

Each row gives accuracy % (mean ± 95% CI over the episodes), its paired difference to the artifact
after its steps (same episodes, ± 95% CI), and seconds per task: wall time of adapting one task
and scoring its queries, the baselines' including the forward pass that computes their features;
the tuning seconds of logistic regression and AdamW (once per cell) in a column of their own.

    python benchmarks/any_shape.py --suite omniglot --artifact RUN/artifact \\
        --data-dir DATA/omniglot/images_background_small1.zip
    python benchmarks/any_shape.py --suite intents --artifact RUN/artifact \\
        --data-dir DATA/clinc150 --encoder MINILM_FOLDER

``--data-dir`` must be the data the artifact was trained on for ``--split test`` (its held-out
classes); ``--split all`` scores every class of data it never saw (the baselines then tuned on
the validation split of ``--tune-data-dir``, the training data). ``--quick`` is a smoke test
(two episodes, two trials, one validation task, the artifact's own width and 1 shot unless
``--ways`` / ``--shots`` say otherwise). Measured tables: the Benchmarks page, "Any task shape
(issue 27)".
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metaopt_tuner.artifact import Artifact, load_artifact
from metaopt_tuner.errors import ConfigError, DataError, MetaOptError
from metaopt_tuner.evaluation import mean_ci, suite_for_split
from metaopt_tuner.models.proto_head import HEAD_BIAS, HEAD_WEIGHT, prototype_head
from metaopt_tuner.tasks.base import Task, TaskBatch, TaskSuite

SUITES = ("omniglot", "intents")
DEFAULT_SHOTS = {"omniglot": [1, 5, 15], "intents": [1, 5, 20, 50]}
DEFAULT_WAYS = ["5", "20", "all"]
#: logistic regression's inverse regularization strengths tried on the validation tasks
C_GRID = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
ADAMW_MAX_STEPS = 100
CENTROID, LOGREG, ADAMW, SETFIT = ("nearest centroid", "logistic regression (C tuned)",
                                   "AdamW fine-tuning (Optuna-tuned)", "SetFit")
ART0 = "artifact, 0 steps"


def art_steps_name(steps: int) -> str:
    return f"artifact after {steps} step(s)"


# ----------------------------------------------------------------------------- suites, episodes
def make_suite(art: Artifact, args: argparse.Namespace, split: str, ways: int, shots: int) -> TaskSuite:
    """The artifact's suite at ``ways`` x ``shots`` for ``split``, on ``--data-dir`` (under
    ``--split all``, whose classes are all test classes, the tuning splits read
    ``--tune-data-dir``), with ``--query`` and ``--encoder`` when given (each split is checked
    against ``ways`` where it is drawn, so a test width wider than the validation split is
    fine)."""
    options: dict[str, Any] = {"ways": ways, "shots": shots}
    data_dir = args.tune_data_dir if args.split == "all" and split != "all" else args.data_dir
    options["data_dir"] = str(data_dir)
    if args.query is not None:
        options["query"] = args.query
    if args.encoder is not None:
        options["encoder"] = str(args.encoder)
    suite = suite_for_split(art, split, **options)
    suite.load()
    return suite


def split_classes(art: Artifact, args: argparse.Namespace, split: str) -> int:
    """Classes of ``split``; 0 when a tuning split has none."""
    try:
        suite = make_suite(art, args, split, 2, 1)
        return int(suite.split_summary(split)["num_classes"])
    except (ConfigError, DataError):
        if split == args.split:
            raise
        return 0


def episodes(suite: TaskSuite, split: str, count: int, seed: int) -> list[Task]:
    """Episode ``i`` is ``suite.fixed_tasks(1, split, seed + i)``: the library's seeded draw, one
    task at a time (wide many-shot text episodes are large)."""
    return [suite.fixed_tasks(1, split=split, seed=seed + i).task(0) for i in range(count)]


# ----------------------------------------------------------------------------- features, heads
@torch.no_grad()
def features(model: nn.Module, task: Task) -> tuple[Tensor, Tensor]:
    """Support and query features of ``model`` (the artifact's theta loaded), as the learner's
    head-alone path computes them: queries normalized by the support set's statistics where the
    model normalizes that way."""
    xs, xq = task.x_support, task.x_query
    if getattr(model, "uses_reference", False):
        both = model(xq, head=False, reference=xs, with_reference=True)
        return both[: xs.shape[0]], both[xs.shape[0]:]
    return model(xs, head=False), model(xq, head=False)


def centroid_accuracy(fs: Tensor, ys: Tensor, fq: Tensor, yq: Tensor, ways: int) -> float:
    protos = torch.zeros(ways, fs.shape[1], dtype=fs.dtype).index_add_(0, ys, fs)
    protos /= torch.bincount(ys, minlength=ways).clamp(min=1).unsqueeze(1).to(fs.dtype)
    return float((torch.cdist(fq, protos).argmin(-1) == yq).double().mean())


def logreg_accuracy(fs: Tensor, ys: Tensor, fq: Tensor, yq: Tensor, c: float) -> tuple[float, bool]:
    """Query accuracy of an L2 logistic regression fitted with L-BFGS; and whether it converged."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf = LogisticRegression(C=c, max_iter=10_000).fit(fs.double().numpy(), ys.numpy())
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    pred = torch.as_tensor(clf.predict(fq.double().numpy()))
    return float((pred == yq).double().mean()), converged


def _head_from_prototypes(fs: Tensor, ys: Tensor, ways: int,
                          whitening: float | None) -> tuple[Tensor, Tensor]:
    """The artifact's starting head: prototypes, whitened as the artifact whitens them."""
    zero_w = torch.zeros(ways, fs.shape[1], dtype=fs.dtype)
    return prototype_head(fs, ys, zero_w, torch.zeros(ways, dtype=fs.dtype), whitening)


def adamw_head(fs: Tensor, ys: Tensor, fq: Tensor, yq: Tensor, ways: int,
               hp: dict[str, Any], whitening: float | None = None) -> tuple[float, float]:
    """AdamW on the head alone (from the artifact's prototype head) over fixed features:
    (accuracy, loss)."""
    w, b = (t.clone().requires_grad_() for t in _head_from_prototypes(fs, ys, ways, whitening))
    opt = torch.optim.AdamW([w, b], lr=hp["lr"], weight_decay=hp["weight_decay"])
    for _ in range(hp["steps"]):
        opt.zero_grad()
        F.cross_entropy(fs @ w.T + b, ys).backward()
        opt.step()
    with torch.no_grad():
        out = fq @ w.T + b
        return float((out.argmax(-1) == yq).double().mean()), float(F.cross_entropy(out, yq))


def adamw_all(model: nn.Module, task: Task, ways: int, hp: dict[str, Any],
              whitening: float | None = None) -> tuple[float, float]:
    """AdamW on every weight from theta and the artifact's prototype head: (accuracy, loss)."""
    xs, ys, xq, yq = task.x_support, task.y_support, task.x_query, task.y_query
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    fs, _ = features(model, task)
    params[HEAD_WEIGHT], params[HEAD_BIAS] = _head_from_prototypes(fs, ys, ways, whitening)
    p = {k: v.requires_grad_() for k, v in params.items()}
    opt = torch.optim.AdamW(list(p.values()), lr=hp["lr"], weight_decay=hp["weight_decay"])
    query_kw: dict[str, Any] = {"reference": xs} if getattr(model, "uses_reference", False) else {}
    for _ in range(hp["steps"]):
        opt.zero_grad()
        F.cross_entropy(functional_call(model, p, (xs,)), ys).backward()
        opt.step()
    with torch.no_grad():
        out = functional_call(model, p, (xq,), query_kw)
        return float((out.argmax(-1) == yq).double().mean()), float(F.cross_entropy(out, yq))


# ----------------------------------------------------------------------------- tuning
def tune_logreg(val: list[tuple[Tensor, Tensor, Tensor, Tensor]]) -> float:
    """The C of :data:`C_GRID` with the best mean validation accuracy (the smallest on a tie)."""
    scores = [sum(logreg_accuracy(*v, c)[0] for v in val) / len(val) for c in C_GRID]
    return C_GRID[max(range(len(C_GRID)), key=lambda i: (scores[i], -i))]


def tune_adamw(score: Callable[[int, dict[str, Any]], tuple[float, float]], count: int, trials: int,
               seed: int) -> dict[str, Any]:
    """Optuna (TPE) over learning rate, weight decay and steps: the mean validation accuracy,
    ties broken by the lower mean query loss. ``score(i, hp)`` scores validation task ``i``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        hp = {"lr": trial.suggest_float("lr", 1e-5, 1.0, log=True),
              "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1.0, log=True),
              "steps": trial.suggest_int("steps", 1, ADAMW_MAX_STEPS, log=True)}
        results = [score(i, hp) for i in range(count)]
        acc = sum(r[0] for r in results) / count
        loss = sum(r[1] for r in results) / count
        return acc - 1e-3 * min(loss, 100.0)

    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return dict(study.best_params)


# ----------------------------------------------------------------------------- one cell
def run_cell(art: Artifact, args: argparse.Namespace, ways: int, shots: int,
             val_split: str, val_classes: int) -> dict[str, Any]:
    """Every method on the same ``--episodes`` test episodes at ``ways`` x ``shots``."""
    suite = make_suite(art, args, args.split, ways, shots)
    model = art.initialize(art.build_model().to(dtype=art.dtype))
    head_only = art.learner_config.get("inner_params", "all") == "head"
    whitening = art.learner_config.get("head_whitening")  # AdamW starts where the artifact does
    steps = art.inner_steps if args.steps is None else args.steps
    notes: list[str] = []

    # tuning, on validation tasks of the same shape (or the validation split's width)
    val_ways = min(ways, val_classes)
    val_suite = make_suite(art, args, val_split, val_ways, shots)
    val_tasks = episodes(val_suite, val_split, args.tune_tasks, args.seed)
    val_feats = [(*features(model, t), t) for t in val_tasks]
    val_xy = [(fs, t.y_support, fq, t.y_query) for fs, fq, t in val_feats]
    begun = time.perf_counter()
    c = tune_logreg(val_xy)
    logreg_tune_s = time.perf_counter() - begun
    begun = time.perf_counter()
    if head_only:
        hp = tune_adamw(lambda i, h: adamw_head(*val_xy[i], val_ways, h, whitening), len(val_xy),
                        args.adamw_trials, args.seed)
    else:
        hp = tune_adamw(lambda i, h: adamw_all(model, val_tasks[i], val_ways, h, whitening),
                        len(val_tasks),
                        args.adamw_trials, args.seed)
    adamw_tune_s = time.perf_counter() - begun
    where = f"{val_split} split, {val_ways}-way {shots}-shot, {len(val_tasks)} tasks"
    notes.append(f"logistic regression C = {c:g} (tuned in {logreg_tune_s:.1f} s on the {where})")
    notes.append(f"AdamW {'head alone' if head_only else 'every weight'}: lr {hp['lr']:.3g}, "
                 f"weight decay {hp['weight_decay']:.3g}, {hp['steps']} steps "
                 f"({args.adamw_trials} Optuna trials, {adamw_tune_s:.1f} s of tuning on the {where})")

    tasks = episodes(suite, args.split, args.episodes, args.seed)
    texts = None
    if args.setfit:
        texts = [suite.fixed_episode_texts(1, split=args.split, seed=args.seed + i)[0]  # type: ignore[attr-defined]
                 for i in range(min(len(tasks), args.setfit_episodes or len(tasks)))]
    learner = art.to_learner(suite, inner_steps=steps)
    art_error: str | None = None
    acc: dict[str, list[float]] = {}
    query_loss: list[Tensor] = []
    secs: dict[str, list[float]] = {}
    unconverged = 0

    def record(name: str, value: float, seconds: float) -> None:
        acc.setdefault(name, []).append(100.0 * value)
        secs.setdefault(name, []).append(seconds)

    for i, task in enumerate(tasks):
        ys, yq = task.y_support, task.y_query
        begun = time.perf_counter()
        fs, fq = features(model, task)
        feat_s = time.perf_counter() - begun
        begun = time.perf_counter()
        record(CENTROID, centroid_accuracy(fs, ys, fq, yq, ways), feat_s + time.perf_counter() - begun)
        begun = time.perf_counter()
        value, converged = logreg_accuracy(fs, ys, fq, yq, c)
        record(LOGREG, value, feat_s + time.perf_counter() - begun)
        unconverged += not converged
        begun = time.perf_counter()
        if head_only:
            value = adamw_head(fs, ys, fq, yq, ways, hp, whitening)[0]
            record(ADAMW, value, feat_s + time.perf_counter() - begun)
        else:
            value = adamw_all(model, task, ways, hp, whitening)[0]
            record(ADAMW, value, time.perf_counter() - begun)
        if texts is not None and i < len(texts):
            from metaopt_tuner.compare.setfit_baseline import setfit_accuracy

            encoder = str(args.encoder)  # make_suite needed it: never the manifest's path
            begun = time.perf_counter()
            value = setfit_accuracy(encoder, texts[i], args.setfit_pairs, args.seed)
            record(SETFIT, value, time.perf_counter() - begun)
        if art_error is None:
            stacked = TaskBatch.stack([task])
            try:
                begun = time.perf_counter()
                zero = learner.adaptation_curve(stacked, 0).metric[0, 0]
                zero_s = time.perf_counter() - begun
                begun = time.perf_counter()
                outcome = learner.adaptation_curve(stacked, steps)
                after = outcome.metric[0, steps]
                after_s = time.perf_counter() - begun
                query_loss.append(outcome.loss[0].double())
            except (IndexError, RuntimeError, MetaOptError) as exc:
                art_error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                notes.append(f"the artifact's rows failed at {ways}-way: {art_error}")
            else:
                record(ART0, float(zero), zero_s)
                record(art_steps_name(steps), float(after), after_s)
    if unconverged:
        notes.append(f"logistic regression hit 10,000 iterations on {unconverged} episode(s)")
    loss_curve = None
    if query_loss:  # anytime: the artifact's mean query loss after each step
        per_task = torch.stack(query_loss)
        loss_curve = per_task.mean(0).tolist()
        changes = [mean_ci(per_task[:, t] - per_task[:, t - 1]) for t in range(1, steps + 1)]
        rises = [t for t, (mean, ci) in enumerate(changes, start=1) if mean > ci]
        curve_text = ", ".join(f"{v:.3f}" for v in loss_curve)
        notes.append(f"the artifact's mean query loss after 0..{steps} steps: {curve_text}; "
                     + (f"it rises beyond its CI at step(s) {rises}" if rises
                        else "it never rises beyond its CI from one step to the next"))

    reference = acc.get(art_steps_name(steps))
    rows = []
    for name, values in acc.items():
        v = torch.tensor(values, dtype=torch.float64)
        mean, ci = mean_ci(v)
        row = {"ways": ways, "shots": shots, "method": name, "episodes": len(values),
               "accuracy": float(mean), "ci95": float(ci),
               "seconds_per_task": sum(secs[name]) / len(values),
               "tuning_seconds": {LOGREG: logreg_tune_s, ADAMW: adamw_tune_s}.get(name)}
        if reference is not None:
            d_mean, d_ci = mean_ci(v - torch.tensor(reference[: len(values)], dtype=torch.float64))
            row["vs_artifact"], row["vs_artifact_ci95"] = float(d_mean), float(d_ci)
        rows.append(row)
    return {"ways": ways, "shots": shots, "rows": rows, "notes": notes,
            "adamw": {**hp, "tuning_seconds": adamw_tune_s, "trials": args.adamw_trials},
            "logreg_c": c, "logreg_tuning_seconds": logreg_tune_s, "val": where,
            "artifact_error": art_error, "artifact_query_loss": loss_curve}


def print_cell(cell: dict[str, Any]) -> None:
    shape = f"{cell['ways']}-way {cell['shots']}-shot"
    for row in cell["rows"]:
        diff = ("n/a" if "vs_artifact" not in row
                else f"{row['vs_artifact']:+.1f} ± {row['vs_artifact_ci95']:.1f}")
        first = row["episodes"] != cell["rows"][0]["episodes"]
        part = f" (first {row['episodes']} episodes)" if first else ""
        tuning = "" if row["tuning_seconds"] is None else f"{row['tuning_seconds']:.1f}"
        print(f"| {shape} | {row['method']}{part} | {row['accuracy']:.1f} ± {row['ci95']:.1f} | "
              f"{diff} | {row['seconds_per_task']:.3f} | {tuning} |", flush=True)
    for note in cell["notes"]:
        print(f"|   | ({note}) | | | | |", flush=True)


# ----------------------------------------------------------------------------- main
def parse_ways(values: list[str], test_classes: int) -> list[int]:
    out = []
    for v in values:
        w = test_classes if v == "all" else int(v)
        if w < 2:
            raise SystemExit(f"error: --ways {v}: at least 2 classes")
        if w > test_classes:
            print(f"(skipped {w}-way: the test split has {test_classes} classes)", flush=True)
            continue
        if w not in out:
            out.append(w)
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--suite", choices=SUITES, required=True)
    p.add_argument("--artifact", type=Path, required=True, help="an artifact made by `metaopt train`")
    p.add_argument("--data-dir", type=Path, required=True,
                   help="the suite's data: the data the artifact was trained on (its held-out "
                        "classes are the test split), or new data with --split all")
    p.add_argument("--tune-data-dir", type=Path, default=None,
                   help="with --split all: the data whose validation split tunes the baselines "
                        "(the artifact's training data)")
    p.add_argument("--encoder", type=Path, default=None,
                   help="intents: the sentence-transformers folder (all-MiniLM-L6-v2) the "
                        "artifact was trained on (needed: an artifact names no folder)")
    p.add_argument("--ways", nargs="+", default=None,
                   help="widths: numbers or 'all' (the test split's classes) [default: 5 20 all]")
    p.add_argument("--shots", type=int, nargs="+", default=None,
                   help="support examples per class [default: omniglot 1 5 15, intents 1 5 20 50]")
    p.add_argument("--query", type=int, default=None, help="queries per class [default: the artifact's]")
    p.add_argument("--episodes", type=int, default=100, help="test episodes per cell")
    p.add_argument("--adamw-trials", type=int, default=50)
    p.add_argument("--tune-tasks", type=int, default=8, help="validation tasks per cell for tuning")
    p.add_argument("--steps", type=int, default=None, help="the artifact's steps [default: its own]")
    p.add_argument("--split", choices=("test", "all"), default="test",
                   help="test: the artifact's held-out classes; all: every class of --data-dir")
    p.add_argument("--setfit", action="store_true", help="intents: SetFit rows (very slow)")
    p.add_argument("--setfit-episodes", type=int, default=0,
                   help="SetFit on the first N episodes of each cell [default: 0, all of them]")
    p.add_argument("--setfit-pairs", type=float, default=1.0,
                   help="share of SetFit's default training pairs [default: 1, its defaults]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="write every cell's rows here")
    p.add_argument("--quick", action="store_true", help="a smoke test: tiny everything")
    args = p.parse_args(argv)
    if args.split == "all" and args.tune_data_dir is None:
        p.error("--split all needs --tune-data-dir (the artifact's training data) for tuning")
    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return run(p, args, argv)
    with threadpool_limits(args.threads):  # scikit-learn's BLAS too
        return run(p, args, argv)


def run(p: argparse.ArgumentParser, args: argparse.Namespace,
        argv: list[str] | None) -> list[dict[str, Any]]:
    art = load_artifact(args.artifact)
    if art.suite_name != args.suite:
        p.error(f"the artifact was trained on the {art.suite_name} suite, not {args.suite}")
    if args.setfit and args.suite != "intents":
        p.error("--setfit reads texts: intents only")
    trained_ways = int(art.suite_options.get("ways", 5))
    if args.quick:
        args.episodes, args.adamw_trials, args.tune_tasks = 2, 2, 1
        args.ways = args.ways or [str(trained_ways)]
        args.shots = args.shots or [1]
        args.setfit_episodes = 1
    ways_given = args.ways or DEFAULT_WAYS
    shots_given = args.shots or DEFAULT_SHOTS[args.suite]
    test_classes = split_classes(art, args, args.split)
    val_split = "val"
    val_classes = split_classes(art, args, "val")
    if val_classes < 2:
        val_split, val_classes = "train", split_classes(art, args, "train")
    ranges = {k: v for k, v in art.suite_options.items() if k in ("train_ways", "train_shots")}
    shape = (", ".join(f"{k} {v}" for k, v in ranges.items()) if ranges
             else f"{trained_ways}-way")
    print(f"artifact {args.artifact}: {art.suite_name}, trained on {shape}, "
          f"{art.inner_steps} step(s), adapts {art.learner_config.get('inner_params', 'all')}; "
          f"{args.split} split {test_classes} classes, tuning on the {val_split} split "
          f"({val_classes} classes); {args.episodes} episodes per cell", flush=True)
    if val_split == "train":
        print("(the artifact's data has no validation classes: the baselines are tuned on "
              "training classes)", flush=True)
    cells = []
    print("\n| episodes | method | accuracy % | vs artifact after steps (paired) | s / task "
          "| tuning s |")
    print("|---|---|---|---|---|---|", flush=True)
    for ways in parse_ways(ways_given, test_classes):
        for shots in shots_given:
            try:
                cell = run_cell(art, args, ways, shots, val_split, val_classes)
            except (ConfigError, DataError) as exc:
                print(f"| {ways}-way {shots}-shot | skipped: {str(exc).splitlines()[0]} | | | | |",
                      flush=True)
                continue
            print_cell(cell)
            cells.append(cell)
    if args.json:
        args.json.write_text(json.dumps({"argv": argv, "args": {k: str(v) for k, v in vars(args).items()},
                                         "cells": cells}, indent=2))
    return cells


if __name__ == "__main__":
    main()
