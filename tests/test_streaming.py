"""Held-out tasks drawn and adapted a chunk at a time: the same tasks and the same results as all
at once, while no more than one chunk of task tensors is ever built."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from metaopt_tuner.artifact import Artifact
from metaopt_tuner.errors import ConfigError
from metaopt_tuner.evaluation import evaluate
from metaopt_tuner.learners import build_learner
from metaopt_tuner.tasks import TaskBatch, TaskStream, get_suite, image_cache
from metaopt_tuner.tasks.stream import MAX_CHUNK, chunk_for, task_bytes

from .helpers import LeastSquaresSuite, run_cli, small_metasgd
from .test_intents import make_clinc
from .test_omniglot import (
    make_tree,
    one_thread,  # noqa: F401  (autouse: tiny tensors, one thread)
)


def _equal(a: TaskBatch, b: TaskBatch) -> bool:
    return all(getattr(a, f.name).dtype == getattr(b, f.name).dtype
               and torch.equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))


def _intents(tmp_path: Path, **options):
    root = make_clinc(tmp_path / "clinc")
    return get_suite("intents", data_dir=str(root), **{"ways": 3, "shots": 1, "query": 2,
                                                         "buckets": 512, **options})


def _omniglot(tmp_path: Path, **options):
    image_cache._MEMO.clear()
    tree = make_tree(tmp_path / "omni")
    defaults = dict(data_dir=str(tree), image_size=8, invert=False, cache_dir=str(tmp_path / "cache"),
                    ways=3, shots=2, query=2, val_fraction=0.25, test_fraction=0.25, rotations=True,
                    jitter_degrees=10, jitter_scale=0.1, jitter_shift=0.1)
    return get_suite("omniglot", **{**defaults, **options})


def _suites(tmp_path: Path):
    return {"sinusoid": get_suite("sinusoid"), "intents": _intents(tmp_path),
            "omniglot": _omniglot(tmp_path), "user suite": LeastSquaresSuite()}


# ------------------------------------------------------------------------------- the draw
@pytest.mark.parametrize("split", ["test", "train", "all"])
def test_chunks_are_exactly_the_fixed_tasks(tmp_path, split):
    for name, suite in _suites(tmp_path).items():
        if split == "all" and name in ("omniglot", "user suite"):
            continue
        whole = suite.fixed_tasks(11, split=split, seed=4)
        for chunk in (1, 3, 11, 50):
            stream = TaskStream(suite, 11, split=split, seed=4, chunk=chunk)
            parts = list(stream)
            assert [len(p) for p in parts] == [min(chunk, 11 - s) for s in range(0, 11, chunk)]
            assert _equal(TaskBatch.concat(parts), whole), (name, split, chunk)
        assert _equal(stream.head(5).materialize(), whole.slice(0, 5)), name


def test_intent_padding_is_fixed_over_every_task(tmp_path):
    """A task padded alone would be narrower; a chunk keeps the width of all the tasks drawn."""
    suite = _intents(tmp_path)
    whole = suite.fixed_tasks(9, split="test")
    width = whole.x_support.shape[-1]
    own = [int((torch.cat([whole.x_support[t], whole.x_query[t]]) != 0).sum(-1).max())
           for t in range(9)]
    assert min(own) < width  # the case that matters: some task is narrower than the draw
    for part in TaskStream(suite, 9, chunk=1):
        assert part.x_support.shape[-1] == part.x_query.shape[-1] == width


def test_a_stream_builds_one_chunk_at_a_time(tmp_path):
    suite = _intents(tmp_path)
    built: list[tuple[int, int]] = []
    draw_tasks = suite.draw_tasks

    def spy(num_tasks, generator, split="train"):
        draw = draw_tasks(num_tasks, generator, split)
        inner = draw.build

        def build(start, stop):
            built.append((start, stop))
            return inner(start, stop)

        return type(draw)(draw.num_tasks, build)

    suite.draw_tasks = spy  # type: ignore[method-assign]
    learner = build_learner("metasgd", suite, inner_steps=1)
    evaluate(learner, suite, num_tasks=10, chunk=4)
    assert built == [(0, 4), (4, 8), (8, 10)]  # never all ten at once


def test_the_default_chunk_comes_from_the_tasks_size(tmp_path):
    assert chunk_for(1) == MAX_CHUNK and chunk_for(10**12) == 1
    assert chunk_for(4 * 2**20, budget=16 * 2**20) == 4
    stream = TaskStream(_intents(tmp_path), 30)
    assert stream.chunk == chunk_for(task_bytes(stream.tasks(0, 1)))
    one = stream.tasks(0, 1)
    assert task_bytes(one, torch.float64) > task_bytes(one) or not one.x_support.is_floating_point()
    with pytest.raises(ConfigError, match="chunk"):
        TaskStream(get_suite("sinusoid"), 5, chunk=0)
    with pytest.raises(ConfigError, match="number of tasks"):
        TaskStream(get_suite("sinusoid"), 0)


# ------------------------------------------------------------------------------- evaluate
def _same(a, b):
    return (a.loss_mean == b.loss_mean and a.loss_ci == b.loss_ci
            and a.metric_mean == b.metric_mean and a.metric_ci == b.metric_ci)


def test_evaluate_in_chunks_equals_one_batch_on_the_sinusoid():
    learner, suite = small_metasgd(steps=2)  # float64
    whole = evaluate(learner, suite, num_tasks=23, steps=3, seed=1, chunk=23)
    for chunk in (1, 4, 10, None):
        assert _same(evaluate(learner, suite, num_tasks=23, steps=3, seed=1, chunk=chunk), whole)
    # and both equal the curve of every task adapted at once
    curve = learner.adaptation_curve(suite.fixed_tasks(23, "test", 1).to(dtype=torch.float64), 3,
                                     chunk=23)
    assert whole.loss_mean == curve.loss.mean(0).tolist()


def test_each_chunks_memory_is_given_back_before_the_next(monkeypatch):
    """glibc kept the freed heap of every chunk, fragmented: the peak grew with the number of
    chunks (docs/benchmarks.md). The heap is trimmed after each one; the numbers do not change."""
    from metaopt_tuner import heap
    from metaopt_tuner.learners import base

    assert isinstance(heap.release_freed_memory(), bool)
    calls: list[int] = []
    monkeypatch.setattr(base, "release_freed_memory", lambda: calls.append(1) or True)
    learner, suite = small_metasgd(steps=2)
    evaluate(learner, suite, num_tasks=23, steps=2, chunk=5)
    assert len(calls) == 5


@pytest.mark.parametrize("kind", ["intents", "omniglot"])
def test_evaluate_in_chunks_equals_one_batch_on_classification(tmp_path, kind):
    suite = _intents(tmp_path) if kind == "intents" else _omniglot(tmp_path, image_size=16)
    torch.manual_seed(0)
    learner = build_learner("metasgd", suite, inner_steps=2, inner_lr=0.1)
    learner.double()
    split = "all" if kind == "intents" else "test"
    whole = evaluate(learner, suite, num_tasks=13, steps=2, split=split, chunk=13)
    progress: list[tuple[int, int]] = []
    chunked = evaluate(learner, suite, num_tasks=13, steps=2, split=split, chunk=5,
                       on_progress=lambda d, t: progress.append((d, t)))
    assert _same(chunked, whole) and progress == [(5, 13), (10, 13), (13, 13)]
    assert _same(evaluate(learner, suite, num_tasks=13, steps=2, split=split, chunk=1), whole)


def test_cli_evaluate_chunk_prints_the_same_numbers(tmp_path, capsys):
    learner, suite = small_metasgd(steps=2)
    path = Artifact.from_learner(learner, suite).save(tmp_path / "a")
    runs = {}
    for chunk in ("2", "100"):
        code, out, err = run_cli(capsys, "evaluate", str(path), "--tasks", "7", "--json",
                                 "--chunk", chunk, "--progress")
        assert code == 0, err
        runs[chunk] = json.loads(out)
        lines = [line for line in err.splitlines() if line.startswith("adapted ")]
        assert len(lines) == (4 if chunk == "2" else 0)  # one line a chunk, none for one chunk
    assert runs["2"] == runs["100"]
    code, _, err = run_cli(capsys, "evaluate", str(path), "--chunk", "0")
    assert code == 2


# ------------------------------------------------------------------------------- compare
def test_compare_in_chunks_equals_one_batch(tmp_path):
    from metaopt_tuner.compare import compare

    from .test_report import make_artifact

    art = make_artifact(tmp_path / "artifact", iterations=3)
    results = {}
    for chunk in (None, 3):
        data = compare(art, tmp_path / f"out-{chunk}", steps=2, tasks=8, trials=2, val_tasks=3,
                       oracle_tasks=5, oracle_trials=2, pretrain_steps=3, progress=False,
                       chunk=chunk, baselines=["adam", "sgd-pretrained"]).data
        results[chunk] = _timeless({"methods": data["methods"], "break_even": data["break_even"]})
    assert results[3] == results[None]
    assert len(results[3]["methods"]) == 4  # meta-learned, two baselines, the oracle


def _timeless(obj):
    """``obj`` without its wall-clock figures (the only numbers a re-run changes)."""
    if isinstance(obj, dict):
        return {k: _timeless(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_timeless(v) for v in obj]
    return obj
