"""Comparison reports: files, self-contained HTML, table numbers equal to results.json, targets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from metaopt_tuner.artifact import Artifact, load_artifact
from metaopt_tuner.compare import (
    META,
    compare,
    table_rows,
)
from metaopt_tuner.compare import (
    break_even_line as _break_even_line,
)
from metaopt_tuner.compare import (
    targets_met as _targets,
)
from metaopt_tuner.errors import ConfigError
from metaopt_tuner.training import train
from metaopt_tuner.update_rule import TAIL_STEPS


def make_artifact(path: Path, iterations: int = 15) -> Path:
    """A tiny sinusoid Meta-SGD artifact (8x8 MLP, 2 inner steps) saved at ``path``."""
    torch.manual_seed(0)
    result = train(iterations=iterations, meta_batch=4, inner_steps=2, suite_options={"hidden": [8, 8]},
                   eval_every=iterations, eval_tasks=4, log_every=iterations)
    Artifact.from_learner(result.learner, result.suite, result.config.to_dict()).save(path)
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    try:
        art = make_artifact(root / "artifact")
        result = compare(art, root / "out", steps=3, tasks=12, trials=4, val_tasks=6, oracle_tasks=4,
                         oracle_trials=3, pretrain_steps=10, progress=False)
    finally:
        torch.set_num_threads(threads)
    return result, root / "out"


def test_report_files_exist(report):
    result, out = report
    for name in ("report.md", "report.html", "results.json", "studies.db", "plots/curves.png",
                 "plots/history.png", "plots/rates.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "results.json").read_text()) == result.data


def test_html_is_self_contained(report):
    _, out = report
    page = (out / "report.html").read_text()
    assert not re.search(r"https?:", page, re.IGNORECASE)
    assert "<link" not in page and "<script" not in page and "url(" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "Protocol" in page and "upper bound" in page


def _markdown_table(text: str) -> list[list[str]]:
    section = text.split("## Results (held-out test tasks)", 1)[1].split("\n\n", 2)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_every_table_number_equals_results_json(report):
    _, out = report
    data = json.loads((out / "results.json").read_text())
    md_rows = _markdown_table((out / "report.md").read_text())
    expected = table_rows(data)
    assert len(md_rows) == len(expected) == len(data["methods"])
    checked = 0
    for md_row, row, method in zip(md_rows, expected, data["methods"]):
        assert md_row[0] == method["name"] == row[0]
        for cell, value in zip(md_row[1:], row[1:]):
            assert float(cell) == value
            checked += 1
        assert float(md_row[1]) == method["query_loss"]["mean"]
        assert float(md_row[2]) == method["query_loss"]["ci95"]
        assert int(md_row[6]) == method["tuning"]["trials"]
    assert checked == 10 * len(expected)


def test_results_cover_every_method_and_the_protocol(report):
    result, _ = report
    data = result.data
    names = [m["name"] for m in data["methods"]]
    assert names[:5] == [META, "adam", "sgd", "adam-pretrained", "sgd-pretrained"]
    assert names[-1] == "oracle-adam"
    assert result.method("oracle-adam")["tasks"] == 4 and result.method("adam")["tasks"] == 12
    for name in ("adam", "sgd", "adam-pretrained", "sgd-pretrained"):
        m = result.method(name)
        assert m["tuning"]["trials"] == 4 and len(m["history"]) == 4
        assert 0 < m["tuning"]["grad_evals"] <= 4 * 3 * 6
        assert m["adaptation"]["grad_evals"] == 12 * 3
        assert len(m["curve"]["loss_mean"]) == 4  # steps 0..3
        assert m["setup"] is None or m["setup"]["what"] == "multi-task pretraining"
    assert result.method(META)["tuning"]["trials"] == 0
    setup = result.method(META)["setup"]
    # iterations x meta-batch x (inner steps + tail steps past the horizon + 1)
    assert setup["grad_evals"] == 15 * 4 * (2 + min(TAIL_STEPS, 2) + 1)
    assert data["protocol"]["steps"] == 3 and data["protocol"]["storage"].startswith("sqlite:///")
    assert [t["met"] is not None for t in data["targets"]] == [True, True]
    assert data["break_even"]["reference"] in ("adam", "sgd", "adam-pretrained", "sgd-pretrained")
    assert len(data["learned_rates"]) == 6


def test_the_meta_learned_curve_matches_the_learner(report, tmp_path):
    result, out = report
    art = load_artifact(Path(result.data["artifact"]))
    suite = art.build_suite()
    curve = art.to_learner(suite).adaptation_curve(suite.fixed_tasks(12, split="test"), 3)
    assert result.method(META)["query_loss"]["mean"] == pytest.approx(float(curve.loss[:, -1].mean()),
                                                                     rel=1e-5)


def test_targets_compare_query_losses():
    def method(name, loss):
        return {"name": name, "query_loss": {"mean": loss}}

    rows = _targets([method(META, 1.0), method("adam", 2.5), method("sgd", 2.0),
                     method("adam-pretrained", 1.2)])
    assert rows[0]["reference"] == "sgd" and rows[0]["met"] is True and rows[0]["ratio"] == 0.5
    assert rows[1]["met"] is True
    rows = _targets([method(META, 1.0), method("adam", 1.5), method("adam-pretrained", 0.9)])
    assert rows[0]["met"] is False and rows[1]["met"] is False
    assert _targets([method(META, 1.0)])[0]["met"] is None


def test_break_even_is_explained():
    text = _break_even_line({"break_even": {"reference": "adam", "steps_to_match": 40, "horizon": 100,
                                            "meta_training_grad_evals": 10000,
                                            "baseline_family_grad_evals": 4000, "tasks": 200,
                                            "bound": "exactly"}})
    assert "after exactly 200 new tasks" in text and "40 steps" in text


def test_bad_arguments_are_config_errors(tmp_path, report):
    result, _ = report
    with pytest.raises(ConfigError, match="trials"):
        compare(result.data["artifact"], tmp_path, trials=0, progress=False)
    with pytest.raises(ConfigError, match="unknown baseline"):
        compare(result.data["artifact"], tmp_path, baselines=["adamw9"], tasks=2, progress=False)


def test_meta_training_cost_reads_the_manifest():
    from metaopt_tuner.compare import meta_training_cost
    from metaopt_tuner.learners import build_learner
    from metaopt_tuner.tasks import get_suite
    from metaopt_tuner.training import TrainConfig

    suite = get_suite("sinusoid", hidden=[4])
    learner = build_learner("metasgd", suite, inner_steps=2)
    config = TrainConfig(iterations=100, meta_batch=4, inner_steps=2).to_dict()
    art = Artifact.from_learner(learner, suite, config, {"iteration": 7},
                                provenance={"train_seconds": 3.5})
    cost = meta_training_cost(art)
    # taken mid-run, at iteration 7; Meta-SGD also adapts through the tail past the horizon
    assert cost["grad_evals"] == 7 * 4 * (2 + min(TAIL_STEPS, 2) + 1) and cost["seconds"] == 3.5
    bare = meta_training_cost(Artifact.from_learner(learner, suite, None))
    assert bare["grad_evals"] is None and bare["recorded"] is False


def test_a_prototype_head_artifact_is_compared_with_nearest_centroid(tmp_path):
    """The centroid row is the untrained prototype classifier: checked against one by hand."""
    from tests.test_intents import WORDS, make_csv

    data = make_csv(tmp_path / "d.csv", labels=WORDS, n=8)
    options = {"data_dir": str(data), "encoder": "tests.fake_encoder:encode", "ways": 3,
               "shots": 2, "query": 3, "val_fraction": 0.25, "test_fraction": 0.25}
    result = train(suite="intents", suite_options=options, learner="metasgd", iterations=2,
                   meta_batch=2, head_init="prototypes", eval_every=2, eval_tasks=2, log_every=2)
    art = Artifact.from_learner(result.learner, result.suite, result.config.to_dict())
    art.save(tmp_path / "artifact")
    report = compare(tmp_path / "artifact", tmp_path / "out", suite=result.suite, steps=2, tasks=6, trials=2,
                     val_tasks=3, oracle_tasks=0, baselines=["adam"], progress=False)
    centroid = report.method("nearest-centroid")
    assert centroid["kind"] == "reference" and centroid["tuning"]["trials"] == 0
    assert len(set(centroid["curve"]["metric_mean"])) == 1  # no steps: flat
    tasks = result.suite.fixed_tasks(6, split="test")
    hits = []
    for t in range(6):
        xs, ys, xq, yq = tasks.x_support[t], tasks.y_support[t], tasks.x_query[t], tasks.y_query[t]
        protos = torch.stack([xs[ys == c].mean(0) for c in range(3)])
        hits.append((torch.cdist(xq, protos).argmin(1) == yq).double().mean())
    assert centroid["metric"]["mean"] == pytest.approx(float(torch.stack(hits).mean()), abs=1e-5)
    assert "nearest-centroid" in (tmp_path / "out" / "report.md").read_text()


def test_the_curves_plot_names_methods_as_the_table_does_and_keeps_the_oracle_off_its_scale():
    """The committed sinusoid comparison (the docs' headline plot): the legend has readers' names,
    the oracle (455 at step 1) has no band and does not set the axis, and says where it leaves it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.collections import PolyCollection

    from metaopt_tuner.compare.report import curves_figure, method_title

    data = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results"
                       / "sinusoid-compare.json").read_text())
    fig = curves_figure(data)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:5] == ["meta-learned (Meta-SGD), no tuning", "Adam, random init, tuned",
                          "SGD+momentum, random init, tuned", "Adam, pretrained init, tuned",
                          "SGD+momentum, pretrained init, tuned"]
    assert legend[5] == ("oracle: Adam, lr tuned per test task on its query set (no band; above the "
                         "axis at steps 1-3, up to 455)")
    assert not {m["name"] for m in data["methods"]} & set(legend)  # no internal ids
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == len(data["methods"]) - 1  # every method's band but the oracle's
    bottom, top = ax.get_ylim()
    others = [m for m in data["methods"] if m["kind"] != "oracle"]
    assert top < 20 and top > max(v + c for m in others
                                  for v, c in zip(m["curve"]["loss_mean"], m["curve"]["loss_ci95"]))
    assert bottom < min(m["query_loss"]["mean"] for m in others)
    assert method_title({"label": "maml: meta-learned init", "kind": "meta"}) == \
        "meta-learned (MAML), no tuning"
    # the Benchmarks page's table uses the same names
    page = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    assert all(f"| {name} " in page for name in legend[:5])
