"""Nothing a user has is overwritten, and no input is silently taken to mean something else."""

from __future__ import annotations

import pytest

from .helpers import run_cli

_COMPARE = ["--trials", "1", "--steps", "1", "--tasks", "3", "--val-tasks", "2", "--oracle-tasks",
            "0", "--baselines", "adam", "--pretrain-steps", "1", "--no-progress", "--threads", "1"]


def test_compare_refuses_a_foreign_folder_and_resumes_its_own(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "report.md").write_text("my notes")
    code, _, err = run_cli(capsys, "compare", "--artifact", "sinusoid", "--out", str(foreign), *_COMPARE)
    assert code == 2 and "not a metaopt comparison" in err
    assert (foreign / "report.md").read_text() == "my notes"
    ours = tmp_path / "cmp"
    for _ in range(2):  # the second run takes its own folder back
        code, _, err = run_cli(capsys, "compare", "--artifact", "sinusoid", "--out", str(ours), *_COMPARE)
        assert code == 0, err


@pytest.mark.parametrize("args, fragment", [
    (["--seed", "99999999999999999999999"], "seed"),
    (["--device", "meta"], "device"),
    (["--suite", ""], "suite"),
])
def test_train_inputs_that_cannot_mean_anything_are_one_line(tmp_path, capsys, args, fragment):
    code, _, err = run_cli(capsys, "train", "--out", str(tmp_path / "r"), "--iterations", "1",
                           "--no-progress", *args)
    assert code == 2 and fragment in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_an_unparsable_tracking_uri_is_one_line_before_any_work(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--out", str(tmp_path / "r"), "--iterations", "1",
                           "--no-progress", "--tracking-uri", "http://[::1")
    assert code == 2 and "is not an MLflow tracking URI" in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_an_artifact_name_longer_than_the_file_system_allows_is_one_line(capsys):
    code, _, err = run_cli(capsys, "evaluate", "a" * 300, "--tasks", "1")
    assert code == 2 and "cannot read artifact" in err and err.count("\n") == 1, err


def test_a_csv_field_over_the_csv_limit_is_one_line(tmp_path, capsys):
    import csv

    data = tmp_path / "intents.csv"
    with open(data, "w", newline="") as fh:
        rows = [("text", "label"), ("x" * 200_000, "a")]
        rows += [(f"utterance {i}", f"c{i % 4}") for i in range(40)]
        csv.writer(fh).writerows(rows)
    code, _, err = run_cli(capsys, "train", "--suite", "intents", "--data-dir", str(data),
                           "--iterations", "1", "--no-progress", "--out", str(tmp_path / "r"))
    assert code == 2 and "near line 2, not readable as CSV" in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_a_run_whose_every_meta_batch_was_skipped_fails_and_writes_no_artifact(tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = run_cli(capsys, "train", "--out", str(out), "--iterations", "3", "--inner-lr",
                           "1e30", "--no-progress", "--threads", "1")
    assert code == 1 and "no artifact is written" in err, err
    assert not (out / "artifact").exists()


def test_json_files_hold_no_bare_nan(tmp_path):
    import json
    import math

    from metaopt_tuner.artifact import MANIFEST, load_artifact, pretrained

    art = pretrained("sinusoid")
    art.manifest["metrics"] = {"val_mse": math.nan, "curve": [1.0, math.inf]}
    art.save(tmp_path / "a")
    text = (tmp_path / "a" / MANIFEST).read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert load_artifact(tmp_path / "a").metrics == {"val_mse": None, "curve": [1.0, None]}


def test_an_empty_encoder_name_is_an_error(tmp_path):
    from metaopt_tuner.errors import ConfigError
    from metaopt_tuner.tasks import get_suite

    from .test_intents import make_csv

    with pytest.raises(ConfigError, match="encoder is empty"):
        get_suite("intents", data_dir=str(make_csv(tmp_path / "d.csv")), encoder="")


def test_a_support_normalized_convnet_in_eval_mode_needs_its_support_set():
    import torch

    from metaopt_tuner.errors import ConfigError
    from metaopt_tuner.models import ConvNet

    torch.manual_seed(0)
    model = ConvNet(num_classes=3, filters=4, blocks=2, image_size=8).double().eval()
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ConfigError, match="set_reference"):
        model(x[:1])
    model.set_reference(x[:3])
    alone, together = model(x[3:4]), model(x[3:])[:1]
    assert torch.allclose(alone, together)  # one image alone = the same image in a batch


def test_options_that_contradict_the_artifacts_model_are_one_line(tmp_path, capsys):
    """``-o buckets=100`` at evaluate would hash texts into other features than the model's."""
    import torch

    from metaopt_tuner.artifact import Artifact
    from metaopt_tuner.errors import ConfigError
    from metaopt_tuner.learners import build_learner
    from metaopt_tuner.tasks import get_suite

    from .test_intents import make_clinc

    root = make_clinc(tmp_path / "clinc")
    suite = get_suite("intents", data_dir=str(root), ways=3, shots=1, query=2, buckets=512)
    torch.manual_seed(0)
    art = Artifact.from_learner(build_learner("metasgd", suite, inner_steps=1), suite)
    path = art.save(tmp_path / "a")
    for option, fragment in (("buckets=100", "buckets=512"), ("word_ngrams=[1]", "word_ngrams=[1, 2]")):
        code, out, err = run_cli(capsys, "evaluate", str(path), "--data-dir", str(root), "--tasks", "2",
                                 "-o", option)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert fragment in err and "leave" in err
    with pytest.raises(ConfigError, match="trained with buckets=512"):
        art.build_suite(data_dir=str(root), buckets=100)
    # the same values as recorded, and options that do not define the model, are fine
    code, _, err = run_cli(capsys, "evaluate", str(path), "--data-dir", str(root), "--tasks", "2",
                           "-o", "buckets=512", "-o", "query=1", "-o", "word_ngrams=[1, 2]")
    assert code == 0, err
    sinusoid = Artifact.from_learner(*_sinusoid_learner())
    with pytest.raises(ConfigError, match="hidden"):
        sinusoid.build_suite(hidden=[4])


def _sinusoid_learner():
    from .helpers import small_metasgd

    learner, suite = small_metasgd()
    return learner, suite


@pytest.mark.parametrize("body, kind", [("raise RuntimeError('no data here')", "RuntimeError"),
                                        ("None + 1", "TypeError")])
def test_a_user_suite_whose_constructor_raises_is_one_line_naming_its_code(tmp_path, capsys,
                                                                           monkeypatch, body, kind):
    """An error inside a user's suite is reported as the constructor's, not blamed on the
    options (a TypeError there used to read "invalid option value"), and never a traceback."""
    module = f"my_raising_suite_{kind.lower()}"  # one module per case: imports are cached
    (tmp_path / f"{module}.py").write_text(
        "from metaopt_tuner.tasks.sinusoid import SinusoidSuite\n\n\n"
        "class Broken(SinusoidSuite):\n"
        "    def __init__(self, **options):\n"
        f"        {body}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run_cli(capsys, "train", "--suite", f"{module}:Broken", "--iterations",
                           "1", "--no-progress", "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1, err
    assert f"its constructor raised {kind}" in err and "invalid option value" not in err
    assert not (tmp_path / "r").exists()
