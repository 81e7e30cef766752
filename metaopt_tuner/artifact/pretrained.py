"""The artifacts shipped inside the package (``metaopt_tuner/pretrained/<name>/``), and an artifact
from anything local that names one."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ArtifactError
from .format import MANIFEST
from .value import Artifact, load_artifact

__all__ = ["PRETRAINED_DIR", "list_pretrained", "pretrained", "local_artifact"]

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def list_pretrained() -> list[str]:
    """Names of the artifacts shipped with the package.

    Returns:
        The names :func:`pretrained` accepts, sorted.
    """
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / MANIFEST).is_file())


def pretrained(name: str = "sinusoid") -> Artifact:
    """Load the artifact ``name`` shipped in the package (``metaopt_tuner/pretrained/<name>/``).

    Args:
        name: one of :func:`list_pretrained`.

    Returns:
        The shipped artifact.

    Raises:
        ArtifactError: no shipped artifact has that name, or it is damaged.
    """
    available = list_pretrained()
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name not in available:
        raise ArtifactError(
            f"no pretrained artifact named {name!r}; available: {', '.join(available) or 'none'}"
        )
    return load_artifact(PRETRAINED_DIR / name)


def local_artifact(
    source: Artifact | str | os.PathLike[str], trust_factory: bool = False
) -> Artifact:
    """An Artifact as is; a path loaded with :func:`load_artifact`; else a pretrained name.
    (``resolver.resolve_artifact`` adds the model registry's ``models:/`` URIs.)"""
    if isinstance(source, Artifact):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise ArtifactError(f"expected an Artifact, a path, a models:/ URI or a pretrained name, "
                            f"got {type(source).__name__}")
    path = Path(source)
    try:
        exists = path.exists()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise ArtifactError(f"cannot read artifact {str(source)[:80]!r}...: "
                            f"{exc.strerror or exc}") from None
    if not exists and isinstance(source, str) and source in list_pretrained():
        return pretrained(source)
    return load_artifact(path, trust_factory=trust_factory)
