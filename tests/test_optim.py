"""MetaSGD, the drop-in optimizer: exactness against the inner loop, state_dict round trip, LR
schedulers, skipped parameters, model mismatch, and the examples."""

from __future__ import annotations

import runpy
import warnings
from pathlib import Path

import pytest
import torch

import metaopt_tuner
from metaopt_tuner import optim as optim_module
from metaopt_tuner import update_rule as inner
from metaopt_tuner.artifact import Artifact
from metaopt_tuner.errors import ArtifactError, ConfigError, ModelMismatchError
from metaopt_tuner.optim import MetaSGD, prepare

from .helpers import small_metasgd

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _setup(steps=3, per_step=True, seed=0):
    learner, suite = small_metasgd(steps=steps, per_step=per_step, seed=seed)
    return learner, suite, Artifact.from_learner(learner, suite)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-6) -> bool:
    return bool(torch.linalg.vector_norm(a - b) <= rtol * torch.linalg.vector_norm(b))


def _train(model, opt, suite, task, steps):
    for _ in range(steps):
        opt.zero_grad()
        suite.loss_per_example(model(task.x_support), task.y_support).mean().backward()
        opt.step()


@pytest.mark.parametrize("batching", ["batched", "loop"])
@pytest.mark.parametrize("steps, per_step", [(1, False), (3, True), (3, False)])
@pytest.mark.parametrize("foreach", [False, True])
def test_plain_training_loop_equals_the_learner_inner_loop(batching, steps, per_step, foreach):
    learner, suite, art = _setup(steps=steps, per_step=per_step)
    learner.batching = batching
    tasks = suite.fixed_tasks(3).to(dtype=torch.float64)
    k = steps + 2  # past the learned steps the last row carries on
    reference = learner.adapt_batch(tasks, k, create_graph=False).adapted
    for i in range(len(tasks)):
        model, opt = prepare(None, art, foreach=foreach)
        assert next(model.parameters()).dtype == torch.float64
        _train(model, opt, suite, tasks.task(i).to(dtype=torch.float64), k)
        for name, p in model.named_parameters():
            assert _close(p.detach(), reference[name][i].detach()), name


def test_update_goes_through_the_inner_loop_kernel(monkeypatch):
    learner, suite, art = _setup()
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return inner.metasgd_update(*args, **kwargs)

    monkeypatch.setattr(optim_module, "metasgd_update", spy)
    model, opt = prepare(None, art, lr=0.5, foreach=True)
    _train(model, opt, suite, suite.fixed_tasks(1).task(0).to(dtype=torch.float64), 1)
    assert calls == [{"scale": 0.5, "foreach": True}]


def test_state_dict_round_trip_continues_exactly():
    _, suite, art = _setup(steps=3, per_step=True)
    task = suite.fixed_tasks(1).task(0).to(dtype=torch.float64)
    model, opt = prepare(None, art)
    _train(model, opt, suite, task, 5)
    uninterrupted = {n: p.detach().clone() for n, p in model.named_parameters()}

    model, opt = prepare(None, art)
    _train(model, opt, suite, task, 2)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = opt.state_dict()
    assert {s["step"] for s in saved_opt["state"].values()} == {2}

    model2, opt2 = prepare(None, art)  # fresh: step 0 everywhere
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    _train(model2, opt2, suite, task, 3)
    for name, p in model2.named_parameters():
        assert torch.equal(p.detach(), uninterrupted[name]), name


def test_schedulers_scale_the_learned_rates():
    _, suite, art = _setup(steps=1, per_step=False)
    task = suite.fixed_tasks(1).task(0).to(dtype=torch.float64)
    model, opt = prepare(None, art)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.25)
    _train(model, opt, suite, task, 1)
    scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.zero_grad()
    suite.loss_per_example(model(task.x_support), task.y_support).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    tail = inner.tail_factor(1, art.horizon, art.tail_decay)  # the second step is past the horizon
    assert tail < 1.0
    for name, p in model.named_parameters():
        expected = before[name] - 0.25 * tail * art.rates[name][0] * grads[name]
        assert torch.allclose(p.detach(), expected, rtol=1e-12, atol=1e-15), name


def test_params_without_gradients_are_skipped():
    _, suite, art = _setup()
    task = suite.fixed_tasks(1).task(0).to(dtype=torch.float64)
    model, opt = prepare(None, art)
    _train(model, opt, suite, task, 1)
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in model.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()  # nothing has a gradient: nothing moves, no step is counted
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(s["step"] == 1 for s in opt.state.values())

    frozen = model.layers[0].weight
    frozen.requires_grad_(False)
    suite.loss_per_example(model(task.x_support), task.y_support).mean().backward()
    opt.step()
    assert torch.equal(frozen, before["layers.0.weight"])
    assert opt.state[frozen]["step"] == 1
    assert not torch.equal(model.layers[0].bias, before["layers.0.bias"])
    assert opt.state[model.layers[0].bias]["step"] == 2


def test_step_with_closure_returns_the_loss():
    _, suite, art = _setup()
    task = suite.fixed_tasks(1).task(0).to(dtype=torch.float64)
    model, opt = prepare(None, art)

    def closure():
        opt.zero_grad()
        loss = suite.loss_per_example(model(task.x_support), task.y_support).mean()
        loss.backward()
        return loss

    first = opt.step(closure)
    second = opt.step(closure)
    assert second.item() < first.item()


