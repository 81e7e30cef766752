"""Held-out tasks drawn a chunk at a time: evaluation in bounded memory, with the same tasks.

``TaskStream(suite, 1000, "test", seed)`` holds the random choices of
``suite.fixed_tasks(1000, "test", seed)`` (a :class:`~metaopt_tuner.tasks.base.TaskDraw`: class
and example indices, a few bytes a task) and builds the tasks' tensors only when a chunk is asked
for, so evaluating 1,000 tasks of token states never holds more than one chunk of them. The chunks,
joined, are exactly ``fixed_tasks``' batch: the same tasks, the same tensors.

The default chunk is derived from memory: as many tasks as fit :data:`CHUNK_BYTES` of task
tensors (measured on the first task), at most :data:`MAX_CHUNK`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

import torch

from ..errors import ConfigError
from .base import TaskBatch, TaskDraw, TaskSuite

__all__ = ["CHUNK_BYTES", "MAX_CHUNK", "TaskStream", "chunk_for", "task_bytes"]

#: tasks adapted in one batched computation at most (the learners' chunk before streaming)
MAX_CHUNK = 100
#: bytes of task tensors a default chunk holds at most; adapting one takes a multiple of it
#: (the activations of every inner step), so this bounds the evaluation's peak memory
CHUNK_BYTES = 16 * 2**20


def task_bytes(batch: TaskBatch, dtype: torch.dtype | None = None) -> int:
    """Bytes of ``batch``'s tensors per task, with floating tensors counted in ``dtype``."""
    total = 0
    for f in fields(batch):
        t = getattr(batch, f.name)
        size = (torch.empty((), dtype=dtype).element_size()
                if dtype is not None and t.is_floating_point() else t.element_size())
        total += t.numel() * size
    return -(-total // max(1, len(batch)))


def chunk_for(bytes_per_task: int, budget: int = CHUNK_BYTES) -> int:
    """Tasks per chunk: as many as ``budget`` bytes of task tensors hold, 1 to :data:`MAX_CHUNK`."""
    return max(1, min(MAX_CHUNK, int(budget) // max(1, int(bytes_per_task))))


def _check_chunk(chunk: int | None) -> int | None:
    if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
        raise ConfigError(f"the chunk must be a positive number of tasks, got {chunk!r}")
    return chunk


class TaskStream:
    """``suite.fixed_tasks(num_tasks, split, seed)``, built and handed out a chunk at a time.

    Iterating yields :class:`TaskBatch` chunks of at most :attr:`chunk` tasks, in order, moved to
    ``device`` (floating tensors in ``dtype``); ``len()`` is the number of tasks.

    Args:
        suite: the suite to draw from.
        num_tasks: held-out tasks.
        split: the split they come from.
        seed: which fixed set of tasks.
        chunk: tasks per chunk (default: :func:`chunk_for` the first task's bytes).
        device: where chunks are moved.
        dtype: the floating dtype of chunks.

    Raises:
        ConfigError: a count or chunk that is not a positive integer, or the suite's own errors
            (an unknown split, shapes its data cannot make).
    """

    def __init__(self, suite: TaskSuite, num_tasks: int, split: str = "test", seed: int = 0, *,
                 chunk: int | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        if not isinstance(num_tasks, int) or isinstance(num_tasks, bool) or num_tasks < 1:
            raise ConfigError(f"the number of tasks must be a positive integer, got {num_tasks}")
        self.suite, self.split, self.seed = suite, split, seed
        self.draw: TaskDraw = suite.fixed_draw(num_tasks, split=split, seed=seed)
        self.stop = num_tasks
        self._chunk = _check_chunk(chunk)
        self.device, self.dtype = device, dtype

    def _like(self, **changes: object) -> TaskStream:
        new = object.__new__(TaskStream)
        new.__dict__.update({**self.__dict__, **changes})
        return new

    def __len__(self) -> int:
        return self.stop

    @property
    def chunk(self) -> int:
        """Tasks per chunk (derived from the first task's bytes unless given)."""
        if self._chunk is None:
            self._chunk = chunk_for(task_bytes(self.draw.tasks(0, 1), self.dtype))
        return self._chunk

    def head(self, num_tasks: int) -> TaskStream:
        """The first ``num_tasks`` tasks (the same draw: the same tasks)."""
        return self._like(stop=max(1, min(int(num_tasks), self.stop)))

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> TaskStream:
        """The stream with chunks moved to ``device`` and floating tensors in ``dtype``."""
        return self._like(device=device if device is not None else self.device,
                          dtype=dtype if dtype is not None else self.dtype)

    def with_chunk(self, chunk: int | None) -> TaskStream:
        """The stream with ``chunk`` tasks per chunk (None: the memory-derived default)."""
        return self._like(_chunk=_check_chunk(chunk))

    def ranges(self) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of every chunk, in order."""
        step = self.chunk
        for start in range(0, self.stop, step):
            yield start, min(start + step, self.stop)

    def tasks(self, start: int, stop: int) -> TaskBatch:
        """Tasks ``start:stop``, built now, on the stream's device and dtype."""
        batch = self.draw.tasks(start, min(stop, self.stop))
        moved = self.device is not None or self.dtype is not None
        return batch.to(self.device, self.dtype) if moved else batch

    def __iter__(self) -> Iterator[TaskBatch]:
        for start, stop in self.ranges():
            yield self.tasks(start, stop)

    def materialize(self) -> TaskBatch:
        """Every task at once (what ``fixed_tasks`` returns; memory grows with the count)."""
        return self.tasks(0, self.stop)
