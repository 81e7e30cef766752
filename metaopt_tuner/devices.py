"""Turning a user's device string into a ``torch.device`` that this machine can actually use."""

from __future__ import annotations

import torch

from .errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(spec: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... as a device, or :class:`ConfigError` saying why not."""
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {spec!r}: {exc}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {str(spec)!r} cannot hold data to train on; use cpu, cuda or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(spec)!r} was requested but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {str(spec)!r} was requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    return device
