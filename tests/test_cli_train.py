"""`metaopt suites` and `metaopt train`: output, bad input -> one line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cli.app import main


def _run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _ok(capsys, *args):
    try:
        main(list(args))
    except SystemExit as exc:  # typer may exit 0 explicitly
        assert exc.code in (0, None), capsys.readouterr()
    return capsys.readouterr()


def test_suites_lists_sinusoid(capsys):
    assert "sinusoid" in _ok(capsys, "suites").out.split()


def test_train_help_explains_every_option(capsys):
    out = _ok(capsys, "train", "--help").out
    for option in ("--suite", "--learner", "--iterations", "--meta-batch", "--inner-steps", "--out",
                   "--resume", "--seed", "--device", "--batching", "--data-dir"):
        assert option in out


def test_train_with_a_cosine_schedule_logs_the_annealed_rate(tmp_path, capsys):
    out = tmp_path / "run"
    _ok(capsys, "train", "--out", str(out), "--iterations", "20", "--meta-batch", "4",
        "--eval-every", "10", "--eval-tasks", "5", "--log-every", "10", "--no-progress",
        "--meta-lr", "0.002", "--meta-lr-schedule", "cosine")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["meta_lr"] for r in records] == pytest.approx([1e-3, 0.0], abs=1e-12)
    assert json.loads((out / "run.json").read_text())["config"]["meta_lr_schedule"] == "cosine"


def test_train_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--iterations", "20", "--meta-batch", "4", "--eval-every", "10",
            "--eval-tasks", "5", "--no-progress", "-o", "shots=5"]
    assert "done: 20 iterations" in _ok(capsys, *args).out
    code, _, err = _run(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and "--resume" in err
    args[args.index("20")] = "30"
    assert "done: 30 iterations" in _ok(capsys, *args, "--resume").out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["iteration"] == 30


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--suite", "nope"], "unknown suite"),
        (["--learner", "adamw"], "unknown learner"),
        (["--iterations", "0"], "iterations must be a positive integer"),
        (["--meta-batch", "-3"], "meta-batch must be a positive integer"),
        (["--inner-steps", "0"], "inner-steps must be a positive integer"),
        (["-o", "shots=0"], "shots must be a positive integer"),
        (["-o", "colour=red"], "does not accept option(s) colour"),
        (["--head-init", "prototypes"], "has no prototype head"),
        (["--head-init", "centroids"], "head init must be one of"),
        (["--cuda-graph"], "--cuda-graph needs a CUDA device"),
        (["--tf32"], "--tf32 needs a CUDA device"),
        (["--compile", "--learner", "reptile"], "--compile needs a gradient-based learner"),
        (["--compile", "--batching", "loop"], "--compile needs batching"),
        (["--meta-lr-schedule", "step"], "meta-lr schedule must be one of constant, cosine"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    code, _, err = _run(capsys, "train", "--out", str(out), "--no-progress", *extra)
    assert code == 2
    assert err.strip().count("\n") == 0 and message in err
    assert not out.exists()


def test_out_that_is_not_a_run_or_not_writable(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("x")
    code, _, err = _run(capsys, "train", "--out", str(foreign), "--no-progress")
    assert code == 2 and "not a metaopt run" in err
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    code, _, err = _run(capsys, "train", "--out", str(a_file / "sub"), "--no-progress")
    assert code == 2 and "cannot write" in err and err.strip().count("\n") == 0


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cli", "train", "--out", str(tmp_path / "o"),
                           "--learner", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown learner 'nope'; available: fomaml, maml, metasgd, reptile"


@pytest.mark.parametrize(
    "extra, message",
    [(["--iterations", "abc"], "Invalid value for '--iterations'"),
     (["--threads", "0"], "Invalid value for '--threads'"),
     (["--bogus"], "No such option: --bogus")],
)
def test_usage_errors_exit_2_without_a_traceback(tmp_path, capsys, extra, message):
    code, _, err = _run(capsys, "train", "--out", str(tmp_path / "o"), *extra)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_missing_data_folder_is_reported_before_the_run_folder_is_created(tmp_path, capsys):
    out = tmp_path / "omni"
    code, _, err = _run(capsys, "train", "--suite", "omniglot", "--out", str(out), "--no-progress")
    assert code == 2 and "needs a data folder" in err and "Traceback" not in err
    assert not out.exists()


def test_wrongly_typed_suite_option_is_one_line(tmp_path, capsys):
    code, _, err = _run(capsys, "train", "--out", str(tmp_path / "o"), "-o", "shots=abc", "--no-progress")
    assert code == 2 and "invalid option value" in err and err.strip().count("\n") == 0


def test_show_config_prints_sources_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    text = _ok(capsys, "train", "--out", str(out), "--inner-steps", "3", "-o", "shots=5",
               "--show-config").out
    lines = {line.split("=")[0].strip(): line for line in text.splitlines()}
    assert lines["learner"].endswith("(recipe)") and lines["inner_steps"].endswith("3  (flag)")
    assert lines["meta_batch"].endswith("(default)") and lines["suite_options.shots"].endswith("(flag)")
    assert not out.exists()


def test_help_shows_the_common_options_first(capsys):
    out = _ok(capsys, "train", "--help").out
    advanced = out.index("Advanced")
    for option in ("--suite", "--data-dir", "--out", "--budget", "--iterations", "--resume",
                   "--show-config", "--threads"):
        assert out.index(option) < advanced, option
    for option in ("--learner", "--meta-batch", "--inner-lr", "--seed", "--suite-option"):
        assert out.index(option) > advanced, option


def test_run_json_records_the_sources(tmp_path, capsys):
    out = tmp_path / "run"
    _ok(capsys, "train", "--out", str(out), "--iterations", "3", "--meta-batch", "2",
        "--inner-steps", "2", "--eval-tasks", "2", "--no-progress", "-o", "hidden=[8]")
    sources = json.loads((out / "run.json").read_text())["sources"]
    assert sources["iterations"] == "flag" and sources["per_step_lrs"] == "recipe"
    assert sources["seed"] == "default" and sources["suite_options.hidden"] == "flag"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "5parsecs"], "cannot read the budget '5parsecs'"),
        (["--budget", "5s", "--iterations", "3"], "give --budget or --iterations, not both"),
        (["--suite", "a.b:C"], "cannot import suite 'a.b:C'"),
        (["--suite", "metaopt_tuner.models:MLP"], "is not a TaskSuite subclass"),
    ],
)
def test_bad_budget_or_suite_path_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    code, _, err = _run(capsys, "train", "--out", str(out), "--no-progress", *extra)
    assert code == 2 and err.strip().count("\n") == 0 and message in err, err
    assert not out.exists()


def test_a_user_suite_works_in_every_command(tmp_path, capsys):
    suite, out = "tests.helpers:TinyImageSuite", tmp_path / "run"
    _ok(capsys, "train", "--suite", suite, "--out", str(out), "--iterations", "2", "--meta-batch",
        "2", "--eval-tasks", "2", "--no-progress", "--threads", "1")
    artifact = str(out / "artifact")
    # the artifact names the suite as code: it is imported only with the user's trust
    code, _, err = _run(capsys, "evaluate", artifact, "--tasks", "3")
    assert code == 2 and "trust" in err
    data = json.loads(_ok(capsys, "evaluate", artifact, "--tasks", "3", "--json", "--threads", "1",
                          "--trust-factory").out)
    assert data["num_tasks"] == 3
    _ok(capsys, "tune", "--suite", suite, "--trials", "1", "--steps", "1", "--val-tasks", "2",
        "--threads", "1")
    _ok(capsys, "compare", "--artifact", artifact, "--suite", suite, "--out", str(tmp_path / "cmp"),
        "--trials", "1", "--steps", "1", "--tasks", "3", "--val-tasks", "2", "--oracle-tasks", "0",
        "--baselines", "adam", "--pretrain-steps", "1", "--no-progress", "--threads", "1",
        "--trust-factory")
    code, _, err = _run(capsys, "compare", "--artifact", artifact, "--suite", "a.b:C",
                        "--out", str(tmp_path / "c2"))
    assert code == 2 and "cannot import suite" in err and not (tmp_path / "c2").exists()


def test_train_counts_the_models_parameters_not_its_rates_for_threads(tmp_path, capsys):
    """A 161k-parameter MLP (under the one-thread bound) with as many learned rates runs on one
    thread: counting the rates too gave 2 threads, which on a busy 2-core machine made an
    Omniglot meta-iteration 40x slower."""
    import torch

    from metaopt_tuner.threads import SMALL_MODEL_PARAMETERS

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _ok(capsys, "train", "--suite", "sinusoid", "-o", "hidden=[400,400]", "--iterations", "1",
            "--inner-steps", "1", "--eval-tasks", "2", "--out", str(tmp_path / "r"), "--no-progress")
        assert 2 * 161_601 > SMALL_MODEL_PARAMETERS > 161_601
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
