"""Baselines: the stacked path equals per-task runs, tuning resumes and counts trials once."""

from __future__ import annotations

import math

import pytest
import torch

from metaopt_tuner.compare.baselines import (
    BASELINES,
    DIVERGED,
    OPTIMIZERS,
    RandomInit,
    SharedInit,
    available_optimizers,
    batched_adam_curve,
    oracle_tune,
    run_optimizer,
)
from metaopt_tuner.compare.baselines import (
    finite_or_diverged as _finite,
)
from metaopt_tuner.compare.pretraining import load_or_pretrain, pretrain
from metaopt_tuner.compare.tuning import StudyStorageError, open_study, study_name_for, tune
from metaopt_tuner.compare.tuning import retry_locked as _retry_locked
from metaopt_tuner.errors import ConfigError, MetaOptError
from metaopt_tuner.tasks import get_suite

from .helpers import TinyImageSuite


@pytest.fixture
def sinusoid():
    suite = get_suite("sinusoid", shots=5, hidden=[8, 8])
    return suite, suite.build_model(), suite.fixed_tasks(6, split="val")


@pytest.mark.parametrize("optimizer,hp", [("adam", {"lr": 0.03}), ("sgd", {"lr": 0.01, "momentum": 0.9})])
def test_stacked_tasks_equal_independent_per_task_runs(sinusoid, optimizer, hp):
    suite, model, tasks = sinusoid
    init = RandomInit(suite.build_model, seed=3)
    stacked = run_optimizer(optimizer, hp, model, init, suite, tasks, 5, batched=True)
    loop = run_optimizer(optimizer, hp, model, init, suite, tasks, 5, batched=False)
    assert stacked.loss.shape == (6, 6)
    torch.testing.assert_close(stacked.loss, loop.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stacked.metric, loop.metric, rtol=1e-5, atol=1e-6)
    if optimizer == "adam":  # it learns
        assert float(stacked.loss[:, -1].mean()) < float(stacked.loss[:, 0].mean())
    assert stacked.grad_evals == 6 * 5


def test_stacked_path_for_a_convnet_matches_the_loop():
    suite = TinyImageSuite(ways=2, shots=1, query=2, size=8)
    model = suite.build_model()
    tasks = suite.fixed_tasks(2, split="test")
    init = SharedInit(dict(model.named_parameters()))
    a = run_optimizer("adam", {"lr": 0.01}, model, init, suite, tasks, 2, batched=True)
    b = run_optimizer("adam", {"lr": 0.01}, model, init, suite, tasks, 2, batched=False)
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-4, atol=1e-5)


def test_chunks_give_the_same_curve(sinusoid):
    suite, model, tasks = sinusoid
    init = RandomInit(suite.build_model, seed=0)
    whole = run_optimizer("adam", {"lr": 0.01}, model, init, suite, tasks, 3)
    parts = run_optimizer("adam", {"lr": 0.01}, model, init, suite, tasks, 3, chunk=4)
    torch.testing.assert_close(whole.loss, parts.loss)


def test_random_init_is_per_task_reproducible_and_leaves_global_rng_alone(sinusoid):
    suite, _, _ = sinusoid
    init = RandomInit(suite.build_model, seed=1)
    state = torch.get_rng_state()
    a, b = init.params(0, 4), init.params(2, 4)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a["layers.0.weight"][2:], b["layers.0.weight"])
    assert not torch.equal(a["layers.0.weight"][0], a["layers.0.weight"][1])


def test_per_task_adam_matches_torch_adam(sinusoid):
    suite, model, tasks = sinusoid
    init = RandomInit(suite.build_model, seed=2)
    lr = torch.tensor([1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1e-4])
    loss, _ = batched_adam_curve(model, init.params(0, 6), lr, suite, tasks, 4)
    for i in (0, 3, 5):
        ref = run_optimizer("adam", {"lr": float(lr[i])}, model, _Slice(init, i), suite,
                            tasks.slice(i, i + 1), 4, batched=False)
        torch.testing.assert_close(loss[i], ref.loss[0], rtol=1e-5, atol=1e-6)


class _Slice:
    """Task ``i`` of another init, as task 0."""

    def __init__(self, init, i):
        self.init, self.i = init, i

    def params(self, start, stop):
        return self.init.params(self.i + start, self.i + stop)


def test_unknown_or_missing_optimizer_is_a_clear_error(sinusoid):
    suite, model, tasks = sinusoid
    init = RandomInit(suite.build_model)
    with pytest.raises(ConfigError, match="unknown optimizer"):
        run_optimizer("adamw2", {}, model, init, suite, tasks, 1)
    missing = [n for n, s in OPTIMIZERS.items() if not s.available()]
    for name in missing:
        with pytest.raises(ConfigError, match="pip install"):
            run_optimizer(name, {}, model, init, suite, tasks, 1)
    assert {"adam", "sgd"} <= set(available_optimizers())


