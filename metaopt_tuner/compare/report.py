"""The comparison's rendering: results.json, report.md (with PNG plots beside it) and a
self-contained report.html, all from the data :func:`~metaopt_tuner.compare.compare` measured."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from ..atomic import atomic_write_bytes, atomic_write_text

__all__ = ["write_report", "table_rows", "break_even_line", "figures", "curves_figure", "method_title",
           "TABLE_COLUMNS",
           "COMPUTE_COLUMNS", "RESULTS", "REPORT_MD", "REPORT_HTML", "PLOTS"]

RESULTS, REPORT_MD, REPORT_HTML, PLOTS = "results.json", "report.md", "report.html", "plots"


def _num(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    return f"{x:.6g}"


TABLE_COLUMNS = ["method", "query loss", "± 95% CI", "METRIC", "± 95% CI", "tasks", "tuning trials",
                 "tuning grad evals", "adaptation grad evals", "tuning s", "adaptation s"]


def table_rows(data: dict[str, Any]) -> list[list[Any]]:
    """The comparison table as values (the renderers format exactly these)."""
    rows = []
    for m in data["methods"]:
        rows.append([m["name"], m["query_loss"]["mean"], m["query_loss"]["ci95"], m["metric"]["mean"],
                     m["metric"]["ci95"], m["tasks"], m["tuning"]["trials"], m["tuning"]["grad_evals"],
                     m["adaptation"]["grad_evals"], m["tuning"]["seconds"], m["adaptation"]["seconds"]])
    return rows


def _columns(data: dict[str, Any]) -> list[str]:
    metric = data["suite"]["metric_name"]
    return [c.replace("METRIC", f"query {metric}") for c in TABLE_COLUMNS]


def _protocol(data: dict[str, Any]) -> list[str]:
    p = data["protocol"]
    k = p["steps"]
    lines = [
        f"Every method adapts each of {p['test_tasks']} held-out test tasks of suite "
        f"`{data['suite']['name']}` from its support set only, for the same K = {k} steps, and is "
        "scored on that task's query set. "
        "Held-out tasks are never used for tuning.",
        f"Tuned baselines: Optuna TPE (seed {p['seed']}), {p['trials']} trials each, on {p['val_tasks']} "
        f"meta-validation tasks; objective = mean query loss after K = {k} steps; median pruning on the "
        f"mean query loss after every step past step {k // 2} (after 10 trials). Adam tunes lr; SGD "
        "tunes lr and momentum.",
        "Random-init baselines start every task from a fresh draw of the suite's default initialization; "
        f"pretrained baselines from one model jointly trained on pooled meta-training tasks "
        f"({p['pretrain_steps']} Adam steps), without adaptation.",
        "Parameter-free optimizers (when installed) run untuned with their defaults.",
        f"The oracle tunes Adam's lr ({p['oracle_trials']} trials) on each of {p['oracle_tasks']} test "
        "tasks' own query set: an upper bound for learning-rate tuning, not a usable method.",
        "The meta-learned optimizer adapts with its learned initialization and per-weight rates: "
        "zero tuning. With a prototype head, nearest centroid on the suite's reference model's "
        "features (no training, no steps) is the row it must beat.",
        "Gradient evaluations count forward + backward passes over one task's data. Intervals are 95% "
        "confidence intervals of the mean over tasks.",
        f"Studies are stored in `{p['storage']}`; a re-run resumes them. One worker + the seed gives "
        "reproducible results.",
    ]
    return lines


def _compute_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for m in data["methods"]:
        setup = m.get("setup") or {}
        rows.append([m["name"], setup.get("what", "none"), setup.get("grad_evals"), setup.get("seconds"),
                     m["tuning"]["grad_evals"], m["tuning"]["seconds"], m["adaptation"]["grad_evals"]])
    return rows


COMPUTE_COLUMNS = ["method", "setup", "setup grad evals", "setup s", "tuning grad evals", "tuning s",
                   "adaptation grad evals"]


def _target_lines(data: dict[str, Any]) -> list[str]:
    lines = []
    for t in data["targets"]:
        if t.get("met") is None:
            lines.append(f"{t['target']}: not measured (baseline not run)")
            continue
        note = f" ({t['note']})" if t.get("note") else ""
        lines.append(f"{t['target']} ({t['reference']}): meta-learned {_num(t['meta_loss'])} vs "
                     f"{_num(t['reference_loss'])} (ratio {_num(t['ratio'])}): "
                     f"{'MET' if t['met'] else 'NOT MET'}{note}")
    return lines


def break_even_line(data: dict[str, Any]) -> str:
    b = data["break_even"]
    if b.get("reference") is None:
        return f"Break-even: not computed ({b.get('note')})."
    reach = (f"needs {b['steps_to_match']} steps to reach" if b.get("steps_to_match") is not None
             else f"does not reach, within {b['horizon']} steps,")
    text = (f"Break-even against `{b['reference']}`: it {reach} the meta-learned loss after K steps; "
            f"meta-training cost "
            f"{_num(b['meta_training_grad_evals'])} gradient evaluations vs "
            f"{_num(b['baseline_family_grad_evals'])} for tuning (and pretraining) the baseline.")
    if b.get("tasks") is not None:
        bound = f"{b['bound']} " if b.get("bound") else ""
        text += f" Meta-training pays for itself after {bound}{b['tasks']} new tasks."
    if b.get("note"):
        text += f" ({b['note']})"
    return text


def _md_table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(_num(v) if not isinstance(v, str) else v for v in r) + " |\n"
                          for r in rows)


def _html_table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_num(v) if not isinstance(v, str) else v)}</td>" for v in r)
        + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_LEARNERS = {"metasgd": "Meta-SGD", "maml": "MAML", "fomaml": "first-order MAML", "reptile": "Reptile"}


def method_title(method: dict[str, Any]) -> str:
    """A method's name for a reader (the plot's legend, the Benchmarks table): "Adam, random init,
    tuned", "meta-learned (Meta-SGD), no tuning", not the internal ``adam`` or ``oracle-adam``."""
    label = method["label"]
    if method["kind"] == "meta":
        learner = label.split(":", 1)[0]
        return f"meta-learned ({_LEARNERS.get(learner, learner)}), no tuning"
    if method["kind"] == "oracle":
        return "oracle: Adam, lr tuned per test task on its query set"
    return label.split(" (", 1)[0]  # without the parenthesized details


