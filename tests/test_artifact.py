"""Artifacts: round trip, model mismatch, factories, atomic writes, and a loader that only ever
raises ArtifactError on corrupted input (hypothesis)."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from metaopt_tuner.artifact import (
    FORMAT_VERSION,
    MANIFEST,
    TENSORS,
    Artifact,
    load_artifact,
    pretrained,
    seal_manifest,
)
from metaopt_tuner.errors import ArtifactError, ModelMismatchError
from metaopt_tuner.learners import build_learner
from metaopt_tuner.training import MetaTrainer, TrainConfig

from .helpers import small_metasgd


def _artifact(**kw) -> Artifact:
    learner, suite = small_metasgd(**kw)
    return Artifact.from_learner(learner, suite, {"note": "test"}, {"val_mse": 1.5})


@pytest.fixture
def saved(tmp_path) -> Path:
    return _artifact().save(tmp_path / "art")


# ----------------------------------------------------------------------------- round trip
def test_round_trip_keeps_tensors_and_manifest(saved):
    learner, suite = small_metasgd()
    art = load_artifact(saved)
    for name, p in learner.initial_params().items():
        assert torch.equal(art.theta[name], p.detach())
        assert torch.equal(art.rates[name], learner.learning_rates()[name].detach())
    assert art.names == list(learner.initial_params())
    assert art.rates["layers.0.weight"].shape == (2, 8, 1)
    assert art.inner_steps == 2 and art.rate_steps == 2
    assert art.suite_name == "sinusoid" and art.suite_options["shots"] == 5
    assert art.model_spec == {"name": "mlp", "kwargs": {"sizes": [1, 8, 1]}}
    assert art.metrics == {"val_mse": 1.5}
    assert art.learner_config["learner"] == "metasgd"
    assert art.training_config == {"note": "test"}
    manifest = json.loads((saved / MANIFEST).read_text())
    for key in ("format", "format_version", "library_version", "parameters", "model", "suite",
                "learner", "training", "metrics", "tensors", "rate_steps", "inner_steps"):
        assert key in manifest
    assert manifest["tensors"]["sha256"] == hashlib.sha256((saved / TENSORS).read_bytes()).hexdigest()
    assert manifest["parameters"][0] == {"name": "layers.0.weight", "shape": [8, 1], "dtype": "float64"}
    assert sorted(p.name for p in saved.iterdir()) == [MANIFEST, TENSORS]


@pytest.mark.parametrize("granularity", ["scalar", "tensor"])
def test_coarse_rates_are_stored_per_element(tmp_path, granularity):
    learner, suite = small_metasgd(per_step=False)
    maml = build_learner("maml", suite, inner_lr=0.03, lr_granularity=granularity, inner_steps=3)
    art = load_artifact(Artifact.from_learner(maml, suite).save(tmp_path / "a"))
    for name, p in maml.initial_params().items():
        assert art.rates[name].shape == (1, *p.shape)
        assert torch.allclose(art.rates[name], torch.tensor(0.03))
    assert art.inner_steps == 3 and art.rate_steps == 1


def test_to_learner_reproduces_the_adaptation_curve(saved):
    learner, suite = small_metasgd()
    art = load_artifact(saved)
    again = art.to_learner()
    tasks = suite.fixed_tasks(7).to(dtype=torch.float64)
    a = learner.adaptation_curve(tasks, 4)
    b = again.adaptation_curve(tasks, 4)
    assert torch.allclose(a.loss, b.loss, rtol=1e-12, atol=0)
    assert again.inner_steps == 2
    assert art.to_learner(inner_steps=5).inner_steps == 5


def test_build_suite_applies_overrides(saved):
    art = load_artifact(saved)
    assert art.build_suite().shots == 5
    assert art.build_suite(shots=3).shots == 3


# ----------------------------------------------------------------------------- model mismatch
def test_initialize_loads_theta(saved):
    art = load_artifact(saved)
    model = art.initialize(art.build_model())
    for name, p in model.named_parameters():
        assert torch.equal(p.detach().double(), art.theta[name])


def test_mismatch_names_missing_unexpected_and_wrong_shape(saved):
    art = load_artifact(saved)
    model = torch.nn.ModuleDict({
        "layers": torch.nn.ModuleList([torch.nn.Linear(1, 9), torch.nn.Linear(8, 1)]),
        "extra": torch.nn.Linear(2, 2),
    })
    del model["layers"][1].bias
    with pytest.raises(ModelMismatchError) as exc:
        art.initialize(model)
    message = str(exc.value)
    assert "missing" in message and "layers.1.bias" in message
    assert "unexpected" in message and "extra.weight" in message and "extra.bias" in message
    assert "wrong shape" in message and "layers.0.weight (9, 1) vs (8, 1)" in message
    assert "layers.0.bias (9) vs (8)" in message
    with pytest.warns(UserWarning, match="layers.1.bias"):
        art.initialize(model, strict=False)
    assert torch.equal(model["layers"][1].weight.detach().double(), art.theta["layers.1.weight"])


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"sizes": [1, 10**12, 1]}, ModelMismatchError, "does not build its parameters"),
        ({"sizes": "abc"}, ArtifactError, "cannot build"),
        ({"bogus": 1}, ArtifactError, "bogus"),
    ],
)
def test_model_spec_that_disagrees_with_the_tensors(saved, kwargs, error, fragment):
    manifest = json.loads((saved / MANIFEST).read_text())
    manifest["model"]["kwargs"] = kwargs
    (saved / MANIFEST).write_text(json.dumps(seal_manifest(manifest)))
    art = load_artifact(saved)  # the spec is data: only building the model checks it
    with pytest.raises(error, match=fragment):  # and never allocates 10**12 weights
        art.build_model()


# ----------------------------------------------------------------------------- factories
def test_factory_model_is_imported_only_when_trusted(tmp_path, monkeypatch):
    module = tmp_path / "mods"
    module.mkdir()
    (module / "evil_factory_mod.py").write_text(
        "import torch\nIMPORTED = True\n"
        "def make(sizes):\n    from metaopt_tuner.models import MLP\n    return MLP(sizes)\n"
    )
    monkeypatch.syspath_prepend(str(module))
    learner, suite = small_metasgd()
    spec = {"factory": "evil_factory_mod:make", "kwargs": {"sizes": [1, 8, 1]}}
    path = Artifact.from_learner(learner, suite, model_spec=spec).save(tmp_path / "a")
    art = load_artifact(path)
    with pytest.raises(ArtifactError, match="trust_factory=True"):
        art.build_model()
    assert "evil_factory_mod" not in sys.modules
    model = load_artifact(path, trust_factory=True).build_model()
    assert "evil_factory_mod" in sys.modules
    art.initialize(model)


def test_loading_never_unpickles(saved, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("unpickling during load")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(torch, "load", boom)
    load_artifact(saved)


# ----------------------------------------------------------------------------- writing
def test_save_replaces_an_artifact_atomically_and_refuses_other_folders(tmp_path):
    first = _artifact(seed=0)
    second = _artifact(seed=1)
    path = first.save(tmp_path / "a")
    second.save(path)
    assert torch.equal(load_artifact(path).theta["layers.0.weight"], second.theta["layers.0.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temporary leftovers
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not an artifact"):
        first.save(other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_training_writes_the_artifact_at_checkpoints_and_at_the_end(tmp_path):
    config = TrainConfig(suite="sinusoid", suite_options={"shots": 5, "hidden": [8]}, iterations=6,
                         meta_batch=3, eval_every=4, eval_tasks=5, checkpoint_every=4, log_every=2)
    result = MetaTrainer(config, tmp_path / "run", progress=False).run()
    art = load_artifact(tmp_path / "run" / "artifact")
    assert art.metrics["iteration"] == 6
    assert art.metrics["val_mse"] == pytest.approx(result.final_metric)
    assert art.training_config == config.to_dict()
    for name, p in result.learner.initial_params().items():
        assert torch.equal(art.theta[name], p.detach())
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]


def test_pretrained_sinusoid_ships_with_the_package():
    art = pretrained("sinusoid")
    assert art.suite_name == "sinusoid" and "provenance" in art.manifest
    assert "make_pretrained.py" in art.manifest["provenance"]["script"]
    with pytest.raises(ArtifactError, match="no pretrained artifact named"):
        pretrained("../sinusoid")


# ----------------------------------------------------------------------------- corruption
_BASE: dict[str, bytes] = {}


def _base_files() -> dict[str, bytes]:
    if not _BASE:
        with tempfile.TemporaryDirectory() as tmp:
            path = _artifact().save(Path(tmp) / "a")
            _BASE.update({name: (path / name).read_bytes() for name in (MANIFEST, TENSORS)})
    return _BASE


def _load_files(files: dict[str, bytes]) -> Artifact:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "a"
        root.mkdir()
        for name, data in files.items():
            (root / name).write_bytes(data)
        return load_artifact(root)


def _with_manifest(manifest: dict, tensors: bytes | None = None) -> dict[str, bytes]:
    files = dict(_base_files())
    if tensors is not None:
        files[TENSORS] = tensors
        manifest["tensors"] = {"sha256": hashlib.sha256(tensors).hexdigest(), "size": len(tensors)}
    files[MANIFEST] = json.dumps(seal_manifest(manifest)).encode()
    return files


def _manifest() -> dict:
    return json.loads(_base_files()[MANIFEST])


def _expect_error(files, *fragments: str) -> str:
    with pytest.raises(ArtifactError) as exc:
        _load_files(files)
    message = str(exc.value)
    assert message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _loads_or_artifact_error(files) -> None:
    try:
        _load_files(files)
    except ArtifactError as exc:
        assert str(exc)


HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPO
@given(st.data())
def test_truncated_files(data):
    base = _base_files()
    name = data.draw(st.sampled_from([MANIFEST, TENSORS]))
    # the manifest ends with "}\n": cutting anything more than the newline breaks the JSON
    cut = data.draw(st.integers(0, len(base[name]) - (2 if name == MANIFEST else 1)))
    files = {**base, name: base[name][:cut]}
    _expect_error(files, "manifest" if name == MANIFEST else TENSORS)


@HYPO
@given(st.data())
def test_flipped_bytes(data):
    base = _base_files()
    name = data.draw(st.sampled_from([MANIFEST, TENSORS]))
    index = data.draw(st.integers(0, len(base[name]) - 1))
    bit = data.draw(st.integers(0, 7))
    corrupted = bytearray(base[name])
    corrupted[index] ^= 1 << bit
    files = {**base, name: bytes(corrupted)}
    if name == TENSORS:
        _expect_error(files, "checksum")
    else:  # a flipped digit in a metric can still be a valid manifest; anything else must fail
        _loads_or_artifact_error(files)


REQUIRED = [
    ("format",), ("format_version",), ("library_version",), ("tensors",), ("tensors", "sha256"),
    ("tensors", "size"), ("parameters",), ("rate_steps",), ("inner_steps",), ("model",),
    ("suite",), ("suite", "name"), ("suite", "options"), ("learner",), ("metrics",),
]


@pytest.mark.parametrize("path", REQUIRED, ids=".".join)
def test_missing_field_is_named(path):
    manifest = _manifest()
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    _expect_error(_with_manifest(manifest), repr(".".join(path)), "missing")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children,
                                                                       max_size=3),
    max_leaves=6,
)
FIELD_PATHS = REQUIRED + [("parameters", 0), ("parameters", 0, "name"), ("parameters", 0, "shape"),
                          ("parameters", 0, "dtype"), ("model", "name"), ("model", "kwargs"),
                          ("training",), ("provenance",), ("suite", "metric_name")]


@HYPO
@given(path=st.sampled_from(FIELD_PATHS), value=json_values)
def test_wrong_typed_fields(path, value):
    manifest = _manifest()
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    _loads_or_artifact_error(_with_manifest(manifest))


@pytest.mark.parametrize(
    "path, value, fragment",
    [
        (("format_version",), "1", "should be int"),
        (("inner_steps",), 0, "positive integer"),
        (("parameters",), {}, "should be list"),
        (("parameters", 0, "shape"), [8, "1"], "non-negative integers"),
        (("parameters", 0, "dtype"), "int64", "dtype"),
        (("tensors", "size"), True, "should be int"),
        (("model", "name"), 3, "should be str"),
        (("suite", "options"), [], "should be dict"),
        (("format",), "something-else", "not a metaopt-tuner artifact manifest"),
    ],
)
def test_wrong_typed_field_messages(path, value, fragment):
    manifest = _manifest()
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    _expect_error(_with_manifest(manifest), fragment)


def test_manifest_not_an_object_or_not_json():
    _expect_error({**_base_files(), MANIFEST: b"[1, 2]"}, "JSON object")
    _expect_error({**_base_files(), MANIFEST: b"\xff\xfe{"}, "not valid JSON")
    _expect_error({**_base_files(), MANIFEST: b"[" * 100000}, "not valid JSON")


@HYPO
@given(st.lists(st.integers(0, 20), max_size=3))
def test_shape_lies(shape):
    manifest = _manifest()
    if shape == manifest["parameters"][0]["shape"]:
        return
    manifest["parameters"][0]["shape"] = shape
    _expect_error(_with_manifest(manifest), "layers.0.weight", "shape")


def test_rate_steps_lie():
    manifest = _manifest()
    manifest["rate_steps"] = 3
    _expect_error(_with_manifest(manifest), "3")


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 99])
def test_newer_format_version(version):
    manifest = _manifest()
    manifest["format_version"] = version
    _expect_error(_with_manifest(manifest), "newer", "upgrade")


def _tensors(**changes) -> dict[str, torch.Tensor]:
    art = _load_files(_base_files())
    tensors = {f"theta.{n}": t for n, t in art.theta.items()}
    tensors.update({f"rates.{n}": t for n, t in art.rates.items()})
    tensors.update(changes)
    return {k: v for k, v in tensors.items() if v is not None}


@HYPO
@given(st.sampled_from(["theta", "rates"]), st.sampled_from([float("nan"), float("inf")]),
       st.integers(0, 7))
def test_non_finite_values(kind, value, index):
    key = f"{kind}.layers.0.weight"
    tensor = _tensors()[key].clone()
    tensor.view(-1)[index % tensor.numel()] = value
    data = st_save(_tensors(**{key: tensor}))
    _expect_error(_with_manifest(_manifest(), data), "NaN or infinite", "layers.0.weight")


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"rates.layers.0.bias": None}, "missing"),
        ({"theta.extra": torch.zeros(2, dtype=torch.float64)}, "extra"),
        ({"theta.layers.0.bias": torch.zeros(8, dtype=torch.int64)}, "dtype"),
        ({"theta.layers.0.bias": torch.zeros(8, dtype=torch.float32)}, "float32"),
        ({"rates.layers.0.bias": torch.zeros(2, 9, dtype=torch.float64)}, "shape"),
        ({"rates.layers.0.bias": torch.zeros(3, 8, dtype=torch.float64)}, "step"),
    ],
)
def test_tensor_file_inconsistent_with_manifest(changes, fragment):
    _expect_error(_with_manifest(_manifest(), st_save(_tensors(**changes))), fragment)


@HYPO
@given(st.binary(max_size=200))
def test_garbage_tensor_file_with_a_matching_checksum(data):
    _expect_error(_with_manifest(_manifest(), data), TENSORS)


def test_missing_files_and_paths(tmp_path, saved):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="not an artifact directory"):
        load_artifact(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        load_artifact(tmp_path / "empty")
    copy_dir = tmp_path / "copy"
    shutil.copytree(saved, copy_dir)
    (copy_dir / TENSORS).unlink()
    with pytest.raises(ArtifactError, match="tensors.safetensors is missing"):
        load_artifact(copy_dir)
    assert load_artifact(saved / MANIFEST).names == load_artifact(saved).names


def test_in_memory_artifact_checks_its_tensors():
    art = _artifact()
    rates = copy.copy(art.rates)
    rates["layers.0.bias"] = rates["layers.0.bias"][:, :3]
    with pytest.raises(ArtifactError, match="layers.0.bias"):
        Artifact(art.theta, rates, art.manifest)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Artifact(art.theta, art.rates, art.manifest)
