"""The whitened prototype head: a shrunk linear discriminant computed from the support set."""

from __future__ import annotations

import json

import pytest
import torch

from metaopt_tuner.artifact import MANIFEST, Artifact, load_artifact
from metaopt_tuner.config import TrainConfig
from metaopt_tuner.errors import ArtifactError, ConfigError
from metaopt_tuner.models.proto_head import prototype_head, whitening_matrix
from metaopt_tuner.tasks.omniglot import RECIPE

from .helpers import TinyImageSuite
from .helpers import seeded_learner as _learner


def _gaussian_classes(ways, shots, query, seed=0, dim=6):
    """Classes that share one strongly anisotropic covariance: the centroid's hard case."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    scales = torch.logspace(0, 1.5, dim, dtype=torch.float64)  # std from 1 to ~32
    means = 6.0 * torch.randn(ways, dim, generator=gen, dtype=torch.float64)

    def draw(count):
        noise = torch.randn(ways, count, dim, generator=gen, dtype=torch.float64) * scales
        x = means[:, None] + noise @ mix.T
        return x.reshape(-1, dim), torch.arange(ways).repeat_interleave(count)

    return (*draw(shots), *draw(query))


def _head(fs, ys, ways, whitening):
    zero_w = torch.zeros(ways, fs.shape[-1], dtype=fs.dtype)
    return prototype_head(fs, ys, zero_w, torch.zeros(ways, dtype=fs.dtype), whitening)


def test_at_one_shot_the_whitened_head_is_the_prototype_head():
    fs, ys, _, _ = _gaussian_classes(4, 1, 1)
    plain, whitened = _head(fs, ys, 4, None), _head(fs, ys, 4, 6.0)
    for a, b in zip(plain, whitened):
        assert torch.equal(a, b)
    assert whitening_matrix(fs - fs, 4, 6.0) is None  # nothing to whiten, nothing solved


def test_the_whitened_head_is_the_shrunk_discriminant_written_out():
    fs, ys, fq, _ = _gaussian_classes(3, 5, 4)
    weight, bias = _head(fs, ys, 3, 4.0)
    protos = torch.stack([fs[ys == c].mean(0) for c in range(3)])
    residuals = fs - protos[ys]
    cov = residuals.T @ residuals / len(fs)
    shrink = 4.0 / (4.0 + 4)  # four examples per class beyond the first
    shrunk = (1 - shrink) * cov / cov.diagonal().mean() + shrink * torch.eye(fs.shape[1], dtype=fs.dtype)
    assert torch.allclose(whitening_matrix(residuals, 3, 4.0), shrunk)
    inverse = torch.linalg.inv(shrunk)
    assert torch.allclose(weight, 2 * protos @ inverse, atol=1e-10)
    # it ranks the classes by Mahalanobis distance under the shrunk covariance
    diff = fq[:, None, :] - protos[None]
    distance = torch.einsum("qcf,fg,qcg->qc", diff, inverse, diff)
    assert torch.equal((fq @ weight.T + bias).argmax(-1), distance.argmin(-1))


def test_a_strong_prior_gives_back_the_prototype_head():
    fs, ys, _, _ = _gaussian_classes(3, 5, 1)
    plain, whitened = _head(fs, ys, 3, None), _head(fs, ys, 3, 1e9)
    for a, b in zip(plain, whitened):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6)


def test_with_many_shots_the_whitened_head_classifies_better_than_the_centroid():
    fs, ys, fq, yq = _gaussian_classes(5, 30, 200, seed=1)
    accuracy = {}
    for name, whitening in (("centroid", None), ("whitened", 2.0)):
        weight, bias = _head(fs, ys, 5, whitening)
        accuracy[name] = float(((fq @ weight.T + bias).argmax(-1) == yq).double().mean())
    assert accuracy["whitened"] > accuracy["centroid"] + 0.05, accuracy


def test_a_batch_of_tasks_gets_each_task_s_own_head_and_under_vmap_too():
    tasks = [_gaussian_classes(3, 4, 1, seed=s) for s in range(3)]
    fs = torch.stack([t[0] for t in tasks])
    ys = torch.stack([t[1] for t in tasks])
    zero_w, zero_b = torch.zeros(3, 3, fs.shape[-1], dtype=fs.dtype), torch.zeros(3, 3, dtype=fs.dtype)
    batched = prototype_head(fs, ys, zero_w, zero_b, 2.0)
    mapped = torch.vmap(lambda f, y, w, b: prototype_head(f, y, w, b, 2.0))(fs, ys, zero_w, zero_b)
    for i in range(3):
        alone = _head(fs[i], ys[i], 3, 2.0)
        for got, want in zip((batched[0][i], batched[1][i]), alone):
            assert torch.allclose(got, want, atol=1e-10)
        for got, want in zip((mapped[0][i], mapped[1][i]), alone):
            assert torch.allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("shots, duplicates", [(1, False), (3, False), (3, True)])
def test_the_meta_gradient_through_the_whitened_head_is_finite(shots, duplicates):
    fs, ys, fq, yq = _gaussian_classes(3, shots, 2)
    if duplicates:  # every support example of a class the same: no spread at all
        fs = fs[ys * shots]
    fs = fs.clone().requires_grad_()
    weight, bias = _head(fs, ys, 3, 6.0)
    torch.nn.functional.cross_entropy(fq @ weight.T + bias, yq).backward()
    assert torch.isfinite(fs.grad).all() and fs.grad.abs().sum() > 0


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf"), True])
def test_a_whitening_strength_that_is_not_positive_is_one_clear_error(value):
    with pytest.raises(ConfigError, match="head-whitening"):
        TrainConfig(suite="omniglot", head_init="prototypes", head_whitening=value).validate()
    with pytest.raises(ConfigError, match="head_whitening"):
        _learner("metasgd", TinyImageSuite(ways=3), "loop", steps=1, head_init="prototypes",
                 head_whitening=value)


def test_whitening_needs_a_prototype_head():
    with pytest.raises(ConfigError, match="prototypes"):
        TrainConfig(suite="omniglot", head_whitening=6.0).validate()
    with pytest.raises(ConfigError, match="prototypes"):
        _learner("metasgd", TinyImageSuite(ways=3), "loop", steps=1, head_whitening=6.0)


@pytest.mark.parametrize("value", [0, -2.0, "6", True])
def test_a_manifest_with_a_bad_whitening_strength_is_refused(tmp_path, value):
    from metaopt_tuner.artifact.format import seal_manifest

    suite = TinyImageSuite(ways=3, shots=2, query=2)
    learner = _learner("metasgd", suite, "loop", steps=1, head_init="prototypes",
                       inner_params="head", head_whitening=6.0)
    Artifact.from_learner(learner, suite, model_spec=suite.model_spec()).save(tmp_path / "art")
    assert load_artifact(tmp_path / "art").learner_config["head_whitening"] == 6.0
    path = tmp_path / "art" / MANIFEST
    manifest = json.loads(path.read_text())
    manifest.pop("manifest_sha256")
    manifest["learner"]["head_whitening"] = value
    path.write_text(json.dumps(seal_manifest(manifest)))
    with pytest.raises(ArtifactError, match="head_whitening"):
        load_artifact(tmp_path / "art")


def test_the_omniglot_recipe_whitens_its_prototypes():
    config = TrainConfig(suite="omniglot", **RECIPE.config)
    config.validate()
    assert config.learner_options()["head_whitening"] == 6.0


def test_inspect_says_the_head_is_whitened(tmp_path, capsys):
    from .helpers import run_cli

    suite = TinyImageSuite(ways=3, shots=2, query=2)
    learner = _learner("metasgd", suite, "loop", steps=1, head_init="prototypes",
                       inner_params="head", head_whitening=6.0)
    Artifact.from_learner(learner, suite, model_spec=suite.model_spec()).save(tmp_path / "art")
    code, out, err = run_cli(capsys, "inspect", str(tmp_path / "art"))
    assert code == 0, err
    assert "whitened by the support set's covariance, strength 6" in " ".join(out.split())
