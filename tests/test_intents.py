"""The intents suite: CLINC150 JSON and CSV loading, class/domain splits, episodes, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.app import app, main
from metaopt_tuner.errors import ConfigError, DataError
from metaopt_tuner.learners import build_learner
from metaopt_tuner.models.text import PAD_ID
from metaopt_tuner.tasks import get_suite, list_suites
from metaopt_tuner.tasks.intents import IntentSuite, load_intent_data
from metaopt_tuner.training import train

# Each intent has its own keyword, so a meta-learned model can solve the toy tasks.
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima"]
FILLER = ["please", "now", "could you", "tell me about", "i need", "quickly"]


def _utterances(intent: str, n: int) -> list[str]:
    return [f"{FILLER[i % len(FILLER)]} {intent} number {i}" for i in range(n)]


def make_csv(path: Path, labels: list[str] = WORDS[:8], n: int = 6, label_column: str = "label") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", label_column])
        for label in labels:
            for i, text in enumerate(_utterances(label, n)):
                writer.writerow([i, text, label])
    return path


def make_clinc(root: Path, n: int = 6, oos: int = 5) -> Path:
    """Four domains of three intents; utterances spread over train/val/test like CLINC150."""
    domains = {f"dom{d}": WORDS[3 * d:3 * d + 3] for d in range(4)}
    data: dict[str, list[list[str]]] = {"train": [], "val": [], "test": []}
    for intents in domains.values():
        for intent in intents:
            for i, text in enumerate(_utterances(intent, n)):
                data[("train", "val", "test")[i % 3]].append([text, intent])
    data["oos_train"] = [[f"something else {i}", "oos"] for i in range(oos)]
    data["oos_test"] = [[f"nothing known {i}", "oos"] for i in range(oos)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "data_full.json").write_text(json.dumps(data))
    (root / "domains.json").write_text(json.dumps(domains))
    return root


def _suite(root: Path, **options) -> IntentSuite:
    options.setdefault("ways", 3)
    options.setdefault("shots", 1)
    options.setdefault("query", 2)
    options.setdefault("buckets", 512)
    return get_suite("intents", data_dir=str(root), **options)


def _classes_of(suite: IntentSuite, x: torch.Tensor) -> set[str]:
    """The labels of the dataset rows whose ids equal the episode's rows."""
    found = set()
    for row in x.reshape(-1, x.shape[-1]):
        width = row.shape[0]
        hits = (suite.token_ids[:, :width] == row).all(1) & (suite.token_ids[:, width:] == PAD_ID).all(1)
        found |= {suite.data.labels[i] for i in hits.nonzero().flatten().tolist()}
    return found


# ------------------------------------------------------------------------------------- loading


def test_registered() -> None:
    assert "intents" in list_suites()


def test_clinc_domain_split_and_oos(tmp_path: Path) -> None:
    root = make_clinc(tmp_path / "clinc")
    suite = _suite(root, train_domains="dom0,dom1", val_domains=["dom2"], test_domains=["dom3"])
    assert suite.split_classes == {"train": WORDS[0:6], "val": WORDS[6:9], "test": WORDS[9:12]}
    assert suite.split_domains() == {"train": ["dom0", "dom1"], "val": ["dom2"], "test": ["dom3"]}
    assert "oos" not in suite.data.labels and len(suite.data.labels) == 12 * 6
    with_oos = _suite(root, include_oos=True, train_domains="dom0,dom1", val_domains=["dom2"],
                      test_domains=["dom3"])
    assert with_oos.data.labels.count("oos") == 10 and "oos" in with_oos.split_classes["train"]
    # The remaining domains go to train when only val and test are named.
    rest = _suite(root, val_domains=["dom2"], test_domains=["dom3"])
    assert rest.split_classes["train"] == WORDS[0:6]


