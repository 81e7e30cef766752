"""The top layers of a transformer encoder adapted per task (EncoderTop): exact meta-gradients on
every batching path, predictions independent of the batch, artifacts tied to their encoder."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest
import torch

from metaopt_tuner.artifact import Artifact, load_artifact
from metaopt_tuner.errors import EncoderMismatchError
from metaopt_tuner.learners import build_learner
from metaopt_tuner.models.text.encoder_states import (
    PackedStates,
    encoder_checksum,
    encoder_config,
    top_layer_weights,
)
from metaopt_tuner.models.text.transformer import EncoderTop
from metaopt_tuner.optim import MetaSGD, prepare
from metaopt_tuner.tasks.base import ClassificationSuite, TaskBatch

from .helpers import directional_fd as _directional_fd

TINY = {"hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 12}


class TinyStatesSuite(ClassificationSuite):
    """Random token states of variable length (the mask as last channel), for a tiny EncoderTop."""

    name = "tiny-states"

    def __init__(self, ways: int = 3, shots: int = 2, query: int = 2, hidden: int = 8,
                 length: int = 5, layers: int = 1, encoder: str | None = None,
                 checksum: str | None = None) -> None:
        self.ways, self.shots, self.query, self.hidden, self.length = ways, shots, query, hidden, length
        self.layers, self.encoder, self.checksum = layers, encoder, checksum

    def sample(self, num_tasks: int, generator: torch.Generator, split: str = "train") -> TaskBatch:
        n_s, n_q = self.ways * self.shots, self.ways * self.query
        x = torch.randn(num_tasks, n_s + n_q, self.length, self.hidden + 1, generator=generator)
        lengths = torch.randint(1, self.length + 1, (num_tasks, n_s + n_q, 1), generator=generator)
        mask = (torch.arange(self.length) < lengths).to(x.dtype)
        x[..., :-1] *= mask.unsqueeze(-1)
        x[..., -1] = mask
        ways = torch.arange(self.ways)
        y = torch.cat([ways.repeat(self.shots), ways.repeat(self.query)]).expand(num_tasks, -1).clone()
        return TaskBatch(x[:, :n_s], y[:, :n_s], x[:, n_s:], y[:, n_s:])

    def model_spec(self) -> dict:
        return {"name": "encoder_top", "kwargs": {**TINY, "layers": self.layers,
                                                  "num_classes": self.ways, "scale": 5.0,
                                                  "encoder_name": "enc", "checksum": self.checksum}}

    def options(self) -> dict:
        return {"ways": self.ways, "shots": self.shots, "query": self.query}


def _learner(batching: str, first_order: bool = False, layers: int = 2, seed: int = 0):
    suite = TinyStatesSuite(layers=layers)
    torch.manual_seed(seed)
    learner = build_learner("metasgd", suite, inner_steps=2, per_step_lrs=True, inner_lr=0.05,
                            lr_granularity="element", first_order=first_order,
                            head_init="prototypes", batching=batching)
    learner.double()
    with torch.no_grad():
        for r in learner.rates.values:
            r.uniform_(math.log(0.01), math.log(0.1))  # learned rates are stored as logarithms
    batch = suite.sample(3, torch.Generator().manual_seed(1)).to(dtype=torch.float64)
    return learner, batch


@pytest.mark.parametrize("batching", ["batched", "vmap", "loop"])
def test_second_order_meta_gradient_matches_finite_differences(batching):
    learner, batch = _learner(batching)
    learner.tail_steps = 0  # the tail past the horizon is first order (tests/test_safety.py)
    grads = learner.meta_gradient(batch).grads
    gen = torch.Generator().manual_seed(2)
    for _ in range(2):
        direction = {n: torch.randn(g.shape, generator=gen, dtype=torch.float64) for n, g in grads.items()}
        analytic = sum((grads[n] * direction[n]).sum() for n in grads).item()
        numeric = _directional_fd(learner, batch, direction, 1e-6)
        assert abs(analytic - numeric) <= 1e-6 * max(abs(analytic), 1e-3), (analytic, numeric)


@pytest.mark.parametrize("first_order", [False, True])
def test_batching_paths_agree(first_order):
    results = {}
    for batching in ("loop", "vmap", "batched"):
        learner, batch = _learner(batching, first_order=first_order)
        results[batching] = learner.meta_gradient(batch)
    ref = results["loop"]
    scale = max(g.abs().max().item() for g in ref.grads.values())
    for batching in ("vmap", "batched"):
        out = results[batching]
        assert out.grads.keys() == ref.grads.keys()
        for n in ref.grads:
            assert (out.grads[n] - ref.grads[n]).abs().max().item() < 1e-10 * scale, (batching, n)
        assert abs(out.loss.item() - ref.loss.item()) < 1e-10


def test_auto_batching_picks_the_hand_batched_path():
    learner, batch = _learner("auto")
    assert learner.resolve_batching(batch.x_support.device) == "batched"


def test_predictions_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    model = EncoderTop(**TINY, layers=2, num_classes=4).double()
    batch = TinyStatesSuite(length=7).sample(1, torch.Generator().manual_seed(3)).x_query[0].double()
    full = model(batch)
    for i in range(batch.shape[0]):
        width = int(batch[i, :, -1].sum())  # the same utterance with less (or no) padding
        alone = model(batch[i:i + 1, :width])
        assert torch.allclose(alone[0], full[i], atol=1e-12)
    assert torch.allclose(model(batch.flip(0)).flip(0), full, atol=1e-12)


def test_packed_states_gather_pads_and_masks():
    states = torch.arange(12, dtype=torch.float16).view(6, 2)
    packed = PackedStates(states, torch.tensor([0, 1, 4, 6]))
    x = packed.gather(torch.tensor([[2, 0]]))
    assert x.shape == (1, 2, 2, 3)
    assert x[0, 0, :, -1].tolist() == [1.0, 1.0] and x[0, 1, :, -1].tolist() == [1.0, 0.0]
    assert x[0, 1, 1].abs().sum() == 0 and x[0, 0, 1, :2].tolist() == [10.0, 11.0]


# --------------------------------------------------------------------------- encoder folders
def _encoder_folder(path: Path, layers: int = 2, seed: int = 0) -> Path:
    """A tiny BERT-style folder: config.json and random encoder-layer weights (no real model)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({
        "model_type": "bert", "hidden_act": "gelu", "num_hidden_layers": layers,
        "layer_norm_eps": 1e-12, **TINY}))
    torch.manual_seed(seed)
    weights = {}
    for i in range(layers):
        layer = EncoderTop(**TINY, layers=1).layers[0]
        weights.update({f"encoder.layer.{i}.{n}": p.detach().clone() + torch.randn(p.shape)
                        for n, p in layer.named_parameters()})
    save_file(weights, str(path / "model.safetensors"))
    return path


