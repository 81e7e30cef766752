"""The encoder an artifact's suite is rebuilt with: the user's folder, never one a manifest names.

An artifact trained on an encoder folder's features records that encoder's identity (a name and
a content checksum, see :mod:`metaopt_tuner.models.text.identity`) and, in its suite options, the
``encoder`` it was given, as a record. A loader takes the folder from the user (``-o
encoder=FOLDER``, ``build_suite(encoder=FOLDER)``) and checks it against the checksum; a recorded
folder is never opened, not even to see whether it exists. What a recorded value is comes from its
text alone: ``None`` or ``"hashed"`` (n-grams), ``module:function`` (code, run only with
``trust_factory``), anything else a folder.
"""

from __future__ import annotations

from typing import Any

from ..errors import ArtifactError, EncoderMismatchError
from ..models.text.encoders import names_code
from ..models.text.identity import EncoderIdentity, folder_name

__all__ = ["encoder_option"]


def encoder_option(
    recorded: Any, given: Any, identity: EncoderIdentity | None, trusted: bool,
) -> dict[str, Any]:
    """The ``encoder`` option to build the suite with, as ``{"encoder": value}`` where it must
    replace the recorded one (else empty: the recorded value, or ``given``, stands).

    Args:
        recorded: the manifest's ``encoder`` suite option.
        given: the user's (None: not given).
        identity: the encoder the artifact's model records (``Artifact.encoder``).
        trusted: the artifact was loaded with ``trust_factory=True``.

    Raises:
        EncoderMismatchError: the model reads an encoder folder and the user gave none, or gave
            one that is not the encoder it was trained with.
        ArtifactError: the recorded encoder is code and neither trusted nor replaced.
    """
    folder_record = recorded is not None and recorded != "hashed" and not names_code(recorded)
    if identity is None and not folder_record:
        if given is None and names_code(recorded) and not trusted:
            raise ArtifactError(
                f"the artifact's suite embeds texts with code ({recorded}); load it with "
                "trust_factory=True (CLI: --trust-factory) if you trust that code, or pass "
                "encoder=... yourself"
            )
        return {}
    if given is None:
        which = identity.describe() if identity is not None else folder_name(str(recorded))
        raise EncoderMismatchError(
            f"the artifact's model reads the features of the encoder {which}, which the artifact "
            "does not hold: pass that encoder's folder with -o encoder=FOLDER (Python: "
            "artifact.build_suite(encoder=FOLDER))"
        )
    if identity is not None:
        identity.check(given)
    return {"encoder": given}