def test_seeded_split_is_disjoint_and_reproducible(tmp_path: Path) -> None:
    root = make_clinc(tmp_path / "clinc")
    a = _suite(root, split_seed=3)
    b = _suite(root, split_seed=3)
    assert a.split_classes == b.split_classes
    doms = a.split_domains()
    assert sorted(sum(doms.values(), [])) == ["dom0", "dom1", "dom2", "dom3"]
    assert all(len(doms[s]) == 1 for s in ("val", "test"))
    by_class = _suite(root, split_by="class", ways=2, val_fraction=0.2, test_fraction=0.3)
    sets = [set(by_class.split_classes[s]) for s in ("train", "val", "test")]
    assert sum(map(len, sets)) == 12 and not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_csv_with_category_column(tmp_path: Path) -> None:
    path = make_csv(tmp_path / "d.csv", label_column="category")
    suite = _suite(tmp_path, val_fraction=0.0, test_fraction=0.4)  # the folder's single CSV
    assert suite.data.source == path and len(set(suite.data.labels)) == 8
    assert len(suite.split_classes["test"]) == 3 and suite.split_classes["val"] == []
    with pytest.raises(ConfigError, match="val split has no classes"):
        suite.sample(2, torch.Generator(), split="val")
    custom = tmp_path / "custom"
    custom.mkdir()
    with open(custom / "c.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["utterance", "intent_name"], *[[t, w] for w in WORDS[:6]
                                                                    for t in _utterances(w, 4)]])
    suite = _suite(custom / "c.csv", text_column="utterance", label_column="intent_name",
                   test_classes=WORDS[:3], val_fraction=0.0)
    assert suite.split_classes["test"] == WORDS[:3] and sorted(suite.split_classes["train"]) == WORDS[3:6]


# -------------------------------------------------------------------------------------- errors


