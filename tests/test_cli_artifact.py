"""`metaopt evaluate` and `metaopt inspect`: tables, JSON, and one line + exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from metaopt_tuner.artifact import FORMAT_VERSION, MANIFEST, TENSORS, Artifact

from .helpers import run_cli as _run
from .helpers import small_metasgd


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory):
    learner, suite = small_metasgd(steps=2)
    return Artifact.from_learner(learner, suite, None, {"val_mse": 2.5}).save(
        tmp_path_factory.mktemp("cli") / "art")


def _bad_paths(tmp_path, artifact_dir):
    missing = tmp_path / "missing"
    not_artifact = tmp_path / "folder"
    not_artifact.mkdir()
    (not_artifact / "notes.txt").write_text("hello")
    corrupted = tmp_path / "corrupted"
    corrupted.mkdir()
    (corrupted / MANIFEST).write_bytes((artifact_dir / MANIFEST).read_bytes())
    data = bytearray((artifact_dir / TENSORS).read_bytes())
    data[-5] ^= 0xFF
    (corrupted / TENSORS).write_bytes(bytes(data))
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / MANIFEST).write_bytes((artifact_dir / MANIFEST).read_bytes()[:100])
    (truncated / TENSORS).write_bytes((artifact_dir / TENSORS).read_bytes())
    return {
        "missing": (missing, "does not exist"),
        "not-artifact": (not_artifact, "not a metaopt artifact"),
        "corrupted": (corrupted, "checksum"),
        "truncated": (truncated, "not valid JSON"),
    }


@pytest.mark.parametrize("command", ["evaluate", "inspect"])
@pytest.mark.parametrize("case", ["missing", "not-artifact", "corrupted", "truncated"])
def test_bad_artifact_is_one_line_and_exit_2(tmp_path, artifact_dir, capsys, command, case):
    path, fragment = _bad_paths(tmp_path, artifact_dir)[case]
    code, out, err = _run(capsys, command, str(path))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err
    assert "Traceback" not in err and out == ""


def test_bad_artifact_exit_code_through_the_console_script(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cli", "evaluate", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr


def test_evaluate_prints_a_table(artifact_dir, capsys):
    code, out, err = _run(capsys, "evaluate", str(artifact_dir), "--tasks", "12", "--steps", "3")
    assert code == 0, err
    assert "12 test tasks of sinusoid" in out and "query mse" in out
    rows = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert rows == ["0", "1", "2", "3"]


def test_evaluate_json_and_suite_options(artifact_dir, capsys):
    code, out, err = _run(capsys, "evaluate", str(artifact_dir), "--tasks", "8", "--steps", "1",
                          "--json", "-o", "shots=3", "--seed", "4")
    assert code == 0, err
    data = json.loads(out)
    assert data["num_tasks"] == 8 and data["steps"] == 1 and data["seed"] == 4
    assert len(data["metric_mean"]) == 2 and len(data["loss_ci"]) == 2


def test_evaluate_rejects_bad_options(artifact_dir, capsys):
    code, _, err = _run(capsys, "evaluate", str(artifact_dir), "--tasks", "0")
    assert code == 2 and "number of tasks" in err and err.count("\n") == 1
    code, _, err = _run(capsys, "evaluate", str(artifact_dir), "-o", "colour=3")
    assert code == 2 and "colour" in err and err.count("\n") == 1


def test_inspect_prints_manifest_and_rate_stats(artifact_dir, capsys):
    code, out, err = _run(capsys, "inspect", str(artifact_dir))
    assert code == 0, err
    for fragment in (f"metaopt-tuner/artifact v{FORMAT_VERSION}",
                     "mlp(sizes=[1, 8, 1])", "sinusoid", "metasgd",
                     "val_mse=2.5", "layers.0.weight", "step 0", "step 1"):
        assert fragment in out, fragment
    code, out, err = _run(capsys, "inspect", str(artifact_dir), "--json")
    data = json.loads(out)
    stats = {s["name"]: s for s in data["rates"]}
    assert len(stats["layers.1.bias"]["median"]) == 2
    assert all(lo <= mid <= hi for s in stats.values()
               for lo, mid, hi in zip(s["min"], s["median"], s["max"]))


def test_pretrained_name_works_on_the_command_line(capsys):
    code, out, err = _run(capsys, "evaluate", "sinusoid", "--tasks", "10", "--json")
    assert code == 0, err
    assert json.loads(out)["num_tasks"] == 10
