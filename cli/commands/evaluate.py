"""``metaopt evaluate``: adaptation curves of an artifact on held-out tasks, mean and 95% CI."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from metaopt_tuner.evaluation import evaluate as evaluate_artifact
from metaopt_tuner.evaluation import suite_for_split
from metaopt_tuner.resolver import resolve_artifact
from metaopt_tuner.threads import use_threads

from ..options import (
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
) -> None:
    """Adapt ARTIFACT on held-out tasks; print query loss and metric per step (mean ± 95% CI)."""
    art = resolve_artifact(artifact, trust_factory=trust_factory, tracking_uri=tracking_uri)
    use_threads(threads, art.theta.values())
    suite = suite_for_split(art, split, **parse_suite_options(suite_option, data_dir))
    result = evaluate_artifact(art, suite, num_tasks=tasks, steps=steps, split=split, seed=seed,
                               device=device)
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
