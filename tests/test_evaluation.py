"""Evaluation: confidence intervals, adaptation curves from artifacts, paths and learners."""

from __future__ import annotations

import json
import math

import pytest
import torch

from metaopt_tuner.artifact import Artifact, pretrained
from metaopt_tuner.errors import ArtifactError, ConfigError
from metaopt_tuner.evaluation import EvaluationResult, evaluate, mean_ci

from .helpers import small_metasgd


def test_mean_ci_is_the_normal_approximation():
    values = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [6.0, 60.0]])
    mean, half = mean_ci(values)
    assert mean.tolist() == pytest.approx([3.0, 30.0])
    std = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 3)
    assert half.tolist() == pytest.approx([1.96 * std / 2, 19.6 * std / 2])
    mean, half = mean_ci(values, dim=1)
    assert mean.tolist() == pytest.approx([5.5, 11.0, 16.5, 33.0])
    mean, half = mean_ci(torch.tensor([4.0]))
    assert float(mean) == 4.0 and math.isnan(float(half))


def test_evaluate_artifact_matches_the_learner_curve(tmp_path):
    learner, suite = small_metasgd(steps=2)
    art = Artifact.from_learner(learner, suite)
    result = evaluate(art, num_tasks=20, steps=4, seed=3)
    curve = learner.adaptation_curve(suite.fixed_tasks(20, "test", 3).to(dtype=torch.float64), 4)
    assert isinstance(result, EvaluationResult)
    assert result.steps == 4 and result.num_tasks == 20 and result.metric_name == "mse"
    assert len(result.loss_mean) == len(result.metric_ci) == 5
    assert result.metric_mean == pytest.approx(curve.metric.mean(0).tolist(), rel=1e-10)
    assert result.loss_ci == pytest.approx(mean_ci(curve.loss)[1].tolist(), rel=1e-10)
    # the same tasks for a path, and for the learner itself
    path = art.save(tmp_path / "a")
    assert evaluate(str(path), num_tasks=20, steps=4, seed=3).loss_mean == result.loss_mean
    assert evaluate(learner, suite, num_tasks=20, steps=4, seed=3).loss_mean == pytest.approx(
        result.loss_mean, rel=1e-12)
    assert evaluate(path, num_tasks=20, seed=3).steps == 2  # default: the artifact's inner steps
    data = json.loads(json.dumps(result.to_dict()))
    assert data["metric_mean"] == result.metric_mean


def test_to_dict_turns_non_finite_into_null():
    result = EvaluationResult(0, 1, "mse", [1.0], [math.nan], [1.0], [math.inf])
    assert result.to_dict()["loss_ci"] == [None] and result.to_dict()["metric_ci"] == [None]


def test_evaluate_bad_input():
    learner, suite = small_metasgd()
    with pytest.raises(ConfigError, match="needs its suite"):
        evaluate(learner)
    with pytest.raises(ConfigError, match="number of tasks"):
        evaluate(learner, suite, num_tasks=0)
    with pytest.raises(ConfigError, match="steps"):
        evaluate(learner, suite, steps=-1)
    with pytest.raises(ArtifactError, match="does not exist"):
        evaluate("/nonexistent/artifact")


def test_pretrained_sinusoid_learned_to_adapt():
    art = pretrained("sinusoid")
    result = evaluate(art, num_tasks=100)
    k = art.inner_steps
    assert result.metric_mean[k] < 0.25 * result.metric_mean[0]
    assert result.metric_mean[k] < 0.5
