"""Tasks, stacked task batches and the suite protocol every task distribution implements."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

if TYPE_CHECKING:
    from .recipe import Recipe

__all__ = ["Task", "TaskBatch", "TaskDraw", "TaskSuite", "ClassificationSuite", "SPLITS",
           "EVAL_SPLITS", "fixed_generator"]

#: the splits every suite understands
SPLITS = ("train", "val", "test")
#: the splits held-out tasks may come from: ``all`` is every class of the data (for data the
#: artifact was not trained on)
EVAL_SPLITS = (*SPLITS, "all")
_SPLIT_STREAMS = {name: i for i, name in enumerate(SPLITS)}


def fixed_generator(split: str, seed: int = 0) -> torch.Generator:
    """The generator :meth:`TaskSuite.fixed_tasks` draws ``split``'s held-out tasks from."""
    return torch.Generator().manual_seed(1_000_003 * (_SPLIT_STREAMS.get(split, 3) + 1) + int(seed))


def _move(t: Tensor, device: torch.device | str | None, dtype: torch.dtype | None) -> Tensor:
    # Only floating tensors change dtype: labels and token ids stay integer.
    if dtype is not None and t.is_floating_point():
        return t.to(device=device, dtype=dtype)
    return t.to(device=device)


@dataclass(frozen=True)
class Task:
    """One task: a support set to adapt on and a query set to score the adapted model on.

    Args:
        x_support: support inputs, ``[S, ...]``.
        y_support: support targets, ``[S, ...]``.
        x_query: query inputs, ``[Q, ...]``.
        y_query: query targets, ``[Q, ...]``.
    """

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Task:
        """The task on ``device``; floating tensors also in ``dtype`` (labels stay integer)."""
        return Task(*(_move(getattr(self, f.name), device, dtype) for f in fields(self)))


@dataclass(frozen=True)
class TaskBatch:
    """A meta-batch: every tensor carries a leading task dimension of the same size.

    Stacking lets a learner evaluate the whole meta-batch as one batched computation instead of a
    Python loop over tasks.

    Args:
        x_support: support inputs, ``[T, S, ...]`` for ``T`` tasks.
        y_support: support targets, ``[T, S, ...]``.
        x_query: query inputs, ``[T, Q, ...]``.
        y_query: query targets, ``[T, Q, ...]``.

    Raises:
        ValueError: the tensors disagree on the number of tasks.
    """

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor

    def __post_init__(self) -> None:
        sizes = {f.name: getattr(self, f.name).shape[0] for f in fields(self)}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"TaskBatch tensors disagree on the number of tasks: {sizes}")

    def __len__(self) -> int:
        return self.x_support.shape[0]

    @property
    def num_tasks(self) -> int:
        """The number of tasks ``T``."""
        return len(self)

    def task(self, index: int) -> Task:
        """Task ``index`` on its own (views, no copy)."""
        return Task(*(getattr(self, f.name)[index] for f in fields(self)))

    def slice(self, start: int, stop: int) -> TaskBatch:
        """Tasks ``start:stop`` as a new batch (views, no copy)."""
        return TaskBatch(*(getattr(self, f.name)[start:stop] for f in fields(self)))

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> TaskBatch:
        """The batch on ``device``; floating tensors also in ``dtype`` (labels stay integer)."""
        return TaskBatch(*(_move(getattr(self, f.name), device, dtype) for f in fields(self)))

    @staticmethod
    def stack(tasks: list[Task]) -> TaskBatch:
        """Stack tasks of equal shapes into a batch (``ValueError`` for an empty list)."""
        if not tasks:
            raise ValueError("cannot stack an empty list of tasks")
        return TaskBatch(*(torch.stack([getattr(t, f.name) for t in tasks]) for f in fields(Task)))

    @staticmethod
    def concat(batches: list[TaskBatch]) -> TaskBatch:
        """Join batches along the task dimension."""
        return TaskBatch(
            *(torch.cat([getattr(b, f.name) for b in batches]) for f in fields(TaskBatch))
        )


@dataclass(frozen=True)
class TaskDraw:
    """The random choices of ``num_tasks`` tasks, made before any of their tensors exist.

    ``tasks(start, stop)`` builds tasks ``start:stop`` only; building every range in turn and
    joining them gives exactly the batch built at once (every random number is drawn up front,
    and shapes such as padding widths are fixed over all the tasks), so held-out tasks can be
    adapted a chunk at a time in bounded memory.

    Args:
        num_tasks: the tasks drawn.
        build: ``build(start, stop)`` -> tasks ``start:stop`` as a :class:`TaskBatch`.
    """

    num_tasks: int
    build: Callable[[int, int], TaskBatch]

    def tasks(self, start: int = 0, stop: int | None = None) -> TaskBatch:
        """Tasks ``start:stop`` (default: all of them)."""
        stop = self.num_tasks if stop is None else min(int(stop), self.num_tasks)
        if not 0 <= start < stop:
            raise ValueError(f"no tasks in {start}:{stop} of {self.num_tasks}")
        return self.build(start, stop)


