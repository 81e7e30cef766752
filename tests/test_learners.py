"""Meta-gradients: finite differences, agreement of the batching paths, FOMAML and Reptile."""

from __future__ import annotations

import pytest
import torch

from metaopt_tuner.learners.inner import adapt
from metaopt_tuner.tasks import get_suite
from metaopt_tuner.training import MetaTrainer, TrainConfig

from .helpers import (
    TinyImageSuite,
)
from .helpers import (
    directional_fd as _directional_fd,
)
from .helpers import (
    float64_batch as _batch,
)
from .helpers import (
    seeded_learner as _learner,
)

SUITES = {
    "mlp": lambda: get_suite("sinusoid", shots=5, hidden=[8, 8]),
    "convnet": lambda: TinyImageSuite(),  # the default: support-set batch norm
    "convnet-group": lambda: TinyImageSuite(norm="group"),
    "convnet-layer": lambda: TinyImageSuite(norm="layer"),
    "convnet-batch": lambda: TinyImageSuite(norm="batch"),
}


@pytest.mark.parametrize("suite_name", list(SUITES))
@pytest.mark.parametrize("learner_name", ["maml", "metasgd"])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("batching", ["batched", "vmap", "loop"])
def test_second_order_meta_gradient_matches_finite_differences(suite_name, learner_name, steps, batching):
    suite = SUITES[suite_name]()
    learner = _learner(learner_name, suite, batching, steps)
    learner.tail_steps = 0  # the tail past the horizon is first order (its own test below)
    batch = _batch(suite)
    grads = learner.meta_gradient(batch).grads
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        direction = {n: torch.randn(g.shape, generator=gen, dtype=torch.float64) for n, g in grads.items()}
        analytic = sum((grads[n] * direction[n]).sum() for n in grads).item()
        # ReLU and max-pool are piecewise smooth: a step that crosses a kink spoils one finite
        # difference, so the closer of two small step sizes is compared.
        numeric = [_directional_fd(learner, batch, direction, eps) for eps in (1e-6, 3e-7)]
        error = min(abs(analytic - n) for n in numeric)
        assert error <= 1e-6 * max(abs(analytic), 1e-3), (analytic, numeric)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("suite_name", list(SUITES))
@pytest.mark.parametrize("learner_name", ["maml", "fomaml", "metasgd", "reptile"])
def test_batching_paths_agree(suite_name, learner_name):
    suite = SUITES[suite_name]()
    batch = _batch(suite, n=4)
    results = {}
    for batching in ("loop", "vmap", "batched"):
        learner = _learner(learner_name, suite, batching, steps=2,
                                 per_step_lrs=learner_name == "metasgd")
        results[batching] = learner.meta_gradient(batch)
    ref = results["loop"]
    for batching in ("vmap", "batched"):
        out = results[batching]
        assert out.grads.keys() == ref.grads.keys()
        # Relative to the largest gradient entry: a conv bias followed by a norm has an exact
        # gradient of zero, whose rounding noise (1e-17) has no meaningful relative error.
        scale = max(g.abs().max().item() for g in ref.grads.values())
        for n in ref.grads:
            assert (out.grads[n] - ref.grads[n]).abs().max().item() < 1e-10 * scale, (batching, n)
        assert abs(out.loss.item() - ref.loss.item()) < 1e-10 * max(1.0, abs(ref.loss.item()))


@pytest.mark.parametrize("batching", ["batched", "vmap", "loop"])
def test_first_order_maml_is_query_gradient_at_adapted_parameters(batching):
    suite = SUITES["mlp"]()
    batch = _batch(suite, n=3)
    learner = _learner("fomaml", suite, batching, steps=2)
    got = learner.meta_gradient(batch).grads
    theta = {k: v.detach() for k, v in learner.model.named_parameters()}
    expected = {k: torch.zeros_like(v) for k, v in theta.items()}
    lr = learner.rates.values[0][0].item()  # 0.05 as stored (rounded through float32)
    for i in range(len(batch)):
        task = batch.task(i)
        params = {k: v.clone().requires_grad_() for k, v in theta.items()}
        for _ in range(2):  # plain SGD, written out here independently of the library's loop
            loss = suite.loss_per_example(torch.func.functional_call(learner.model, params, task.x_support),
                                          task.y_support).mean()
            g = torch.autograd.grad(loss, list(params.values()))
            params = {k: (v - lr * gi).detach().requires_grad_() for (k, v), gi in zip(params.items(), g)}
        q = suite.loss_per_example(torch.func.functional_call(learner.model, params, task.x_query),
                                   task.y_query).mean()
        for k, gi in zip(params, torch.autograd.grad(q, list(params.values()))):
            expected[k] += gi / len(batch)
    for k in expected:
        assert _rel(got[f"model.{k}"], expected[k]) < 1e-10


