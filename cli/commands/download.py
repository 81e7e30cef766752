"""``metaopt download``: fetch a data set's published files, verified by MD5."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metaopt_tuner.tasks.download import DATASETS, download_dataset


def download(
    dataset: Annotated[str, typer.Argument(help=f"Data set to fetch: {', '.join(sorted(DATASETS))}.")],
    to: Annotated[Path, typer.Option("--to", help="Folder to write the files into (created if missing).")],
    base_url: Annotated[str | None, typer.Option("--base-url", help="Fetch from this mirror instead of the original URL.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Network timeout in seconds.")] = 60.0,
) -> None:
    """Download DATASET into --to, verify every file's MD5, then point --data-dir at that folder."""
    for f in download_dataset(dataset, to, base_url=base_url, timeout=timeout):
        how = "downloaded" if f.fetched else "already present"
        typer.echo(f"{f.path.name}: {how}, {f.size / 1e6:.1f} MB, MD5 {f.md5} ok")
    typer.echo(f"done; use --data-dir {to}")
