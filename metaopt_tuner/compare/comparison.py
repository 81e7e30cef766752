"""The comparison: the meta-learned optimizer against Optuna-tuned ordinary optimizers
(``report`` renders what it measured).

:func:`compare` runs the protocol (written into the report itself) and writes three files into
the output folder: ``results.json`` (every number), ``report.md`` (plots as PNG files beside it)
and ``report.html`` (self-contained: plots embedded as base64 PNG, no external resources).

Studies live in an Optuna storage (a SQLite file in the output folder by default), and the
pretrained initialization is cached there too, so an interrupted ``compare`` re-run resumes and
loses no finished trial. With one worker and a fixed seed the results are reproducible; with
several workers sharing a study, the trials each one samples depend on timing.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..artifact import Artifact
from ..errors import ConfigError
from ..models import supports_batched
from ..resolver import resolve_artifact
from ..stats import mean_ci
from ..tasks import suite_ref
from ..tasks.base import TaskSuite
from ..tasks.stream import TaskStream
from . import studies
from .baselines import (
    BASELINES,
    Curve,
    RandomInit,
    SharedInit,
    baseline_curve,
    get_baseline,
    oracle_tune,
    run_optimizer,
)
from .pretraining import load_or_pretrain
from .report import write_report
from .tuning import TuneResult, describe_pruner, pruner_warmup, study_name_for, tune

__all__ = [
    "ComparisonResult",
    "compare",
    "default_baselines",
    "meta_training_cost",
    "TARGETS",
]

FORMAT = "metaopt-tuner/comparison"
META = "meta-learned"
ORACLE = "oracle-adam"
CENTROID = "nearest-centroid"
#: (baseline, factor, relation) targets checked on the query loss; see the issue's protocol
TARGETS = [
    ("best from-scratch tuned baseline", ("adam", "sgd"), 0.5, "at most half of"),
    ("pretrained init + tuned Adam", ("adam-pretrained",), 1.0, "below"),
]


def default_baselines() -> list[str]:
    """The tuned four, plus every parameter-free optimizer whose package is installed."""
    from .baselines import OPTIMIZERS

    names = ["adam", "sgd", "adam-pretrained", "sgd-pretrained"]
    return names + [n for n, b in BASELINES.items() if not b.tuned and OPTIMIZERS[b.optimizer].available()]


def _curve_stats(loss: Tensor, metric: Tensor) -> dict[str, list[float]]:
    cols = range(loss.shape[1])
    ls = [tuple(map(float, mean_ci(loss[:, j]))) for j in cols]
    ms = [tuple(map(float, mean_ci(metric[:, j]))) for j in cols]
    return {"loss_mean": [m for m, _ in ls], "loss_ci95": [h for _, h in ls],
            "metric_mean": [m for m, _ in ms], "metric_ci95": [h for _, h in ms]}


def meta_training_cost(artifact: Artifact) -> dict[str, Any]:
    """Meta-training cost from the artifact's manifest, as far as it was recorded.

    Gradient evaluations (forward + backward over one task's data) are estimated as
    iterations x meta-batch x (inner steps + 1); second-order learners cost about twice that in
    arithmetic. Seconds come from the manifest's provenance when it recorded them.
    """
    training = artifact.training_config or {}
    provenance = dict(artifact.manifest.get("provenance") or {})
    seconds = None
    for key in ("seconds", "train_seconds", "duration_s", "wall_seconds", "duration"):
        value = provenance.get(key, artifact.metrics.get(key))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
            break
    # an artifact written mid-run (beside a checkpoint) records the iteration it was taken at
    done = artifact.metrics.get("iteration")
    iterations = done if isinstance(done, int) and done > 0 else training.get("iterations")
    batch = training.get("meta_batch")
    inner = training.get("inner_steps", artifact.inner_steps)
    # learners with learned rates also adapt through the tail past the horizon while training
    tail = artifact.manifest.get("tail", {}).get("steps", 0)
    grad_evals = None
    if isinstance(iterations, int) and isinstance(batch, int) and isinstance(inner, int):
        grad_evals = iterations * batch * (inner + int(tail) + 1)
    return {"what": "meta-training", "grad_evals": grad_evals, "seconds": seconds,
            "recorded": grad_evals is not None,
            "learner": artifact.learner_config.get("learner"),
            "iterations": iterations, "meta_batch": batch, "inner_steps": inner}


# --------------------------------------------------------------------------- progress
class _Progress:
    """A rich progress bar with one line per phase (trials, tasks); silent when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.lines: dict[str, Any] = {}

    @contextmanager
    def running(self) -> Iterator[_Progress]:
        if not self.enabled:
            yield self
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn()) as bar:
            self.bar = bar
            yield self
        self.bar = None

    def update(self, line: str, done: int, total: int) -> None:
        if self.bar is None:
            return
        if line not in self.lines:
            self.lines[line] = self.bar.add_task(line, total=total)
        self.bar.update(self.lines[line], completed=done, total=total)

    def callback(self, line: str) -> Callable[[int, int], None]:
        return lambda done, total: self.update(line, done, total)


