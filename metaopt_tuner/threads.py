"""How many CPU threads torch uses for a piece of work: the one rule every command follows.

Small models gain nothing from torch's intra-op threads and lose a lot to their synchronization,
above all beside other work: ``metaopt compare`` on a small sinusoid problem took 237 s with
torch's default threads and 28 s with one thread on a loaded 2-core machine. So a model with
fewer than :data:`SMALL_MODEL_PARAMETERS` parameters (every built-in suite's: the sinusoid MLP
has 1.7k, the 64-filter Omniglot ConvNet about 113k, the intents text model about 100k) runs on
one thread; larger ones keep torch's default. A number the user gives always wins.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["SMALL_MODEL_PARAMETERS", "choose_threads", "use_threads"]

#: models with fewer parameters than this run on one CPU thread unless told otherwise
SMALL_MODEL_PARAMETERS = 200_000


def choose_threads(requested: int | None, num_parameters: int | None) -> int | None:
    """The thread count for the work: ``requested`` if given, 1 for a small model, else None
    (torch's default).

    Args:
        requested: the user's ``--threads`` (None: not given).
        num_parameters: the model's parameter count (None: unknown, keep torch's default).
    """
    if requested is not None:
        return int(requested)
    if num_parameters is not None and num_parameters < SMALL_MODEL_PARAMETERS:
        return 1
    return None


def use_threads(requested: int | None, parameters: Iterable[torch.Tensor] | None = None) -> int:
    """Set torch's intra-op threads by :func:`choose_threads`; returns the count in force.

    Args:
        requested: the user's ``--threads`` (None: choose).
        parameters: the model's parameters (or any tensors whose sizes add up to it).
    """
    count = None if parameters is None else sum(int(p.numel()) for p in parameters)
    threads = choose_threads(requested, count)
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()
