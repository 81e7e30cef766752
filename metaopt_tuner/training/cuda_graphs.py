"""A learner's meta-gradient captured in a CUDA graph and replayed for every new meta-batch.

A second-order meta-iteration of a small ConvNet issues thousands of small kernels (5 inner steps,
each a forward, a backward kept differentiable, then the backward of all of it). Issued one by one
from Python the GPU mostly waits for the CPU; a CUDA graph records the launches once and replays
them with one call. Meta-batches of one suite have fixed shapes, so one graph per input shape
serves a whole run: each call copies the batch into the graph's static input tensors, replays, and
returns the graph's static outputs.

Only the meta-gradient is captured: the finite check, clipping and the outer optimizer's step stay
eager, so a run with graphs takes exactly the same decisions as one without.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from ..errors import ConfigError
from ..learners.base import MetaGradient, MetaLearner
from ..tasks.base import TaskBatch

__all__ = ["GraphedMetaGradient"]

_Signature = tuple[tuple[tuple[int, ...], torch.dtype], ...]


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: TaskBatch
    output: MetaGradient


def _signature(batch: TaskBatch) -> _Signature:
    return tuple((tuple(getattr(batch, f.name).shape), getattr(batch, f.name).dtype)
                 for f in fields(TaskBatch))


class GraphedMetaGradient:
    """``learner.meta_gradient`` as a CUDA-graph replay, one graph per batch shape.

    The returned :class:`MetaGradient` holds the graph's output tensors: the next call overwrites
    them, so use (or copy) them before calling again. ``warmup`` eager calls on a side stream
    precede each capture (cuDNN and cuBLAS choose and allocate there, as capture requires). The
    learner's parameters must keep their storage (in-place optimizer steps do); moving the learner
    (``.to()``) or replacing a parameter invalidates the graphs: build a new instance then.
    ``fn`` captures another function of the batch instead of ``learner.meta_gradient``, e.g. a
    :class:`~metaopt_tuner.training.compiled.CompiledMetaGradient` of the same learner (compiled during
    the warm-up).

    Args:
        learner: the learner, on a CUDA device.
        warmup: eager calls before each capture (at least 1).
        fn: the function of the batch to capture (default: ``learner.meta_gradient``).

    Raises:
        ConfigError: CUDA is not available or the learner is not on a CUDA device.
    """

    def __init__(
        self,
        learner: MetaLearner,
        warmup: int = 2,
        fn: Callable[[TaskBatch], MetaGradient] | None = None,
    ) -> None:
        if not torch.cuda.is_available():
            raise ConfigError("CUDA graphs need a CUDA device, and CUDA is not available here")
        if learner.device.type != "cuda":
            raise ConfigError(f"CUDA graphs need the learner on a CUDA device, not {learner.device}")
        self.learner = learner
        self.fn = learner.meta_gradient if fn is None else fn
        self.warmup = max(int(warmup), 1)
        self._graphs: dict[_Signature, _Captured] = {}
        self._pool: tuple[int, int] | None = None

    def __len__(self) -> int:
        """The number of graphs captured so far (one per batch shape)."""
        return len(self._graphs)

    def _capture(self, batch: TaskBatch) -> _Captured:
        inputs = TaskBatch(*(getattr(batch, f.name).clone() for f in fields(TaskBatch)))
        side = torch.cuda.Stream(device=inputs.x_support.device)
        side.wait_stream(torch.cuda.current_stream(inputs.x_support.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(inputs)
        torch.cuda.current_stream(inputs.x_support.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = self.fn(inputs)
        self._pool = graph.pool()  # every shape's graph draws on one memory pool
        return _Captured(graph, inputs, output)

    def __call__(self, batch: TaskBatch) -> MetaGradient:
        key = _signature(batch)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._graphs[key] = self._capture(batch)
        for f in fields(TaskBatch):
            static: Tensor = getattr(captured.inputs, f.name)
            static.copy_(getattr(batch, f.name), non_blocking=True)
        captured.graph.replay()
        return captured.output
