"""``metaopt inspect``: an artifact's manifest and the statistics of its learned rates."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from metaopt_tuner.resolver import resolve_artifact

from ..display import cell, fits, print_lines
from ..options import JsonOut, RegistryUri
from .evaluate import ArtifactArg

#: the longest list printed whole (a longer one shows its first values and its last)
_LIST_SHOWN = 12


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        if len(value) > _LIST_SHOWN:  # a metric per step: the first ones and the last (--json: all)
            shown = [_fmt(v) for v in value[:_LIST_SHOWN - 2]] + ["...", _fmt(value[-1])]
            return "[" + ", ".join(shown) + f"] ({len(value)} values)"
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _model(spec: dict[str, Any]) -> str:
    kwargs = ", ".join(f"{k}={_fmt(v)}" for k, v in (spec.get("kwargs") or {}).items())
    if "factory" in spec:
        return f"{spec['factory']}({kwargs})  (factory: imported only with --trust-factory)"
    return f"{spec['name']}({kwargs})"


def inspect(artifact: ArtifactArg, json_out: JsonOut = False, tracking_uri: RegistryUri = None) -> None:
    """Print ARTIFACT's manifest and its learned rates per tensor (min / median / max per step)."""
    art = resolve_artifact(artifact, tracking_uri=tracking_uri)
    stats = art.rate_stats()
    if json_out:
        typer.echo(json.dumps({"manifest": art.manifest, "rates": stats}, indent=2))
        return
    m = art.manifest
    console = Console(highlight=False)
    rows = [
        ("format", f"{m['format']} v{m['format_version']} (metaopt-tuner {m['library_version']})"),
        ("created", m.get("created", "-")),
        ("model", _model(art.model_spec)),  # (spelled out: an old ConvNet names its batch norm)
        ("parameters", f"{len(art.names)} tensors, {sum(t.numel() for t in art.theta.values())} weights, {_fmt(str(art.dtype).removeprefix('torch.'))}"),
        ("suite", f"{art.suite_name} ({_fmt(art.suite_options)})"),
        ("learner", _fmt(art.learner_config)),
        ("inner steps", f"{art.inner_steps} (rates learned for {art.rate_steps} step(s))"),
        ("classes", f"any number (width-free head: trained at {art.head_width}, its values and rates "
                    "tied across classes)" if art.width_free else "-"),
        ("after the horizon", art.tail_rule()),
        ("head step bound", "each class row's step at most " + ", ".join(
            f"{v:.3g}" for v in art.head_step_bound.tolist()) + " long, per step"
         if art.head_step_bound is not None else "-"),
        ("head whitening", f"prototypes whitened by the support set's covariance, strength "
         f"{art.learner_config['head_whitening']:g}"
         if art.learner_config.get("head_whitening") is not None else "-"),
        ("training", _fmt(art.training_config) if art.training_config is not None else "-"),
        ("metrics", _fmt(art.metrics)),
    ]
    if "provenance" in m:
        rows.append(("provenance", _fmt(m["provenance"])))
    rows.append(("tensors", f"{m['tensors']['size']} bytes, sha256 {m['tensors']['sha256'][:16]}..."))
    title = f"artifact {art.path or artifact}"
    rate_title = "learned rates per tensor (min / median / max)"
    steps = [f"step {t}" if art.rate_steps > 1 else "all steps" for t in range(art.rate_steps)]
    per_tensor = [(s["name"], "×".join(map(str, s["shape"])) or "scalar",
                   [f"{lo:.4g} / {mid:.4g} / {hi:.4g}" for lo, mid, hi in zip(s["min"], s["median"], s["max"])])
                  for s in stats]
    summary = Table(title=cell(title), show_header=False)
    summary.add_column("field", style="bold", no_wrap=True)
    summary.add_column("value")
    for name, value in rows:
        summary.add_row(name, cell(value))
    rates = Table(title=rate_title)
    rates.add_column("tensor", no_wrap=True)
    rates.add_column("shape", justify="right", no_wrap=True)
    for step in steps:
        rates.add_column(step, justify="right", no_wrap=True)
    for name, shape, cells in per_tensor:
        rates.add_row(cell(name), shape, *cells)
    if fits(console, summary) and fits(console, rates):
        console.print(summary)
        console.print(rates)
        return
    # piped, or a terminal too narrow for the tables: plain lines, nothing cut
    print_lines([(None, rows)], title=title)
    typer.echo("")
    print_lines([(f"{name} ({shape})", list(zip(steps, cells))) for name, shape, cells in per_tensor],
                title=rate_title)
