"""``metaopt train``: meta-train a learner on a task suite into an output folder.

Every training option defaults to None, meaning "not given": the suite's recipe, then
TrainConfig's defaults, fill what the user did not give (see ``metaopt_tuner.training.recipes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metaopt_tuner.budget import parse_duration
from metaopt_tuner.threads import use_threads
from metaopt_tuner.tracking import track_training
from metaopt_tuner.training import MetaTrainer, distributed, resolve_train_config

from ..options import DataDir, Threads, TrackingUri, parse_suite_options

ADVANCED = "Advanced (the suite's recipe sets these; see --show-config)"
RECIPE = " \\[default: the suite's recipe, else {}]"


def _opt(*names: str, help: str, default: str | None = None, **kwargs) -> typer.models.OptionInfo:
    """An option of the Advanced panel; its help names the default the recipe may replace."""
    text = help + (RECIPE.format(default) if default is not None else "")
    return typer.Option(*names, help=text, rich_help_panel=ADVANCED, show_default=False, **kwargs)


def train(
    out: Annotated[Path, typer.Option("--out", help="Output folder: checkpoints, metrics log, artifact.")],
    suite: Annotated[str | None, typer.Option("--suite", "-s", help="Task suite: a name from `metaopt suites` or module:Class (your own TaskSuite) \\[default: sinusoid].", show_default=False)] = None,
    data_dir: DataDir = None,
    budget: Annotated[str | None, typer.Option("--budget", help="Train for this long (90s, 20m, 2h) instead of --iterations: a timed warm-up fixes the iteration count (budget / seconds per iteration, recorded in run.json for --resume), and the schedule is laid over it.", show_default=False)] = None,
    iterations: Annotated[int | None, typer.Option("--iterations", "-n", help="Meta-iterations (outer steps) in total, exactly \\[default: the suite's recipe].", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run saved in --out (the same options).")] = False,
    show_config: Annotated[bool, typer.Option("--show-config", help="Print the resolved configuration, each value with its source (default, recipe or flag), and exit without training or writing anything.")] = False,
    threads: Threads = None,
    device: Annotated[str | None, typer.Option("--device", help="Torch device: cpu, cuda, cuda:1, ... \\[default: cpu].", show_default=False)] = None,
    learner: Annotated[str | None, _opt("--learner", "-l", help="maml, fomaml, metasgd or reptile.", default="metasgd")] = None,
    meta_batch: Annotated[int | None, _opt("--meta-batch", "-b", help="Tasks per meta-iteration.", default="25")] = None,
    inner_steps: Annotated[int | None, _opt("--inner-steps", "-k", help="Inner (adaptation) steps per task.", default="1")] = None,
    inner_lr: Annotated[float | None, _opt("--inner-lr", help="Inner learning rate (the initial value for learned rates).", default="0.01")] = None,
    meta_lr: Annotated[float | None, _opt("--meta-lr", help="Outer learning rate.", default="1e-3 Adam; Reptile 0.1 SGD")] = None,
    rates_meta_lr: Annotated[float | None, _opt("--rates-meta-lr", help="Outer learning rate of the learned rates (Meta-SGD), which are stored as logarithms: steps are relative.", default="1e-2")] = None,
    outer_optimizer: Annotated[str | None, _opt("--outer-optimizer", help="adam or sgd.", default="per learner")] = None,
    meta_lr_schedule: Annotated[str | None, _opt("--meta-lr-schedule", help="constant, or cosine: every outer rate annealed to zero over the iterations (raising --iterations on --resume stretches what is left).", default="constant")] = None,
    clip_grad: Annotated[float | None, _opt("--clip-grad", help="Clip the meta-gradient's global norm to this value.", default="none")] = None,
    lr_granularity: Annotated[str | None, _opt("--lr-granularity", help="Inner rates: scalar (one), tensor (one per weight tensor) or element (one per weight).", default="element for metasgd, scalar otherwise")] = None,
    per_step_lrs: Annotated[bool | None, _opt("--per-step-lrs/--shared-lrs", help="Learn one set of rates per inner step (Meta-SGD).", default="shared")] = None,
    first_order: Annotated[bool | None, _opt("--first-order/--second-order", help="Override the learner's order.", default="the learner's")] = None,
    batching: Annotated[str | None, _opt("--batching", help="auto, batched (hand-batched), vmap or loop.", default="auto")] = None,
    head_init: Annotated[str | None, _opt("--head-init", help="theta (the meta-learned head) or prototypes (Proto-MAML: each task's head starts from its support-set class means; classification suites with a ConvNet).", default="theta")] = None,
    inner_params: Annotated[str | None, _opt("--inner-params", help="What the inner loop adapts: all (every parameter) or head (the linear head alone, on features computed once per task; the other parameters' rates are zero).", default="all")] = None,
    cuda_graph: Annotated[bool | None, _opt("--cuda-graph", help="Replay each meta-gradient from a CUDA graph (CUDA only): removes the launch overhead of thousands of small kernels.")] = None,
    compile_: Annotated[bool | None, _opt("--compile", help="Compute each meta-gradient with one torch.compile-d function (maml, fomaml, metasgd): fused kernels, for GPUs. The first meta-batch compiles (minutes for a 5-step ConvNet). Combines with --cuda-graph.")] = None,
    tf32: Annotated[bool | None, _opt("--tf32", help="Let float32 matrix products and convolutions use TF32 tensor cores (CUDA only). Faster, but second-order meta-gradients lose accuracy (Omniglot, 5 steps: 19-79% relative error vs 1e-5 in FP32); for first-order learners.")] = None,
    eval_every: Annotated[int | None, _opt("--eval-every", help="Evaluate on held-out validation tasks every N iterations.", default="500")] = None,
    eval_tasks: Annotated[int | None, _opt("--eval-tasks", help="Number of fixed validation tasks.", default="100")] = None,
    checkpoint_every: Annotated[int | None, _opt("--checkpoint-every", help="Write a checkpoint every N iterations.", default="1000")] = None,
    log_every: Annotated[int | None, _opt("--log-every", help="Append a metrics line every N iterations.", default="100")] = None,
    seed: Annotated[int | None, _opt("--seed", help="Random seed (task sampling and initialization).", default="0")] = None,
    dtype: Annotated[str | None, _opt("--dtype", help="float32 or float64.", default="float32")] = None,
    suite_option: Annotated[list[str] | None, _opt("--suite-option", "-o", help="Suite option KEY=VALUE (VALUE parsed as JSON when it can be, e.g. shots=5); repeatable; overrides the recipe's.")] = None,
    progress: Annotated[bool, _opt("--progress/--no-progress", help="Show a progress bar.")] = True,
    task_streams: Annotated[int | None, _opt("--task-streams", help="Seeded task streams per meta-batch; equal values give equal runs on any number of processes.", default="one per process")] = None,
    dist_timeout: Annotated[float | None, _opt("--dist-timeout", help="Under torchrun: seconds a collective waits for the other processes before failing.", default="$METAOPT_DIST_TIMEOUT or 300")] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Meta-train on SUITE with its recipe (the best measured configuration); write checkpoints,
    a metrics log and the artifact to --out. Every option given overrides the recipe."""
    flags = {
        "learner": learner, "iterations": iterations, "meta_batch": meta_batch,
        "inner_steps": inner_steps, "inner_lr": inner_lr, "meta_lr": meta_lr,
        "rates_meta_lr": rates_meta_lr, "outer_optimizer": outer_optimizer,
        "meta_lr_schedule": meta_lr_schedule, "clip_grad": clip_grad, "first_order": first_order,
        "per_step_lrs": per_step_lrs,
        "lr_granularity": lr_granularity, "batching": batching, "head_init": head_init,
        "inner_params": inner_params,
        "cuda_graph": cuda_graph, "compile": compile_, "tf32": tf32, "eval_every": eval_every,
        "eval_tasks": eval_tasks, "checkpoint_every": checkpoint_every, "log_every": log_every,
        "seed": seed, "device": device, "dtype": dtype, "task_streams": task_streams,
        "budget_seconds": parse_duration(budget) if budget is not None else None,
    }
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
