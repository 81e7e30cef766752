"""Artifacts: what meta-training learned (theta and per-weight rates), saved as data.

``format`` is the manifest's schema and checks, ``value`` the :class:`Artifact` and how it is read
and written, ``pretrained`` the artifacts shipped with the package. Nothing here imports a
learner, the trainer or the registry (``pyproject.toml``'s import-linter contracts).
"""

from __future__ import annotations

from .._compat import module_getattr
from .format import FORMAT, FORMAT_VERSION, MANIFEST, TENSORS, same_shape, seal_manifest
from .pretrained import PRETRAINED_DIR, list_pretrained, local_artifact, pretrained
from .value import Artifact, load_artifact

__all__ = [
    "Artifact",
    "load_artifact",
    "pretrained",
    "list_pretrained",
    "local_artifact",
    "PRETRAINED_DIR",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "TENSORS",
    "seal_manifest",
    "same_shape",
]

__getattr__ = module_getattr(__name__)  # old paths of names that moved (see _compat)
