"""``metaopt compare`` and ``metaopt tune`` as real processes: resume after SIGKILL, shared studies."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from cli.app import app, main

from .test_report import make_artifact

ROOT = Path(__file__).resolve().parents[1]
# short heartbeats: a re-run after SIGKILL waits one grace period for the killed trial, then retries
# it. The grace spans several beats, since a busy machine can delay a live worker's beat by seconds
# (with a 3-s grace the re-run once ran past its 300-s timeout at load average 8)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "METAOPT_HEARTBEAT_INTERVAL": "1",
       "METAOPT_GRACE_PERIOD": "8"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def _finished(db: Path) -> list[tuple[int, str, float | None]]:
    """(number, state, value) of every trial in a study database, read with plain sqlite3."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            return conn.execute(
                "SELECT t.number, t.state, v.value FROM trials t LEFT JOIN trial_values v "
                "ON v.trial_id = t.trial_id ORDER BY t.trial_id").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []


def _trials_by_study(url: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = optuna.storages.RDBStorage(url)
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials()
            for s in optuna.get_all_study_summaries(storage)}


def test_compare_resumes_after_sigkill_and_keeps_finished_trials(tmp_path):
    art = make_artifact(tmp_path / "artifact")
    out = tmp_path / "out"
    args = _cli("compare", "--suite", "sinusoid", "--artifact", str(art), "--trials", "12", "--steps", "3",
                "--tasks", "10", "--val-tasks", "6", "--oracle-tasks", "0", "--baselines", "adam",
                "--out", str(out), "--no-progress")
    proc = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    db = out / "studies.db"
    deadline = time.monotonic() + 120
    try:
        while sum(state == "COMPLETE" for _, state, _ in _finished(db)) < 2:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.05)
        assert proc.poll() is None  # still tuning
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "report.md").exists()
    url = f"sqlite:///{db}"
    before = {name: {t.number: (t.params, t.value) for t in trials if t.state.is_finished()
                     and t.state != optuna.trial.TrialState.FAIL}
              for name, trials in _trials_by_study(url).items()}
    kept = sum(len(v) for v in before.values())
    assert kept >= 2

    rerun = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = _trials_by_study(url)
    for name, trials in before.items():
        now = {t.number: (t.params, t.value) for t in after[name]}
        assert all(now[n] == v for n, v in trials.items())  # every finished trial kept unchanged
    data = json.loads((out / "results.json").read_text())
    m = next(x for x in data["methods"] if x["name"] == "adam")
    assert m["tuning"]["trials"] == 12  # finished trials of both runs together, none redone
    study = after[m["tuning"]["study"]]
    finished = [t for t in study if t.state in (optuna.trial.TrialState.COMPLETE,
                                                optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 12 and {t.number for t in finished} >= set(before[m["tuning"]["study"]])
    assert (out / "report.md").is_file() and (out / "report.html").is_file()


def test_two_tune_processes_share_one_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    args = _cli("tune", "--suite", "sinusoid", "--optimizer", "adam", "--trials", "8", "--steps", "3",
                "--val-tasks", "6", "--storage", url, "--study-name", "shared", "--json")
    procs = [subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr
    reports = [json.loads(stdout) for stdout, _ in outputs]
    trials = _trials_by_study(url)["shared"]
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # every trial recorded once
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
               for t in trials)
    assert 8 <= len(trials) <= 9  # the two workers stop together (one may be mid-trial)
    ran = [set(r["new_trials"]) for r in reports]
    assert ran[0].isdisjoint(ran[1]) and ran[0] | ran[1] == set(numbers)  # none lost, none twice
    assert all(r["trials"] >= 8 for r in reports)


def test_tune_prints_the_best_configuration(tmp_path):
    url = f"sqlite:///{tmp_path / 'one.db'}"
    result = CliRunner().invoke(app, ["tune", "--optimizer", "sgd", "--trials", "3", "--steps", "2",
                                      "--val-tasks", "4", "--storage", url])
    assert result.exit_code == 0, result.output
    assert "best SGD+momentum" in result.output and "lr=" in result.output and "momentum=" in result.output
    again = CliRunner().invoke(app, ["tune", "--optimizer", "sgd", "--trials", "3", "--steps", "2",
                                     "--val-tasks", "4", "--storage", url])
    assert "3 finished trials" in again.output and "0 run now" in again.output


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--optimizer", "adamw9", "--trials", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown baseline") and "\n" not in err
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--artifact", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "no artifact" in capsys.readouterr().err