# --------------------------------------------------------------------------- the comparison
@dataclass
class ComparisonResult:
    """What :func:`compare` measured (``data`` is results.json) and the files it wrote."""

    data: dict[str, Any]
    paths: dict[str, Path]

    def method(self, name: str) -> dict[str, Any]:
        for m in self.data["methods"]:
            if m["name"] == name:
                return m
        raise KeyError(name)


def _redact(url: str | None) -> str | None:
    return None if url is None else studies.redact_url(url)


def _method(name: str, label: str, kind: str, curve: Curve, *, hparams: dict[str, float] | None = None,
            tuning: TuneResult | None = None, setup: dict[str, Any] | None = None,
            tuning_cost: dict[str, Any] | None = None) -> dict[str, Any]:
    stats = _curve_stats(curve.loss, curve.metric)
    if tuning is not None:
        tuning_cost = {"trials": tuning.trials, "pruned": tuning.pruned, "grad_evals": tuning.grad_evals,
                       "seconds": tuning.seconds, "study": tuning.study_name,
                       "best_value": tuning.best_value}
    return {
        "name": name,
        "label": label,
        "kind": kind,
        "hparams": dict(hparams or {}),
        "tasks": int(curve.loss.shape[0]),
        "query_loss": {"mean": stats["loss_mean"][-1], "ci95": stats["loss_ci95"][-1]},
        "metric": {"mean": stats["metric_mean"][-1], "ci95": stats["metric_ci95"][-1]},
        "tuning": tuning_cost or {"trials": 0, "pruned": 0, "grad_evals": 0, "seconds": 0.0},
        "setup": setup,
        "adaptation": {"grad_evals": int(curve.grad_evals), "seconds": float(curve.seconds)},
        "curve": stats,
        "history": [list(h) for h in tuning.history] if tuning is not None else [],
    }


#: the file that marks a folder as a comparison's (a re-run resumes there)
COMPARE_MARKER = ".metaopt-compare"


