"""One root exception for the library and specific subclasses a caller can act on.

Every error the library raises on bad input derives from :class:`MetaOptError`, so callers
(and the CLI) can catch exactly the library's own failures and nothing else.
"""

from __future__ import annotations

__all__ = [
    "MetaOptError",
    "ConfigError",
    "SuiteError",
    "DataError",
    "RunDirError",
    "NonFiniteLossError",
    "NonFiniteUpdateError",
    "ArtifactError",
    "ModelMismatchError",
    "EncoderMismatchError",
    "DistributedError",
    "StudyStorageError",
    "RegistryError",
    "RegistryUnavailableError",
    "MissingExtraError",
    "MetaOptWarning",
]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type's name): for one-line errors that
    wrap a lower-level failure (gloo, SQLAlchemy, ...)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class MetaOptError(Exception):
    """Root of every error raised by metaopt-tuner on bad input or a failed run."""


class ConfigError(MetaOptError, ValueError):
    """An option has an invalid value (a non-positive count, an unknown learner, ...)."""


class SuiteError(MetaOptError, KeyError):
    """An unknown task suite, or options a suite does not accept."""

    def __str__(self) -> str:  # KeyError quotes its message; a user wants the plain sentence.
        return str(self.args[0]) if self.args else ""


class DataError(MetaOptError):
    """A data folder or file is missing, empty, or not in the expected layout."""


class RunDirError(MetaOptError):
    """An output folder that cannot be used for a run (not ours, not writable, ...)."""


class NonFiniteLossError(MetaOptError, FloatingPointError):
    """Meta-training produced a NaN or infinite loss; the last good checkpoint is kept."""


class NonFiniteUpdateError(MetaOptError, FloatingPointError):
    """An optimizer step would have written NaN or infinity into a parameter; no parameter was
    changed. ``names`` lists the parameters whose update was not finite.

    Args:
        message: the sentence shown to the user.
        names: the parameters whose update was not finite.
    """

    def __init__(self, message: str, names: list[str] | None = None) -> None:
        super().__init__(message)
        self.names = list(names or [])


class ArtifactError(MetaOptError):
    """An artifact is missing, corrupted, of an unsupported version, or inconsistent."""


class ModelMismatchError(ArtifactError):
    """A model's parameters differ from an artifact's (names or shapes)."""


class EncoderMismatchError(ArtifactError):
    """The encoder folder an artifact's model reads is missing or differs from the one it was
    trained with (its content checksum)."""


class DistributedError(MetaOptError, RuntimeError):
    """A multi-process run lost a peer (died, or silent past the collective timeout) or could not
    form its process group; rank 0's last checkpoint is kept."""


class StudyStorageError(MetaOptError):
    """An Optuna storage URL that cannot be used (bad URL, missing driver, server unreachable)."""


class RegistryError(MetaOptError):
    """A model registry reference that cannot be used: a malformed ``models:/`` URI or tracking
    URI, or a registered model name, version or alias that does not exist."""


class RegistryUnavailableError(RegistryError):
    """The MLflow server cannot be reached (and no cached copy can stand in for it)."""


class MissingExtraError(MetaOptError, ImportError):
    """A feature needs an optional dependency that is not installed; the message names the extra."""


class MetaOptWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints it as one line)."""
