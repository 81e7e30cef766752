"""Summary statistics shared by evaluation and the comparison."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["Z_95", "mean_ci"]

#: the two-sided 95% quantile of the standard normal distribution
Z_95 = 1.96


def mean_ci(values: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """Mean along ``dim`` and the half-width of its normal-approximation 95% CI.

    The half-width is ``1.96 * std / sqrt(n)`` with the unbiased standard deviation; it is NaN
    when there is a single value.

    Args:
        values: the samples.
        dim: the dimension to reduce.

    Returns:
        ``(mean, half_width)``, each with ``dim`` reduced.
    """
    values = values.double()
    n = values.shape[dim]
    mean = values.mean(dim)
    if n < 2:
        return mean, torch.full_like(mean, math.nan)
    std = values.std(dim, correction=1)
    return mean, Z_95 * std / math.sqrt(n)
