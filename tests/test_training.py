"""The trainer: exact resume, NaN guard, run-folder rules, held-out evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from metaopt_tuner.errors import ConfigError, NonFiniteLossError, RunDirError
from metaopt_tuner.training import (
    CHECKPOINT,
    METRICS,
    RUN_MARKER,
    MetaTrainer,
    TrainConfig,
    meta_lr_factor,
)


def _config(**kw):
    base = dict(learner="metasgd", iterations=30, meta_batch=5, inner_steps=2, eval_every=10,
                eval_tasks=8, checkpoint_every=10, log_every=5, seed=3, suite_options={"shots": 5})
    base.update(kw)
    return TrainConfig(**base)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("learner, schedule",
                         [("metasgd", "constant"), ("reptile", "constant"), ("metasgd", "cosine")])
def test_resumed_run_ends_with_exactly_the_uninterrupted_parameters(tmp_path, learner, schedule):
    def config():
        return _config(learner=learner, meta_lr_schedule=schedule)

    full = MetaTrainer(config(), tmp_path / "full", progress=False).run()

    def stop_at_25(record):
        if record["iteration"] == 25:
            raise _Interrupt

    cut = MetaTrainer(config(), tmp_path / "cut", progress=False, callback=stop_at_25)
    with pytest.raises(_Interrupt):
        cut.run()
    assert torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)["iteration"] == 20
    resumed = MetaTrainer(config(), tmp_path / "cut", progress=False).run(resume=True)
    a = full.learner.state_dict()
    b = resumed.learner.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    lines = [json.loads(x) for x in (tmp_path / "cut" / METRICS).read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [r["iteration"] for r in full.history]


def test_meta_lr_factor_anneals_from_one_to_zero():
    assert meta_lr_factor("constant", 7, 10) == 1.0
    assert meta_lr_factor("cosine", 0, 10) == 1.0
    assert meta_lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert meta_lr_factor("cosine", 10, 10) == pytest.approx(0.0)
    assert meta_lr_factor("cosine", 12, 10) == pytest.approx(0.0)  # past the end: stays at zero


def test_cosine_schedule_sets_every_outer_rate_and_logs_it(tmp_path):
    trainer = MetaTrainer(_config(meta_lr_schedule="cosine", meta_lr=2e-3, rates_meta_lr=1e-4,
                                  iterations=20, log_every=5),
                          tmp_path / "run", progress=False)
    seen = []
    original = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        seen.append([g["lr"] for g in trainer.optimizer.param_groups])
        return original(*args, **kwargs)

    trainer.optimizer.step = recording_step
    result = trainer.run()
    assert len(seen) == 20
    for i, (weights_lr, rates_lr) in enumerate(seen):
        factor = meta_lr_factor("cosine", i, 20)
        assert weights_lr == pytest.approx(2e-3 * factor)
        assert rates_lr == pytest.approx(1e-4 * factor)
    logged = [r for r in result.history if "meta_lr" in r]
    assert [r["iteration"] for r in logged] == [5, 10, 15, 20]
    assert logged[1]["meta_lr"] == pytest.approx(2e-3 * meta_lr_factor("cosine", 10, 20))
    assert logged[-1]["meta_lr"] == pytest.approx(0.0, abs=1e-12)


def test_unknown_meta_lr_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="meta-lr schedule must be one of constant, cosine"):
        _config(meta_lr_schedule="linear").validate()


def test_a_diverged_run_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    trainer = MetaTrainer(_config(), tmp_path / "run", progress=False)
    original = trainer.learner.meta_gradient

    def poisoned(batch):
        out = original(batch)
        if trainer.iteration >= 12:
            out.loss = torch.tensor(float("nan"))
        return out

    trainer.learner.meta_gradient = poisoned
    before = {k: v.clone() for k, v in trainer.learner.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="10 meta-iterations in a row.*iteration 22.*"
                                                 "last good checkpoint"):
        trainer.run()
    state = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    assert state["iteration"] == 20 and state["skipped"] == 8
    assert all(torch.isfinite(v).all() for v in state["learner"].values())
    assert any(not torch.equal(v, before[k]) for k, v in state["learner"].items())


def test_a_lone_non_finite_meta_batch_is_skipped_and_counted(tmp_path):
    trainer = MetaTrainer(_config(), tmp_path / "run", progress=False)
    original = trainer.learner.meta_gradient

    def poisoned(batch):
        out = original(batch)
        if trainer.iteration == 5:
            out.grads = {k: torch.full_like(g, float("inf")) for k, g in out.grads.items()}
        return out

    trainer.learner.meta_gradient = poisoned
    result = trainer.run()
    assert trainer.skipped == 1 and result.config.iterations == trainer.iteration
    assert all(torch.isfinite(v).all() for v in trainer.learner.state_dict().values())
    assert any("skipped_nonfinite" in r for r in result.history)


def test_run_folder_rules(tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a metaopt run"):
        MetaTrainer(_config(iterations=1), occupied, progress=False).run()
    assert sorted(p.name for p in occupied.iterdir()) == ["notes.txt"]

    run = tmp_path / "run"
    MetaTrainer(_config(iterations=2, eval_every=1), run, progress=False).run()
    with pytest.raises(RunDirError, match="--resume"):
        MetaTrainer(_config(iterations=2, eval_every=1), run, progress=False).run()
    with pytest.raises(ConfigError, match="meta_batch"):
        MetaTrainer(_config(iterations=4, meta_batch=7, eval_every=1), run, progress=False).run(resume=True)
    with pytest.raises(RunDirError, match="no metaopt run"):
        MetaTrainer(_config(), tmp_path / "empty", progress=False).run(resume=True)
    assert (run / RUN_MARKER).is_file()


@pytest.mark.parametrize(
    "field, value",
    [("iterations", 0), ("meta_batch", -1), ("inner_steps", 0), ("learner", "sgd"), ("batching", "x"),
     ("inner_lr", -1.0), ("dtype", "int8"), ("head_init", "centroids")],
)
def test_invalid_options_are_rejected_before_anything_is_written(tmp_path, field, value):
    with pytest.raises(ConfigError):
        MetaTrainer(_config(**{field: value}), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_training_improves_held_out_mse():
    result = MetaTrainer(_config(iterations=300, meta_batch=10, inner_steps=1, eval_every=300,
                                 eval_tasks=50), progress=False).run()
    before = MetaTrainer(_config(iterations=1), progress=False).evaluate()
    assert result.final_metric < 0.7 * before


def test_meta_gradient_clipping_bounds_the_global_norm():
    trainer = MetaTrainer(_config(clip_grad=1e-3, learner="maml", inner_lr=0.01), progress=False)
    trainer.step()
    named = trainer.learner.named_meta_parameters()
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for _, p in named]))
    assert float(norm) <= 1e-3 * (1 + 1e-5)


def test_sampling_ahead_keeps_runs_and_resumes_exact(tmp_path):
    """On a GPU the next batch is sampled during the current step; checkpoints must not skip it."""
    plain = MetaTrainer(_config(), None, progress=False).run()

    def ahead(out, callback=None):
        trainer = MetaTrainer(_config(), out, progress=False, callback=callback)
        trainer._prefetch = True  # what a CUDA device turns on
        return trainer

    def stop_at_25(record):
        if record["iteration"] == 25:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        ahead(tmp_path / "cut", stop_at_25).run()
    resumed = ahead(tmp_path / "cut").run(resume=True)
    for k, v in plain.learner.state_dict().items():
        assert torch.equal(v, resumed.learner.state_dict()[k]), k


def test_a_run_from_before_newer_options_still_resumes(tmp_path):
    MetaTrainer(_config(iterations=10), tmp_path / "run", progress=False).run()
    marker = tmp_path / "run" / RUN_MARKER
    saved = json.loads(marker.read_text())
    for key in ("head_init", "cuda_graph", "tf32"):
        del saved["config"][key]
    marker.write_text(json.dumps(saved))
    result = MetaTrainer(_config(iterations=20), tmp_path / "run", progress=False).run(resume=True)
    assert result.history[-1]["iteration"] == 20


@pytest.mark.parametrize("field", ["cuda_graph", "tf32"])
def test_gpu_only_options_are_refused_on_cpu(tmp_path, field):
    with pytest.raises(ConfigError, match="CUDA"):
        MetaTrainer(_config(**{field: True}), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_cuda_graphs_need_cuda():
    from metaopt_tuner.learners import build_learner
    from metaopt_tuner.tasks import get_suite
    from metaopt_tuner.training.cuda_graphs import GraphedMetaGradient

    if torch.cuda.is_available():
        pytest.skip("CUDA is available: the GPU benchmark checks graphs there")
    with pytest.raises(ConfigError, match="CUDA"):
        GraphedMetaGradient(build_learner("maml", get_suite("sinusoid")))
