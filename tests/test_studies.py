"""Shared Optuna studies: exact trial counts across worker processes, dead workers retried.

PostgreSQL tests (marker ``postgres``) need a server: ``.ci/run`` starts one
(``scripts/start_postgres.sh``), exports ``METAOPT_TEST_POSTGRES_URL`` and runs them with
``METAOPT_REQUIRE_POSTGRES=1``; without a server they skip, saying so.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from metaopt_tuner.compare import studies
from metaopt_tuner.errors import ConfigError, StudyStorageError

optuna.logging.set_verbosity(optuna.logging.WARNING)
PG_ENV = "METAOPT_TEST_POSTGRES_URL"


@pytest.fixture(scope="module")
def postgres_url() -> str:
    url = os.environ.get(PG_ENV)
    required = os.environ.get("METAOPT_REQUIRE_POSTGRES") == "1"
    if not url:
        if required:
            pytest.fail(f"{PG_ENV} is not set but METAOPT_REQUIRE_POSTGRES=1")
        pytest.skip(f"{PG_ENV} is not set: start a server with `eval \"$(scripts/start_postgres.sh)\"`")
    try:
        import psycopg2

        psycopg2.connect(url, connect_timeout=5).close()
    except Exception as exc:
        if required:
            pytest.fail(f"PostgreSQL at {url} is unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {url} is unreachable: {str(exc).strip()}")
    return url


def _new_study(url: str, **storage_kwargs) -> optuna.Study:
    storage = studies.open_storage(url, **storage_kwargs)
    return optuna.create_study(storage=storage, study_name=f"test-{uuid.uuid4().hex[:12]}",
                               sampler=optuna.samplers.RandomSampler(seed=0))


def _quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    return (x - 2) ** 2


def worker(index: int, url: str, name: str, target: int, sleep_s: float, heartbeat: int, grace: int) -> None:
    """One worker process: join the study, reserve the target (idempotent), run tickets."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = studies.open_storage(url, heartbeat_interval=heartbeat, grace_period=grace)
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.RandomSampler(seed=index))

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", index)
        x = trial.suggest_float("x", -10, 10)
        time.sleep(sleep_s * (5 if index == 0 else 1))  # worker 0's trials are long: easy to hit
        return (x - 2) ** 2

    studies.optimize(study, objective, target, poll_interval=0.2)


def _assert_exact(study: optuna.Study, target: int) -> list[optuna.trial.FrozenTrial]:
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == target, studies.count_trials(study)
    assert len({t.number for t in complete}) == target
    assert len({t.params["x"] for t in complete}) == target, "a trial ran twice"
    for t in complete:
        assert t.value == pytest.approx((t.params["x"] - 2) ** 2)
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    return complete


# ---------------------------------------------------------------------- storage
def test_paths_become_sqlite_urls(tmp_path):
    assert studies.storage_url(tmp_path / "s.db") == f"sqlite:///{tmp_path / 's.db'}"
    assert studies.storage_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_a_sqlite_file_gets_its_folder_made(tmp_path, monkeypatch):
    """``--storage sqlite:///runs/studies.db`` in a fresh folder: ``runs/`` is created."""
    monkeypatch.chdir(tmp_path)
    studies.open_storage("sqlite:///runs/deeper/studies.db")
    assert (tmp_path / "runs" / "deeper" / "studies.db").is_file()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StudyStorageError, match="cannot create the folder"):
        studies.open_storage(f"sqlite:///{blocker}/studies.db")


def test_bad_storage_urls_are_one_sentence_errors():
    with pytest.raises(StudyStorageError, match="unsupported URL scheme 'redis'"):
        studies.open_storage("redis://localhost/0")
    with pytest.raises(ConfigError, match="grace period"):
        studies.open_storage("sqlite:///:memory:", heartbeat_interval=5, grace_period=5)


