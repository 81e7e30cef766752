"""Safe for any horizon: artifacts trained with the defaults, adapted far past their trained steps.

For each suite an artifact is meta-trained with the defaults only (``metaopt train --suite S
[--data-dir D] --out O``, plus ``--budget`` or ``--iterations`` when given), then adapted on 200
held-out tasks for up to 1,000 steps. The table checks what issue 17 asks:

* every loss finite at every step;
* regression: the query loss at every step past the trained horizon H at most 1.05x its value at
  H; classification: the accuracy at every step past H at least its value at H minus 1 point;
* classification: each query asked alone gets the answer it gets inside its batch, through the
  drop-in path a user takes (``prepare`` + ``MetaSGD`` for H steps on the support set).

    python benchmarks/horizon.py                                   # sinusoid
    python benchmarks/horizon.py --omniglot-dir ../shared/data/omniglot --intents-dir ../shared/data/clinc150
    python benchmarks/horizon.py --artifact metaopt_tuner/pretrained/sinusoid   # a given artifact

Prints a Markdown table; ``--json FILE`` writes the curves too.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from metaopt_tuner.artifact import Artifact, load_artifact  # noqa: E402
from metaopt_tuner.evaluation import evaluate  # noqa: E402
from metaopt_tuner.optim import prepare  # noqa: E402

STEPS_SHOWN = (1, 10, 100, 1000)


def train_defaults(suite: str, data_dir: Path | None, out: Path, length: list[str]) -> tuple[Path, float]:
    """``metaopt train --suite SUITE [--data-dir D] --out OUT`` (defaults only, one thread, as
    ``defaults.py`` runs it); the artifact and the seconds it took."""
    from defaults import metaopt  # benchmarks/: the same subprocess runner

    argv = ["train", "--suite", suite, "--out", str(out), "--no-progress", *length]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    start = time.perf_counter()
    metaopt(*argv, threads=1)
    return out / "artifact", time.perf_counter() - start


def alone_vs_batch(art: Artifact, tasks: Any, steps: int) -> tuple[float, float, int]:
    """Accuracy of the queries in one batch and each alone after ``steps`` MetaSGD steps through
    ``prepare`` (the user's path), and how many answers differ."""
    suite = art.build_suite()
    right_batch = right_alone = differ = total = 0
    for i in range(len(tasks)):
        task = tasks.task(i).to(dtype=art.dtype)
        model, opt = prepare(None, art, support=(task.x_support, task.y_support))
        for _ in range(steps):
            opt.zero_grad()
            suite.loss_per_example(model(task.x_support), task.y_support).mean().backward()
            opt.step()
        with torch.no_grad():
            batch = model(task.x_query).argmax(-1)
            alone = torch.cat([model(task.x_query[j:j + 1]) for j in range(len(task.x_query))]).argmax(-1)
        right_batch += int((batch == task.y_query).sum())
        right_alone += int((alone == task.y_query).sum())
        differ += int((batch != alone).sum())
        total += len(task.y_query)
    return 100.0 * right_batch / total, 100.0 * right_alone / total, differ


def check(art: Artifact, tasks: int, steps: int, alone: bool) -> dict[str, Any]:
    result = evaluate(art, num_tasks=tasks, steps=steps)
    h = art.horizon
    higher = result.metric_higher_is_better
    scale = 100.0 if higher else 1.0  # accuracy in points
    metric = [m * scale if m is not None else math.nan for m in result.metric_mean]
    loss = result.loss_mean
    finite = all(math.isfinite(v) for v in metric + loss)
    past = metric[h:]
    if higher:
        worst = min(past) - metric[h]
        ok = finite and worst >= -1.0
    else:
        worst = max(past) / metric[h]
        ok = finite and worst <= 1.05
    row: dict[str, Any] = {
        "suite": art.suite_name, "horizon": h, "metric": result.metric_name,
        "at": {str(s): metric[s] for s in (*STEPS_SHOWN, h) if s <= steps},
        "at_horizon_ci": result.metric_ci[h] * scale, "worst_past_horizon": worst,
        "finite": finite, "ok": ok, "higher_is_better": higher,
        "curve": metric, "loss_curve": loss,
    }
    if alone and higher:
        fixed = art.build_suite().fixed_tasks(tasks, split="test")
        acc_batch, acc_alone, differ = alone_vs_batch(art, fixed, h)
        row.update(batch_acc=acc_batch, alone_acc=acc_alone, answers_differ=differ)
        row["ok"] = row["ok"] and differ == 0
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| suite | H | metric | " + " | ".join(f"step {s}" for s in STEPS_SHOWN)
            + " | at H (95% CI) | worst past H | finite | alone / batch | pass | train s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        fmt = (lambda v: f"{v:.1f}") if r["higher_is_better"] else (lambda v: f"{v:.4g}")
        cells = [fmt(r["at"][str(s)]) if str(s) in r["at"] else "-" for s in STEPS_SHOWN]
        worst = (f"{r['worst_past_horizon']:+.2f} pt" if r["higher_is_better"]
                 else f"{r['worst_past_horizon']:.3f}x")
        alone = (f"{r['alone_acc']:.1f} / {r['batch_acc']:.1f} ({r['answers_differ']} differ)"
                 if "alone_acc" in r else "-")
        lines.append(
            f"| {r['suite']} | {r['horizon']} | {r['metric']} | " + " | ".join(cells)
            + f" | {fmt(r['at'][str(r['horizon'])])} ± {fmt(r['at_horizon_ci'])} | {worst} | "
            f"{'yes' if r['finite'] else 'NO'} | {alone} | {'yes' if r['ok'] else 'NO'} | "
            f"{r.get('train_seconds', '-')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--omniglot-dir", type=Path, help="folder with the Omniglot zips (adds the row)")
    parser.add_argument("--intents-dir", type=Path, help="CLINC150 folder (adds the row)")
    parser.add_argument("--artifact", type=Path, nargs="*", default=[],
                        help="check these artifacts instead of training")
    parser.add_argument("--budget", help="train each suite for this long (default: its recipe)")
    parser.add_argument("--iterations", type=int, help="train each suite for exactly this many")
    parser.add_argument("--suites", default="sinusoid,omniglot,intents",
                        help="which rows (omniglot and intents also need their folders)")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "horizon")
    parser.add_argument("--json", type=Path, help="write the rows (with curves) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    length = (["--budget", args.budget] if args.budget else
              ["--iterations", str(args.iterations)] if args.iterations else [])
    rows = []
    for path in args.artifact:
        art = load_artifact(path)
        rows.append(check(art, args.tasks, args.steps, alone=True))
    if not args.artifact:
        wanted = args.suites.split(",")
        suites: list[tuple[str, Path | None]] = [("sinusoid", None)] if "sinusoid" in wanted else []
        if args.omniglot_dir and "omniglot" in wanted:
            suites.append(("omniglot", args.omniglot_dir))
        if args.intents_dir and "intents" in wanted:
            suites.append(("intents", args.intents_dir))
        for suite, data in suites:
            out = args.out / suite
            if out.exists():
                sys.exit(f"error: {out} exists; remove it or pass another --out")
            path, seconds = train_defaults(suite, data, out, length)
            row = check(load_artifact(path), args.tasks, args.steps, alone=True)
            row["train_seconds"] = round(seconds)
            rows.append(row)
            print(table([row]), flush=True)
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
