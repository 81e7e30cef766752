"""A prediction never depends on its batch: every reference model, as shipped, answers an example
alone exactly as inside any batch, in training and in eval mode, before and after adaptation."""

from __future__ import annotations

import pytest
import torch

from metaopt_tuner import prepare
from metaopt_tuner.artifact import Artifact, load_artifact
from metaopt_tuner.evaluation import query_metric_alone
from metaopt_tuner.learners import build_learner
from metaopt_tuner.models import build_model

from .helpers import TinyImageSuite

BUCKETS = 50

# Every shipped reference model with its default options (ConvNet: support-set statistics), and
# ConvNet's other batch-independent norms (per example).
SPECS = {
    "convnet": {"name": "convnet", "kwargs": {"num_classes": 3, "filters": 8, "blocks": 3,
                                              "image_size": 12}},
    "convnet-layer": {"name": "convnet", "kwargs": {"num_classes": 3, "filters": 8, "blocks": 3,
                                                    "image_size": 12, "norm": "layer"}},
    "convnet-group": {"name": "convnet", "kwargs": {"num_classes": 3, "filters": 8, "blocks": 3,
                                                    "image_size": 12, "norm": "group"}},
    "mlp": {"name": "mlp", "kwargs": {"sizes": [4, 16, 16, 3]}},
    "features": {"name": "features", "kwargs": {"in_features": 4, "num_classes": 3,
                                                "hidden": [16]}},
    "text_bag": {"name": "text_bag", "kwargs": {"buckets": BUCKETS, "num_classes": 3}},
    "text_bag-deep": {"name": "text_bag", "kwargs": {"buckets": BUCKETS, "num_classes": 3,
                                                     "embed_dim": 8, "hidden": [8]}},
}


def _inputs(name: str, n: int, gen: torch.Generator) -> list[torch.Tensor]:
    """``n`` single examples (text: token ids of different lengths, unpadded)."""
    if name.startswith("convnet"):
        return list(torch.randn(n, 1, 1, 12, 12, generator=gen, dtype=torch.float64))
    if name.startswith("text_bag"):
        lengths = torch.randint(1, 7, (n,), generator=gen)
        return [torch.randint(1, BUCKETS + 1, (1, int(k)), generator=gen) for k in lengths]
    return list(torch.randn(n, 1, 4, generator=gen, dtype=torch.float64))


