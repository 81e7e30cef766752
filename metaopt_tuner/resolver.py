"""One answer to "which artifact does the user mean": an Artifact, a path, a pretrained name or a
model-registry URI (``models:/NAME@ALIAS``), above both the artifact and the registry layers."""

from __future__ import annotations

import os

from .artifact import Artifact, local_artifact
from .registry import load_registered

__all__ = ["resolve_artifact"]


def resolve_artifact(
    source: Artifact | str | os.PathLike[str], trust_factory: bool = False,
    tracking_uri: str | None = None,
) -> Artifact:
    """An Artifact as is; ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` from the model
    registry at ``tracking_uri`` (see ``registry.load_registered``); a path loaded with
    :func:`load_artifact`; else a pretrained name."""
    if isinstance(source, str) and source.startswith("models:"):
        return load_registered(source, tracking_uri=tracking_uri, trust_factory=trust_factory)
    return local_artifact(source, trust_factory=trust_factory)
