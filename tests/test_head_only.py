"""``inner_params="head"``: the inner loop adapts the linear head alone, on features computed once
(the batching paths' agreement: tests/test_proto_head.py)."""

from __future__ import annotations

import pytest
import torch

from metaopt_tuner.artifact import Artifact
from metaopt_tuner.errors import ConfigError
from metaopt_tuner.evaluation import query_metric_alone
from metaopt_tuner.learners import build_learner
from metaopt_tuner.models.proto_head import HEAD_BIAS, HEAD_WEIGHT
from metaopt_tuner.tasks import get_suite
from metaopt_tuner.training import TrainConfig

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


def _head_learner(name, suite, batching, steps, **kw):
    kw.setdefault("head_init", "prototypes")
    return _learner(name, suite, batching, steps, inner_params="head", **kw)


@pytest.mark.parametrize("head_init", ["prototypes", "theta"])
def test_meta_gradient_matches_finite_differences(head_init):
    suite = TinyImageSuite()
    learner = _head_learner("metasgd", suite, "batched", steps=3, per_step_lrs=True,
                            head_init=head_init)
    learner.tail_steps = 0  # the tail past the horizon is first order (tests/test_safety.py)
    batch = _batch(suite)
    grads = learner.meta_gradient(batch).grads
    gen = torch.Generator().manual_seed(2)
    direction = {n: torch.randn(g.shape, generator=gen, dtype=torch.float64) for n, g in grads.items()}
    analytic = sum((grads[n] * direction[n]).sum() for n in grads).item()
    numeric = [_directional_fd(learner, batch, direction, eps) for eps in (1e-6, 3e-7)]
    assert min(abs(analytic - v) for v in numeric) <= 1e-6 * max(abs(analytic), 1e-3)


def test_only_the_head_has_rates_and_it_equals_every_parameter_with_zero_body_rates():
    suite = TinyImageSuite()
    batch = _batch(suite, n=3)
    head_only = _head_learner("maml", suite, "batched", steps=2)
    assert set(head_only.learning_rates()) == {HEAD_WEIGHT, HEAD_BIAS}
    full = _learner("maml", suite, "batched", steps=2, head_init="prototypes")
    full.load_state_dict(head_only.state_dict(), strict=False)
    lrs = {n: (torch.full((1,), 0.05) if n in (HEAD_WEIGHT, HEAD_BIAS) else torch.zeros(1)).double()
           for n in full.initial_params()}
    a = head_only.adapt_batch(batch)
    b = full.adapt_batch(batch, lrs=lrs)
    assert torch.allclose(a.loss, b.loss, atol=1e-12)
    for n in a.adapted:
        assert torch.allclose(a.adapted[n], b.adapted[n], atol=1e-12), n
    theta = [p for p in head_only.initial_params().values() if p.requires_grad]
    ga = torch.autograd.grad(a.loss.sum(), theta)
    gb = torch.autograd.grad(b.loss.sum(), [p for p in full.initial_params().values()
                                            if p.requires_grad])
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=1e-10)


def test_artifact_moves_the_head_alone_and_the_optimizer_reproduces_the_learner(tmp_path):
    from metaopt_tuner import prepare

    suite = TinyImageSuite()
    learner = _head_learner("metasgd", suite, "loop", steps=3, per_step_lrs=True)
    art = Artifact.from_learner(learner, suite, model_spec=suite.model_spec())
    assert art.learner_config["inner_params"] == "head"
    assert float(art.rates["convs.0.weight"].abs().max()) == 0.0
    assert float(art.rates[HEAD_WEIGHT].min()) > 0.0
    assert art.to_learner(suite).inner_params == "head"
    art.save(tmp_path / "art")
    batch = _batch(suite, n=1)
    curve = learner.adaptation_curve(batch, steps=5).loss[0]
    model, opt = prepare(None, tmp_path / "art", support=(batch.x_support[0], batch.y_support[0]))
    model.double()
    body = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("head")}
    for t in range(6):
        with torch.no_grad():
            loss = suite.loss_per_example(model(batch.x_query[0]), batch.y_query[0]).mean()
        assert torch.allclose(loss, curve[t], atol=1e-8), t
        opt.zero_grad()
        suite.loss_per_example(model(batch.x_support[0]), batch.y_support[0]).mean().backward()
        opt.step()
    for n, p in model.named_parameters():
        if n in body:
            assert torch.equal(p.detach(), body[n]), n


def test_each_query_alone_gives_the_batch_answer():
    suite = TinyImageSuite()
    learner = _head_learner("metasgd", suite, "loop", steps=2)
    batched, alone = query_metric_alone(learner, _batch(suite, n=3), steps=2)
    assert torch.allclose(batched, alone, atol=1e-12)


def test_head_only_is_refused_where_it_cannot_work():
    with pytest.raises(ConfigError, match="head alone"):
        build_learner("maml", get_suite("sinusoid"), inner_params="head")
    with pytest.raises(ConfigError, match="inner params"):
        build_learner("maml", TinyImageSuite(), inner_params="body")
    with pytest.raises(ConfigError, match="reptile"):
        build_learner("reptile", TinyImageSuite(), inner_params="head")


def test_feature_gain_scales_the_convnets_initial_features():
    from metaopt_tuner.models import ConvNet

    torch.manual_seed(0)
    plain = ConvNet(filters=8, norm="group")
    torch.manual_seed(0)
    scaled = ConvNet(filters=8, norm="group", feature_gain=0.3)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(scaled(x, head=False), 0.3 * plain(x, head=False), atol=1e-6)
    with pytest.raises(ConfigError, match="feature_gain"):
        ConvNet(feature_gain=0.0)
    suite = get_suite("omniglot", filters=8, feature_gain=0.5)
    assert suite.model_spec()["kwargs"]["feature_gain"] == 0.5
    assert float(suite.build_model().norms[-1].weight.detach()[0]) == 0.5
    with pytest.raises(ConfigError, match="feature_gain"):
        get_suite("omniglot", feature_gain=-1)


def test_the_omniglot_recipe_adapts_the_head_alone():
    from metaopt_tuner.training import resolve_train_config

    config = resolve_train_config("omniglot").config
    assert (config.inner_params, config.head_init) == ("head", "prototypes")
    assert config.suite_options["feature_gain"] == 0.3


class NoValidationSuite(TinyImageSuite):
    """A suite whose validation split is empty (as ``val_fraction=0`` leaves one)."""

    def fixed_tasks(self, n, split="val", seed=0):
        if split == "val":
            raise ConfigError("the val split has no classes")
        return super().fixed_tasks(n, split, seed)


def test_training_without_a_validation_split_keeps_going(tmp_path):
    from metaopt_tuner.training import MetaTrainer

    config = TrainConfig(suite=f"{__name__}:NoValidationSuite", iterations=3, meta_batch=2,
                         eval_every=1, inner_lr=0.05)
    with pytest.warns(UserWarning, match="no validation tasks"):
        result = MetaTrainer(config, tmp_path / "run", progress=False).run()
    assert result.final_metric is None
    assert (tmp_path / "run" / "artifact").exists()
