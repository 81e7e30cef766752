"""How many kernels one second-order meta-gradient costs, eager vs ``--compile`` (runs on a CPU).

A GPU-free proxy for the Omniglot speed work: on an H100 the eager meta-gradient (second-order
MAML, 5 inner steps, the 4-block ConvNet) launched ~3,900 kernels, most of them tiny, and the GPU
waited on them. This counts the operator calls of the eager meta-gradient (``torch.profiler``)
and the kernels Inductor generates for the compiled one (``torch._inductor.metrics``; library
calls for matrix products and convolutions come on top). The counts do not depend on the batch
size or the number of filters, so small ones keep it quick; the compilation is the slow part.

    python benchmarks/kernel_count.py --data-dir DIR [--steps 5] [--conv unfold_nt]

Measured 2026-11-26 (torch 2.13 CPU build, 5 steps, ``unfold_nt``, cold compile caches, 2-core
CPU shared with other jobs): eager 12,808 operator calls (views included); Inductor 1,171 generated
kernels (961 vectorized) from 1,474 IR nodes; compilation 403 s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch._inductor.metrics as inductor_metrics
from omniglot_small import data_source  # this folder is on sys.path when run as a script
from torch.profiler import ProfilerActivity, profile

from metaopt_tuner.learners import build_learner
from metaopt_tuner.tasks import get_suite
from metaopt_tuner.training.compiled import CompiledMetaGradient


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True, help="folder with images_background_small1(.zip)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--filters", type=int, default=16)
    p.add_argument("--conv", default="unfold_nt", help="ConvNet.batched_conv (unfold_nt: CUDA's default)")
    args = p.parse_args(argv)
    suite = get_suite("omniglot", data_dir=data_source(args.data_dir, "images_background_small1"),
                      filters=args.filters, val_fraction=0, test_fraction=0)
    torch.manual_seed(0)
    learner = build_learner("maml", suite, inner_lr=0.4, inner_steps=args.steps, batching="batched")
    learner.model.batched_conv = args.conv
    batch = suite.sample(args.tasks, torch.Generator().manual_seed(0))
    learner.meta_gradient(batch)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        learner.meta_gradient(batch)
    eager_ops = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
    inductor_metrics.reset()
    began = time.perf_counter()
    CompiledMetaGradient(learner)(batch)
    compile_s = time.perf_counter() - began
    print(f"second-order MAML, {args.steps} inner steps, batched conv {args.conv}, torch {torch.__version__}")
    print("| path | kernels per meta-gradient | note |")
    print("|---|---|---|")
    print(f"| eager | {eager_ops} | aten operator calls, views included |")
    print(f"| --compile (Inductor) | {inductor_metrics.generated_kernel_count} | generated kernels "
          f"({inductor_metrics.generated_cpp_vec_kernel_count} vectorized) from "
          f"{inductor_metrics.ir_nodes_pre_fusion} IR nodes, plus library calls; compiled in "
          f"{compile_s:.0f} s (0 when cached) |")


if __name__ == "__main__":
    main()