@pytest.mark.postgres
def test_unreachable_postgres_is_a_one_sentence_error_without_the_password():
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver comes with the `postgres` extra")
    with pytest.raises(StudyStorageError, match=r"cannot open Optuna storage postgresql\+psycopg2://u:\*\*\*@127"):
        studies.open_storage("postgresql://u:secret@127.0.0.1:1/nothing")


def test_postgres_without_a_driver_names_the_extra_to_install(monkeypatch):
    """What a user without the ``postgres`` extra gets (simulated, so it runs everywhere)."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    drivers = ("psycopg2", "psycopg")
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in drivers else real_find_spec(name, *a, **k))
    with pytest.raises(StudyStorageError, match=r"pip install 'metaopt-tuner\[postgres\]'"):
        studies.open_storage("postgresql://u:secret@127.0.0.1:1/nothing")


# ---------------------------------------------------------------------- one process
def test_reserve_is_idempotent_and_tickets_finish_exactly(tmp_path):
    study = _new_study(tmp_path / "s.db")
    assert studies.reserve_trials(study, 5) == 5
    assert studies.reserve_trials(study, 5) == 0
    pruned = []

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 1:
            pruned.append(trial.number)
            raise optuna.TrialPruned()
        return _quadratic(trial)

    ran = studies.run_trials(study, objective)
    assert ran == [0, 1, 2, 3, 4] and pruned == [1]
    assert studies.count_trials(study) == {"COMPLETE": 4, "PRUNED": 1}
    assert studies.reserve_trials(study, 7) == 2  # finished trials count toward a larger target
    assert len(studies.run_trials(study, _quadratic)) == 2


def test_stale_trial_is_failed_and_retried_with_its_parameters(tmp_path):
    study = _new_study(tmp_path / "s.db", heartbeat_interval=1, grace_period=2)
    studies.reserve_trials(study, 2)
    dead = studies.claim_trial(study)  # a worker that claims a trial and dies: no more heartbeats
    x = dead.suggest_float("x", -10, 10)
    started = time.monotonic()
    ran = studies.run_trials(study, _quadratic, poll_interval=0.2)
    assert time.monotonic() - started >= 1.5, "the stale trial must wait out its grace period"
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [t.number for t in failed] == [dead.number]
    retry = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
             if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retry) == 1 and retry[0].params["x"] == x and retry[0].number in ran
    assert studies.count_trials(study) == {"COMPLETE": 2, "FAIL": 1}


def test_stalled_worker_result_is_dropped_not_fatal(tmp_path):
    """A live worker silent past the grace period: its trial is failed and retried; when it wakes
    up its late result is dropped without an error, and the count stays exact."""
    study = _new_study(tmp_path / "s.db", heartbeat_interval=1, grace_period=2)
    studies.reserve_trials(study, 1)
    stalled = studies.claim_trial(study)
    studies.run_trials(study, _quadratic, poll_interval=0.2)  # fails it as stale, runs the retry
    studies.run_one(study, stalled, _quadratic)  # no error: the late result is dropped
    assert studies.count_trials(study) == {"FAIL": 1, "COMPLETE": 1}


def test_interrupted_trial_hands_its_ticket_back(tmp_path):
    study = _new_study(tmp_path / "s.db")
    studies.reserve_trials(study, 1)

    def interrupted(trial: optuna.Trial) -> float:
        trial.suggest_float("x", -10, 10)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        studies.run_trials(study, interrupted)
    assert studies.count_trials(study) == {"FAIL": 1, "WAITING": 1}
    studies.run_trials(study, _quadratic)
    assert studies.count_trials(study) == {"FAIL": 1, "COMPLETE": 1}


def test_objective_error_fails_its_trial_and_propagates(tmp_path):
    study = _new_study(tmp_path / "s.db")
    studies.reserve_trials(study, 2)

    def broken(trial: optuna.Trial) -> float:
        raise ValueError("bad objective")

    with pytest.raises(ValueError, match="bad objective"):
        studies.run_trials(study, broken)
    assert studies.count_trials(study) == {"FAIL": 1, "WAITING": 1}


# ---------------------------------------------------------------------- worker processes
@pytest.mark.slow  # the PostgreSQL tests run the same protocol by default
def test_three_sqlite_workers_finish_exactly_the_target(tmp_path):
    url = studies.storage_url(tmp_path / "s.db")
    study = _new_study(url)
    codes = studies.run_workers(3, worker, url, study.study_name, 30, 0.0, 10, 30)
    assert codes == [0, 0, 0]
    complete = _assert_exact(study, 30)
    assert {t.user_attrs["worker"] for t in complete} <= {0, 1, 2}


@pytest.mark.postgres
def test_three_postgres_workers_finish_exactly_30_trials(postgres_url):
    study = _new_study(postgres_url)
    try:
        codes = studies.run_workers(3, worker, postgres_url, study.study_name, 30, 0.02, 10, 30)
        assert codes == [0, 0, 0]
        complete = _assert_exact(study, 30)
        assert len(study.trials) == 30
        assert len({t.user_attrs["worker"] for t in complete}) >= 2, "the workers shared the study"
    finally:
        optuna.delete_study(study_name=study.study_name, storage=study._storage)


@pytest.mark.postgres
def test_killed_postgres_worker_trial_is_retried_and_study_completes(postgres_url):
    study = _new_study(postgres_url)
    name = study.study_name
    try:
        with studies.WorkerPool(3, worker, postgres_url, name, 30, 0.3, 1, 3) as pool:
            victim = pool.processes[0]
            deadline = time.monotonic() + 120
            killed = None
            while killed is None:
                assert time.monotonic() < deadline, "worker 0 never ran a trial"
                for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    if t.user_attrs.get("worker") == 0 and t.params:
                        os.kill(victim.pid, signal.SIGKILL)
                        killed = t.number
                        break
                else:
                    time.sleep(0.05)
            codes = pool.wait(timeout=180)
        assert codes == [-signal.SIGKILL, 0, 0]
        complete = _assert_exact(study, 30)
        dead = study.trials[killed]
        assert dead.state == TrialState.FAIL
        retries = [t for t in complete if t.system_attrs.get("failed_trial") == killed]
        assert len(retries) == 1 and retries[0].params == dead.params
        assert retries[0].user_attrs["worker"] in (1, 2)
        assert studies.count_trials(study) == {"COMPLETE": 30, "FAIL": 1}
    finally:
        optuna.delete_study(study_name=name, storage=study._storage)


@pytest.mark.postgres
def test_tune_cli_workers_share_a_postgres_study(postgres_url):
    """``metaopt tune --workers 2 --storage postgresql://...`` finishes exactly --trials trials."""
    from typer.testing import CliRunner

    from cli.app import app

    name = f"test-cli-{uuid.uuid4().hex[:8]}"
    result = CliRunner().invoke(app, ["tune", "--optimizer", "sgd", "--trials", "6", "--steps", "2",
                                      "--val-tasks", "4", "--storage", postgres_url, "--study-name", name,
                                      "--workers", "2", "--json"])
    assert result.exit_code == 0, result.output
    storage = studies.open_storage(postgres_url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        assert studies.count_trials(study).get("RUNNING", 0) == 0
        finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
        assert len(finished) == 6 and len(study.trials) == 6
        assert '"trials": 6' in result.output
    finally:
        optuna.delete_study(study_name=name, storage=storage)


def test_workers_need_a_shared_storage():
    from metaopt_tuner.compare.baselines import RandomInit
    from metaopt_tuner.compare.tuning import tune
    from metaopt_tuner.tasks import get_suite

    suite = get_suite("sinusoid")
    with pytest.raises(ConfigError, match="workers"):
        tune("sgd", suite.build_model(), RandomInit(suite.build_model), suite, suite.fixed_tasks(2, "val"),
             2, 3, workers=2)
