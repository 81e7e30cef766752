"""``metaopt train``: meta-train a learner on a task suite into an output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from metaopt_tuner import distributed
from metaopt_tuner.tracking import track_training
from metaopt_tuner.training import MetaTrainer, TrainConfig

from ..options import DataDir, Device, Seed, SuiteOption, TrackingUri, parse_suite_options


def train(
    out: Annotated[Path, typer.Option("--out", help="Output folder: checkpoints, metrics log, artifact.")],
    suite: Annotated[str, typer.Option("--suite", "-s", help="Task suite (see `metaopt suites`).")] = "sinusoid",
    learner: Annotated[str, typer.Option("--learner", "-l", help="maml, fomaml, metasgd or reptile.")] = "metasgd",
    iterations: Annotated[int, typer.Option("--iterations", "-n", help="Meta-iterations (outer steps) in total.")] = 1000,
    meta_batch: Annotated[int, typer.Option("--meta-batch", "-b", help="Tasks per meta-iteration.")] = 25,
    inner_steps: Annotated[int, typer.Option("--inner-steps", "-k", help="Inner (adaptation) steps per task.")] = 1,
    inner_lr: Annotated[float, typer.Option("--inner-lr", help="Inner learning rate (the initial value for learned rates).")] = 0.01,
    meta_lr: Annotated[float | None, typer.Option("--meta-lr", help="Outer learning rate [default: 1e-3 Adam; Reptile 0.1 SGD].")] = None,
    rates_meta_lr: Annotated[float | None, typer.Option("--rates-meta-lr", help="Outer learning rate of the learned rates (Meta-SGD) [default: --meta-lr]; a smaller one steadies multi-step Meta-SGD.")] = None,
    outer_optimizer: Annotated[str | None, typer.Option("--outer-optimizer", help="adam or sgd [default: per learner].")] = None,
    meta_lr_schedule: Annotated[str, typer.Option("--meta-lr-schedule", help="constant, or cosine: every outer rate annealed to zero over --iterations (raising --iterations on --resume stretches what is left).")] = "constant",
    clip_grad: Annotated[float | None, typer.Option("--clip-grad", help="Clip the meta-gradient's global norm to this value.")] = None,
    lr_granularity: Annotated[str | None, typer.Option("--lr-granularity", help="Inner rates: scalar (one), tensor (one per weight tensor) or element (one per weight) [default: element for metasgd, scalar otherwise].")] = None,
    nonnegative_lrs: Annotated[bool, typer.Option("--nonnegative-lrs", help="Use max(rate, 0) for learned rates: keeps multi-step Meta-SGD from drifting into gradient ascent.")] = False,
    per_step_lrs: Annotated[bool, typer.Option("--per-step-lrs/--shared-lrs", help="Learn one set of rates per inner step (Meta-SGD).")] = False,
    first_order: Annotated[bool | None, typer.Option("--first-order/--second-order", help="Override the learner's order.")] = None,
    batching: Annotated[str, typer.Option("--batching", help="auto, batched (hand-batched), vmap or loop.")] = "auto",
    head_init: Annotated[str, typer.Option("--head-init", help="theta (the meta-learned head) or prototypes (Proto-MAML: each task's head starts from its support-set class means; classification suites with a ConvNet).")] = "theta",
    cuda_graph: Annotated[bool, typer.Option("--cuda-graph", help="Replay each meta-gradient from a CUDA graph (CUDA only): removes the launch overhead of thousands of small kernels.")] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="Compute each meta-gradient with one torch.compile-d function (maml, fomaml, metasgd): fused kernels, for GPUs. The first meta-batch compiles (minutes for a 5-step ConvNet). Combines with --cuda-graph.")] = False,
    tf32: Annotated[bool, typer.Option("--tf32", help="Let float32 matrix products and convolutions use TF32 tensor cores (CUDA only). Faster, but second-order meta-gradients lose accuracy (Omniglot, 5 steps: 19-79% relative error vs 1e-5 in FP32); for first-order learners.")] = False,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Evaluate on held-out validation tasks every N iterations.")] = 500,
    eval_tasks: Annotated[int, typer.Option("--eval-tasks", help="Number of fixed validation tasks.")] = 100,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Write a checkpoint every N iterations.")] = 1000,
    log_every: Annotated[int, typer.Option("--log-every", help="Append a metrics line every N iterations.")] = 100,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run saved in --out.")] = False,
    seed: Seed = 0,
    device: Device = "cpu",
    dtype: Annotated[str, typer.Option("--dtype", help="float32 or float64.")] = "float32",
    data_dir: DataDir = None,
    suite_option: SuiteOption = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for torch [default: torch's]; 1 is fastest for small models such as the sinusoid MLP, especially beside other work.")] = None,
    task_streams: Annotated[int | None, typer.Option("--task-streams", help="Seeded task streams per meta-batch [default: one per process]; equal values give equal runs on any number of processes.")] = None,
    dist_timeout: Annotated[float | None, typer.Option("--dist-timeout", help="Under torchrun: seconds a collective waits for the other processes before failing [default: $METAOPT_DIST_TIMEOUT or 300].")] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Meta-train LEARNER on SUITE; write checkpoints, a metrics log and the artifact to --out."""
    if threads is not None:
        torch.set_num_threads(threads)
    config = TrainConfig(
        suite=suite,
        suite_options=parse_suite_options(suite_option, data_dir),
        learner=learner,
        iterations=iterations,
        meta_batch=meta_batch,
        inner_steps=inner_steps,
        inner_lr=inner_lr,
        meta_lr=meta_lr,
        rates_meta_lr=rates_meta_lr,
        outer_optimizer=outer_optimizer,
        meta_lr_schedule=meta_lr_schedule,
        clip_grad=clip_grad,
        first_order=first_order,
        per_step_lrs=per_step_lrs,
        nonnegative_lrs=nonnegative_lrs,
        lr_granularity=lr_granularity,
        batching=batching,
        head_init=head_init,
        cuda_graph=cuda_graph,
        compile=compile_,
        tf32=tf32,
        eval_every=eval_every,
        eval_tasks=eval_tasks,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        seed=seed,
        device=device,
        dtype=dtype,
        task_streams=task_streams,
    )
    try:  # under torchrun, every process trains and rank 0 alone writes and prints
        trainer = MetaTrainer(config, out, progress=progress, dist_timeout=dist_timeout)
        with track_training(trainer, tracking_uri):  # MLflow, when a tracking URI is set
            result = trainer.run(resume=resume)
    except BaseException:
        distributed.shutdown(wait_for_peers=False)
        raise
    distributed.shutdown()
    if not distributed.is_main_process():
        return
    metric = result.suite.metric_name
    typer.echo(
        f"done: {result.config.iterations} iterations; held-out {metric} after "
        f"{config.inner_steps} step(s): {result.final_metric:.4g}; outputs in {out}"
    )
