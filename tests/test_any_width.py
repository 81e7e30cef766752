"""Width-free heads: an artifact trained at one number of classes serves tasks of any number."""

from __future__ import annotations

import json

import pytest
import torch

from metaopt_tuner import prepare
from metaopt_tuner.artifact import MANIFEST, Artifact, load_artifact
from metaopt_tuner.errors import ConfigError
from metaopt_tuner.models.proto_head import HEAD_BIAS, HEAD_WEIGHT

from .helpers import TinyImageSuite
from .helpers import float64_batch as _batch
from .helpers import seeded_learner as _learner

STEPS = 3


def _five_way_artifact(tmp_path, inner_params="all", head_init="prototypes", **options):
    suite = TinyImageSuite(ways=5, shots=2, query=2)
    learner = _learner("metasgd", suite, "loop", steps=STEPS, head_init=head_init,
                       inner_params=inner_params, per_step_lrs=True, **options)
    art = Artifact.from_learner(learner, suite, model_spec=suite.model_spec())
    art.save(tmp_path / "art")
    return load_artifact(tmp_path / "art")


def _adapt_with_optimizer(art, xs, ys, steps=STEPS):
    """The user's path: prepare + MetaSGD steps on the support loss."""
    model, opt = prepare(None, art, support=(xs, ys))
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()
    return model


@pytest.mark.parametrize("ways", [3, 12])
@pytest.mark.parametrize("inner_params", ["all", "head"])
@pytest.mark.parametrize("head_rate_scale, head_step_bound, head_whitening",
                         [("none", None, None), ("classes", None, None), ("none", 0.01, None),
                          ("none", None, 2.0)])
def test_a_five_way_artifact_adapts_other_widths_identically_both_ways(tmp_path, ways, inner_params,
                                                                      head_rate_scale,
                                                                      head_step_bound,
                                                                      head_whitening):
    art = _five_way_artifact(tmp_path, inner_params, head_rate_scale=head_rate_scale,
                             head_step_bound=head_step_bound, head_whitening=head_whitening)
    assert art.learner_config["head_rate_scale"] == head_rate_scale
    assert art.learner_config["head_whitening"] == head_whitening
    assert (art.head_step_bound is None) == (head_step_bound is None)
    assert art.width_free and art.head_width == 5
    suite = TinyImageSuite(ways=ways, shots=2, query=2)
    batch = _batch(suite, n=1, seed=3)
    xs, ys = batch.x_support[0], batch.y_support[0]
    model = _adapt_with_optimizer(art, xs, ys)
    assert model.head.weight.shape == (ways, model.head.in_features)
    learner = art.to_learner(suite, batching="loop")
    out = learner.adapt_batch(batch, STEPS, create_graph=False)
    for name, value in model.named_parameters():
        assert torch.allclose(out.adapted[name][0], value, atol=1e-12, rtol=0), name
    if head_rate_scale == "classes":  # the head's first step is the width times the unscaled one
        plain = art.to_learner(suite, batching="loop", head_rate_scale="none")
        start, one = (plain.adapt_batch(batch, k, create_graph=False).adapted[HEAD_WEIGHT][0]
                      for k in (0, 1))
        scaled = learner.adapt_batch(batch, 1, create_graph=False).adapted[HEAD_WEIGHT][0]
        assert torch.allclose(scaled - start, ways * (one - start), atol=1e-12, rtol=1e-9)
    # and the query loss the learner reports is the adapted model's
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(batch.x_query[0]), batch.y_query[0])
    assert torch.allclose(out.loss[0], loss)


def _row_steps(before, after):
    """Each class row's step length, weights and bias together."""
    return ((after[HEAD_WEIGHT] - before[HEAD_WEIGHT]).square().sum(-1)
            + (after[HEAD_BIAS] - before[HEAD_BIAS]).square()).sqrt()


