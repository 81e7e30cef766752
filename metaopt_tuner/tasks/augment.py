"""Random affine jitter for training images: a small rotation, scale and shift per image.

Omniglot's background split has few characters (136 in the minimal one), and a ConvNet meta-trained
on them fits their drawings closely (training loss near 0.06 while held-out alphabets stay near 84%).
Jittering every training image independently, the support and query images of one class each their
own way, asks the features to be invariant to the small changes of pose that separate two people's
drawings of a character. Probe (textbook Prototypical Network, 1,500 20-way episodes, 64 filters):
15 degrees, 15% scale and 15% shift raised 20-way held-out accuracy from 80.4% to 82.0% (random
episodes) and from 69.4% to 71.3% (within-alphabet).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

__all__ = ["apply_affine", "check_jitter", "draw_affine", "random_affine"]


def check_jitter(degrees: float, scale: float, shift: float) -> tuple[float, float, float]:
    """Validated ``(degrees, scale, shift)``; a :class:`ConfigError` names the bad one."""
    values = {"jitter_degrees": degrees, "jitter_scale": scale, "jitter_shift": shift}
    out = []
    for name, value in values.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if not math.isfinite(v) or v < 0:
            raise ConfigError(f"{name} must be finite and >= 0, got {value!r}")
        out.append(v)
    if out[0] > 180:
        raise ConfigError(f"jitter_degrees must be at most 180, got {degrees!r}")
    if out[1] >= 1:
        raise ConfigError(f"jitter_scale must be below 1 (a fraction of the size), got {scale!r}")
    if out[2] > 1:
        raise ConfigError(f"jitter_shift must be at most 1 (a fraction of half the width), got {shift!r}")
    return out[0], out[1], out[2]


def random_affine(
    images: Tensor, generator: torch.Generator, degrees: float, scale: float, shift: float
) -> Tensor:
    """``images`` ``[B, C, H, W]``, each rotated by up to ``degrees``, scaled by a factor in
    ``[1 - scale, 1 + scale]`` and shifted by up to ``shift`` of half its width and height, all
    drawn uniformly from ``generator``. Edge pixels extend into the uncovered border (the
    background, for Omniglot's centered strokes). Identity when all three are zero."""
    return apply_affine(images, draw_affine(images.shape[0], generator, degrees, scale, shift))


def draw_affine(
    n: int, generator: torch.Generator, degrees: float, scale: float, shift: float
) -> Tensor | None:
    """The transforms :func:`random_affine` draws for ``n`` images, ``[n, 2, 3]``
    (None when all three are zero or ``n`` is 0: the identity, and nothing drawn)."""
    if not (degrees or scale or shift) or n == 0:
        return None

    def uniform(half_width: float) -> Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1) * half_width

    angle = uniform(math.radians(degrees))
    inv_scale = 1.0 / (1.0 + uniform(scale))
    tx, ty = uniform(shift), uniform(shift)
    cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
    return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)


def apply_affine(images: Tensor, theta: Tensor | None) -> Tensor:
    """``images`` ``[B, C, H, W]`` moved by :func:`draw_affine`'s transforms ``theta`` (one per
    image; None: unchanged)."""
    if theta is None:
        return images
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