class TaskSuite(abc.ABC):
    """A distribution over tasks, with the model, loss and metric its tasks expect.

    Contract, in call order: a learner calls :meth:`build_model` once; the trainer calls
    :meth:`sample` with its own ``torch.Generator`` for every meta-batch (so a seeded generator
    gives the same stream of tasks on any machine); evaluation calls :meth:`fixed_tasks`, which
    must return the same tasks for the same ``(split, num_tasks, seed)`` on every run and machine.
    Losses and metrics are *per example*: they return one value per query/support point, with the
    leading task/batch dimensions of the predictions, so learners can reduce per task.
    """

    #: registry name of the suite
    name: str = ""
    #: name of the metric printed in tables, e.g. "mse" or "accuracy"
    metric_name: str = "loss"
    #: whether a larger metric is better (accuracy) or worse (mse)
    metric_higher_is_better: bool = False
    #: the recommended training configuration (see ``metaopt_tuner.tasks.recipe``); None: defaults
    recipe: ClassVar[Recipe | None] = None
    #: options that name or size the splits of one data set, with the values they take when
    #: every class of new data is evaluated (``split="all"``): names of the old data's
    #: alphabets or domains mean nothing there
    split_options: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    #: options that name places on disk (data, caches): an artifact records them for the record
    #: but never uses them, so a manifest cannot make a loader read or write anywhere: the
    #: user passes them again (``--data-dir``). An ``encoder`` folder is never used either; the
    #: artifact keeps its identity (``Artifact.build_suite``, ``artifact/encoder.py``)
    path_options: ClassVar[tuple[str, ...]] = ("data_dir", "cache_dir")
    #: options that define the model or the features it reads (layer sizes, a featurizer's
    #: buckets): an artifact's recorded values are its model's, so evaluating it with other
    #: values is refused (``Artifact.build_suite``)
    model_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def recipe_for_options(cls, options: Mapping[str, Any]) -> Recipe | None:
        """The recipe for a run given these suite ``options``: :attr:`recipe` unless the options
        choose another model (the intents suite's encoder folder), whose recipe is another value."""
        return cls.recipe

    def load(self) -> TaskSuite:
        """Read and check the suite's data now (suites backed by files override it); returns self.

        The trainer calls it before it writes anything, so a missing or malformed data folder is
        reported before an output folder is created.
        """
        return self

    @abc.abstractmethod
    def sample(
        self, num_tasks: int, generator: torch.Generator, split: str = "train"
    ) -> TaskBatch:
        """Draw ``num_tasks`` tasks of ``split`` ("train", "val" or "test") using ``generator``."""

    def fixed_tasks(self, num_tasks: int, split: str = "test", seed: int = 0) -> TaskBatch:
        """A reproducible set of held-out tasks: the same for the same arguments everywhere.

        Each split draws from its own seeded stream, so "val" and "test" tasks differ even for
        suites whose splits share one distribution (the sinusoid).
        """
        return self.sample(num_tasks, fixed_generator(split, seed), split=split)

    def draw_tasks(self, num_tasks: int, generator: torch.Generator,
                   split: str = "train") -> TaskDraw:
        """The tasks :meth:`sample` would draw with ``generator``, as a :class:`TaskDraw` whose
        tensors are built a range of tasks at a time.

        The built-in suites draw every random choice here and build tensors only on request;
        this default (for suites that implement :meth:`sample` alone) samples every task now and
        hands out slices.
        """
        batch = self.sample(num_tasks, generator, split=split)
        return TaskDraw(len(batch), batch.slice)

    def fixed_draw(self, num_tasks: int, split: str = "test", seed: int = 0) -> TaskDraw:
        """:meth:`fixed_tasks` as a :class:`TaskDraw`: the same tasks, built a range at a time.

        A suite that overrides :meth:`fixed_tasks` itself is drawn through it (all at once).
        """
        if type(self).fixed_tasks is not TaskSuite.fixed_tasks:
            batch = self.fixed_tasks(num_tasks, split=split, seed=seed)
            return TaskDraw(len(batch), batch.slice)
        return self.draw_tasks(num_tasks, fixed_generator(split, seed), split=split)

    def split_summary(self, split: str) -> dict[str, int] | None:
        """``{"num_classes": ..., "num_examples": ...}`` that ``split``'s tasks draw from, for
        suites of finite data; None for generated tasks (the sinusoid)."""
        return None

    @abc.abstractmethod
    def model_spec(self) -> dict[str, Any]:
        """The reference model as ``{"name": ..., "kwargs": {...}}`` (see ``models.build_model``)."""

    def build_model(self) -> nn.Module:
        """A freshly initialized reference model (:meth:`model_spec` built by ``build_model``)."""
        from ..models import build_model

        return build_model(self.model_spec())

    @abc.abstractmethod
    def loss_per_example(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Loss for every example: shape ``target.shape`` minus any trailing feature dims."""

    @abc.abstractmethod
    def metric_per_example(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Metric for every example (squared error, 0/1 correctness, ...)."""

    @abc.abstractmethod
    def options(self) -> dict[str, Any]:
        """The options that rebuild this suite with ``get_suite(name, **options)`` (JSON-able)."""


class ClassificationSuite(TaskSuite):
    """A suite of N-way classification episodes: cross-entropy loss, accuracy metric.

    Predictions are logits ``[..., N, classes]`` and targets labels ``[..., N]``, with any leading
    task dimensions (so the same functions serve one task and a hand-batched stack of tasks).
    """

    metric_name = "accuracy"
    metric_higher_is_better = True
    #: the episodes' fixed width and shots (evaluation, and training without ranges)
    ways: int = 5
    shots: int = 1
    #: ``(lo, hi)`` widths and shots that training episodes draw from, one shape per meta-batch
    #: (``hi`` None: as many as the training split allows); None: the fixed ``ways`` / ``shots``
    train_ways: tuple[int, int | None] | None = None
    train_shots: tuple[int, int | None] | None = None

    def set_train_shapes(self, train_ways: Sequence[int | None] | str | None,
                         train_shots: Sequence[int | None] | str | None) -> None:
        """Check and keep the ``train_ways`` / ``train_shots`` ranges (a suite's options).

        Raises:
            ConfigError: a range that is not ``[lo, hi]`` with ``1 <= lo <= hi`` (``hi`` may be
                None: the largest the data allow).
        """
        self.train_ways = _shape_range(train_ways, "train_ways", low=2)
        self.train_shots = _shape_range(train_shots, "train_shots", low=1)

    def shape_range_options(self) -> dict[str, Any]:
        """The ranges as options (only those set, so a fixed-shape suite's options stay as
        they were)."""
        return {name: list(value) for name, value in
                (("train_ways", self.train_ways), ("train_shots", self.train_shots))
                if value is not None}

    def shape_limits(self, split: str) -> tuple[int, int]:
        """The widest episode and the most shots the classes of ``split`` allow (with the
        suite's ``query`` examples per class); suites with shape ranges override it."""
        return self.ways, self.shots

    @contextlib.contextmanager
    def episode_shape(self, generator: torch.Generator, split: str) -> Iterator[tuple[int, int]]:
        """Within the block, ``ways`` and ``shots`` are one shape drawn from the training ranges
        (``split="train"`` with ranges set; otherwise the fixed ones)."""
        if split != "train" or (self.train_ways is None and self.train_shots is None):
            yield self.ways, self.shots
            return
        max_ways, max_shots = self.shape_limits(split)
        ways = _draw(self.train_ways, max_ways, self.ways, "train_ways", generator)
        shots = _draw(self.train_shots, max_shots, self.shots, "train_shots", generator)
        fixed = self.ways, self.shots
        self.ways, self.shots = ways, shots
        try:
            yield ways, shots
        finally:
            self.ways, self.shots = fixed

    def loss_per_example(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy for every example: logits ``[..., N, classes]``, labels ``[..., N]``."""
        flat = F.cross_entropy(prediction.reshape(-1, prediction.shape[-1]), target.reshape(-1),
                               reduction="none")
        return flat.view(target.shape)

    def metric_per_example(self, prediction: Tensor, target: Tensor) -> Tensor:
        """1 where the largest logit is the label, else 0, in the logits' dtype."""
        return (prediction.argmax(-1) == target).to(prediction.dtype)


def _shape_range(value: Sequence[int | None] | str | None, option: str,
                 low: int) -> tuple[int, int | None] | None:
    if value is None:
        return None
    if isinstance(value, str):  # "-o train_ways=2,20" arrives as one string
        value = [None if v.strip() in ("", "max", "None") else int(v) for v in value.split(",")]
    bad = ConfigError(f"{option} must be [lo, hi] with {low} <= lo <= hi (hi may be null: the "
                      f"most the data allow), got {value!r}")
    if len(value) != 2 or not isinstance(value[0], int) or isinstance(value[0], bool):
        raise bad
    lo, hi = value
    if lo < low or (hi is not None and (not isinstance(hi, int) or hi < lo)):
        raise bad
    return int(lo), None if hi is None else int(hi)


def _draw(bounds: tuple[int, int | None] | None, limit: int, fixed: int, option: str,
          generator: torch.Generator) -> int:
    """One value from ``bounds`` capped at ``limit``: uniform over the range."""
    if bounds is None:
        return fixed
    lo, hi = bounds
    hi = limit if hi is None else min(hi, limit)
    if lo > hi:
        raise ConfigError(f"{option}: the training split allows at most {limit}, fewer than the "
                          f"range's low end {lo}")
    return lo + int(torch.randint(hi - lo + 1, (1,), generator=generator))