def test_csv_missing_column_names_file_and_header(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("utterance,label\nhello,greet\n")
    with pytest.raises(DataError, match=r"bad\.csv: the header \(line 1\) has no column 'text'"):
        load_intent_data(path)


def test_csv_empty_text_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("text,label\nhello there,greet\n   ,greet\n")
    with pytest.raises(DataError, match=r"empty\.csv: line 3 \(row 2\) has an empty text"):
        load_intent_data(path)


def test_non_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nhello,greet\ncaf\u00e9 au lait,order\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv: line 3 is not valid UTF-8"):
        load_intent_data(path)
    bad_json = make_clinc(tmp_path / "j") / "data_full.json"
    bad_json.write_bytes(b'{"train": [["ok", "x"]]}\n\xff')
    with pytest.raises(DataError, match=r"data_full\.json: line 2 is not valid UTF-8"):
        load_intent_data(bad_json.parent)


def test_label_with_too_few_examples_is_named(tmp_path: Path) -> None:
    path = make_csv(tmp_path / "d.csv", n=3)
    with pytest.raises(DataError, match=r"d\.csv: label '\w+' has 3 examples, fewer than shots \+ query = 4"):
        _suite(path, shots=2, query=2, val_fraction=0.0, test_fraction=0.4)
    assert _suite(path, shots=1, query=2, val_fraction=0.0, test_fraction=0.4).shots == 1


def test_clinc_errors(tmp_path: Path) -> None:
    root = make_clinc(tmp_path / "c")
    data = json.loads((root / "data_full.json").read_text())
    data["val"][4] = ["  ", data["val"][4][1]]
    (root / "data_full.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"data_full\.json: val\[4\] has an empty utterance"):
        load_intent_data(root)
    with pytest.raises(DataError, match="does not exist"):
        load_intent_data(tmp_path / "nowhere")
    with pytest.raises(DataError, match="--data-dir"):
        get_suite("intents")
    root = make_clinc(tmp_path / "d")
    with pytest.raises(ConfigError, match="test domain"):
        _suite(root, test_domains=["nope"])
    with pytest.raises(ConfigError, match="both the val and test"):
        _suite(root, val_domains=["dom1"], test_domains=["dom1"])
    narrow = _suite(root, ways=4)  # a split too narrow is an error where it is used
    assert len(narrow.split_classes["train"]) == 6
    narrow.sample(1, torch.Generator().manual_seed(0), "train")
    for split in ("val", "test"):
        with pytest.raises(ConfigError, match=f"the {split} split has 3 classes, fewer than ways=4"):
            narrow.sample(1, torch.Generator().manual_seed(0), split)


def test_the_test_split_is_evaluated_at_widths_the_other_splits_cannot_hold(tmp_path: Path) -> None:
    from metaopt_tuner.artifact import Artifact, load_artifact
    from metaopt_tuner.evaluation import suite_for_split

    root = make_clinc(tmp_path / "d")
    splits = {"train_domains": "dom0", "val_domains": ["dom1"], "test_domains": ["dom2", "dom3"]}
    suite = _suite(root, **splits)
    learner = build_learner("metasgd", suite, inner_steps=1)
    Artifact.from_learner(learner, suite).save(tmp_path / "art")
    # the suite an evaluation builds: 6-way test episodes, with a 3-class validation split
    wide = suite_for_split(load_artifact(tmp_path / "art"), "test", data_dir=str(root), ways=6)
    batch = wide.sample(2, torch.Generator().manual_seed(0), "test")
    assert batch.y_support.shape[-1] == 6 and wide.split_summary("test")["num_classes"] == 6
    assert _classes_of(wide, batch.x_support) == set(WORDS[6:12])  # dom2 and dom3


def test_option_errors(tmp_path: Path) -> None:
    path = make_csv(tmp_path / "d.csv")
    with pytest.raises(DataError, match="has no domains.json"):
        _suite(path, split_by="domain")
    with pytest.raises(ConfigError, match="gate_init"):
        _suite(path, gate_init="zeros", test_fraction=0.4, val_fraction=0.0)
    with pytest.raises(ConfigError, match="shots must be a positive integer"):
        _suite(path, shots=0)
    with pytest.raises(ConfigError, match="unknown split"):
        _suite(path, test_fraction=0.4, val_fraction=0.0).sample(1, torch.Generator(), split="dev")


def test_train_idf_and_idf_initialized_gate(tmp_path: Path) -> None:
    root = make_clinc(tmp_path / "c")
    suite = _suite(root, val_domains=["dom2"], test_domains=["dom3"])
    idf = suite.train_idf()
    ids, labels = suite.examples("train")
    assert set(labels) == set(WORDS[:6]) and ids.shape[0] == 36
    everywhere = suite.featurizer.ids("number")[0]  # in every utterance
    nowhere = suite.featurizer.ids("lima")[0]  # a test intent's keyword
    assert idf[everywhere] == pytest.approx(1.0, abs=0.05) and idf[nowhere] == idf.max() > 3
    torch.testing.assert_close(suite.build_model().gate.detach(), idf)
    assert (_suite(root, gate_init="ones").build_model().gate == 1).all()


# ------------------------------------------------------------------------------------- episodes


def test_episodes_shapes_labels_classes(tmp_path: Path) -> None:
    root = make_clinc(tmp_path / "clinc")
    suite = _suite(root, train_domains="dom0,dom1", val_domains=["dom2"], test_domains=["dom3"],
                   ways=3, shots=2, query=3)
    batch = suite.sample(4, torch.Generator().manual_seed(0), split="train")
    assert batch.x_support.shape[:2] == (4, 6) and batch.x_query.shape[:2] == (4, 9)
    assert batch.x_support.dtype == torch.long
    assert batch.y_support[0].tolist() == [0, 0, 1, 1, 2, 2]
    assert batch.y_query[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for t in range(4):
        support = [tuple(r.tolist()) for r in batch.x_support[t]]
        query = [tuple(r.tolist()) for r in batch.x_query[t]]
        assert len(set(support)) == 6 and len(set(query)) == 9
        for c in range(3):  # the support and query of one label come from one class
            s_cls = _classes_of(suite, batch.x_support[t][batch.y_support[t] == c])
            q_cls = _classes_of(suite, batch.x_query[t][batch.y_query[t] == c])
            assert len(s_cls) == 1 and s_cls == q_cls and s_cls <= set(WORDS[:6])
    test = suite.sample(3, torch.Generator().manual_seed(0), split="test")
    assert _classes_of(suite, test.x_query) <= set(WORDS[9:12])
    # The generator alone decides the tasks; fixed tasks are the same on every call.
    again = suite.sample(4, torch.Generator().manual_seed(0), split="train")
    assert torch.equal(batch.x_support, again.x_support) and torch.equal(batch.x_query, again.x_query)
    f1, f2 = suite.fixed_tasks(5, "val", seed=1), suite.fixed_tasks(5, "val", seed=1)
    assert torch.equal(f1.x_query, f2.x_query)
    assert not torch.equal(f1.x_query, suite.fixed_tasks(5, "val", seed=2).x_query)
    # options() rebuilds an identical suite.
    rebuilt = get_suite("intents", **json.loads(json.dumps(suite.options())))
    assert torch.equal(rebuilt.fixed_tasks(5, "test").x_support, suite.fixed_tasks(5, "test").x_support)


def test_fixed_episode_texts_are_the_fixed_tasks(tmp_path: Path) -> None:
    """Methods that read text (SetFit) see the very episodes the features' methods see."""
    suite = _suite(make_csv(tmp_path / "d.csv", labels=WORDS[:10], n=8), val_fraction=0.0,
                   test_fraction=0.4, ways=3, shots=2, query=3)
    tasks = suite.fixed_tasks(4, "test", seed=3)
    episodes = suite.fixed_episode_texts(4, "test", seed=3)
    assert len(episodes) == 4
    for t, episode in enumerate(episodes):
        assert episode.support_labels == tasks.y_support[t].tolist()
        assert episode.query_labels == tasks.y_query[t].tolist()
        for texts, x in ((episode.support_texts, tasks.x_support[t]),
                         (episode.query_texts, tasks.x_query[t])):
            rows = [suite.data.texts.index(text) for text in texts]
            expected = suite.token_ids[rows][:, : x.shape[-1]]
            assert torch.equal(expected, x)
    assert episodes[0] != suite.fixed_episode_texts(4, "test", seed=4)[0]
    with pytest.raises(ConfigError, match="unknown split"):
        suite.fixed_episode_texts(1, "nope")


def test_loss_and_metric_per_example(tmp_path: Path) -> None:
    suite = _suite(make_csv(tmp_path / "d.csv"), val_fraction=0.0, test_fraction=0.4)
    pred = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]])
    y = torch.tensor([[0, 1]])
    assert suite.loss_per_example(pred, y).shape == (1, 2)
    assert suite.metric_per_example(pred, y).tolist() == [[1.0, 0.0]]