def curves_figure(data: dict[str, Any]) -> Any:
    """The adaptation curves: query loss per step (log scale), one line per method with its 95% CI
    band. The oracle, tuned for the last step on each task's own query set, can overshoot by
    orders of magnitude on the way there: it has no band, the axis fits the other methods, and
    its legend entry gives the steps where it leaves the axis and its peak."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    def finite(values: list[Any], fill: float) -> list[float]:
        return [fill if v is None or not math.isfinite(v) else float(v) for v in values]

    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    lows, highs = [], []
    for m in data["methods"]:
        if m["kind"] == "oracle":
            continue
        mean, ci = finite(m["curve"]["loss_mean"], math.nan), finite(m["curve"]["loss_ci95"], 0.0)
        lows += [a - b if a - b > 0 else a for a, b in zip(mean, ci) if a > 0]
        highs += [a + b for a, b in zip(mean, ci) if math.isfinite(a)]
    bottom = min(lows) / 1.5 if lows else None
    top = max(highs) * 3.0 if highs else None
    drawn = 0
    for m in data["methods"]:
        mean, ci = finite(m["curve"]["loss_mean"], math.nan), finite(m["curve"]["loss_ci95"], 0.0)
        xs = list(range(len(mean)))
        title = method_title(m)
        if m["kind"] == "oracle":
            above = [x for x, v in zip(xs, mean) if top is not None and v > top]
            if above:
                peak = max(mean)
                steps = f"steps {above[0]}-{above[-1]}" if len(above) > 1 else f"step {above[0]}"
                title += f" (no band; above the axis at {steps}, up to {peak:.3g})"
            else:
                title += " (no band)"
            ax.plot(xs, mean, "--", label=title, lw=1.4, color="0.35")
            continue
        # markers tell apart the baselines whose curves coincide (tuned Adam and SGD from scratch)
        marker = None if m["kind"] == "meta" else "os^vDP<>"[drawn % 8]
        drawn += m["kind"] != "meta"
        (line,) = ax.plot(xs, mean, "-", label=title, lw=2.4 if m["kind"] == "meta" else 1.4,
                          marker=marker, markersize=3.5)
        ax.fill_between(xs, [a - b for a, b in zip(mean, ci)], [a + b for a, b in zip(mean, ci)],
                        color=line.get_color(), alpha=0.18, linewidth=0)
    ax.set_xlabel("adaptation step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("query loss (mean, 95% CI band)")
    ax.set_yscale("log")
    if bottom is not None and top is not None:
        ax.set_ylim(bottom, top)
    ax.set_title("Query loss vs adaptation step on held-out tasks")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)
    return fig


def figures(data: dict[str, Any], rates: dict[str, Tensor] | None) -> dict[str, bytes]:
    """PNG bytes of every plot, by file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: dict[str, bytes] = {}

    def png(fig: Any) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        return buf.getvalue()

    figs["curves.png"] = png(curves_figure(data))

    tuned = [m for m in data["methods"] if m["history"]]
    if tuned:
        fig, axes = plt.subplots(1, len(tuned), figsize=(3.6 * len(tuned), 3.4), squeeze=False)
        for ax, m in zip(axes[0], tuned):
            done = [(n, v) for n, v, s in m["history"] if s == "COMPLETE" and v is not None]
            pruned = [(n, v) for n, v, s in m["history"] if s == "PRUNED" and v is not None]
            if done:
                ax.scatter(*zip(*done), s=12, label="complete")
                best, running = [], math.inf
                for n, v in sorted(done):
                    running = min(running, v)
                    best.append((n, running))
                ax.step(*zip(*best), where="post", color="C3", label="best so far")
            if pruned:
                ax.scatter(*zip(*pruned), s=12, marker="x", color="0.5", label="pruned (last value)")
            ax.set_yscale("log")
            ax.set_title(m["name"], fontsize=9)
            ax.set_xlabel("trial")
        axes[0][0].set_ylabel("objective (val query loss)")
        axes[0][0].legend(fontsize=7)
        fig.suptitle("Optuna optimization history")
        figs["history.png"] = png(fig)

    if rates:
        names = list(rates)
        steps = next(iter(rates.values())).shape[0]
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) * min(steps, 4)), 4))
        width = 0.8 / steps
        for s in range(steps):
            values = [rates[n][s].detach().double().flatten().numpy() for n in names]
            pos = [i + (s - (steps - 1) / 2) * width for i in range(len(names))]
            ax.boxplot(values, positions=pos, widths=width * 0.9, showfliers=False, whis=(5, 95))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("learned rate (5-95% whiskers)")
        ax.set_title(f"Learned per-weight rates per layer ({steps} step(s) side by side)")
        figs["rates.png"] = png(fig)
    return figs


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}")


