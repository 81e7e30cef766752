"""``metaopt compare``: the meta-learned optimizer against Optuna-tuned baselines, as a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from metaopt_tuner.compare import compare as run_compare
from metaopt_tuner.compare import table_rows
from metaopt_tuner.errors import ConfigError
from metaopt_tuner.resolver import resolve_artifact
from metaopt_tuner.tasks import suite_class
from metaopt_tuner.threads import use_threads
from metaopt_tuner.tracking import track_comparison, tracking_uri_checked

from ..options import (
    Chunk,
    DataDir,
    Seed,
    SuiteOption,
    Threads,
    TrackingUri,
    TrustFactory,
    parse_suite_options,
)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"




def compare(
    artifact: Annotated[str, typer.Option("--artifact", "-a", help="Artifact folder, models:/NAME@ALIAS, models:/NAME/VERSION or a pretrained name.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: report.md, report.html, results.json, studies.db.")],
    suite: Annotated[str | None, typer.Option("--suite", "-s", help="Task suite; must be the artifact's \\[default: the artifact's].")] = None,
    trials: Annotated[int, typer.Option("--trials", "-n", help="Optuna trials per tuned baseline (finished ones count on a re-run).")] = 50,
    steps: Annotated[int, typer.Option("--steps", "-k", help="Adaptation steps K for every method.")] = 10,
    tasks: Annotated[int, typer.Option("--tasks", "-t", help="Held-out test tasks.")] = 500,
    val_tasks: Annotated[int, typer.Option("--val-tasks", help="Meta-validation tasks the baselines are tuned on.")] = 100,
    oracle_tasks: Annotated[int, typer.Option("--oracle-tasks", help="Test tasks the per-task oracle runs on (0: skip).")] = 100,
    baselines: Annotated[str | None, typer.Option("--baselines", help="Comma-separated baselines \\[default: adam,sgd,adam-pretrained,sgd-pretrained + installed parameter-free].")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL \\[default: sqlite:///OUT/studies.db].")] = None,
    pretrain_steps: Annotated[int, typer.Option("--pretrain-steps", help="Adam steps of multi-task pretraining for the pretrained-init baselines.")] = 2000,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes per tuning study, this one included (a postgresql:// --storage shares them across machines).")] = 1,
    seed: Seed = 0,
    data_dir: DataDir = None,
    suite_option: SuiteOption = None,
    trust_factory: TrustFactory = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    threads: Threads = None,
    tracking_uri: TrackingUri = None,
    chunk: Chunk = None,
) -> None:
    """Tune baselines with Optuna, adapt held-out tasks with every method, write the report to --out."""
    tracking_uri = tracking_uri_checked(tracking_uri)  # a bad URI fails now, not after the run
    art = resolve_artifact(artifact, trust_factory=trust_factory, tracking_uri=tracking_uri)
    use_threads(threads, art.theta.values())
    if suite is not None:
        suite_class(suite)  # an unknown or unimportable suite is its own error
    if suite is not None and art.suite_name != suite:
        raise ConfigError(f"the artifact was meta-trained on suite {art.suite_name!r}, not {suite!r}")
    task_suite = art.build_suite(**parse_suite_options(suite_option, data_dir))
    names = [n.strip() for n in baselines.split(",") if n.strip()] if baselines else None
    result = run_compare(art, out, suite=task_suite, steps=steps, tasks=tasks, trials=trials,
                         val_tasks=val_tasks, oracle_tasks=oracle_tasks, baselines=names, storage=storage,
                         pretrain_steps=pretrain_steps, seed=seed, progress=progress, workers=workers,
                         chunk=chunk)
    console = Console(highlight=False)
    table = Table(title=f"query loss after K = {steps} steps on held-out tasks (mean ± 95% CI)")
    for column in ("method", "query loss", f"query {task_suite.metric_name}", "trials"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in table_rows(result.data):
        table.add_row(row[0], f"{_num(row[1])} ± {_num(row[2])}", f"{_num(row[3])} ± {_num(row[4])}", str(row[6]))
    console.print(table)
    for target in result.data["targets"]:
        if target.get("met") is not None:
            console.print(f"{target['target']}: {'MET' if target['met'] else 'NOT MET'} "
                          f"(ratio {_num(target['ratio'])})")
    console.print(f"report: {result.paths['markdown']}, {result.paths['html']}, {result.paths['json']}")
    track_comparison(result, out, tracking_uri)
