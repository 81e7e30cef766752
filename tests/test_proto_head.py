"""Prototype-initialized heads (Proto-MAML) and the ConvNet's alternative hand-batched kernels."""

from __future__ import annotations

import pytest
import torch

from metaopt_tuner.artifact import Artifact
from metaopt_tuner.errors import ConfigError
from metaopt_tuner.learners import build_learner
from metaopt_tuner.models.proto_head import prototype_head, prototype_head_
from metaopt_tuner.tasks import get_suite

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


def test_prototype_head_ranks_classes_by_euclidean_distance():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 6, 4, generator=gen, dtype=torch.float64)
    labels = torch.tensor([[0, 1, 2, 0, 1, 2], [2, 2, 1, 1, 0, 0]])
    weight, bias = prototype_head(feats, labels, torch.zeros(2, 3, 4, dtype=torch.float64),
                                  torch.zeros(2, 3, dtype=torch.float64))
    queries = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64)
    logits = queries @ weight.transpose(1, 2) + bias.unsqueeze(1)
    protos = torch.stack([torch.stack([feats[t][labels[t] == c].mean(0) for c in range(3)])
                          for t in range(2)])
    distances = torch.cdist(queries, protos).square()
    # logits = -|f - p|^2 + |f|^2: the same ranking, and equal up to a per-query constant
    assert torch.allclose(logits + distances, queries.square().sum(-1, keepdim=True).expand(-1, -1, 3))
    assert torch.equal(logits.argmax(-1), distances.argmin(-1))


def test_textbook_protonet_loss_equals_the_prototype_head_loss(monkeypatch):
    """benchmarks/protonet_textbook.py (omniglot_small.py's and omniglot_folds.py's ProtoNet)
    checks the framework against a textbook Prototypical Network; both must optimize the same loss
    for the comparison to mean anything."""
    from .helpers import load_benchmark

    ref = load_benchmark("protonet_textbook", monkeypatch)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8)).double()
    xs, xq = torch.randn(6, 1, 4, 4, dtype=torch.float64), torch.randn(9, 1, 4, 4, dtype=torch.float64)
    ys, yq = torch.tensor([0, 1, 2, 2, 1, 0]), torch.tensor([0, 1, 2] * 3)
    ref_loss = torch.nn.functional.cross_entropy(ref.proto_logits(net(xs), ys, net(xq), 3), yq)
    weight, bias = prototype_head(net(xs), ys, torch.zeros(3, 8, dtype=torch.float64),
                                  torch.zeros(3, dtype=torch.float64))
    head_loss = torch.nn.functional.cross_entropy(net(xq) @ weight.T + bias, yq)
    assert torch.allclose(ref_loss, head_loss)
    assert ref.conv4(8)(torch.zeros(2, 1, 28, 28)).shape == (2, 8)


@pytest.mark.parametrize("inner_params, per_step_lrs", [("all", False), ("head", True)])
@pytest.mark.parametrize("learner_name", ["maml", "fomaml", "metasgd"])
def test_batching_paths_agree_with_a_prototype_head(learner_name, inner_params, per_step_lrs):
    suite = TinyImageSuite()
    batch = _batch(suite, n=4)
    results = {}
    for batching in ("loop", "vmap", "batched"):
        learner = _learner(learner_name, suite, batching, steps=2, head_init="prototypes",
                           inner_params=inner_params, per_step_lrs=per_step_lrs)
        results[batching] = learner.meta_gradient(batch)
    ref = results["loop"]
    # the feature extractor learns through the prototypes (and, head alone, the features)
    assert ref.grads["model.convs.0.weight"].abs().max() > 0
    scale = max(g.abs().max().item() for g in ref.grads.values())
    for batching in ("vmap", "batched"):
        assert torch.allclose(results[batching].loss, ref.loss, atol=1e-12)
        for n in ref.grads:
            assert (results[batching].grads[n] - ref.grads[n]).abs().max() < 1e-10 * scale, n


@pytest.mark.parametrize("learner_name", ["maml", "metasgd"])
def test_prototype_head_meta_gradient_matches_finite_differences(learner_name):
    suite = TinyImageSuite()
    learner = _learner(learner_name, suite, "batched", steps=2, head_init="prototypes")
    learner.tail_steps = 0  # the tail past the horizon is first order (tests/test_safety.py)
    batch = _batch(suite)
    grads = learner.meta_gradient(batch).grads
    # the feature extractor gets a meta-gradient through the prototypes
    assert grads["model.convs.0.weight"].abs().max() > 0
    gen = torch.Generator().manual_seed(2)
    direction = {n: torch.randn(g.shape, generator=gen, dtype=torch.float64) for n, g in grads.items()}
    analytic = sum((grads[n] * direction[n]).sum() for n in grads).item()
    numeric = [_directional_fd(learner, batch, direction, eps) for eps in (1e-6, 3e-7)]
    assert min(abs(analytic - v) for v in numeric) <= 1e-6 * max(abs(analytic), 1e-3)