def test_the_head_step_bound_caps_every_class_row_at_any_width(tmp_path):
    bound = 1e-3
    art = _five_way_artifact(tmp_path, "head", head_step_bound=bound)
    assert art.head_step_bound.tolist() == pytest.approx([bound] * STEPS)
    suite = TinyImageSuite(ways=9, shots=2, query=2)
    batch = _batch(suite, n=1, seed=5)
    capped = art.to_learner(suite, batching="loop")
    free = art.to_learner(suite, batching="loop", head_step_bound=None)
    start = capped.adapt_batch(batch, 0, create_graph=False).adapted
    one = capped.adapt_batch(batch, 1, create_graph=False).adapted
    unbounded = free.adapt_batch(batch, 1, create_graph=False).adapted
    capped_steps, free_steps = _row_steps(start, one)[0], _row_steps(start, unbounded)[0]
    assert (free_steps > bound).all()  # the bound binds in this test: rows are shortened to it
    assert torch.allclose(capped_steps, torch.full_like(capped_steps, bound), rtol=1e-9)
    # the direction is the unbounded step's
    cos = torch.nn.functional.cosine_similarity(
        (one[HEAD_WEIGHT] - start[HEAD_WEIGHT])[0], (unbounded[HEAD_WEIGHT] - start[HEAD_WEIGHT])[0])
    assert torch.allclose(cos, torch.ones_like(cos))


def test_no_step_is_bounded_longer_nor_rated_higher_than_the_step_before():
    from metaopt_tuner.learners.rates import LearningRates

    rates = LearningRates({HEAD_WEIGHT: (1, 4), HEAD_BIAS: (1,)}, granularity="element", steps=4,
                          learnable=True, head_bound=1.0)
    rates.load_head_bounds(torch.tensor([1.0, 2.0, 0.5, 0.7]))
    assert rates.head_bounds().tolist() == pytest.approx([1.0, 1.0, 0.5, 0.5])
    # and the head's rates never grow from one step to the next, weight by weight
    zigzag = torch.tensor([[0.3, 1.0, 0.2, 0.5], [0.6, 0.9, 0.1, 0.5], [0.1, 2.0, 0.3, 0.4],
                           [0.2, 0.5, 0.3, 0.6]]).reshape(4, 1, 4)
    rates.load_rates({HEAD_WEIGHT: zigzag, HEAD_BIAS: torch.tensor([[1.0], [3.0], [0.5], [2.0]])})
    out = rates()
    assert torch.allclose(out[HEAD_WEIGHT], torch.cummin(zigzag, 0).values)
    assert out[HEAD_BIAS].flatten().tolist() == pytest.approx([1.0, 1.0, 0.5, 0.5])


def test_a_class_row_that_does_not_move_leaves_the_meta_gradient_finite():
    # a saturated support loss gives a row a step of exactly zero; the length's root must not
    # turn that into an infinite (NaN) meta-gradient
    from metaopt_tuner.update_rule import bound_head_steps

    grad_w = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    grad_w.data[0] = 2.0  # one row moves, two do not
    grad_b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    radius = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    dw, db = bound_head_steps(0.5 * grad_w, 0.5 * grad_b, radius)
    (dw.square().sum() + dw.sum() + db.sum()).backward()
    for grad in (grad_w.grad, grad_b.grad, radius.grad):
        assert torch.isfinite(grad).all()
    assert dw[1:].abs().sum() == 0 and float(dw[0].detach().norm()) == pytest.approx(1.0)


@pytest.mark.parametrize("bound", [[-1.0, 1.0, 1.0], [1.0], [float("nan")] * 3, [True] * 3])
def test_a_manifest_with_a_bad_head_step_bound_is_refused(tmp_path, bound):
    from metaopt_tuner.artifact.format import seal_manifest
    from metaopt_tuner.errors import ArtifactError

    _five_way_artifact(tmp_path, "head", head_step_bound=0.1)
    path = tmp_path / "art" / MANIFEST
    manifest = json.loads(path.read_text())
    manifest.pop("manifest_sha256")
    manifest["head_step_bound"] = bound
    path.write_text(json.dumps(seal_manifest(manifest)))
    with pytest.raises(ArtifactError, match="head_step_bound"):
        load_artifact(tmp_path / "art")


def test_the_head_rates_are_tied_across_classes():
    suite = TinyImageSuite(ways=5)
    learner = _learner("metasgd", suite, "loop", steps=2, head_init="prototypes", per_step_lrs=True)
    rates = learner.learning_rates()
    assert rates[HEAD_WEIGHT].shape == (2, 1, learner.model.head.in_features)
    assert rates[HEAD_BIAS].shape == (2, 1)


