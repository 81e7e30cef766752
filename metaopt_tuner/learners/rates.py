"""Inner-loop learning rates: fixed (MAML, Reptile) or learned (Meta-SGD, MAML++'s LSLR)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.proto_head import is_head, tie_classes

__all__ = ["LearningRates", "GRANULARITIES"]

GRANULARITIES = ("scalar", "tensor", "element")


class LearningRates(nn.Module):
    """Rates for every parameter as ``name -> Tensor`` of shape ``(steps, *broadcast_shape)``.

    ``granularity`` is ``"scalar"`` (one rate shared by all parameters), ``"tensor"`` (one per
    parameter tensor) or ``"element"`` (one per weight, Meta-SGD). ``steps`` > 1 gives each inner
    step its own rates. ``learnable=False`` keeps them fixed (they still live in the state dict).

    Learned rates are stored as their logarithms (the rate is ``exp(value)``), for two reasons:
    a rate can never become zero or negative, which would be gradient ascent on its weight and
    compounds over steps (linear rates drifted there and diverged); and the outer optimizer's
    steps become relative, so Adam at the weights' meta-lr changes a rate of 1e-3 and one of 1e-1
    by the same fraction, with no separate outer rate for the rates to tune (the measurement:
    docs/benchmarks.md, "Measurements behind the defaults").

    Args:
        shapes: every parameter's name and shape.
        init: the initial rate (positive).
        granularity: ``"scalar"``, ``"tensor"`` or ``"element"``.
        steps: rows of rates: 1 (shared by every step) or one per inner step.
        learnable: meta-learn the rates (stored as logarithms) or keep them fixed.
        head_bound: with a value, also a bound per step on the length of a head class row's step
            (:func:`~metaopt_tuner.update_rule.bound_head_steps`), starting at that value and
            learned (as a logarithm) with the rates, never larger than the step before's, and
            the head's rates then never grow from one step to the next either (a running
            minimum per weight: rates free to grow were learned in a zigzag, and the loss rose at
            each step after a short one); None: no bound.

    Raises:
        ConfigError: an unknown granularity, ``steps`` below 1, or ``init`` or ``head_bound``
            not positive.
    """

    def __init__(
        self,
        shapes: Mapping[str, torch.Size | tuple[int, ...]],
        init: float = 0.01,
        granularity: str = "scalar",
        steps: int = 1,
        learnable: bool = False,
        head_bound: float | None = None,
    ) -> None:
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ConfigError(
                f"unknown learning-rate granularity {granularity!r}; expected one of "
                f"{', '.join(GRANULARITIES)}"
            )
        if steps < 1:
            raise ConfigError(f"the number of per-step rates must be positive, got {steps}")
        if not (math.isfinite(init) and init > 0):
            raise ConfigError(f"the initial inner learning rate must be positive, got {init}")
        self.names = list(shapes)
        self.granularity = granularity
        self.steps = int(steps)
        self.learnable = bool(learnable)
        stored = math.log(init) if learnable else float(init)
        if granularity == "scalar":
            tensors = [torch.full((steps,), stored)]
        elif granularity == "tensor":
            tensors = [torch.full((steps,), stored) for _ in self.names]
        else:
            tensors = [torch.full((steps, *shapes[n]), stored) for n in self.names]
        self.values = nn.ParameterList(nn.Parameter(t, requires_grad=learnable) for t in tensors)
        self.head_bound: nn.Parameter | None = None
        if head_bound is not None:
            if not (math.isfinite(head_bound) and head_bound > 0):
                raise ConfigError(f"the head's step bound must be positive, got {head_bound}")
            bound = math.log(head_bound) if learnable else float(head_bound)
            self.head_bound = nn.Parameter(torch.full((steps,), bound), requires_grad=learnable)

    def head_bounds(self) -> Tensor | None:
        """The bound in effect on a head row's step, one per step row (None: unbounded): the
        running minimum of the stored values, so that no step's bound exceeds the one before.
        Bounds free to grow were learned in a zigzag, a long step after a short one, and the
        query loss rose at each long step (docs/benchmarks.md, "Any task shape")."""
        if self.head_bound is None:
            return None
        value = self.head_bound.exp() if self.learnable else self.head_bound
        return torch.cummin(value, 0).values

    @torch.no_grad()
    def load_head_bounds(self, bounds: Tensor) -> None:
        """Overwrite the head's step bounds (``(steps,)``, positive) from an artifact."""
        if self.head_bound is None:
            raise ConfigError("these rates have no head step bound to load")
        value = bounds.to(self.head_bound).reshape(self.head_bound.shape)
        self.head_bound.copy_(value.log() if self.learnable else value)

    def forward(self) -> dict[str, Tensor]:
        """The rates in effect (``exp`` of the stored values when learned)."""
        values = [v.exp() for v in self.values] if self.learnable else list(self.values)
        if self.granularity == "scalar":
            return dict.fromkeys(self.names, values[0])
        out = dict(zip(self.names, values))
        if self.head_bound is not None:  # a bounded head's rates never grow from step to step
            out.update({n: torch.cummin(v, 0).values for n, v in out.items() if is_head(n)})
        return out

    @torch.no_grad()
    def load_rates(self, rates: Mapping[str, Tensor]) -> None:
        """Overwrite the rates from ``name -> (steps, ...)`` tensors of this module's layout.

        Learned rates are stored as logarithms: a rate of zero or below (artifacts of older
        versions allowed them) loads as the smallest positive normal number of its dtype, since a
        rate must never step against the gradient. Rows given for a dimension this layout ties
        (size 1, e.g. per-class head rates of older artifacts) are averaged.
        """
        raw = [self.values[0]] * len(self.names) if self.granularity == "scalar" else list(self.values)
        for name, value in zip(self.names, raw):
            rate = rates[name].to(value)
            # a dimension this layout ties (size 1: the head's classes) gets one row for all
            for d in range(1, value.dim()):
                if value.shape[d] == 1 and rate.dim() == value.dim() and rate.shape[d] > 1:
                    rate = tie_classes(rate, d)
            if self.learnable:
                rate = rate.clamp(min=torch.finfo(rate.dtype).tiny).log()
            value.copy_(rate)

    def extra_repr(self) -> str:
        """The layout, for ``print(module)``."""
        return (
            f"granularity={self.granularity}, steps={self.steps}, learnable={self.learnable}, "
            f"params={len(self.names)}, head_bound={self.head_bound is not None}"
        )