def test_zero_steps_is_a_prototypical_network_and_the_helper_sets_the_same_head():
    suite = TinyImageSuite(ways=3, shots=2, query=2)
    learner = _learner("maml", suite, "loop", steps=1, head_init="prototypes")
    batch = _batch(suite, n=1)
    curve = learner.adaptation_curve(batch, steps=0)
    model = learner.model
    prototype_head_(model, batch.x_support[0], batch.y_support[0])
    with torch.no_grad():
        logits = model(batch.x_query[0])
        loss = suite.loss_per_example(logits, batch.y_query[0]).mean()
    assert torch.allclose(curve.loss[0, 0], loss)


def test_prototype_head_is_refused_where_it_cannot_work():
    with pytest.raises(ConfigError, match="prototype head"):
        build_learner("maml", get_suite("sinusoid"), head_init="prototypes")
    with pytest.raises(ConfigError, match="Reptile"):
        build_learner("reptile", TinyImageSuite(), head_init="prototypes")
    with pytest.raises(ConfigError, match="head init"):
        build_learner("maml", TinyImageSuite(), head_init="centroids")


def test_artifact_keeps_the_head_init():
    suite = TinyImageSuite()
    learner = _learner("metasgd", suite, "batched", steps=1, head_init="prototypes")
    art = Artifact.from_learner(learner, suite, model_spec=suite.model_spec())
    assert art.learner_config["head_init"] == "prototypes"
    assert art.to_learner(suite).head_init == "prototypes"


@pytest.mark.parametrize("conv", ["grouped", "unfold", "unfold_nt"])
@pytest.mark.parametrize("norm, fused_norm", [
    ("group", True), ("layer", True), ("support", True), ("batch", True), ("batch", False),
])
def test_convnet_batched_kernels_agree_with_the_loop(conv, norm, fused_norm):
    suite = TinyImageSuite(norm=norm)
    batch = _batch(suite, n=3)
    ref = _learner("maml", suite, "loop", steps=2).meta_gradient(batch)
    learner = _learner("maml", suite, "batched", steps=2)
    learner.model.batched_conv, learner.model.fused_norm = conv, fused_norm
    out = learner.meta_gradient(batch)
    scale = max(g.abs().max().item() for g in ref.grads.values())
    for n in ref.grads:
        assert (out.grads[n] - ref.grads[n]).abs().max() < 1e-10 * scale, n


def test_prepare_sets_the_prototype_head_of_a_proto_artifact(tmp_path):
    from metaopt_tuner import prepare

    suite = TinyImageSuite()
    learner = _learner("metasgd", suite, "batched", steps=1, head_init="prototypes")
    art = Artifact.from_learner(learner, suite, model_spec=suite.model_spec())
    art.save(tmp_path / "art")
    batch = _batch(suite, n=1)
    with pytest.warns(UserWarning, match="support"):
        prepare(None, tmp_path / "art")
    model, opt = prepare(None, tmp_path / "art", support=(batch.x_support[0], batch.y_support[0]))
    curve = learner.adaptation_curve(batch, steps=0)
    with torch.no_grad():
        loss = suite.loss_per_example(model(batch.x_query[0]), batch.y_query[0]).mean()
    assert torch.allclose(curve.loss[0, 0], loss)


def _counting_batch_norm(monkeypatch):
    """Patch ``F.batch_norm`` to count its calls (the fused kernel's entry point)."""
    calls = []
    real = torch.nn.functional.batch_norm

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "batch_norm", counted)
    return calls


def test_batch_norm_is_fused_on_plain_tensors_and_primitive_under_transforms(monkeypatch):
    from metaopt_tuner.models import BatchNorm2dStats

    calls = _counting_batch_norm(monkeypatch)
    norm = BatchNorm2dStats(3).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    fused = norm(x)
    assert len(calls) == 1
    norm.fused = False
    primitive = norm(x)
    assert len(calls) == 1
    assert torch.allclose(fused, primitive, atol=1e-12)
    norm.fused = True
    per_task = torch.func.vmap(norm)(x.unsqueeze(0).expand(2, -1, -1, -1, -1))
    assert len(calls) == 1  # vmap took the primitive ops
    assert torch.allclose(per_task[1], fused, atol=1e-12)
    single = torch.randn(1, 3, 1, 1, dtype=torch.float64)  # the fused kernel refuses this
    assert torch.equal(norm(single), norm.bias.detach().view(1, 3, 1, 1).expand_as(single))


@pytest.mark.parametrize("batching, fused_calls", [("loop", True), ("vmap", False)])
def test_loop_path_runs_the_fused_norm_with_exact_second_order_gradients(
        monkeypatch, batching, fused_calls):
    suite = TinyImageSuite(norm="batch")
    batch = _batch(suite, n=2)
    ref = _learner("metasgd", suite, "batched", steps=2).meta_gradient(batch)
    calls = _counting_batch_norm(monkeypatch)
    out = _learner("metasgd", suite, batching, steps=2).meta_gradient(batch)
    assert bool(calls) == fused_calls
    scale = max(g.abs().max().item() for g in ref.grads.values())
    for n in ref.grads:
        assert (out.grads[n] - ref.grads[n]).abs().max() < 1e-10 * scale, n