def test_batching_paths_give_the_same_meta_gradient(tmp_path: Path) -> None:
    suite = _suite(make_clinc(tmp_path / "c"), val_domains=["dom2"], test_domains=["dom3"],
                   embed_dim=4, hidden=[3], buckets=64)
    batch = suite.sample(2, torch.Generator().manual_seed(0))
    grads = {}
    for mode in ("batched", "vmap", "loop"):
        torch.manual_seed(0)
        learner = build_learner("metasgd", suite, inner_steps=2, inner_lr=0.3, batching=mode).double()
        grads[mode] = learner.meta_gradient(batch).grads
    for mode in ("vmap", "loop"):
        for name, g in grads["batched"].items():
            torch.testing.assert_close(grads[mode][name], g, msg=f"{mode} {name}")


def test_meta_training_learns_the_toy_intents(tmp_path: Path) -> None:
    # Intents differ by one keyword among filler words shared by every intent: plain n-gram
    # overlap is fooled by the filler; meta-training learns to down-weight it on other domains.
    root = make_clinc(tmp_path / "c", n=9)
    options = {"data_dir": str(root), "ways": 3, "shots": 1, "query": 3, "buckets": 512,
               "val_domains": ["dom2"], "test_domains": ["dom3"], "embed_dim": 0, "gate_init": "ones"}
    suite = get_suite("intents", **options)
    tasks = suite.fixed_tasks(20, "test")
    torch.manual_seed(0)
    before = build_learner("metasgd", suite, inner_lr=0.5).adaptation_curve(tasks, 2).metric[:, -1]
    # learned rates move in log space (relative steps): two inner steps, 60 iterations
    result = train(suite="intents", suite_options=options, learner="metasgd", iterations=60,
                   inner_steps=2, meta_batch=4, inner_lr=0.5, meta_lr=0.1, rates_meta_lr=0.1,
                   eval_every=60, eval_tasks=20, log_every=10)
    after = result.learner.adaptation_curve(tasks, 2).metric[:, -1]
    assert before.mean() < 0.85 and after.mean() > max(0.9, before.mean() + 0.08), (before.mean(),
                                                                                   after.mean())