def test_an_old_artifact_with_per_class_head_rates_runs_at_another_width(tmp_path):
    art = _five_way_artifact(tmp_path)
    manifest = json.loads((tmp_path / "art" / MANIFEST).read_text())
    rates = dict(art.rates)
    gen = torch.Generator().manual_seed(1)
    per_class = torch.rand(rates[HEAD_WEIGHT].shape, generator=gen, dtype=torch.float64) * 0.1
    rates[HEAD_WEIGHT] = per_class  # rows that differ by class: what older versions learned
    old = Artifact(dict(art.theta), rates, manifest)
    old.save(tmp_path / "old")
    old = load_artifact(tmp_path / "old")
    suite = TinyImageSuite(ways=7, shots=2, query=2)
    batch = _batch(suite, n=1, seed=4)
    xs, ys = batch.x_support[0], batch.y_support[0]
    model = _adapt_with_optimizer(old, xs, ys)
    out = old.to_learner(suite, batching="loop").adapt_batch(batch, STEPS, create_graph=False)
    for name, value in model.named_parameters():
        assert torch.allclose(out.adapted[name][0], value, atol=1e-12, rtol=0), name
    # the per-class rows were averaged: one row for every class
    model, opt = prepare(None, old, support=(xs, ys))
    state = opt.state[model.head.weight]["rates"]
    assert torch.allclose(state, per_class.mean(1, keepdim=True).expand_as(state))


@pytest.mark.parametrize("labels, fragment", [
    (torch.tensor([0.0, 1.0, 2.0]), "integer"),
    (torch.tensor([-1, 0, 1]), "0..C-1"),
    (torch.tensor([0, 2, 2]), "no example"),
])
def test_support_labels_that_are_not_classes_are_one_clear_error(tmp_path, labels, fragment):
    art = _five_way_artifact(tmp_path)
    xs = torch.randn(len(labels), 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ConfigError, match=fragment):
        prepare(None, art, support=(xs, labels))


def test_evaluate_runs_at_another_width(tmp_path):
    from metaopt_tuner.evaluation import evaluate

    suite = TinyImageSuite(ways=5)
    learner = _learner("metasgd", suite, "loop", steps=2, head_init="prototypes")
    Artifact.from_learner(learner, suite, model_spec=suite.model_spec()).save(tmp_path / "a")
    result = evaluate(tmp_path / "a", suite=TinyImageSuite(ways=9), num_tasks=4, steps=2)
    assert len(result.loss_mean) == 3 and all(torch.isfinite(torch.tensor(result.loss_mean)))



def test_inspect_says_the_artifact_is_width_free(tmp_path, capsys):
    from .helpers import run_cli

    _five_way_artifact(tmp_path)
    code, out, err = run_cli(capsys, "inspect", str(tmp_path / "art"))
    assert code == 0, err
    assert "width-free head: trained at 5" in " ".join(out.split())


@pytest.mark.parametrize("batching", ["loop", "vmap", "batched"])
def test_the_anytime_meta_loss_scores_every_step(batching):
    """With ``step_loss_weight`` the meta-loss is the horizon's query loss plus the weight times
    the mean query loss after the steps before it: the adaptation curve's values."""
    suite = TinyImageSuite(ways=3)
    learner = _learner("maml", suite, batching, steps=3, head_init="prototypes", step_loss_weight=0.7)
    assert learner.trains_every_step and learner.config()["step_loss_weight"] == 0.7
    batch = _batch(suite, n=2)
    curve = learner.adaptation_curve(batch, steps=3).loss  # [T, 4]: before and after each step
    outcome = learner.adapt_batch(batch, create_graph=False, anytime=True)
    expected = curve[:, 3].mean() + 0.7 * curve[:, 1:3].mean()
    assert torch.allclose(learner.meta_loss(outcome), expected, atol=1e-12)
    plain = learner.adapt_batch(batch, create_graph=False)
    assert plain.step_loss is None and torch.allclose(learner.meta_loss(plain), curve[:, 3].mean())


def test_training_episodes_draw_their_shape_from_the_ranges(tmp_path):
    from metaopt_tuner.tasks import get_suite

    from .test_omniglot import make_tree

    root = make_tree(tmp_path / "tree")
    suite = get_suite("omniglot", data_dir=str(root), ways=3, shots=1, query=2, split_by="class",
                      val_fraction=0.2, test_fraction=0.2, cache=False,
                      train_ways=[2, None], train_shots=[1, 3])
    gen = torch.Generator().manual_seed(0)
    max_ways, max_shots = suite.shape_limits("train")
    shapes = set()
    for _ in range(40):
        batch = suite.sample(2, gen)
        ways = int(batch.y_support.max()) + 1
        shots = batch.y_support.shape[1] // ways
        assert batch.y_query.shape[1] == ways * 2  # the query count stays
        assert 2 <= ways <= max_ways and 1 <= shots <= min(3, max_shots)
        shapes.add((ways, shots))
    assert len(shapes) > 3
    # evaluation episodes keep the fixed shape, and the options record the ranges
    fixed = suite.fixed_tasks(2, split="test")
    assert fixed.y_support.shape[1] == 3 and suite.options()["train_ways"] == [2, None]
    assert (suite.ways, suite.shots) == (3, 1)


