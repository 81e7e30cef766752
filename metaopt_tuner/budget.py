"""Training for a wall-clock budget: ``90s``, ``20m``, ``2h`` become a fixed number of iterations.

The rule (the same for the CLI's ``--budget`` and ``TrainConfig.budget_seconds``): the trainer
times a short warm-up on a copy of its state (one untimed step for one-time costs such as
allocation or compilation, then timed steps until they took :func:`warmup_seconds` and were at
least :data:`MIN_TIMED_STEPS`), puts the state back, and fixes

    iterations = max(1, floor((budget - warm-up seconds) / measured seconds per iteration))

before the first real step. The machine's speed can change under a run (other work starts or
stops), so the run looks again every 1/:data:`REPLANS` of the budget's seconds: from the seconds
left and the speed of the steps since the last look it re-plans the count
(:func:`replanned_iterations`) and the iteration of the next look (:func:`look_every`: the
looks are spaced in seconds, so they stay as frequent when the machine slows down), and the outer
learning-rate schedule is re-scaled over the new count. Every decision is recorded in the
checkpoint (and the budget's seconds spent with it), so a resumed run continues from the plan in
force. At a steady speed the count never changes, and a budget run ends with exactly the
parameters of a run given that ``iterations``. Evaluation and checkpoint writing are not part of
the measured steps, so a run ends a little after its budget.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["parse_duration", "format_duration", "warmup_seconds", "iterations_for_budget",
           "replanned_iterations", "look_every", "BudgetPlan", "MIN_TIMED_STEPS", "REPLANS",
           "REPLAN_TOLERANCE"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh])\s*$", re.IGNORECASE)

#: timed warm-up steps needed before the rate is trusted
MIN_TIMED_STEPS = 2
#: how many times a budget run looks again at its speed (every 1/REPLANS of its seconds)
REPLANS = 20
#: a re-plan changes the count only when the change is worth more than this share of the budget's
#: seconds at the recent speed (no churn)
REPLAN_TOLERANCE = 0.02
#: the warm-up's timed part lasts this share of the budget, capped at ``_WARMUP_CAP`` seconds
_WARMUP_SHARE, _WARMUP_CAP = 0.02, 2.0


def parse_duration(text: str) -> float:
    """``"90s"`` -> 90.0, ``"20m"`` -> 1200.0, ``"2h"`` -> 7200.0.

    Raises:
        ConfigError: for anything else (no unit, an unknown unit, zero).
    """
    match = _DURATION.match(str(text))
    if match is None:
        raise ConfigError(f"cannot read the budget {text!r}; write a number and a unit: 90s, 20m or 2h")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise ConfigError(f"the budget must be positive, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration` for display: 90 -> ``"90s"``, 1200 -> ``"20m"``."""
    for unit in ("h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def warmup_seconds(budget: float) -> float:
    """How long the timed warm-up steps should take for a budget: 2% of it, at most 2 s."""
    return min(_WARMUP_CAP, _WARMUP_SHARE * budget)


@dataclass(frozen=True)
class BudgetPlan:
    """What the warm-up measured and the iteration count it fixed (recorded in run.json)."""

    budget_seconds: float
    warmup_steps: int
    warmup_seconds: float
    seconds_per_iteration: float
    iterations: int


def iterations_for_budget(
    budget: float, warmup_total: float, timed_steps: int, timed_seconds: float
) -> BudgetPlan:
    """Fix the iteration count from a warm-up (see the module docstring for the rule).

    Args:
        budget: the training budget in seconds.
        warmup_total: seconds the whole warm-up took (the untimed first step included).
        timed_steps: steps the rate was measured on.
        timed_seconds: seconds those steps took.

    Returns:
        The plan, with at least one iteration.
    """
    per_iteration = timed_seconds / max(timed_steps, 1)
    left = budget - warmup_total
    count = int(math.floor(left / per_iteration)) if per_iteration > 0 and left > 0 else 1
    return BudgetPlan(budget, timed_steps + 1, warmup_total, per_iteration, max(1, count))


def replanned_iterations(budget: float, spent: float, done: int, planned: int,
                         seconds_per_iteration: float) -> int:
    """The iteration count for the rest of a budget run: ``done`` plus as many as the seconds
    left buy at the recent speed, or ``planned`` when the difference takes at most one iteration
    or :data:`REPLAN_TOLERANCE` of the budget's seconds at that speed (or when the speed is
    unknown). The tolerance is in seconds, not a share of the count: after a slowdown a share of
    a count planned at the old speed would let whole seconds of overrun through.

    Args:
        budget: the training budget in seconds.
        spent: seconds of it spent so far (the warm-up included).
        done: iterations done.
        planned: the count in force.
        seconds_per_iteration: the recent speed.
    """
    if seconds_per_iteration <= 0:
        return planned
    left = max(0.0, budget - spent)
    count = done + int(math.floor(left / seconds_per_iteration + 1e-9))
    if abs(count - planned) <= max(1.0, REPLAN_TOLERANCE * budget / seconds_per_iteration):
        return planned
    return count


def look_every(budget: float, seconds_per_iteration: float, planned: int) -> int:
    """Iterations until a budget run's next look at its speed: as many as 1/:data:`REPLANS` of
    the budget's seconds buy at ``seconds_per_iteration`` (at least one), or 1/REPLANS of
    ``planned`` when the speed is unknown.

    Args:
        budget: the training budget in seconds.
        seconds_per_iteration: the speed last measured.
        planned: the count in force.
    """
    if seconds_per_iteration <= 0:
        return max(1, planned // REPLANS)
    return max(1, int(math.floor(budget / REPLANS / seconds_per_iteration + 1e-9)))