def write_report(data: dict[str, Any], out: str | os.PathLike[str],
                 rates: dict[str, Tensor] | None = None) -> dict[str, Path]:
    """Write results.json, report.md (+ plots/*.png) and a self-contained report.html atomically."""
    out = Path(out)
    (out / PLOTS).mkdir(parents=True, exist_ok=True)
    figs = figures(data, rates)
    for name, blob in figs.items():
        atomic_write_bytes(out / PLOTS / name, blob)
    title = f"metaopt compare: {data['suite']['name']}, K = {data['protocol']['steps']}"
    columns, rows = _columns(data), table_rows(data)
    labels = [f"`{m['name']}`: {m['label']}" + (f"; tuned {m['hparams']}" if m["hparams"] else "")
              for m in data["methods"]]
    captions = {"curves.png": "Query loss versus adaptation step (95% CI bands)",
                "history.png": "Optuna optimization history per tuned baseline",
                "rates.png": "Learned rates per layer"}

    md = [f"# {title}\n", "## Protocol\n", *[f"- {line}" for line in _protocol(data)], "",
          "## Results (held-out test tasks)\n", _md_table(columns, rows),
          *[f"- {line}" for line in labels], "", "## Targets\n", *[f"- {t}" for t in _target_lines(data)], "",
          "## Compute\n", _md_table(COMPUTE_COLUMNS, _compute_rows(data)), break_even_line(data), "",
          "## Plots\n", *[f"![{captions[n]}]({PLOTS}/{n})\n" for n in figs]]
    atomic_write_text(out / REPORT_MD, "\n".join(md) + "\n")

    def img(name: str) -> str:
        encoded = base64.b64encode(figs[name]).decode()
        return (f"<figure><img alt=\"{html.escape(captions[name])}\" src=\"data:image/png;base64,{encoded}\">"
                f"<figcaption>{html.escape(captions[name])}</figcaption></figure>")

    body = [f"<h1>{html.escape(title)}</h1>", "<h2>Protocol</h2><ul>",
            *[f"<li>{html.escape(line)}</li>" for line in _protocol(data)], "</ul>",
            "<h2>Results (held-out test tasks)</h2>", _html_table(columns, rows), "<ul>",
            *[f"<li>{html.escape(line)}</li>" for line in labels], "</ul>", "<h2>Targets</h2><ul>",
            *[f"<li>{html.escape(t)}</li>" for t in _target_lines(data)], "</ul>", "<h2>Compute</h2>",
            _html_table(COMPUTE_COLUMNS, _compute_rows(data)),
            f"<p>{html.escape(break_even_line(data))}</p>",
            "<h2>Plots</h2>", *[img(n) for n in figs]]
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
    atomic_write_text(out / REPORT_HTML, page)
    atomic_write_text(out / RESULTS, json.dumps(data, indent=2, allow_nan=False) + "\n")
    return {"json": out / RESULTS, "markdown": out / REPORT_MD, "html": out / REPORT_HTML,
            **{n: out / PLOTS / n for n in figs}}
