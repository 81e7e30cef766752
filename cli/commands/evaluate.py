"""``metaopt evaluate``: adaptation curves of an artifact on held-out tasks, mean and 95% CI."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from metaopt_tuner.evaluation import evaluate as evaluate_artifact
from metaopt_tuner.evaluation import suite_for_split
from metaopt_tuner.resolver import resolve_artifact
from metaopt_tuner.threads import use_threads

from ..options import (
    Chunk,
    DataDir,
    Device,
    JsonOut,
    RegistryUri,
    Seed,
    SuiteOption,
    Threads,
    TrustFactory,
    parse_suite_options,
)

ArtifactArg = Annotated[str, typer.Argument(help="Artifact folder (e.g. runs/x/artifact), models:/NAME@ALIAS, models:/NAME/VERSION or a pretrained name.", show_default=False)]


def _progress_lines(enabled: bool) -> Callable[[int, int], None] | None:
    """One line on stderr per chunk of tasks adapted (none when one chunk holds them all)."""
    if not enabled:
        return None
    err = Console(stderr=True, highlight=False)
    begun = time.perf_counter()
    started = [False]

    def report(done: int, total: int) -> None:
        if done < total or started[0]:
            started[0] = True
            err.print(f"adapted {done}/{total} tasks ({time.perf_counter() - begun:.0f} s)")

    return report


def _data_of(suite) -> str:
    data_dir = suite.options().get("data_dir")
    return str(data_dir) if data_dir else suite.name


def evaluate(
    artifact: ArtifactArg,
    tasks: Annotated[int, typer.Option("--tasks", "-t", help="Number of held-out tasks.")] = 600,
    steps: Annotated[int | None, typer.Option("--steps", "-k", help="Inner steps to adapt for \\[default: the artifact's].")] = None,
    split: Annotated[str, typer.Option("--split", help="Held-out split: test, val, or all (every class of the data: for a --data-dir the artifact was not trained on).")] = "test",
    seed: Seed = 0,
    device: Device = "cpu",
    data_dir: DataDir = None,
    suite_option: SuiteOption = None,
    trust_factory: TrustFactory = False,
    json_out: JsonOut = False,
    threads: Threads = None,
    tracking_uri: RegistryUri = None,
    chunk: Chunk = None,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="A line on stderr per chunk of tasks adapted \\[default: when stderr is a terminal].", show_default=False)] = None,
) -> None:
    """Adapt ARTIFACT on held-out tasks; print query loss and metric per step (mean ± 95% CI)."""
    art = resolve_artifact(artifact, trust_factory=trust_factory, tracking_uri=tracking_uri)
    use_threads(threads, art.theta.values())
    suite = suite_for_split(art, split, **parse_suite_options(suite_option, data_dir))
    show = sys.stderr.isatty() if progress is None else progress
    result = evaluate_artifact(art, suite, num_tasks=tasks, steps=steps, split=split, seed=seed,
                               device=device, chunk=chunk, on_progress=_progress_lines(show))
    if json_out:
        typer.echo(json.dumps({"artifact": str(artifact), **result.to_dict()}, indent=2))
        return
    metric = result.metric_name
    console = Console(highlight=False)
    if result.num_classes is not None:
        console.print(f"{result.num_classes} classes, {result.num_examples} examples from the "
                      f"{result.split} split of {_data_of(suite)}", soft_wrap=True)
    console.print(f"{artifact}: adapted on {result.num_tasks} {result.split} tasks of {art.suite_name} "
                  f"(seed {result.seed}); mean ± 95% CI over tasks")
    table = Table()
    table.add_column("step", justify="right")
    table.add_column("query loss", justify="right")
    table.add_column(f"query {metric}", justify="right")
    for t in range(result.steps + 1):
        table.add_row(
            str(t),
            f"{result.loss_mean[t]:.4g} ± {result.loss_ci[t]:.2g}",
            f"{result.metric_mean[t]:.4g} ± {result.metric_ci[t]:.2g}",
        )
    console.print(table)
    if result.steps > art.horizon:
        Console(stderr=True, highlight=False).print(f"note: {art.tail_rule()}")