def _stack(examples: list[torch.Tensor]) -> torch.Tensor:
    """One batch of ``examples``; token ids are right-padded with 0 to the longest."""
    if examples[0].dtype != torch.int64:
        return torch.cat(examples)
    width = max(x.shape[1] for x in examples)
    return torch.cat([torch.nn.functional.pad(x, (0, width - x.shape[1])) for x in examples])


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` with every parameter moved off its initial value (norm affines, zero heads)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def _assert_batch_independent(model: torch.nn.Module, name: str, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    examples = _inputs(name, 7, gen)
    alone = torch.cat([model(x) for x in examples])
    whole = model(_stack(examples))
    order = torch.randperm(7, generator=gen)
    shuffled = model(_stack([examples[int(i)] for i in order]))
    others = model(_stack(examples[:3] + _inputs(name, 5, gen)))  # other companions
    assert (alone - whole).abs().max().item() <= 1e-10
    assert (shuffled - whole[order]).abs().max().item() <= 1e-10
    assert (others[:3] - whole[:3]).abs().max().item() <= 1e-10


def _adapted_by_prepare(tmp_path, spec: dict, name: str) -> torch.nn.Module:
    """The model ``prepare`` gives for an artifact of ``spec`` and a support set, after two
    MetaSGD steps on it."""
    suite = TinyImageSuite()  # for its cross-entropy loss only: the model comes from ``spec``
    torch.manual_seed(0)
    learner = build_learner("metasgd", suite, model=build_model(spec), inner_lr=0.1)
    learner.double()
    _perturbed(learner.model)
    Artifact.from_learner(learner, suite, model_spec=spec).save(tmp_path / "art")
    gen = torch.Generator().manual_seed(2)
    x = _stack(_inputs(name, 6, gen))
    y = torch.arange(6) % 3
    model, opt = prepare(None, tmp_path / "art", support=(x, y))
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_prepared_and_adapted_model_answers_alone_as_in_any_batch(tmp_path, name, mode):
    model = _adapted_by_prepare(tmp_path, SPECS[name], name)
    model.train(mode == "train")
    with torch.no_grad():
        _assert_batch_independent(model, name)


@pytest.mark.parametrize("name", [n for n in SPECS if n != "features"])
def test_hand_batched_forward_answers_alone_as_in_any_batch(name):
    """Per-task parameters (leading task dim): each task's example alone as in the task's batch."""
    torch.manual_seed(0)
    model = _perturbed(build_model(SPECS[name]).double())
    t = 3
    gen = torch.Generator().manual_seed(3)
    params = {k: v.detach().unsqueeze(0) + 0.1 * torch.randn(t, *v.shape, generator=gen,
                                                               dtype=v.dtype)
              for k, v in model.named_parameters()}
    examples = [_inputs(name, 5, gen) for _ in range(t)]
    width = max(x.shape[-1] for task in examples for x in task)
    if examples[0][0].dtype == torch.int64:  # one padding width for every task
        examples = [[torch.nn.functional.pad(x, (0, width - x.shape[1])) for x in task]
                    for task in examples]
    kwargs = {}
    if getattr(model, "uses_reference", False):  # each task's support set
        kwargs["reference"] = torch.randn(t, 4, 1, 12, 12, generator=gen, dtype=torch.float64)
    whole = model.batched_forward(params, torch.stack([_stack(task) for task in examples]),
                                  **kwargs)
    for j in range(5):
        alone = model.batched_forward(params, torch.stack([task[j] for task in examples]),
                                      **kwargs)
        assert (alone[:, 0] - whole[:, j]).abs().max().item() <= 1e-10


def test_transductive_batch_norm_is_the_explicit_exception():
    """``norm="batch"`` is kept as an option, and the check above would catch it."""
    spec = {"name": "convnet", "kwargs": {**SPECS["convnet"]["kwargs"], "norm": "batch"}}
    torch.manual_seed(0)
    model = _perturbed(build_model(spec).double())
    with torch.no_grad(), pytest.raises(AssertionError):
        _assert_batch_independent(model, "convnet")


@pytest.mark.parametrize("batching", ["batched", "vmap", "loop"])
@pytest.mark.parametrize("head_init", ["theta", "prototypes"])
@pytest.mark.parametrize("norm", [None, "group"])
def test_queries_alone_score_as_the_batch_after_adaptation(batching, head_init, norm):
    suite = TinyImageSuite(ways=3, shots=2, query=4, norm=norm)
    torch.manual_seed(0)
    learner = build_learner("metasgd", suite, inner_steps=2, batching=batching, inner_lr=0.3,
                            head_init=head_init).double()
    if head_init == "theta":  # (a prototype head is zero and frozen in theta)
        _perturbed(learner.model)
    tasks = suite.sample(3, torch.Generator().manual_seed(5)).to(dtype=torch.float64)
    batched, alone = query_metric_alone(learner, tasks)
    assert torch.equal(batched, alone)
    curve = learner.adaptation_curve(tasks, 2)
    assert torch.allclose(curve.metric[:, -1], batched)


def test_query_alone_differs_under_transductive_batch_norm():
    suite = TinyImageSuite(ways=3, shots=1, query=4, norm="batch")
    torch.manual_seed(0)
    learner = build_learner("metasgd", suite, inner_steps=1, inner_lr=0.3,
                            head_init="prototypes").double()
    tasks = suite.sample(20, torch.Generator().manual_seed(5)).to(dtype=torch.float64)
    batched, alone = query_metric_alone(learner, tasks)
    assert not torch.equal(batched, alone)


def test_artifacts_record_the_norm_and_old_ones_rebuild_with_batch_norm(tmp_path):
    suite = TinyImageSuite()  # its spec leaves norm out: the ConvNet's default
    torch.manual_seed(0)
    learner = build_learner("metasgd", suite)
    art = Artifact.from_learner(learner, suite, model_spec=suite.model_spec())
    assert art.manifest["model"]["kwargs"]["norm"] == "support"
    art.save(tmp_path / "new")
    assert load_artifact(tmp_path / "new").build_model().norm == "support"
    # an artifact written before the default changed has no norm in its spec: batch norm it was
    del art.manifest["model"]["kwargs"]["norm"]
    art.save(tmp_path / "old")
    old = load_artifact(tmp_path / "old")
    assert old.model_spec["kwargs"]["norm"] == "batch"
    assert old.build_model().norm == "batch"
    model, _ = prepare(None, tmp_path / "old")
    assert model.norm == "batch"
    assert old.to_learner(suite).model.norm == "batch"


def test_inspect_names_the_batch_norm_of_an_old_artifact(tmp_path, capsys):
    from cli.app import main

    suite = TinyImageSuite()
    art = Artifact.from_learner(build_learner("metasgd", suite), suite, model_spec=suite.model_spec())
    del art.manifest["model"]["kwargs"]["norm"]
    art.save(tmp_path / "old")
    try:
        main(["inspect", str(tmp_path / "old")])
    except SystemExit as exc:
        assert not exc.code
    assert "norm=batch" in capsys.readouterr().out


def test_support_norm_takes_its_statistics_from_the_support_set(tmp_path):
    spec = SPECS["convnet"]
    torch.manual_seed(0)
    model = _perturbed(build_model(spec).double())
    gen = torch.Generator().manual_seed(4)
    support, queries = (torch.randn(n, 1, 12, 12, generator=gen, dtype=torch.float64)
                        for n in (6, 5))
    with torch.no_grad():
        assert torch.allclose(model(support, reference=support), model(support))  # its own
        model.set_reference(support)
        assert torch.allclose(model(queries), model(queries, reference=support))
        other = model(queries, reference=torch.randn(6, 1, 12, 12, generator=gen,
                                                     dtype=torch.float64))
        assert not torch.allclose(model(queries), other)
    suite = TinyImageSuite()
    Artifact.from_learner(build_learner("metasgd", suite), suite,
                          model_spec=suite.model_spec()).save(tmp_path / "art")
    with pytest.warns(UserWarning, match="support"):
        prepare(None, tmp_path / "art")
