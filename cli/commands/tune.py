"""``metaopt tune``: tune one baseline optimizer with Optuna and print its best configuration."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from metaopt_tuner.compare.tuning import tune_on_suite
from metaopt_tuner.tasks import get_suite
from metaopt_tuner.threads import use_threads

from ..options import DataDir, JsonOut, Seed, Suite, SuiteOption, Threads, parse_suite_options


def tune(
    suite: Suite = "sinusoid",
    optimizer: Annotated[str, typer.Option("--optimizer", help="adam or sgd (tuned from the suite's random init).")] = "adam",
    trials: Annotated[int, typer.Option("--trials", "-n", help="Finished trials wanted in the study (finished ones count; workers sharing it stop together).")] = 50,
    steps: Annotated[int, typer.Option("--steps", "-k", help="Adaptation steps per task.")] = 10,
    val_tasks: Annotated[int, typer.Option("--val-tasks", help="Meta-validation tasks in the objective.")] = 100,
    init: Annotated[str, typer.Option("--init", help="scratch (random init) or pretrained (multi-task joint training).")] = "scratch",
    pretrain_steps: Annotated[int, typer.Option("--pretrain-steps", help="Pretraining steps for --init pretrained.")] = 2000,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL, e.g. sqlite:///studies.db or postgresql://... \\[default: in memory].")] = None,
    study_name: Annotated[str | None, typer.Option("--study-name", help="Study to create or resume \\[default: derived from suite, optimizer and protocol].")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes on the study, this one included (each an Optuna worker); more than 1 needs --storage. Run the same command on other machines with the same postgresql:// --storage to add workers there.")] = 1,
    seed: Seed = 0,
    data_dir: DataDir = None,
    suite_option: SuiteOption = None,
    json_out: JsonOut = False,
    threads: Threads = None,
) -> None:
    """Tune OPTIMIZER on SUITE's meta-validation tasks; print the best configuration."""
    task_suite = get_suite(suite, **parse_suite_options(suite_option, data_dir))
    use_threads(threads, task_suite.build_model().parameters())
    baseline, result = tune_on_suite(task_suite, optimizer, init=init, steps=steps, trials=trials,
                                     val_tasks=val_tasks, pretrain_steps=pretrain_steps, storage=storage,
                                     study_name=study_name, seed=seed, workers=workers)
    if json_out:
        typer.echo(json.dumps({"study": result.study_name, "storage": storage, "best_params": result.best_params,
                               "best_value": result.best_value, "trials": result.trials,
                               "pruned": result.pruned, "new_trials": result.new_trials}, indent=2))
        return
    typer.echo(f"study {result.study_name}: {result.trials} finished trials ({result.pruned} pruned, "
               f"{len(result.new_trials)} run now)")
    params = ", ".join(f"{k}={v:.4g}" for k, v in result.best_params.items())
    typer.echo(f"best {baseline.label}: {params}; mean val query loss after {steps} steps "
               f"{result.best_value:.4g}")
    if storage:
        typer.echo(f"open it with: optuna-dashboard {storage}")
