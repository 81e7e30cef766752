"""Inner-loop learning rates: fixed (MAML, Reptile) or learned (Meta-SGD, MAML++'s LSLR)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["LearningRates", "GRANULARITIES"]

GRANULARITIES = ("scalar", "tensor", "element")


class LearningRates(nn.Module):
    """Rates for every parameter as ``name -> Tensor`` of shape ``(steps, *broadcast_shape)``.

    ``granularity`` is ``"scalar"`` (one rate shared by all parameters), ``"tensor"`` (one per
    parameter tensor) or ``"element"`` (one per weight, Meta-SGD). ``steps`` > 1 gives each inner
    step its own rates. ``learnable=False`` keeps them fixed (they still live in the state dict).
    ``nonnegative=True`` uses ``max(rate, 0)``: a negative rate is gradient ascent on its weight, which
    compounds over several inner steps (multi-step Meta-SGD drifted there and diverged).
    """

    def __init__(
        self,
        shapes: Mapping[str, torch.Size | tuple[int, ...]],
        init: float = 0.01,
        granularity: str = "scalar",
        steps: int = 1,
        learnable: bool = False,
        nonnegative: bool = False,
    ) -> None:
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ConfigError(
                f"unknown learning-rate granularity {granularity!r}; expected one of "
                f"{', '.join(GRANULARITIES)}"
            )
        if steps < 1:
            raise ConfigError(f"the number of per-step rates must be positive, got {steps}")
        self.names = list(shapes)
        self.granularity = granularity
        self.steps = int(steps)
        self.learnable = bool(learnable)
        self.nonnegative = bool(nonnegative)
        if granularity == "scalar":
            tensors = [torch.full((steps,), float(init))]
        elif granularity == "tensor":
            tensors = [torch.full((steps,), float(init)) for _ in self.names]
        else:
            tensors = [torch.full((steps, *shapes[n]), float(init)) for n in self.names]
        self.values = nn.ParameterList(nn.Parameter(t, requires_grad=learnable) for t in tensors)

    def forward(self) -> dict[str, Tensor]:
        """The rates in effect (clamped at zero when ``nonnegative``)."""
        values = [v.clamp(min=0) if self.nonnegative else v for v in self.values]
        if self.granularity == "scalar":
            return dict.fromkeys(self.names, values[0])
        return dict(zip(self.names, values))

    @torch.no_grad()
    def load_rates(self, rates: Mapping[str, Tensor]) -> None:
        """Overwrite the rates from ``name -> (steps, ...)`` tensors of this module's layout."""
        raw = [self.values[0]] * len(self.names) if self.granularity == "scalar" else list(self.values)
        for name, value in zip(self.names, raw):
            value.copy_(rates[name])

    def extra_repr(self) -> str:
        return (
            f"granularity={self.granularity}, steps={self.steps}, learnable={self.learnable}, "
            f"nonnegative={self.nonnegative}, "
            f"params={len(self.names)}"
        )
