"""Safe by construction: positive rates, a bounded tail past the trained horizon, and no
non-finite value ever written into a parameter."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metaopt_tuner import update_rule as inner
from metaopt_tuner.artifact import Artifact, load_artifact
from metaopt_tuner.errors import NonFiniteUpdateError
from metaopt_tuner.optim import prepare
from metaopt_tuner.training import MetaTrainer, TrainConfig

from .helpers import LeastSquaresSuite, small_metasgd


def _support_loss(suite, model, task):
    return suite.loss_per_example(model(task.x_support), task.y_support).mean()


def _run(art, suite, task, steps, lr=1.0):
    """Support losses before every step and after the last one."""
    model, opt = prepare(None, art, lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = _support_loss(suite, model, task)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    with torch.no_grad():
        losses.append(_support_loss(suite, model, task).item())
    return model, losses


@pytest.fixture(scope="module")
def least_squares_artifact():
    """A tiny artifact meta-trained with the default configuration on least squares (float64)."""
    from metaopt_tuner.tasks import register_suite, unregister_suite

    register_suite("least-squares", LeastSquaresSuite)
    try:
        config = TrainConfig(suite="least-squares", iterations=60, meta_batch=8, eval_every=60,
                             eval_tasks=4, log_every=60, checkpoint_every=60, dtype="float64")
        result = MetaTrainer(config, None, progress=False).run()
    finally:
        unregister_suite("least-squares")
    return result.suite, Artifact.from_learner(result.learner, result.suite)


def _top_curvature(task):
    x = task.x_support.double()
    return float(torch.linalg.eigvalsh(2 * x.T @ x / x.shape[0]).max())


def test_a_defaults_trained_artifact_keeps_lowering_the_loss_for_a_thousand_steps(
    least_squares_artifact,
):
    suite, art = least_squares_artifact
    task = suite.fixed_tasks(1, split="test").task(0).to(dtype=torch.float64)
    model, losses = _run(art, suite, task, 1000)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    for before, after in zip(losses, losses[1:]):
        assert after <= before * (1 + 1e-12) + 1e-12


def test_a_rate_that_provably_diverges_when_repeated_stays_bounded_past_the_horizon(
    least_squares_artifact,
):
    suite, art = least_squares_artifact
    task = suite.fixed_tasks(1, split="test").task(0).to(dtype=torch.float64)
    rate = 3.0 / _top_curvature(task)  # |1 - rate * curvature| = 2 on the top direction
    big = copy.copy(art)
    big.rates = {n: torch.full_like(r, rate) for n, r in art.rates.items()}

    # repeating that rate (what the optimizer did before the tail rule) diverges
    model = big.initialize(big.build_model().double())
    for _ in range(200):
        model.zero_grad()
        _support_loss(suite, model, task).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= rate * p.grad
    with torch.no_grad():
        assert not _support_loss(suite, model, task).item() < 1e30

    model, losses = _run(big, suite, task, 1000)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    past = losses[big.horizon:]
    for before, after in zip(past, past[1:]):
        assert after <= before * (1 + 1e-12) + 1e-12


def test_a_refused_update_leaves_every_parameter_bit_identical():
    learner, suite = small_metasgd(steps=2)
    art = Artifact.from_learner(learner, suite)
    task = suite.fixed_tasks(1).task(0).to(dtype=torch.float64)
    model, opt = prepare(None, art)
    _support_loss(suite, model, task).backward()
    opt.step()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    steps = {n: opt.state[p]["step"] for n, p in model.named_parameters()}
    opt.zero_grad()
    _support_loss(suite, model, task).backward()
    model.layers[1].bias.grad[0] = float("nan")
    with pytest.raises(NonFiniteUpdateError, match="layers.1.bias") as info:
        opt.step()
    assert info.value.names == ["layers.1.bias"]
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
        assert opt.state[p]["step"] == steps[n]


@settings(max_examples=25, deadline=None)
@given(
    steps=st.integers(min_value=1, max_value=120),
    lr=st.floats(min_value=0.0, max_value=1.0),
    loss_scale_exp=st.integers(min_value=0, max_value=300),
)
def test_no_parameter_ever_becomes_non_finite(steps, lr, loss_scale_exp):
    learner, suite = small_metasgd(steps=2)
    art = Artifact.from_learner(learner, suite)
    task = suite.fixed_tasks(1).task(0).to(dtype=torch.float64)
    model, opt = prepare(None, art, lr=lr)
    scale = 10.0 ** loss_scale_exp  # large enough to overflow an update
    for _ in range(steps):
        opt.zero_grad()
        (scale * _support_loss(suite, model, task)).backward()
        before = [p.detach().clone() for p in model.parameters()]
        try:
            opt.step()
        except NonFiniteUpdateError:
            assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
        assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_the_tail_trains_the_rates_and_keeps_the_horizon_exact():
    learner, suite = small_metasgd(steps=2)
    batch = suite.sample(3, torch.Generator().manual_seed(0)).to(dtype=torch.float64)
    with_tail = learner.meta_gradient(batch)
    learner.tail_steps = 0
    without = learner.meta_gradient(batch)
    # the reported loss is the loss at the horizon either way; the tail changes the gradient
    assert with_tail.loss.item() == pytest.approx(without.loss.item(), rel=1e-12)
    assert not torch.allclose(with_tail.grads["rates.values.0"], without.grads["rates.values.0"])
    # past the horizon the rates shrink geometrically, and the first H steps are untouched
    lrs = learner.learning_rates()
    name = learner.rates.names[0]
    for t in range(2):
        assert torch.equal(inner.rates_at_step(lrs, t, 2)[name], lrs[name][t])
    for k in range(1, 4):
        expected = lrs[name][1] * inner.TAIL_DECAY ** k
        assert torch.allclose(inner.rates_at_step(lrs, 1 + k, 2)[name], expected)


def test_the_artifact_records_the_tail_and_says_it_in_one_line(tmp_path):
    learner, suite = small_metasgd(steps=3)
    art = Artifact.from_learner(learner, suite)
    loaded = load_artifact(art.save(tmp_path / "a"))
    assert loaded.horizon == 3 and loaded.tail_decay == inner.TAIL_DECAY
    assert "steps 1-3" in loaded.tail_rule() and f"{inner.TAIL_DECAY:g}" in loaded.tail_rule()