@pytest.mark.parametrize("name", ["prodigy", "dadaptation", "schedulefree"])
def test_parameter_free_optimizers_run_per_task_when_installed(sinusoid, name):
    if not OPTIMIZERS[name].available():
        pytest.skip(f"{OPTIMIZERS[name].module} is not installed (optional extra 'baselines')")
    suite, model, tasks = sinusoid
    curve = run_optimizer(name, {}, model, RandomInit(suite.build_model), suite, tasks, 3)
    assert curve.loss.shape == (6, 4) and torch.isfinite(curve.loss).all()
    assert not BASELINES[name].tuned


def test_tune_resumes_and_counts_finished_trials(sinusoid, tmp_path):
    suite, model, tasks = sinusoid
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    init = RandomInit(suite.build_model)
    first = tune("adam", model, init, suite, tasks, 3, 4, storage=storage, study_name="s")
    assert first.trials == 4 and first.new_trials == [0, 1, 2, 3]
    again = tune("adam", model, init, suite, tasks, 3, 4, storage=storage, study_name="s")
    assert again.new_trials == [] and again.best_params == first.best_params
    more = tune("adam", model, init, suite, tasks, 3, 7, storage=storage, study_name="s")
    assert more.new_trials == [4, 5, 6] and more.trials == 7
    assert more.best_value <= first.best_value
    assert more.grad_evals <= 7 * 3 * len(tasks) and more.grad_evals > 0
    assert [h[0] for h in more.history] == list(range(7))


def test_tuning_prunes_and_finds_a_better_lr_than_a_bad_default(sinusoid):
    suite, model, tasks = sinusoid
    init = RandomInit(suite.build_model)
    result = tune("sgd", model, init, suite, tasks, 5, 20, seed=1)
    assert result.trials == 20 and set(result.best_params) == {"lr", "momentum"}
    bad = run_optimizer("sgd", {"lr": 1e-5, "momentum": 0.0}, model, init, suite, tasks, 5)
    assert result.best_value < float(bad.loss[:, -1].mean())
    assert all(state in ("COMPLETE", "PRUNED") for _, _, state in result.history)


def test_diverging_trials_get_a_finite_penalty():
    assert _finite(float("nan")) == DIVERGED and _finite(float("inf")) == DIVERGED
    assert _finite(0.5) == 0.5


def test_study_names_depend_on_the_protocol(sinusoid):
    suite, _, _ = sinusoid
    a = study_name_for(suite, "adam", steps=10, val_tasks=100, seed=0)
    assert a == study_name_for(suite, "adam", steps=10, val_tasks=100, seed=0)
    assert a != study_name_for(suite, "adam", steps=5, val_tasks=100, seed=0)
    assert a.startswith("sinusoid-adam-")


def test_locked_database_is_retried_then_reported():
    calls = []

    def locked():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert _retry_locked(locked, "x", attempts=5) == "ok" and len(calls) == 3
    with pytest.raises(StudyStorageError, match="stayed locked"):
        _retry_locked(lambda: (_ for _ in ()).throw(RuntimeError("database is locked")), "x", attempts=2)
    assert issubclass(StudyStorageError, MetaOptError)


def test_bad_storage_url_is_a_clear_error():
    with pytest.raises(StudyStorageError, match="cannot open"):
        open_study("x", "nosuchdialect://nowhere")


def test_oracle_is_at_least_as_good_as_one_shared_lr(sinusoid):
    suite, model, tasks = sinusoid
    init = RandomInit(suite.build_model)
    curve, lrs = oracle_tune(model, init, suite, tasks, 3, 12)
    shared = run_optimizer("adam", {"lr": 1e-2}, model, init, suite, tasks, 3)
    assert lrs.shape == (6,) and curve.loss.shape == (6, 4)
    # per task, the best of 12 TPE trials beats a fixed lr on most tasks
    assert float(curve.loss[:, -1].mean()) <= float(shared.loss[:, -1].mean())


def test_pretraining_learns_and_is_cached(tmp_path):
    suite = get_suite("sinusoid", hidden=[8, 8])
    result = pretrain(suite, steps=30, tasks_per_step=5, lr=1e-2)
    assert result.grad_evals == 150 and math.isfinite(result.final_loss)
    a = load_or_pretrain(suite, tmp_path, steps=5, tasks_per_step=2)
    b = load_or_pretrain(suite, tmp_path, steps=5, tasks_per_step=2)
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert b.seconds == a.seconds  # loaded, not retrained
