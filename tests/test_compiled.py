"""The compiled meta-gradient (``torch.func`` all the way, under ``torch.compile``).

The default run traces with the ``aot_eager`` backend: Dynamo and AOTAutograd see the whole
meta-gradient as on a GPU, without generating kernels (seconds, no C++ compiler needed). Inductor
itself is checked in a slow test; on CUDA, ``test_cuda_graphs.py`` checks it inside a graph.
"""

from __future__ import annotations

import functools
import json
import shutil

import pytest
import torch

from metaopt_tuner.errors import ConfigError
from metaopt_tuner.tasks import get_suite
from metaopt_tuner.training import MetaTrainer, TrainConfig
from metaopt_tuner.training import trainer as training
from metaopt_tuner.training.compiled import CompiledMetaGradient

from .helpers import TinyImageSuite
from .helpers import seeded_learner as _learner

needs_cxx = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                               reason="Inductor's CPU code needs a C++ compiler")


def _assert_same(got, want, rtol=1e-9, atol=1e-12):
    assert sorted(got.grads) == sorted(want.grads)
    assert torch.allclose(got.loss, want.loss, rtol=rtol, atol=atol)
    assert torch.allclose(got.metric, want.metric, rtol=rtol, atol=atol)
    for name, g in want.grads.items():
        assert torch.allclose(got.grads[name], g, rtol=rtol, atol=atol), name


@pytest.mark.parametrize("learner_name, batching, head_init", [
    ("maml", "batched", "theta"), ("fomaml", "batched", "theta"), ("metasgd", "batched", "theta"),
    ("metasgd", "vmap", "theta"), ("maml", "batched", "prototypes"),
    ("metasgd", "batched", "prototypes"),
])
def test_compiled_equals_eager_on_a_convnet(learner_name, batching, head_init):
    suite = TinyImageSuite()
    learner = _learner(learner_name, suite, batching, steps=2, head_init=head_init)
    compiled = CompiledMetaGradient(learner, backend="aot_eager")
    gen = torch.Generator().manual_seed(4)
    for _ in range(2):  # a second batch reuses the compiled code with new inputs
        batch = suite.sample(3, gen).to(dtype=torch.float64)
        _assert_same(compiled(batch), learner.meta_gradient(batch))


@pytest.mark.parametrize("conv, norm, fused_norm", [
    ("unfold_nt", "group", True), ("grouped", "layer", True), ("grouped", "support", True),
    ("unfold_nt", "batch", True),
    ("grouped", "batch", False),
])
def test_compiled_follows_every_batched_convolution(conv, norm, fused_norm):
    # CUDA's default is unfold_nt; CPU's grouped: both must trace into one graph. ("unfold" runs
    # under Inductor, the slow test below, but aot_eager's replay of it fails inside PyTorch: a
    # view whose traced strides differ from the eager kernel's.)
    suite = TinyImageSuite(norm=norm)
    learner = _learner("maml", suite, "batched", steps=2)
    learner.model.batched_conv, learner.model.fused_norm = conv, fused_norm
    batch = suite.sample(3, torch.Generator().manual_seed(4)).to(dtype=torch.float64)
    _assert_same(CompiledMetaGradient(learner, backend="aot_eager")(batch), learner.meta_gradient(batch))


def test_compiled_equals_eager_with_per_step_element_rates():
    suite = get_suite("sinusoid", shots=5)
    learner = _learner("metasgd", suite, "auto", steps=3, per_step_lrs=True)
    batch = suite.sample(4, torch.Generator().manual_seed(1)).to(dtype=torch.float64)
    want = learner.meta_gradient(batch)
    got = CompiledMetaGradient(learner, backend="aot_eager")(batch)
    _assert_same(got, want)
    assert any(n.startswith("rates.") for n in got.grads)  # the rates get their meta-gradient