def test_positional_parameters_and_names():
    _, suite, art = _setup()
    model = art.initialize(art.build_model().double())
    opt = MetaSGD(list(model.parameters()), art)
    assert torch.equal(opt.state[model.layers[1].bias]["rates"], art.rates["layers.1.bias"])
    reordered = [model.layers[1].bias, model.layers[0].weight]
    opt = MetaSGD(reordered, art, names=["layers.1.bias", "layers.0.weight"], strict=False)
    assert torch.equal(opt.state[model.layers[0].weight]["rates"], art.rates["layers.0.weight"])
    with pytest.raises(ModelMismatchError, match="more parameters"):
        MetaSGD([*model.parameters(), torch.nn.Parameter(torch.zeros(2))], art)
    with pytest.raises(ModelMismatchError, match="missing"):
        MetaSGD(reordered, art, names=["layers.1.bias", "layers.0.weight"])


def test_mismatch_strict_and_median_fallback():
    _, suite, art = _setup()
    model = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).double()
    with pytest.raises(ModelMismatchError) as exc:
        MetaSGD(model.named_parameters(), art)
    assert "missing" in str(exc.value) and "layers.0.weight" in str(exc.value)
    assert "unexpected" in str(exc.value) and "0.weight" in str(exc.value)

    named = dict(art.build_model().double().named_parameters())
    named["layers.0.bias"] = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))  # wrong shape
    named["head.weight"] = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))  # unexpected
    with pytest.raises(ModelMismatchError, match=r"layers.0.bias \(3\) vs \(8\)"):
        MetaSGD(list(named.items()), art)
    with pytest.warns(UserWarning, match="layers.0.bias, head.weight") as record:
        opt = MetaSGD(list(named.items()), art, strict=False)
    assert "median" in str(record[0].message)
    median = art.median_rates()
    assert torch.equal(opt.state[named["head.weight"]]["rates"],
                       median.view(-1, 1, 1).expand(-1, 2, 2))
    assert torch.equal(opt.state[named["layers.1.weight"]]["rates"], art.rates["layers.1.weight"])


def test_add_param_group_later_gets_rates_by_name():
    _, suite, art = _setup()
    model = art.initialize(art.build_model().double())
    named = list(model.named_parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = MetaSGD(named[:2], art, strict=False)  # a frozen tail: nothing is guessed
    opt.add_param_group({"params": named[2:], "lr": 0.5})
    assert torch.equal(opt.state[model.layers[1].weight]["rates"], art.rates["layers.1.weight"])
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["foreach"] is None
    positional = MetaSGD([p for _, p in named[:2]], art, strict=False)
    with pytest.raises(ConfigError, match="named parameters"):
        positional.add_param_group({"params": [p for _, p in named[2:]]})
    assert len(positional.param_groups) == 1  # a failed add leaves the optimizer as it was
    strict = MetaSGD(named[:2], art, strict=False)
    strict.strict = True
    with pytest.raises(ModelMismatchError, match="extra.weight"):
        strict.add_param_group({"params": [("extra.weight", torch.nn.Parameter(torch.zeros(2)))]})
    assert len(strict.param_groups) == 1 and len(strict.state) == 2


def test_invalid_lr_and_artifact_sources(tmp_path):
    _, _, art = _setup()
    model = art.build_model().double()
    with pytest.raises(ConfigError, match="Invalid learning rate"):
        MetaSGD(model.named_parameters(), art, lr=-1.0)
    path = art.save(tmp_path / "a")
    m1, _ = prepare(None, str(path))
    m2, _ = prepare(model, path)
    assert m2 is model
    for (n, a), (_, b) in zip(m1.named_parameters(), m2.named_parameters()):
        assert torch.equal(a, b), n
    with pytest.raises(ArtifactError, match="does not exist"):
        prepare(None, tmp_path / "missing")


def test_rates_follow_the_model_to_another_dtype():
    _, suite, art = _setup()
    model, opt = prepare(None, art)
    model.float()
    task = suite.fixed_tasks(1).task(0)
    _train(model, opt, suite, task, 2)
    assert all(s["rates"].dtype == torch.float32 for s in opt.state.values())


def test_pretrained_sinusoid_adapts_a_new_curve():
    art = metaopt_tuner.pretrained("sinusoid")
    suite = art.build_suite()
    task = suite.fixed_tasks(1, seed=123).task(0)
    model, opt = metaopt_tuner.prepare(None, art)
    with torch.no_grad():
        before = suite.metric_per_example(model(task.x_query), task.y_query).mean()
    _train(model, opt, suite, task, art.inner_steps)
    with torch.no_grad():
        after = suite.metric_per_example(model(task.x_query), task.y_query).mean()
    assert after < before


@pytest.mark.parametrize("script", ["plain_loop.py", "with_scheduler.py", "adapt_sinusoid_plot.py"])
def test_examples_run(script, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    assert capsys.readouterr().out
    if script == "adapt_sinusoid_plot.py":
        assert (tmp_path / "sinusoid_adaptation.png").stat().st_size > 1000
