"""``metaopt publish``: register an artifact as a new model version in the MLflow registry."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from metaopt_tuner.registry import publish as publish_artifact

from ..display import printable
from ..options import JsonOut, RegistryUri


def publish(
    artifact: Annotated[str, typer.Argument(help="Artifact folder (e.g. runs/x/artifact) or a pretrained name.", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Registered model name (created when new).", show_default=False)],
    alias: Annotated[str | None, typer.Option("--alias", help="Point this alias (e.g. prod) at the new version.")] = None,
    description: Annotated[str | None, typer.Option("--description", help="The version's description.")] = None,
    tracking_uri: RegistryUri = None,
    json_out: JsonOut = False,
) -> None:
    """Publish ARTIFACT as a new version of NAME; load it anywhere as models:/NAME@ALIAS or models:/NAME/VERSION."""
    version = publish_artifact(artifact, name, alias=alias, description=description, tracking_uri=tracking_uri)
    if json_out:
        typer.echo(json.dumps(version.to_dict(), indent=2))
        return
    ref = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version.version}"
    typer.echo(printable(f"published {artifact} as {name} version {version.version} "
                         f"(suite {version.suite}, sha256 {(version.sha256 or '')[:16]}…); load it as {ref}"))