def test_one_reptile_update_equals_the_formula():
    cfg = TrainConfig(learner="reptile", iterations=1, meta_batch=4, inner_steps=3, inner_lr=0.02,
                      meta_lr=0.3, suite_options={"shots": 5}, dtype="float64", eval_every=1)
    trainer = MetaTrainer(cfg, progress=False)
    theta = {k: v.detach().clone() for k, v in trainer.learner.model.named_parameters()}
    same_stream = torch.Generator()
    same_stream.set_state(trainer.generator.get_state())
    batch = trainer.suite.sample(4, same_stream).to(dtype=torch.float64)
    adapted_sum = {k: torch.zeros_like(v) for k, v in theta.items()}
    model = trainer.learner.model
    lr = trainer.learner.rates.values[0][0].item()
    for i in range(len(batch)):
        task = batch.task(i)
        params = {k: v.clone().requires_grad_() for k, v in theta.items()}
        for _ in range(3):
            loss = trainer.suite.loss_per_example(torch.func.functional_call(model, params, task.x_support),
                                                  task.y_support).mean()
            g = torch.autograd.grad(loss, list(params.values()))
            params = {k: (v - lr * gi).detach().requires_grad_() for (k, v), gi in zip(params.items(), g)}
        for k in params:
            adapted_sum[k] += params[k].detach()
    trainer.step()
    for k, v in trainer.learner.model.named_parameters():
        expected = theta[k] + 0.3 * (adapted_sum[k] / len(batch) - theta[k])
        assert torch.allclose(v.detach(), expected, rtol=1e-12, atol=1e-12), k


def test_per_step_rates_are_used_in_order():
    suite = SUITES["mlp"]()
    learner = _learner("metasgd", suite, "batched", steps=3, per_step_lrs=True)
    rates = learner.learning_rates()
    assert all(r.shape[0] == 3 for r in rates.values())
    batch = _batch(suite, n=2)
    out = learner.adapt_batch(batch, create_graph=False)
    task = batch.task(0)
    params = {k: v.detach().clone().requires_grad_() for k, v in learner.model.named_parameters()}
    for t in range(3):
        loss = suite.loss_per_example(torch.func.functional_call(learner.model, params, task.x_support),
                                      task.y_support).mean()
        g = torch.autograd.grad(loss, list(params.values()))
        params = {k: (v - rates[k][t].detach() * gi).detach().requires_grad_()
                  for (k, v), gi in zip(params.items(), g)}
    for k in params:
        assert _rel(out.adapted[k][0].detach(), params[k].detach()) < 1e-12


def test_adapt_past_learned_steps_reuses_the_last_rates():
    p = {"w": torch.tensor([1.0], dtype=torch.float64, requires_grad=True)}
    lrs = {"w": torch.tensor([[0.1], [0.2]], dtype=torch.float64)}
    out = adapt(p, lrs, lambda q: (q["w"] ** 2).sum() / 2, steps=3, create_graph=False)
    # w <- w (1 - lr_t): 1 * 0.9 * 0.8 * 0.8
    assert torch.allclose(out["w"].detach(), torch.tensor([0.576], dtype=torch.float64))


def test_adaptation_curve_starts_at_the_unadapted_loss():
    suite = SUITES["mlp"]()
    learner = _learner("maml", suite, "batched", steps=2)
    batch = _batch(suite, n=5)
    curve = learner.adaptation_curve(batch, steps=4, chunk=2)
    assert curve.loss.shape == (5, 5)
    with torch.no_grad():
        out = learner.model(batch.x_query)
    unadapted = suite.loss_per_example(out, batch.y_query).mean(-1)
    assert torch.allclose(curve.loss[:, 0], unadapted)


def test_sinusoid_tasks_are_reproducible_and_splits_differ():
    suite = get_suite("sinusoid", shots=5, query=7)
    a = suite.fixed_tasks(4, split="test")
    b = get_suite("sinusoid", shots=5, query=7).fixed_tasks(4, split="test")
    v = suite.fixed_tasks(4, split="val")
    assert a.x_support.shape == (4, 5, 1) and a.x_query.shape == (4, 7, 1)
    assert torch.equal(a.x_support, b.x_support) and torch.equal(a.y_query, b.y_query)
    assert not torch.equal(a.x_support, v.x_support)
    assert float(a.x_support.abs().max()) <= 5.0
    amp = a.y_query.abs().max(1).values
    assert float(amp.max()) <= 5.0


def test_learned_rates_are_positive_by_construction_and_keep_their_gradient():
    suite = SUITES["mlp"]()
    learner = _learner("metasgd", suite, "batched", steps=2, per_step_lrs=True)
    with torch.no_grad():
        learner.rates.values[0][0, :2] = -50.0  # a raw value far below zero is a tiny rate
    effective = learner.learning_rates()
    first = learner.rates.names[0]
    assert float(min(r.detach().min() for r in effective.values())) > 0.0
    assert float(effective[first][0, :2].detach().max()) < 1e-20
    grads = learner.meta_gradient(_batch(suite)).grads
    assert float(grads["rates.values.0"][0, 2:].abs().max()) > 0.0
    from metaopt_tuner.artifact import Artifact

    art = Artifact.from_learner(learner, suite, {}, {})
    assert float(art.rates[first].min()) > 0.0
    assert art.horizon == 2 and art.tail_decay == learner.tail_decay