def test_compiled_sees_parameter_updates():
    suite = get_suite("sinusoid", shots=5)
    learner = _learner("maml", suite, "batched", steps=1)
    compiled = CompiledMetaGradient(learner, backend="aot_eager")
    batch = suite.sample(4, torch.Generator().manual_seed(1)).to(dtype=torch.float64)
    before = compiled(batch).loss.clone()
    with torch.no_grad():
        for _, p in learner.named_meta_parameters():
            p.mul_(0.5)
    _assert_same(compiled(batch), learner.meta_gradient(batch))
    assert not torch.allclose(compiled(batch).loss, before)


def test_compiled_refuses_reptile_and_the_loop():
    suite = get_suite("sinusoid", shots=5)
    with pytest.raises(ConfigError, match="gradient-based learner"):
        CompiledMetaGradient(_learner("reptile", suite, "batched", steps=2))
    with pytest.raises(ConfigError, match="not 'loop'"):
        CompiledMetaGradient(_learner("maml", suite, "loop", steps=1))


def test_config_checks_compile_options():
    with pytest.raises(ConfigError, match="--compile needs a gradient-based learner"):
        TrainConfig(learner="reptile", compile=True).validate()
    with pytest.raises(ConfigError, match="--compile needs batching"):
        TrainConfig(learner="maml", batching="loop", compile=True).validate()


def test_trainer_with_compile_follows_the_eager_run(monkeypatch):
    monkeypatch.setattr(training, "CompiledMetaGradient",
                        functools.partial(CompiledMetaGradient, backend="aot_eager"))

    def run(compile_):
        cfg = TrainConfig(learner="metasgd", iterations=6, meta_batch=4, inner_steps=2, eval_every=3,
                          eval_tasks=4, log_every=3, seed=3, suite_options={"shots": 5},
                          dtype="float64", compile=compile_)
        return MetaTrainer(cfg, None, progress=False).run()

    eager, compiled = run(False), run(True)
    for name, value in eager.learner.state_dict().items():
        assert torch.allclose(compiled.learner.state_dict()[name], value, rtol=1e-8, atol=1e-11), name


@pytest.mark.slow
@needs_cxx
@pytest.mark.parametrize("conv", ["grouped", "unfold"])
def test_inductor_agrees_with_eager_in_float32(conv):
    suite = TinyImageSuite()
    torch.manual_seed(0)
    learner = _learner("metasgd", suite, "batched", steps=2, head_init="prototypes").float()
    learner.model.batched_conv = conv
    batch = suite.sample(3, torch.Generator().manual_seed(4))
    want = learner.meta_gradient(batch)
    got = CompiledMetaGradient(learner)(batch)
    num = sum(float((got.grads[n] - g).square().sum()) for n, g in want.grads.items()) ** 0.5
    den = sum(float(g.square().sum()) for g in want.grads.values()) ** 0.5
    assert num / den < 1e-4


def test_many_instances_each_compile_their_own_code():
    # Dynamo allows 8 compilations per code object; instances must not share one.
    suite = get_suite("sinusoid", shots=5)
    batch = suite.sample(2, torch.Generator().manual_seed(1)).to(dtype=torch.float64)
    for seed in range(10):
        learner = _learner("maml", suite, "batched", steps=1, seed=seed)
        _assert_same(CompiledMetaGradient(learner, backend="aot_eager")(batch),
                     learner.meta_gradient(batch))


@pytest.mark.slow
@needs_cxx
def test_cli_train_with_compile_then_resume_without(tmp_path, capsys):
    from cli.app import main

    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--iterations", "6", "--meta-batch", "4", "--eval-every", "3",
            "--eval-tasks", "4", "--no-progress", "-o", "shots=5", "--learner", "metasgd"]
    for extra in (["--compile"], ["--resume"]):  # how it executes may change on resume
        if extra == ["--resume"]:
            args[args.index("6")] = "9"
        try:
            main(args + extra)
        except SystemExit as exc:
            assert exc.code in (0, None), capsys.readouterr()
        assert "done:" in capsys.readouterr().out
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["compile"] is True  # the saved run keeps the first run's options
