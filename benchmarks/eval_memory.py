"""Peak resident memory of ``evaluate`` for 10 / 100 / 1,000 held-out tasks, chunked or not.

Each case runs in its own child process (``evaluate`` from a fresh interpreter, one torch thread);
its peak resident set size comes from ``os.wait4``'s resource usage of that child alone. Two
modes:

* ``chunked``: today's ``evaluate`` (tasks drawn, built and adapted a chunk at a time; the default
  chunk, derived from the tasks' size, is printed);
* ``all built at once``: the path before issue 30: ``suite.fixed_tasks(n)`` built whole, then adapted
  100 tasks at a time (skipped where it would not fit: ``--max-all`` tasks for an encoder).

Both give the same curve (the table says so: the mean query loss after the last step is compared
exactly: the same mean of the same float32 per-task losses). The sinusoid uses the shipped
artifact; with ``--artifact`` and ``--data-dir`` an intents encoder artifact is measured too, on
the ``all`` split of the data::

    python benchmarks/eval_memory.py
    python benchmarks/eval_memory.py --artifact /tmp/bench-intents/artifact \\
        --data-dir ../shared/data/clinc150 --encoder $M

(``--encoder``: the encoder folder the artifact was trained on; an artifact names none.)

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    """One case: evaluate, print one JSON line (the curve, the chunk, seconds)."""
    sys.path.insert(0, str(ROOT))
    import torch

    from metaopt_tuner.evaluation import evaluate, suite_for_split
    from metaopt_tuner.resolver import resolve_artifact
    from metaopt_tuner.stats import mean_ci
    from metaopt_tuner.tasks import TaskStream

    torch.set_num_threads(1)
    n = args.tasks[0]
    art = resolve_artifact(args.artifact)
    overrides = {"data_dir": args.data_dir} if args.data_dir else {}
    if args.encoder:
        overrides["encoder"] = args.encoder
    suite = suite_for_split(art, args.split, **overrides)
    begun = time.perf_counter()
    if args.mode == "chunked":
        result = evaluate(art, suite, num_tasks=n, split=args.split)
        loss, chunk = result.loss_mean[-1], TaskStream(suite, n, args.split).chunk
    else:  # the path before issue 30: every task built at once, adapted 100 at a time
        learner = art.to_learner(suite=suite)
        tasks = suite.fixed_tasks(n, split=args.split).to(dtype=art.dtype)
        curve = learner.adaptation_curve(tasks, learner.inner_steps, chunk=100)
        loss, chunk = float(mean_ci(curve.loss)[0][-1]), 100  # evaluate's own statistic
    print(json.dumps({"loss": loss, "chunk": chunk, "seconds": time.perf_counter() - begun}))


def measure(artifact: str, tasks: int, mode: str, split: str, data_dir: str | None,
            encoder: str | None) -> dict:
    """Run one case in a child process; its output and peak RSS in MiB."""
    cmd = [sys.executable, __file__, "--child", "--artifact", artifact, "--tasks", str(tasks),
           "--mode", mode, "--split", split] + (["--data-dir", data_dir] if data_dir else []) \
        + (["--encoder", encoder] if encoder else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}", "peak_mib": usage.ru_maxrss / 1024}
    return {**json.loads(out.strip().splitlines()[-1]), "peak_mib": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", help="an encoder artifact (intents) to measure too")
    parser.add_argument("--data-dir", help="its data (the all split is evaluated)")
    parser.add_argument("--encoder", help="the encoder folder it was trained on")
    parser.add_argument("--tasks", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--max-all", type=int, default=100,
                        help="most tasks built all at once for the encoder artifact")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="chunked", help=argparse.SUPPRESS)
    parser.add_argument("--split", default="test", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    cases = [("sinusoid (shipped artifact)", "sinusoid", "test", None, None, max(args.tasks))]
    if args.artifact:
        cases.append((f"intents encoder ({Path(args.artifact).name}, all split)", args.artifact,
                      "all", args.data_dir, args.encoder, args.max_all))
    print("| suite | tasks | mode | chunk | peak RSS (MiB) | seconds | final query loss |")
    print("|---|---|---|---|---|---|---|")
    for label, artifact, split, data_dir, encoder, max_all in cases:
        for n in args.tasks:
            losses = {}
            for mode in ("chunked", "all built at once"):
                if mode == "all built at once" and n > max_all:
                    print(f"| {label} | {n} | {mode} | - | not run (would not fit) | - | - |")
                    continue
                r = measure(artifact, n, "chunked" if mode == "chunked" else "all", split, data_dir,
                            encoder)
                if "error" in r:
                    print(f"| {label} | {n} | {mode} | - | {r['peak_mib']:.0f} ({r['error']}) | - | - |")
                    continue
                losses[mode] = r["loss"]
                print(f"| {label} | {n} | {mode} | {r['chunk']} | {r['peak_mib']:.0f} | "
                      f"{r['seconds']:.1f} | {r['loss']:.6g} |", flush=True)
            if len(losses) == 2:
                same = losses["chunked"] == losses["all built at once"]
                print(f"| {label} | {n} | identical curves | | | | {'yes' if same else 'NO'} |",
                      flush=True)


if __name__ == "__main__":
    main()
