"""benchmarks/omniglot_small.py end to end on a tiny tree: every learner and baseline gives a row.

The README's Omniglot table comes from this script's ``--preset cpu``; a script that only runs on
the real data would break unnoticed between the hour-long runs that fill that table.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from metaopt_tuner.tasks import image_cache

from .helpers import load_benchmark
from .test_omniglot import make_tree


@pytest.fixture()
def script(monkeypatch) -> ModuleType:
    return load_benchmark("omniglot_small", monkeypatch)


@pytest.fixture()
def data_dir(tmp_path: Path, script: ModuleType) -> Path:
    """small1 with two training alphabets; small2 with the three test alphabets the script names."""
    image_cache._MEMO.clear()
    make_tree(tmp_path / "images_background_small1", {"Train_a": 6, "Train_b": 5}, images=4)
    make_tree(tmp_path / "images_background_small2", dict.fromkeys(script.TEST_ALPHABETS, 5), images=4)
    return tmp_path


def _run(script: ModuleType, data_dir: Path, out: Path, *extra: str) -> list[dict]:
    before = torch.get_num_threads()
    try:
        script.main(["--data-dir", str(data_dir), "--preset", "cpu", "--configs", "5w1s",
                     "--filters", "2", "--iterations", "2", "--test-episodes", "3", "--query", "2",
                     "--eval-chunk", "3", "--baseline-trials", "1", "--baseline-steps", "1",
                     "--baseline-episodes", "2", "--baseline-tune-tasks", "2", "--pretrain-steps", "1",
                     "--protonet-ways", "5", "--json-out", str(out), *extra])
    finally:
        torch.set_num_threads(before)  # main() sets --threads for the whole process
    return json.loads(out.read_text())["rows"]


def _learner_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["meta_iterations"] > 0 and "ProtoNet" not in r["method"]]


def test_cpu_preset_gives_every_learner_and_baseline_a_row(script, data_dir, tmp_path):
    rows = _run(script, data_dir, tmp_path / "rows.json")
    learner_rows = [r for r in _learner_rows(rows) if r["steps"] > 0]
    methods = {r["method"] for r in learner_rows}
    # the cpu preset: jittered training images; a prototype head and cosine meta-lr, except for
    # Reptile (a learned head, a constant rate)
    jitter = " (jitter 15 deg, 0.15 scale, 0.15 shift)"
    assert methods == {f"{name}+proto{jitter}, cosine meta-lr" for name in ("maml", "fomaml", "metasgd")
                       } | {f"reptile{jitter}"}
    assert {r["episodes"] for r in learner_rows} == {"random", "within-alphabet"}
    assert len(learner_rows) == 8 and all(r["meta_iterations"] == 2 for r in learner_rows)
    assert all(r["test_episodes"] == 3 and 0.0 <= r["accuracy"] <= 1.0 for r in learner_rows)
    # support-set norm, the default: each query asked alone scores as the batch
    assert all(r["accuracy_alone"] == pytest.approx(r["accuracy"], abs=1e-6) for r in learner_rows)
    # every row states its meta-iteration cost
    assert all(r["iterations_per_s"] > 0 and r["s_per_iteration"] > 0 and r["train_s"] > 0
               for r in learner_rows)
    baseline_rows = [r for r in rows if r["meta_iterations"] == 0]
    assert len(baseline_rows) == 4 and all(r["episodes"] == "random" for r in baseline_rows)
    assert all(r["test_episodes"] == 2 and r["trials"] == 1 for r in baseline_rows)


def test_every_learner_has_a_zero_step_row_and_the_gain_of_its_steps(script, data_dir, tmp_path):
    rows = _learner_rows(_run(script, data_dir, tmp_path / "rows.json", "--learners", "metasgd",
                              "--inner-steps", "2", "--per-step-lrs", "--baseline-configs", ""))
    by_steps = {(r["episodes"], r["steps"]): r for r in rows}
    assert sorted(by_steps) == [(k, s) for k in ("random", "within-alphabet") for s in (0, 2)]
    for kind in ("random", "within-alphabet"):
        zero, adapted = by_steps[kind, 0], by_steps[kind, 2]
        assert zero["method"] == adapted["method"] and zero["method"].endswith(", per-step rates")
        assert zero["gain_of_steps"] is None and zero["accuracy"] == adapted["accuracy_0_steps"]
        # paired on the same episodes: the mean gain is the difference of the two means
        assert adapted["gain_of_steps"] == pytest.approx(adapted["accuracy"] - zero["accuracy"])
        assert adapted["gain_ci95"] >= 0.0
        assert zero["train_s"] == adapted["train_s"]  # one artifact, evaluated twice


def test_textbook_protonet_row_trains_for_the_learners_seconds(script, data_dir, tmp_path):
    rows = _run(script, data_dir, tmp_path / "rows.json", "--learners", "metasgd",
                "--baseline-configs", "", "--kinds", "within-alphabet", "--budget", "1")
    protonet = [r for r in rows if "ProtoNet" in r["method"]]
    assert len(protonet) == 1 and protonet[0]["episodes"] == "within-alphabet"
    row = protonet[0]
    assert row["method"] == "textbook ProtoNet (protonet_textbook.py, GroupNorm(1, 2), 5-way)"
    assert row["meta_iterations"] >= 1 and row["s_per_iteration"] > 0 and row["train_s"] > 0
    # the suite's training split, rotations as classes: 11 characters, 44 classes; one CPU second
    assert row["train_classes"] == 44 and row["train_cpu_s"] >= 1
    assert row["test_episodes"] == 3 and 0.0 <= row["accuracy"] <= 1.0
    learner = next(r for r in rows if r["method"].startswith("metasgd") and r["steps"] > 0)
    diff, half = row["vs_protonet"][learner["method"]]
    assert diff == pytest.approx(learner["accuracy"] - row["accuracy"])


def test_preset_choices_can_be_overridden(script, data_dir, tmp_path, capsys):
    rows = _run(script, data_dir, tmp_path / "rows.json", "--learners", "maml", "--head-init", "theta",
                "--meta-lr-schedule", "constant", "--jitter", "0,0,0", "--baseline-configs", "")
    assert {r["method"] for r in _learner_rows(rows)} == {"maml"}
    for option, value in (("--head-init", "centroids"), ("--jitter", "15")):  # still checked
        with pytest.raises(SystemExit):
            script.main([option, value])
        assert f"argument {option}" in capsys.readouterr().err


def test_transductive_batch_norm_rows_are_labelled(script, data_dir, tmp_path):
    rows = _run(script, data_dir, tmp_path / "rows.json", "--learners", "metasgd", "--norm", "batch",
                "--baseline-configs", "")
    rows = [r for r in _learner_rows(rows) if r["steps"] > 0]
    assert rows and all(r["method"].endswith(", batch norm") for r in rows)
    assert all(0.0 <= r["accuracy_alone"] <= 1.0 for r in rows)
