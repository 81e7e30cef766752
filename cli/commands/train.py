"""``metaopt train``: meta-train a learner on a task suite into an output folder.

Every training option defaults to None, meaning "not given": the suite's recipe, then
TrainConfig's defaults, fill what the user did not give (see ``metaopt_tuner.training.recipes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metaopt_tuner.budget import parse_duration
from metaopt_tuner.config import TrainConfig
from metaopt_tuner.threads import use_threads
from metaopt_tuner.tracking import track_training
from metaopt_tuner.training import MetaTrainer, distributed, resolve_train_config

from ..options import DataDir, Threads, TrackingUri, parse_suite_options

ADVANCED = "Advanced (the suite's recipe sets these; see --show-config)"
RECIPE = " \\[default: the suite's recipe, else {}]"


def _opt(*names: str, help: str | None = None, default: str | None = None, **kwargs) -> typer.models.OptionInfo:
    """An option of the Advanced panel; its help (the TrainConfig field's, for a field's flag)
    names the default the recipe may replace."""
    if help is None:  # --inner-steps -> the field inner_steps
        help = TrainConfig.help(names[0].removeprefix("--").split("/")[0].replace("-", "_"))
    text = help + (RECIPE.format(default) if default is not None else "")
    return typer.Option(*names, help=text, rich_help_panel=ADVANCED, show_default=False, **kwargs)


def _main(name: str, default: str | None = None) -> str:
    """The help of a TrainConfig field's flag in the main panel, with its default."""
    text = TrainConfig.help(name)
    if default is None:
        return text
    if text.endswith(".") and not text.endswith("..."):  # the default goes before the full stop
        text = text[:-1]
    return f"{text} \\[default: {default}]."


def train(
    out: Annotated[Path, typer.Option("--out", help="Output folder: checkpoints, metrics log, artifact.")],
    suite: Annotated[str | None, typer.Option("--suite", "-s", help=_main("suite", "sinusoid"), show_default=False)] = None,
    data_dir: DataDir = None,
    budget: Annotated[str | None, typer.Option("--budget", help="Train for this long (90s, 20m, 2h) instead of --iterations: a timed warm-up fixes the iteration count (budget / seconds per iteration, recorded in run.json for --resume), and the schedule is laid over it.", show_default=False)] = None,
    iterations: Annotated[int | None, typer.Option("--iterations", "-n", help=_main("iterations", "the suite's recipe"), show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run saved in --out (the same options).")] = False,
    show_config: Annotated[bool, typer.Option("--show-config", help="Print the resolved configuration, each value with its source (default, recipe or flag), and exit without training or writing anything.")] = False,
    threads: Threads = None,
    device: Annotated[str | None, typer.Option("--device", help=_main("device", "cpu"), show_default=False)] = None,
    learner: Annotated[str | None, _opt("--learner", "-l", default="metasgd")] = None,
    meta_batch: Annotated[int | None, _opt("--meta-batch", "-b", default="25")] = None,
    inner_steps: Annotated[int | None, _opt("--inner-steps", "-k", default="1")] = None,
    inner_lr: Annotated[float | None, _opt("--inner-lr", default="0.01")] = None,
    meta_lr: Annotated[float | None, _opt("--meta-lr", default="1e-3 Adam; Reptile 0.1 SGD")] = None,
    rates_meta_lr: Annotated[float | None, _opt("--rates-meta-lr", default="1e-2")] = None,
    outer_optimizer: Annotated[str | None, _opt("--outer-optimizer", default="per learner")] = None,
    meta_lr_schedule: Annotated[str | None, _opt("--meta-lr-schedule", default="constant")] = None,
    clip_grad: Annotated[float | None, _opt("--clip-grad", default="none")] = None,
    lr_granularity: Annotated[str | None, _opt("--lr-granularity", default="element for metasgd, scalar otherwise")] = None,
    per_step_lrs: Annotated[bool | None, _opt("--per-step-lrs/--shared-lrs", default="shared")] = None,
    first_order: Annotated[bool | None, _opt("--first-order/--second-order", default="the learner's")] = None,
    batching: Annotated[str | None, _opt("--batching", default="auto")] = None,
    head_init: Annotated[str | None, _opt("--head-init", default="theta")] = None,
    inner_params: Annotated[str | None, _opt("--inner-params", default="all")] = None,
    cuda_graph: Annotated[bool | None, _opt("--cuda-graph")] = None,
    compile_: Annotated[bool | None, _opt("--compile")] = None,
    tf32: Annotated[bool | None, _opt("--tf32")] = None,
    eval_every: Annotated[int | None, _opt("--eval-every", default="500")] = None,
    eval_tasks: Annotated[int | None, _opt("--eval-tasks", default="100")] = None,
    checkpoint_every: Annotated[int | None, _opt("--checkpoint-every", default="1000")] = None,
    log_every: Annotated[int | None, _opt("--log-every", default="100")] = None,
    seed: Annotated[int | None, _opt("--seed", default="0")] = None,
    dtype: Annotated[str | None, _opt("--dtype", default="float32")] = None,
    suite_option: Annotated[list[str] | None, _opt("--suite-option", "-o", help="Suite option KEY=VALUE (VALUE parsed as JSON when it can be, e.g. shots=5); repeatable; overrides the recipe's.")] = None,
    progress: Annotated[bool, _opt("--progress/--no-progress", help="Show a progress bar.")] = True,
    task_streams: Annotated[int | None, _opt("--task-streams", default="one per process")] = None,
    dist_timeout: Annotated[float | None, _opt("--dist-timeout", help="Under torchrun: seconds a collective waits for the other processes before failing.", default="$METAOPT_DIST_TIMEOUT or 300")] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Meta-train on SUITE with its recipe (the best measured configuration); write checkpoints,
    a metrics log and the artifact to --out. Every option given overrides the recipe."""
    given = locals()
    flags = {name: given[name] for name in TrainConfig.field_names() if name in given}
    flags["compile"] = compile_  # `compile` would shadow the builtin
    flags["budget_seconds"] = parse_duration(budget) if budget is not None else None
    resolved = resolve_train_config(suite, flags, parse_suite_options(suite_option, data_dir))
    if show_config:
        typer.echo("\n".join(resolved.lines()))
        return
    config = resolved.config
    try:  # under torchrun, every process trains and rank 0 alone writes and prints
        trainer = MetaTrainer(config, out, progress=progress, dist_timeout=dist_timeout,
                              sources=resolved.sources)
        use_threads(threads, trainer.learner.model.parameters())  # the model, not its rates
        with track_training(trainer, tracking_uri):  # MLflow, when a tracking URI is set
            result = trainer.run(resume=resume)
    except BaseException:
        distributed.shutdown(wait_for_peers=False)
        raise
    distributed.shutdown()
    if not distributed.is_main_process():
        return
    metric = result.suite.metric_name
    held_out = ("no validation split" if result.final_metric is None else
                f"held-out {metric} after {config.inner_steps} step(s): {result.final_metric:.4g}")
    typer.echo(f"done: {result.config.iterations} iterations; {held_out}; outputs in {out}")