@pytest.mark.parametrize("value", [[1, 3], [4, 2], [2], "x"])
def test_shape_ranges_are_checked(tmp_path, value):
    from metaopt_tuner.errors import MetaOptError
    from metaopt_tuner.tasks import get_suite

    with pytest.raises(MetaOptError, match="train_ways|invalid option value"):
        get_suite("omniglot", data_dir=str(tmp_path), train_ways=value)


def test_a_range_the_data_cannot_make_is_one_error(tmp_path):
    from metaopt_tuner.tasks import get_suite

    from .test_omniglot import make_tree

    root = make_tree(tmp_path / "tree")
    suite = get_suite("omniglot", data_dir=str(root), ways=2, query=2, split_by="class",
                      cache=False, train_ways=[500, None])
    with pytest.raises(ConfigError, match="at most"):
        suite.sample(1, torch.Generator().manual_seed(0))


def test_a_five_way_artifact_is_evaluated_and_compared_at_nine_ways(tmp_path, capsys):
    from .helpers import run_cli

    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--suite", "tests.helpers:TinyImageSuite", "-o", "ways=5",
                           "--head-init", "prototypes", "--iterations", "2", "--meta-batch", "2",
                           "--eval-tasks", "2", "--no-progress", "--threads", "1", "--out", str(out))
    assert code == 0, err
    art = str(out / "artifact")
    code, shown, err = run_cli(capsys, "evaluate", art, "--trust-factory", "-o", "ways=9",
                               "--tasks", "3", "--json")
    assert code == 0, err
    assert json.loads(shown)["num_tasks"] == 3
    code, _, err = run_cli(capsys, "compare", "--artifact", art, "--trust-factory", "-o", "ways=9",
                           "--out", str(tmp_path / "cmp"), "--trials", "1", "--steps", "1",
                           "--tasks", "3", "--val-tasks", "2", "--oracle-tasks", "0",
                           "--baselines", "adam", "--pretrain-steps", "1", "--no-progress",
                           "--threads", "1")
    assert code == 0, err
    assert (tmp_path / "cmp" / "results.json").is_file()


def test_a_tiny_defaults_trained_artifact_never_gets_worse_from_one_step_to_the_next():
    """The sinusoid recipe (every setting its default; only fewer iterations): the held-out mean
    query loss after each step is at most the one before, within their 95% CIs, up to and past
    the horizon (``benchmarks/anytime.py`` measures the full recipe)."""
    from metaopt_tuner.evaluation import evaluate
    from metaopt_tuner.training import train

    result = train(suite="sinusoid", iterations=200, eval_tasks=10)
    assert result.config.step_loss_weight > 0  # the default scores every step
    art = Artifact.from_learner(result.learner, result.suite, result.config.to_dict())
    curve = evaluate(art, num_tasks=200, steps=art.horizon + 4)
    mean, ci = curve.loss_mean, curve.loss_ci
    rises = [k for k in range(1, len(mean)) if mean[k] - mean[k - 1] > ci[k] + ci[k - 1]]
    assert not rises, (rises, mean)
    assert mean[art.horizon] < 0.5 * mean[0]


def test_head_rate_scale_is_checked():
    from metaopt_tuner.config import TrainConfig
    from metaopt_tuner.learners import build_learner
    from metaopt_tuner.tasks import get_suite

    with pytest.raises(ConfigError, match="head rate scale must be one of none, classes"):
        TrainConfig(head_rate_scale="rows").validate()
    assert TrainConfig(head_rate_scale="classes").learner_options()["head_rate_scale"] == "classes"
    # a model without a linear head has no class rows to scale
    with pytest.raises(ConfigError, match="head_rate_scale='classes' needs a model with a Linear"):
        build_learner("metasgd", get_suite("sinusoid"), head_rate_scale="classes")