def test_cli_train(tmp_path: Path, capsys) -> None:
    root = make_clinc(tmp_path / "c")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--suite", "intents", "--data-dir", str(root), "-o", "ways=3", "-o", "query=2",
        "-o", "buckets=256", "-o", 'test_domains=["dom3"]', "-o", "val_domains=dom2",
        "--iterations", "3", "--meta-batch", "2", "--eval-every", "3", "--eval-tasks", "4",
        "--out", str(out), "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    assert "held-out accuracy" in result.output
    with pytest.raises(SystemExit) as exc:
        main(["train", "--suite", "intents", "--data-dir", str(tmp_path / "x"),
              "--out", str(tmp_path / "r2"), "--no-progress"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "does not exist" in err and err.count("\n") == 1


def _tiny_three_way_run(tmp_path: Path) -> Path:
    """A 3-way intents run of two iterations on the toy CLINC tree (dom3 for test): its folder."""
    root = make_clinc(tmp_path / "c")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--suite", "intents", "--data-dir", str(root), "-o", "ways=3", "-o", "query=2",
        "-o", "buckets=256", "-o", 'test_domains=["dom3"]', "-o", "val_domains=dom2",
        "--iterations", "2", "--meta-batch", "2", "--eval-tasks", "2", "--out", str(out),
        "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    return out


def test_evaluate_split_all_uses_every_class_of_new_data(tmp_path: Path, capsys) -> None:
    out = _tiny_three_way_run(tmp_path)
    new = make_csv(tmp_path / "new.csv", labels=WORDS, n=6)  # 12 classes, no domains
    args = ["evaluate", str(out / "artifact"), "--data-dir", str(new), "--tasks", "5"]
    shown = CliRunner().invoke(app, [*args, "--split", "all"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0] == f"12 classes, 72 examples from the all split of {new}"
    data = json.loads(CliRunner().invoke(app, [*args, "--split", "all", "--json"]).output)
    assert data["num_classes"] == 12 and data["num_examples"] == 72 and data["split"] == "all"
    # the default test split holds out a share of the classes, and says so
    test = json.loads(CliRunner().invoke(app, [*args, "-o", "val_fraction=0", "--json"]).output)
    assert test["num_classes"] == 4 and test["split"] == "test"


def test_evaluate_split_all_on_an_eight_class_csv_uses_all_eight(tmp_path: Path, capsys) -> None:
    """The default split would hold out 2 of 8 classes for testing, fewer than the ways a
    user may ask: ``--split all`` splits nothing off."""
    out = _tiny_three_way_run(tmp_path)
    new = make_csv(tmp_path / "eight.csv", labels=WORDS[:8], n=6)
    args = ["evaluate", str(out / "artifact"), "--data-dir", str(new), "--tasks", "3",
            "--split", "all", "--json"]
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["num_classes"] == 8 and data["num_examples"] == 48
    # the bag-of-n-grams model has one weight row per class: another width is one clear error
    with pytest.raises(SystemExit) as exc:
        main([*args, "-o", "ways=5"])
    assert exc.value.code == 2 and "fixed number of classes (3)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_clinc150_when_present(shared_data: Path | None) -> None:
    if shared_data is None or not (shared_data / "clinc150" / "data_full.json").is_file():
        pytest.skip("../shared/data/clinc150 is not here")
    suite = get_suite("intents", data_dir=str(shared_data / "clinc150"), val_domains=["utility"],
                      test_domains=["work", "small_talk", "meta"])
    assert len(set(suite.data.labels)) == 150 and len(suite.data.labels) == 150 * 150
    assert {s: len(c) for s, c in suite.split_classes.items()} == {"train": 90, "val": 15, "test": 45}
    batch = suite.fixed_tasks(2, "test")
    assert batch.x_support.shape[:2] == (2, 5) and batch.x_query.shape[:2] == (2, 75)


@pytest.mark.slow
def test_benchmark_quick_run(shared_data: Path | None, tmp_path: Path) -> None:
    if shared_data is None or not (shared_data / "clinc150" / "data_full.json").is_file():
        pytest.skip("../shared/data/clinc150 is not here")
    from .helpers import load_benchmark

    module = load_benchmark("intents_clinc")
    out = tmp_path / "rows.json"
    module.main(["--quick", "--shots", "1", "--learners", "metasgd", "--baselines", "adam",
                 "--data-dir", str(shared_data / "clinc150"), "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    methods = [r["method"] for r in rows]
    assert methods[0].startswith("nearest centroid") and "metasgd" in methods
    assert all(0.2 < r["accuracy"] <= 1.0 for r in rows)
