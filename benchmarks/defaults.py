"""The defaults against the best hand-tuned recipe, per suite, at equal training time.

For every suite, two commands train for the same ``--budget`` and are evaluated on the same
held-out tasks:

* defaults: ``metaopt train --suite S [--data-dir D] --budget B --out O`` (nothing else);
* hand-tuned: the README's best recorded flags for the suite, with ``--budget B`` for its
  ``--iterations``.

Sinusoid always; Omniglot with ``--omniglot-dir`` (a folder with
``images_background_small1/2`` as zips or folders: trained on small1, tested on every character of
the alphabets small2 adds, as ``benchmarks/omniglot_small.py`` does, through ``evaluate --split
all``); intents with ``--intents-dir`` (CLINC150: the suite's default seeded split by domain, so
test intents are of held-out domains). The table gives the held-out metric at the best step count
(steps 1..K of the artifact; lower MSE or higher accuracy), mean and 95% CI over ``--tasks`` tasks,
with the meta-iterations the budget bought.

    python benchmarks/defaults.py --budget 90s --threads 1
    python benchmarks/defaults.py --budget 20m --omniglot-dir DIR --intents-dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: the README's best hand-tuned flags per suite (without their iteration counts)
HAND_TUNED = {
    "sinusoid": ["--learner", "metasgd", "--inner-steps", "10", "--per-step-lrs",
                 "--clip-grad", "1.0"],
    "omniglot": ["--learner", "metasgd", "--head-init", "prototypes", "--inner-lr", "0.05",
                 "--meta-batch", "4", "--meta-lr-schedule", "cosine", "-o", "filters=64",
                 "-o", "jitter_degrees=15", "-o", "jitter_scale=0.15", "-o", "jitter_shift=0.15"],
    "intents": ["--learner", "metasgd", "--inner-lr", "0.5", "--meta-batch", "16"],
}
OMNIGLOT_TEST_ALPHABETS = "Japanese_(katakana),Sanskrit,Tagalog"


def _source(folder: Path, name: str) -> str:
    for candidate in (folder / name, folder / f"{name}.zip"):
        if candidate.exists():
            return str(candidate)
    sys.exit(f"error: neither {name}/ nor {name}.zip in {folder}")


def suite_data(args: argparse.Namespace) -> dict[str, tuple[list[str], list[str]]]:
    """Suite -> (training data arguments, evaluation data arguments)."""
    suites: dict[str, tuple[list[str], list[str]]] = {"sinusoid": ([], [])}
    if args.omniglot_dir:
        small1 = _source(args.omniglot_dir, "images_background_small1")
        small2 = _source(args.omniglot_dir, "images_background_small2")
        suites["omniglot"] = (["--data-dir", small1],
                              ["--data-dir", small2, "-o", f"alphabets={OMNIGLOT_TEST_ALPHABETS}",
                               "--split", "all"])
    if args.intents_dir:
        suites["intents"] = (["--data-dir", str(args.intents_dir)], [])
    return suites


def metaopt(*argv: str, threads: int) -> str:
    """Run ``metaopt ARGV`` from this checkout; its stdout (exits on failure)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-m", "cli", *argv, "--threads", str(threads)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"error: metaopt {' '.join(argv)} failed:\n{proc.stderr}")
    return proc.stdout


def run_variant(args: argparse.Namespace, suite: str, variant: str, train_data: list[str],
                eval_data: list[str]) -> dict[str, Any]:
    out = args.out / f"{suite}-{variant}"
    flags = HAND_TUNED[suite] if variant == "hand-tuned" else []
    command = ["train", "--suite", suite, *train_data, "--budget", args.budget, *flags,
               "--out", str(out)]
    metaopt(*command, "--no-progress", threads=args.threads)
    result = json.loads(metaopt("evaluate", str(out / "artifact"), "--tasks", str(args.tasks),
                                "--json", *eval_data, threads=args.threads))
    means, cis = result["metric_mean"][1:], result["metric_ci"][1:]
    pick = max if result["metric_higher_is_better"] else min
    best = pick(range(len(means)), key=lambda i: means[i])
    marker = json.loads((out / "run.json").read_text())
    return {"suite": suite, "variant": variant, "metric": result["metric_name"],
            "mean": means[best], "ci95": cis[best], "step": best + 1,
            "iterations": marker["config"]["iterations"],
            "train_s": json.loads((out / "artifact" / "manifest.json").read_text())
            ["metrics"].get("train_seconds"),
            "command": "metaopt " + " ".join(command), "num_classes": result.get("num_classes")}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="90s", help="training budget of every run (90s, 20m)")
    parser.add_argument("--omniglot-dir", type=Path, help="folder with images_background_small1/2")
    parser.add_argument("--intents-dir", type=Path, help="CLINC150 folder (data_full.json)")
    parser.add_argument("--tasks", type=int, default=600, help="held-out tasks per evaluation")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every command")
    parser.add_argument("--out", type=Path, default=Path("runs/defaults"),
                        help="folder for the runs (must not hold them already)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = [run_variant(args, suite, variant, train_data, eval_data)
            for suite, (train_data, eval_data) in suite_data(args).items()
            for variant in ("defaults", "hand-tuned")]
    print(f"held-out metric at the best step, mean ± 95% CI over {args.tasks} tasks; "
          f"budget {args.budget} each, {args.threads} thread(s)\n")
    print("| suite | configuration | metric | step | iterations | train s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        train_s = f"{r['train_s']:.0f}" if r["train_s"] is not None else "-"
        print(f"| {r['suite']} | {r['variant']} | {r['metric']} {r['mean']:.4g} ± {r['ci95']:.2g} "
              f"| {r['step']} | {r['iterations']} | {train_s} |")
    print()
    for r in rows:
        print(f"{r['suite']} {r['variant']}: {r['command']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
