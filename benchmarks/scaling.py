"""Meta-training throughput on 1 and N processes (torch.distributed, gloo) at a fixed total meta-batch.

Every configuration starts fresh processes with the environment ``torchrun`` sets, builds an
in-memory :class:`MetaTrainer`, warms up, then times ``--iterations`` meta-iterations on rank 0
(ranks move in lockstep: every iteration ends in one all-reduce). Rows:

* ``1 proc``: the default single-process run (one task stream);
* ``1 proc, N streams``: one process computing exactly what N processes compute (N streams);
* ``N procs``: N processes.

Every process gets ``--threads-per-proc`` threads (1, as under torchrun), so N processes use N
times the cores of one: scaling efficiency = (N-process it/s) / (N x 1-process it/s). On a CPU
shared with other work the numbers move with the load: run it on an idle machine for figures to
quote.

    python benchmarks/scaling.py                                  # sinusoid, 1 and 2 processes
    python benchmarks/scaling.py --suites sinusoid,omniglot --data-dir DIR  # DIR: the omniglot zips
    python benchmarks/scaling.py --device cuda --procs 1          # single-GPU figures
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SUITES: dict[str, dict[str, Any]] = {
    # MAML's sinusoid: MLP 40-40, 10 shots; Meta-SGD, one inner step
    "sinusoid": dict(suite_options={}, meta_batch=24, learner="metasgd", inner_steps=1),
    # 5-way 1-shot Omniglot, 4-block ConvNet with 32 filters; first-order MAML, one inner step
    "omniglot": dict(suite_options=dict(ways=5, shots=1, query=5, filters=32), meta_batch=8,
                     learner="fomaml", inner_steps=1),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _omniglot_source(data_dir: Path) -> str:
    for name in ("images_background_small1", "images_background_small1.zip", "images_background",
                 "images_background.zip"):
        if (data_dir / name).exists():
            return str(data_dir / name)
    return str(data_dir)


def worker(args: argparse.Namespace) -> None:
    """One process of one configuration (started by :func:`measure`)."""
    import torch

    torch.set_num_threads(args.threads)
    from metaopt_tuner.training import MetaTrainer, TrainConfig, distributed

    spec = SUITES[args.suite]
    options = dict(spec["suite_options"])
    if args.suite == "omniglot":
        options["data_dir"] = _omniglot_source(Path(args.data_dir))
    config = TrainConfig(suite=args.suite, suite_options=options, learner=spec["learner"],
                         inner_steps=spec["inner_steps"], meta_batch=args.meta_batch or spec["meta_batch"],
                         iterations=args.warmup + args.iterations, task_streams=args.streams,
                         device=args.device, seed=0)
    trainer = MetaTrainer(config, progress=False, dist_timeout=120)
    for _ in range(args.warmup):
        trainer.step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.iterations):
        trainer.step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if trainer.dist.is_main:
        print(json.dumps({"it_per_s": args.iterations / elapsed, "seconds": elapsed,
                          "device": str(trainer.device), "threads": torch.get_num_threads()}), flush=True)
    distributed.shutdown()


def measure(suite: str, procs: int, streams: int | None, threads: int, ns: argparse.Namespace) -> dict:
    """Run one configuration in ``procs`` fresh processes; rank 0's JSON result."""
    port = _free_port()
    cmd = [sys.executable, __file__, "--worker", "--suite", suite, "--threads", str(threads),
           "--iterations", str(ns.iterations), "--warmup", str(ns.warmup), "--device", ns.device,
           "--data-dir", str(ns.data_dir)]
    if streams is not None:
        cmd += ["--streams", str(streams)]
    if ns.meta_batch:
        cmd += ["--meta-batch", str(ns.meta_batch)]
    group = []
    for rank in range(procs):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(Path(__file__).parents[1]))
        if procs > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(procs), LOCAL_RANK=str(rank),
                       LOCAL_WORLD_SIZE=str(procs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        else:
            for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
                env.pop(key, None)
        group.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    try:
        outputs = [p.communicate(timeout=ns.timeout) for p in group]
    finally:
        for p in group:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(group, outputs):
        if p.returncode != 0:
            raise SystemExit(f"{suite} with {procs} process(es) failed:\n{err[-2000:]}")
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default="sinusoid", help="comma-separated: sinusoid, omniglot")
    parser.add_argument("--procs", default="1,2", help="process counts to compare, e.g. 1,2,4")
    parser.add_argument("--iterations", type=int, default=100, help="timed meta-iterations")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--meta-batch", type=int, default=None, help="total tasks per meta-batch")
    parser.add_argument("--threads-per-proc", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("METAOPT_DATA", "../shared/data")) / "omniglot")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json", action="store_true", help="print one JSON object per row")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--suite", help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.worker:
        worker(ns)
        return
    counts = [int(p) for p in ns.procs.split(",")]
    print(f"# {os.cpu_count()} CPU cores, {ns.threads_per_proc} thread(s) per process; load average "
          f"{os.getloadavg()[0]:.1f} at start (a shared machine skews these numbers)")
    print(f"{'suite':<10} {'processes':<22} {'meta-batch':>10} {'it/s':>8} {'speed-up':>9} "
          f"{'efficiency':>10}")
    for suite in [s.strip() for s in ns.suites.split(",") if s.strip()]:
        batch = ns.meta_batch or SUITES[suite]["meta_batch"]
        base: float | None = None
        for procs in counts:
            rows = [(procs, None, f"{procs} proc" + ("s" if procs > 1 else ""))]
            if procs > 1:
                rows.insert(0, (1, procs, f"1 proc, {procs} streams"))
            for n, streams, label in rows:
                result = measure(suite, n, streams, ns.threads_per_proc, ns)
                rate = result["it_per_s"]
                if n == 1 and streams is None:
                    base = rate
                speedup = rate / base if base else float("nan")
                efficiency = speedup / n
                if ns.json:
                    print(json.dumps({"suite": suite, "processes": n, "streams": streams or n,
                                      "meta_batch": batch, **result, "speedup": speedup,
                                      "efficiency": efficiency}))
                else:
                    print(f"{suite:<10} {label:<22} {batch:>10} {rate:>8.1f} {speedup:>8.2f}x "
                          f"{efficiency:>9.0%}", flush=True)


if __name__ == "__main__":
    main()