def test_top_layer_weights_come_from_the_folder(tmp_path):
    folder = _encoder_folder(tmp_path / "enc", layers=3)
    assert encoder_config(folder)["num_hidden_layers"] == 3
    weights = top_layer_weights(folder, 2)
    model = EncoderTop(**TINY, layers=2)
    assert set(weights) == {n for n, _ in model.named_parameters()} - {"scale", "head.weight",
                                                                         "head.bias"}
    from safetensors.torch import load_file

    raw = load_file(str(folder / "model.safetensors"))
    assert torch.equal(weights["layers.0.output.dense.weight"], raw["encoder.layer.1.output.dense.weight"])


def _artifact(tmp_path: Path) -> tuple[Artifact, Path]:
    folder = _encoder_folder(tmp_path / "enc")
    suite = TinyStatesSuite(layers=1, encoder=str(folder), checksum=encoder_checksum(folder))
    torch.manual_seed(0)
    learner = build_learner("metasgd", suite, inner_steps=1, lr_granularity="element",
                            head_init="prototypes")
    art = Artifact.from_learner(learner, suite)
    art.manifest["suite"] = {"name": "sinusoid", "options": {}}  # a suite the CLI can build
    return art, folder


def test_artifact_round_trip_and_metasgd(tmp_path):
    art, folder = _artifact(tmp_path)
    art.save(tmp_path / "art")
    loaded = load_artifact(tmp_path / "art")
    assert loaded.model_spec["kwargs"]["checksum"] == encoder_checksum(folder)
    assert {n for n in loaded.theta} == {n for n in art.theta}
    assert all(torch.equal(loaded.theta[n], art.theta[n]) for n in art.theta)
    suite = TinyStatesSuite()
    batch = suite.sample(1, torch.Generator().manual_seed(0))
    xs, ys = batch.x_support[0], batch.y_support[0]
    model, opt = prepare(None, loaded, support=(xs, ys))
    assert isinstance(model, EncoderTop) and isinstance(opt, MetaSGD)
    loss = torch.nn.functional.cross_entropy(model(xs), ys)
    loss.backward()
    opt.step()
    assert torch.nn.functional.cross_entropy(model(xs), ys).item() < loss.item()