def claim_compare_folder(out: Path) -> None:
    """Create ``out`` or take an earlier comparison's folder back; a non-empty folder that is
    not one (a user's own report.md, results.json, ...) is refused, never overwritten.

    Raises:
        ConfigError: ``out`` is a file, a foreign non-empty folder, or cannot be written.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    ours = (out / COMPARE_MARKER).is_file() or (out / "studies.db").is_file()
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise ConfigError(f"--out {out} exists, is not empty and is not a metaopt comparison; "
                          "choose a new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / COMPARE_MARKER).touch()
    except OSError as exc:
        raise ConfigError(f"cannot create --out {out}: {exc.strerror or exc}") from None


def compare(
    artifact: Artifact | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    suite: TaskSuite | None = None,
    steps: int = 10,
    tasks: int = 500,
    trials: int = 50,
    val_tasks: int = 100,
    oracle_tasks: int = 100,
    oracle_trials: int | None = None,
    baselines: Sequence[str] | None = None,
    storage: str | None = None,
    pretrain_steps: int = 2000,
    seed: int = 0,
    progress: bool = True,
    workers: int = 1,
    chunk: int | None = None,
) -> ComparisonResult:
    """Compare the artifact's meta-learned optimizer with tuned baselines on held-out tasks.

    Baselines are tuned on ``val_tasks`` meta-validation tasks (``trials`` Optuna trials each,
    resumable in ``storage``, default ``sqlite:///OUT/studies.db``), then every method adapts the
    same ``tasks`` test tasks for ``steps`` steps, drawn and adapted ``chunk`` at a time (default:
    derived from the tasks' size, see :class:`~metaopt_tuner.tasks.TaskStream`; any chunk gives
    the same results). The oracle tunes Adam's lr on each of the first ``oracle_tasks`` test
    tasks' own query set (0 skips it). Writes the report into ``out``.
    """
    for label, value in (("steps", steps), ("tasks", tasks), ("trials", trials), ("val-tasks", val_tasks)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{label} must be a positive integer, got {value}")
    if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
        raise ConfigError(f"the chunk must be a positive number of tasks, got {chunk!r}")
    if oracle_tasks < 0 or pretrain_steps < 1:
        raise ConfigError("oracle-tasks must be >= 0 and pretrain-steps positive")
    art = resolve_artifact(artifact)
    suite = suite if suite is not None else art.build_suite()
    if suite_ref(suite) != art.suite_name:
        raise ConfigError(f"the artifact was meta-trained on suite {art.suite_name!r}, not "
                          f"{suite_ref(suite)!r}")
    names = list(baselines) if baselines is not None else default_baselines()
    chosen = [get_baseline(n) for n in names]
    out = Path(out)
    claim_compare_folder(out)
    storage = storage or f"sqlite:///{(out / 'studies.db').resolve()}"
    oracle_trials = trials if oracle_trials is None else int(oracle_trials)
    oracle_n = min(int(oracle_tasks), tasks)

    model = art.build_model().to(dtype=torch.float32)
    if not supports_batched(model):
        oracle_n = 0  # the oracle's per-task learning rates need the hand-batched forward
    test = TaskStream(suite, tasks, split="test", seed=seed, chunk=chunk)  # built chunk by chunk
    val = suite.fixed_tasks(val_tasks, split="val", seed=seed)
    scratch = RandomInit(suite.build_model, seed=seed)
    methods: list[dict[str, Any]] = []
    bar = _Progress(progress)
    begun = time.perf_counter()
    with bar.running():
        # 1. the meta-learned optimizer: zero tuning on the new family
        learner = art.to_learner(suite)
        t0 = time.perf_counter()
        curve = learner.adaptation_curve(test.to(dtype=art.dtype), steps,
                                         on_progress=bar.callback(f"evaluate {META}"))
        meta_curve = Curve(curve.loss, curve.metric, tasks * steps, time.perf_counter() - t0)
        methods.append(_method(META, _meta_label(art), "meta", meta_curve, setup=meta_training_cost(art)))

        # 1b. nearest centroid on the suite's reference features: what a prototype head starts
        # from, so the meta-learned row shows what meta-training and the steps add to it
        if art.learner_config.get("head_init") == "prototypes":
            methods.append(_method(CENTROID, "Nearest centroid on the suite's reference model's "
                                   "features (untrained head, no steps, no tuning)", "reference",
                                   _centroid_curve(suite, test, steps)))

        # 2. the multi-task pretrained initialization (cached in the output folder)
        pre = None
        if any(b.init == "pretrained" for b in chosen):
            bar.update("pretrain (joint training)", 0, 1)
            pre = load_or_pretrain(suite, out, steps=pretrain_steps, seed=seed)
            bar.update("pretrain (joint training)", 1, 1)
        pre_setup = None if pre is None else {"what": "multi-task pretraining", **pre.cost()}

        # 3. baselines: tune on meta-validation tasks, then adapt the test tasks
        for b in chosen:
            init = SharedInit(pre.params) if b.init == "pretrained" and pre is not None else scratch
            setup = pre_setup if b.init == "pretrained" else None
            result = None
            hp: dict[str, float] = {}
            if b.tuned:
                name = study_name_for(suite, b.name, steps=steps, val_tasks=val_tasks, seed=seed,
                                      pretrain_steps=pretrain_steps if b.init == "pretrained" else None)
                result = tune(b, model, init, suite, val, steps, trials, storage=storage, study_name=name,
                              seed=seed, on_trial=bar.callback(f"tune {b.name} (trials)"),
                              workers=workers)
                hp = result.best_params
            curve = baseline_curve(b, hp, model, init, suite, test, steps)
            bar.update(f"evaluate {b.name}", tasks, tasks)
            methods.append(_method(b.name, b.label, "tuned" if b.tuned else "untuned", curve,
                                   hparams=hp, tuning=result, setup=setup))

        # 4. the oracle: lr tuned on each test task's own query set (an upper bound, not a method)
        if oracle_n > 0:
            o_curve, o_lrs = oracle_tune(model, scratch, suite, test.head(oracle_n), steps, oracle_trials,
                                         seed=seed, on_trial=bar.callback("oracle (trials)"))
            oracle = _method(ORACLE, f"Oracle: Adam, random init, lr tuned per task on its query set "
                             f"(upper bound; {oracle_n} of {tasks} tasks)", "oracle", o_curve,
                             tuning_cost={"trials": oracle_trials * oracle_n, "pruned": 0,
                                          "grad_evals": oracle_trials * oracle_n * steps,
                                          "seconds": o_curve.seconds})
            oracle["adaptation"] = {"grad_evals": oracle_n * steps, "seconds": 0.0}
            oracle["hparams"] = {"lr_median": float(o_lrs.median())}
            methods.append(oracle)

        break_even = _break_even(methods, model, scratch, pre, suite, test, steps, meta_curve.loss)
    data = {
        "format": FORMAT,
        "format_version": 1,
        "suite": {"name": suite.name, "options": suite.options(), "metric_name": suite.metric_name,
                  "metric_higher_is_better": bool(suite.metric_higher_is_better)},
        "artifact": str(art.path) if art.path is not None else None,
        "protocol": {"steps": steps, "test_tasks": tasks, "val_tasks": val_tasks, "trials": trials,
                     "oracle_tasks": oracle_n, "oracle_trials": oracle_trials, "seed": seed,
                     "pretrain_steps": pretrain_steps, "storage": _redact(storage),
                     "sampler": "TPESampler(seed)",
                     "pruner": describe_pruner(pruner_warmup(steps))},
        "methods": methods,
        "targets": targets_met(methods),
        "break_even": break_even,
        "learned_rates": art.rate_stats(),
        "seconds": time.perf_counter() - begun,
    }
    data = _rounded(data)
    paths = write_report(data, out, rates=art.rates)
    return ComparisonResult(data, paths)


def _centroid_curve(suite: TaskSuite, test: TaskStream, steps: int) -> Curve:
    """The prototype classifier of ``suite.build_model()``'s features (pretrained where the suite
    loads weights, e.g. an encoder's top layers) on every test task, flat over the K steps."""
    from ..learners import build_learner

    learner = build_learner("metasgd", suite, model=suite.build_model().to(dtype=torch.float32),
                            head_init="prototypes", inner_params="head")
    begun = time.perf_counter()
    curve = learner.adaptation_curve(test.to(dtype=torch.float32), 0)
    flat = [c[:, :1].expand(-1, steps + 1).clone() for c in (curve.loss, curve.metric)]
    return Curve(flat[0], flat[1], 0, time.perf_counter() - begun)


def _meta_label(art: Artifact) -> str:
    config = art.learner_config
    rates = {"element": "a rate per weight", "tensor": "a rate per layer", "scalar": "one rate"}.get(
        str(config.get("lr_granularity")), "learned rates")
    per_step = ", per step" if art.rate_steps > 1 else ""
    return (f"{config.get('learner', 'meta-learned')}: meta-learned init + {rates}{per_step} "
            f"(meta-trained for {art.inner_steps} steps), no tuning")


def targets_met(methods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {m["name"]: m for m in methods}
    meta = by[META]["query_loss"]["mean"]
    rows = []
    for what, names, factor, relation in TARGETS:
        present = [by[n] for n in names if n in by]
        if not present:
            rows.append({"target": f"meta-learned query loss {relation} {what}", "measured": None,
                         "met": None, "reference": None})
            continue
        ref = min(present, key=lambda m: _sortable(m["query_loss"]["mean"]))
        ref_loss = ref["query_loss"]["mean"]
        if meta is None or ref_loss is None or not math.isfinite(meta) or not math.isfinite(ref_loss):
            # a diverged method (NaN / infinite loss) cannot meet a target or be beaten
            rows.append({"target": f"meta-learned query loss {relation} {what}", "reference": ref["name"],
                         "reference_loss": ref_loss, "meta_loss": meta, "ratio": None,
                         "met": bool(meta is not None and math.isfinite(meta)),
                         "note": "a loss is not finite (diverged)"})
            continue
        bound = factor * ref_loss
        met = meta <= bound if factor != 1.0 else meta < bound
        rows.append({"target": f"meta-learned query loss {relation} {what}", "reference": ref["name"],
                     "reference_loss": ref["query_loss"]["mean"], "meta_loss": meta,
                     "ratio": meta / ref["query_loss"]["mean"] if ref["query_loss"]["mean"] else None,
                     "met": bool(met)})
    return rows


def _sortable(x: float | None) -> float:
    return x if x is not None and math.isfinite(x) else math.inf


def _break_even(methods: list[dict[str, Any]], model: Any, scratch: RandomInit, pre: Any,
                suite: TaskSuite, test: TaskStream, steps: int, meta_loss: Tensor) -> dict[str, Any]:
    """Tasks after which meta-training pays for itself against the best tuned baseline.

    The best tuned baseline needs ``s`` steps per task to reach the meta-learned loss after ``K``
    steps (searched up to 10 K); each task adapted with the meta-learned optimizer saves ``s - K``
    gradient evaluations. Break-even = (meta-training - baseline tuning and pretraining) / saving.
    """
    by = {m["name"]: m for m in methods}
    meta = by[META]
    tuned = [m for m in methods if m["kind"] == "tuned"]
    base = {"reference": None, "tasks": None, "steps_to_match": None, "horizon": None}
    if not tuned:
        return {**base, "note": "no tuned baseline"}
    ref = min(tuned, key=lambda m: _sortable(m["query_loss"]["mean"]))
    b = get_baseline(ref["name"])
    init = SharedInit(pre.params) if b.init == "pretrained" and pre is not None else scratch
    horizon = 10 * steps
    subset = test.head(200)
    long = run_optimizer(b.optimizer, ref["hparams"], model, init, suite, subset, horizon)
    meta_subset = float(meta_loss[: len(subset), -1].mean())  # the same tasks as the long run
    means = long.loss.mean(0).tolist()
    if not math.isfinite(meta_subset):
        return {**base, "reference": ref["name"], "note": "the meta-learned loss is not finite (diverged)"}
    reach = next((s for s, v in enumerate(means) if v <= meta_subset), None)
    base.update(reference=ref["name"], horizon=horizon, steps_to_match=reach,
                baseline_loss_at_horizon=means[-1])
    setup = meta["setup"] or {}
    meta_cost = setup.get("grad_evals")
    family_cost = ref["tuning"]["grad_evals"] + ((ref.get("setup") or {}).get("grad_evals") or 0)
    base.update(meta_training_grad_evals=meta_cost, baseline_family_grad_evals=family_cost)
    if meta_cost is None:
        return {**base, "note": "the artifact does not record its meta-training cost"}
    extra = meta_cost - family_cost
    if extra <= 0:
        return {**base, "tasks": 0, "note": "meta-training cost no more than tuning the baseline"}
    if reach is None:
        saving = horizon - steps
        tasks = math.ceil(extra / saving)
        return {**base, "tasks": tasks, "bound": "at most",
                "note": f"the baseline did not reach the meta-learned loss within {horizon} steps; "
                        f"saving counted as at least {saving} steps per task"}
    if reach <= steps:
        return {**base, "note": "the baseline matches the meta-learned loss within K steps: no saving"}
    return {**base, "tasks": math.ceil(extra / (reach - steps)), "bound": "exactly"}


def _rounded(obj: Any) -> Any:
    """Floats to 6 significant digits: the report prints exactly the numbers results.json holds."""
    if isinstance(obj, float):
        return float(f"{obj:.6g}") if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v) for v in obj]
    return obj
