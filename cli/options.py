"""Option aliases shared by several commands, so each is spelled and documented once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from metaopt_tuner.errors import ConfigError

Suite = Annotated[
    str,
    typer.Option("--suite", "-s",
                 help="Task suite: a name (see `metaopt suites`) or module:Class (your own TaskSuite)."),
]
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder with the suite's data (image or text suites)."),
]
SuiteOption = Annotated[
    list[str] | None,
    typer.Option(
        "--suite-option", "-o",
        help="Suite option KEY=VALUE (VALUE parsed as JSON when it can be, e.g. shots=5); repeatable.",
    ),
]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (task sampling and initialization).")]
Device = Annotated[str, typer.Option("--device", help="Torch device: cpu, cuda, cuda:1, ...")]
TrustFactory = Annotated[
    bool,
    typer.Option(
        "--trust-factory", help="Allow importing the model factory the artifact names (runs its code)."
    ),
]
Chunk = Annotated[
    int | None,
    typer.Option(
        "--chunk", min=1,
        help="Held-out tasks drawn and adapted at a time (any value gives the same results) "
             "\\[default: as many as 16 MiB of task tensors hold, at most 100].",
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads", min=1,
        help="CPU threads for torch \\[default: 1 for models under 200,000 parameters (every "
             "built-in suite's), else torch's].",
    ),
]
_TRACKING_PANEL = "Tracking and registry"
TrackingUri = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri", rich_help_panel=_TRACKING_PANEL,
        help="MLflow server or store to log the run to (http://HOST:PORT, sqlite:///PATH.db) "
        "\\[default: $MLFLOW_TRACKING_URI; no tracking when unset].",
    ),
]
RegistryUri = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri", rich_help_panel=_TRACKING_PANEL,
        help="MLflow server or store holding the model registry (for models:/ artifacts) "
        "\\[default: $MLFLOW_TRACKING_URI, else the local store ~/.metaopt/mlflow.db].",
    ),
]


def parse_suite_options(pairs: list[str] | None, data_dir: Path | None = None) -> dict[str, Any]:
    """``["shots=5", "ways=20"]`` -> ``{"shots": 5, "ways": 20}``; adds ``data_dir`` when given."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"suite option {pair!r} is not KEY=VALUE")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options[key.strip().replace("-", "_")] = value
    if data_dir is not None:
        options["data_dir"] = str(data_dir)
    return options