@pytest.mark.parametrize("change", ["none given", "edited", "missing"])
def test_an_encoder_not_given_changed_or_missing_is_a_typed_error_and_exit_2(tmp_path, change,
                                                                             capsys):
    """The manifest names no folder: evaluating needs the user's, checked against the checksum;
    the model itself (its weights are theta) needs none."""
    art, folder = _artifact(tmp_path)
    art.save(tmp_path / "art")
    checksum = encoder_checksum(folder)
    if change == "edited":
        with open(folder / "config.json", "a") as fh:
            fh.write("\n")
    elif change == "missing":
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    loaded = load_artifact(tmp_path / "art")
    assert loaded.encoder is not None and loaded.encoder.checksum == checksum
    assert isinstance(loaded.build_model(), EncoderTop)
    model, _ = prepare(None, loaded, support=(torch.zeros(3, 5, 9), torch.arange(3)))
    assert isinstance(model, EncoderTop)
    given = [] if change == "none given" else ["-o", f"encoder={folder}"]
    expected = {"none given": f"enc (checksum {checksum[:12]})", "edited": "differs",
                "missing": "does not exist"}[change]
    with pytest.raises(EncoderMismatchError, match=re.escape(expected)):
        loaded.build_suite(**({} if not given else {"encoder": str(folder)}))
    from cli.app import main

    with pytest.raises(SystemExit) as exited:
        main(["evaluate", str(tmp_path / "art"), "--tasks", "2", *given])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], err
    if change == "none given":
        assert "-o encoder=FOLDER" in lines[0]


# --------------------------------------------------------------------------- the real encoder
_HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


@pytest.mark.skipif(not _HAS_TRANSFORMERS, reason="transformers is not installed (extra 'text')")
def test_encoder_top_matches_transformers_bert_layers():
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertEncoder

    config = BertConfig(hidden_size=8, num_attention_heads=2, intermediate_size=12,
                        num_hidden_layers=2, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    reference = BertEncoder(config).eval().double()
    ours = EncoderTop(**TINY, layers=2).double()
    ours.load_state_dict({n.replace("layer.", "layers.", 1): p
                          for n, p in reference.state_dict().items()}, strict=False)
    x = TinyStatesSuite(length=6).sample(1, torch.Generator().manual_seed(0)).x_query[0].double()
    h, mask = x[..., :-1], x[..., -1]
    extended = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float64).min
    with torch.no_grad():
        out = reference(h, attention_mask=extended).last_hidden_state
        m = mask.unsqueeze(-1)
        expected = torch.nn.functional.normalize((out * m).sum(1) / m.sum(1), dim=-1)
        got = ours(x, head=False) / ours.scale
    assert torch.allclose(got, expected, atol=1e-10)
