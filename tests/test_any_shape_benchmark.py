"""benchmarks/any_shape.py --quick on a tiny Omniglot tree and a tiny head-alone artifact: every row
of a cell is there, on the same episodes, at the trained width and another, and a shape the
classes cannot fill is skipped."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from metaopt_tuner.artifact import Artifact
from metaopt_tuner.tasks import image_cache
from metaopt_tuner.training import train

from .helpers import load_benchmark
from .test_omniglot import make_tree


@pytest.fixture()
def script() -> ModuleType:
    pytest.importorskip("sklearn", reason="the logistic-regression row needs scikit-learn (the text extra)")
    return load_benchmark("any_shape")


@pytest.fixture()
def artifact(tmp_path: Path) -> tuple[Path, Path]:
    """The omniglot recipe (prototype head, the head alone adapted) at 3-way, 2 filters, two
    iterations, on a tree of five alphabets (one each for test and validation)."""
    image_cache._MEMO.clear()
    data = make_tree(tmp_path / "tree", {f"A{i}": 4 for i in range(5)}, images=6)
    torch.manual_seed(0)
    result = train(suite="omniglot", iterations=2, meta_batch=1, eval_every=2, eval_tasks=1,
                   log_every=2, checkpoint_every=10**9,
                   suite_options={"data_dir": str(data), "ways": 3, "shots": 1, "query": 2,
                                  "filters": 2, "image_size": 16, "cache": False})
    path = tmp_path / "artifact"
    Artifact.from_learner(result.learner, result.suite, result.config.to_dict()).save(path)
    return path, data


def test_quick_run_gives_every_row_on_the_same_episodes(script, artifact, tmp_path):
    before = torch.get_num_threads()
    try:
        path, data = artifact
        cells = script.main(["--suite", "omniglot", "--artifact", str(path), "--data-dir", str(data),
                             "--quick", "--ways", "3", "all", "--shots", "1", "9",
                             "--json", str(tmp_path / "out.json")])
    finally:
        torch.set_num_threads(before)
    # 9 + 2 > 6 drawings: skipped; "all" is the test alphabet's 4 characters, a width the
    # 3-way artifact was not trained at
    assert [(c["ways"], c["shots"]) for c in cells] == [(3, 1), (4, 1)]
    assert all(c["artifact_error"] is None for c in cells)
    rows = {r["method"]: r for r in cells[1]["rows"]}
    assert set(rows) == {script.CENTROID, script.LOGREG, script.ADAMW, script.ART0,
                         script.art_steps_name(1)}
    assert all(r["episodes"] == 2 and 0.0 <= r["accuracy"] <= 100.0 for r in rows.values())
    assert rows[script.art_steps_name(1)]["vs_artifact"] == 0.0
    # the prototype head at 0 steps is the nearest-centroid classifier on the same features
    assert rows[script.ART0]["accuracy"] == pytest.approx(rows[script.CENTROID]["accuracy"])
    assert cells[1]["adamw"]["trials"] == 2 and 1 <= cells[0]["adamw"]["steps"] <= 100
    assert json.loads((tmp_path / "out.json").read_text())["cells"][0]["ways"] == 3
