"""Distributed meta-training: task streams, equality with one process, resume, a lost peer.

Multi-process tests start ``python -m cli train`` once per rank with the environment torchrun sets
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), which is all the trainer reads; the real
``torchrun`` launcher is exercised by a slow test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metaopt_tuner.errors import ConfigError, DistributedError
from metaopt_tuner.training import (
    CHECKPOINT,
    MetaTrainer,
    TrainConfig,
    distributed,
    resolve_train_config,
)

REPO = Path(__file__).resolve().parents[1]
# A small, fast sinusoid run; eval/log/checkpoint cadence exercises rank-0-only writes.
BASE = dict(iterations=12, meta_batch=5, eval_every=6, eval_tasks=4, checkpoint_every=6, log_every=2)
CLI_BASE = ["--meta-batch", "5", "--eval-every", "6", "--eval-tasks", "4", "--checkpoint-every", "6",
            "--log-every", "2", "--no-progress"]
# A run that only ends when a process is lost; a checkpoint every 20 iterations.
LONG_RUN = ["-n", "1000000", "--meta-batch", "5", "--eval-every", "1000000", "--eval-tasks", "4",
            "--checkpoint-every", "20", "--log-every", "50", "--no-progress"]


def _resolved(**flags) -> TrainConfig:
    """The configuration ``metaopt train`` runs for BASE and ``flags`` (the recipe beneath)."""
    return resolve_train_config("sinusoid", {**BASE, **flags}).config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def launch():
    """Start one ``python -m cli train`` per rank; every process is killed at teardown."""
    procs: list[subprocess.Popen] = []

    def start(world: int, args: list[str], *, timeout: float = 120.0) -> list[subprocess.Popen]:
        port = _free_port()
        group = []
        for rank in range(world):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                       LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                       OMP_NUM_THREADS="1", METAOPT_DIST_TIMEOUT=str(timeout))
            proc = subprocess.Popen([sys.executable, "-m", "cli", "train", *args], cwd=REPO, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(proc)
            group.append(proc)
        return group

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _finish(group: list[subprocess.Popen], timeout: float = 180) -> list[tuple[int, str, str]]:
    out = []
    for proc in group:
        stdout, stderr = proc.communicate(timeout=timeout)
        out.append((proc.returncode, stdout, stderr))
    return out


def _learner_state(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / CHECKPOINT, weights_only=True)["learner"]


def _max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).norm() / a[k].norm().clamp_min(1e-30)) for k in a)


# ---------------------------------------------------------------------- pure helpers
def test_stream_zero_is_the_plain_seed_and_streams_differ():
    assert distributed.stream_seed(7, 0) == 7
    seeds = {distributed.stream_seed(7, s) for s in range(64)}
    assert len(seeds) == 64 and all(0 <= s < 2**64 for s in seeds)
    assert distributed.stream_seed(7, 1) != distributed.stream_seed(8, 1)


@pytest.mark.parametrize("meta_batch,streams", [(25, 1), (25, 2), (25, 3), (5, 5), (7, 4)])
def test_split_tasks_covers_the_meta_batch(meta_batch, streams):
    sizes = distributed.split_tasks(meta_batch, streams)
    assert sum(sizes) == meta_batch and len(sizes) == streams
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


@pytest.mark.parametrize("streams", [1, 2, 3, 5, 8])
def test_every_stream_has_exactly_one_owner(streams):
    for world in range(1, streams + 1):
        owned = [list(distributed.owned_streams(streams, r, world)) for r in range(world)]
        assert all(owned), "every process must own at least one stream"
        assert sum(owned, []) == list(range(streams))


def test_single_process_context_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx, device = distributed.init_from_env("cpu")
    assert not ctx.is_distributed and ctx.is_main and device == torch.device("cpu")
    t = torch.ones(3)
    assert distributed.all_reduce_sum(t, ctx) is t and torch.equal(t, torch.ones(3))
    assert distributed.broadcast_object({"a": 1}, ctx) == {"a": 1}
    assert distributed.all_gather_object(5, ctx) == [5]


def test_world_size_without_rendezvous_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DistributedError, match="launch with torchrun"):
        distributed.init_from_env("cpu")


def test_timeout_from_environment(monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "12.5")
    assert distributed.resolve_timeout() == 12.5
    assert distributed.resolve_timeout(3) == 3.0
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(DistributedError, match="number of seconds"):
        distributed.resolve_timeout()


# ---------------------------------------------------------------------- one process
def test_default_run_samples_from_the_plain_seeded_generator():
    trainer = MetaTrainer(TrainConfig(**BASE, seed=3), progress=False)
    batch = trainer.sample_batch()
    expected = trainer.suite.sample(5, torch.Generator().manual_seed(3), split="train")
    assert torch.equal(batch.x_support, expected.x_support)
    assert len(trainer.generators) == 1 and trainer.generator is trainer.generators[0]


def test_task_streams_must_fit_the_meta_batch():
    with pytest.raises(ConfigError, match="task-streams"):
        TrainConfig(**{**BASE, "meta_batch": 3}, task_streams=4).validate()
    with pytest.raises(ConfigError, match="task-streams"):
        TrainConfig(**BASE, task_streams=0).validate()


def test_streams_draw_the_meta_batch_as_independent_shares():
    trainer = MetaTrainer(TrainConfig(**BASE, seed=3, task_streams=2), progress=False)
    shards = trainer.sample_shards()
    assert [len(b) for b in shards] == [3, 2]
    first = trainer.suite.sample(3, torch.Generator().manual_seed(3), split="train")
    second = trainer.suite.sample(
        2, torch.Generator().manual_seed(distributed.stream_seed(3, 1)), split="train")
    assert torch.equal(shards[0].y_query, first.y_query)
    assert torch.equal(shards[1].y_query, second.y_query)


def test_multi_stream_resume_is_exact(tmp_path):
    config = TrainConfig(**BASE, task_streams=2)
    full = MetaTrainer(config, tmp_path / "full", progress=False).run()
    MetaTrainer(TrainConfig(**{**BASE, "iterations": 6}, task_streams=2), tmp_path / "cut",
                progress=False).run()
    resumed = MetaTrainer(config, tmp_path / "cut", progress=False).run(resume=True)
    for (name, a), b in zip(full.learner.state_dict().items(), resumed.learner.state_dict().values()):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------------- several processes
def test_two_processes_match_one_process_and_resume(tmp_path, launch):
    """2 gloo processes (6 iterations, then a distributed resume to 12) equal 1 process, 2 streams."""
    # the CLI resolves the sinusoid recipe under the flags: the in-process runs resolve the same way
    one = MetaTrainer(_resolved(seed=1, task_streams=2), tmp_path / "one", progress=False).run()
    two = tmp_path / "two"
    first = _finish(launch(2, ["--out", str(two), "-n", "6", "--seed", "1", *CLI_BASE]))
    assert [rc for rc, _, _ in first] == [0, 0], first
    assert "done: 6 iterations" in first[0][1] and first[1][1] == "", "rank 1 must not print"
    assert sorted(p.name for p in two.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in (tmp_path / "one").iterdir() if not p.name.startswith("."))
    shutil.copytree(two, tmp_path / "two_then_one")

    second = _finish(launch(2, ["--out", str(two), "-n", "12", "--seed", "1", "--resume", *CLI_BASE]))
    assert [rc for rc, _, _ in second] == [0, 0], second
    expected = one.learner.state_dict()
    assert _max_rel_diff(expected, _learner_state(two)) < 1e-6
    # rank 0 alone wrote the log: one line per logged iteration, no duplicates
    lines = (two / "metrics.jsonl").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        line.split(",")[0] for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    state = torch.load(two / CHECKPOINT, weights_only=True)
    assert len(state["generators"]) == 2 and state["iteration"] == 12

    # the checkpoint of a 2-process run resumes in one process with its 2 streams, exactly
    alone = MetaTrainer(_resolved(seed=1), tmp_path / "two_then_one", progress=False)
    alone_result = alone.run(resume=True)
    assert _max_rel_diff(expected, alone_result.learner.state_dict()) < 1e-6


def test_killed_rank_ends_the_others_with_a_clear_error(tmp_path, launch):
    out = tmp_path / "run"
    group = launch(2, ["--out", str(out), *LONG_RUN], timeout=20)
    checkpoint = out / CHECKPOINT
    deadline = time.monotonic() + 120
    while not checkpoint.is_file():
        assert all(p.poll() is None for p in group), _finish(group)
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    time.sleep(0.5)
    group[1].send_signal(signal.SIGKILL)
    started = time.monotonic()
    stdout, stderr = group[0].communicate(timeout=60)
    assert group[0].returncode == 1, (stdout, stderr)
    assert time.monotonic() - started < 30
    assert "lost the other processes" in stderr and "last good checkpoint is kept" in stderr, stderr
    assert "Traceback" not in stderr
    state = torch.load(checkpoint, weights_only=True)  # intact and loadable
    assert state["iteration"] % 20 == 0 and state["iteration"] >= 20


@pytest.mark.slow
def test_hung_rank_times_out(tmp_path, launch):
    """A stopped (not dead) peer: the collective timeout, not a broken socket, ends the run."""
    out = tmp_path / "run"
    group = launch(2, ["--out", str(out), *LONG_RUN], timeout=5)
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT).is_file():
        assert time.monotonic() < deadline and all(p.poll() is None for p in group)
        time.sleep(0.2)
    group[1].send_signal(signal.SIGSTOP)
    try:
        stdout, stderr = group[0].communicate(timeout=60)
    finally:
        group[1].send_signal(signal.SIGCONT)
    assert group[0].returncode == 1 and "5 s collective timeout" in stderr, stderr
    torch.load(out / CHECKPOINT, weights_only=True)


@pytest.mark.slow
def test_real_torchrun_matches_one_process(tmp_path):
    one = MetaTrainer(TrainConfig(**{**BASE, "iterations": 6}, seed=2, task_streams=2), tmp_path / "one",
                      progress=False).run()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(_free_port()), "-m", "cli", "train", "--out", str(tmp_path / "two"), "-n", "6", "--seed", "2",
           *CLI_BASE]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    assert _max_rel_diff(one.learner.state_dict(), _learner_state(tmp_path / "two")) < 1e-6
