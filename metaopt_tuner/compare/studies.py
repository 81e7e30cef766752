"""Optuna studies shared by several worker processes, on one machine or many, through an RDB storage.

A SQLite file is the embedded default; a ``postgresql://`` URL makes a study shared by workers on
any number of machines. Everything here is plain Optuna: :func:`open_storage` turns on Optuna's
heartbeat, and its :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` re-queues the trial of
a worker that died (no heartbeat for ``grace_period`` seconds) with the same parameters.

Exact trial counts. ``study.optimize(n_trials=...)`` in N processes that stop at a shared target
overshoots (every worker may start one more trial at the end). Instead, :func:`reserve_trials` tops
the study up to the target with WAITING trials ("tickets", under a lock), and workers only claim
tickets (:func:`claim_trial`), never create trials. A dead worker's ticket comes back as its retry,
so ``target`` trials finish however the workers interleave or die. A worker leaves
(:func:`run_trials`) only when no ticket is waiting and no trial of another worker is running, so a
study never ends with a trial stuck in RUNNING.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.trial import TrialState

from ..errors import ConfigError, StudyStorageError, first_line

__all__ = [
    "HEARTBEAT_INTERVAL_S",
    "GRACE_PERIOD_S",
    "MAX_RETRY",
    "storage_url",
    "open_storage",
    "reserve_trials",
    "claim_trial",
    "run_trials",
    "run_one",
    "optimize",
    "count_trials",
    "WorkerPool",
    "run_workers",
]

#: seconds between a running trial's heartbeats ($METAOPT_HEARTBEAT_INTERVAL overrides)
HEARTBEAT_INTERVAL_S = 5
#: seconds without a heartbeat after which a running trial counts as dead and is retried (three
#: missed beats; $METAOPT_GRACE_PERIOD overrides). Workers wait this long for a dead one's trial.
GRACE_PERIOD_S = 15
#: how many times one trial is retried after its worker died
MAX_RETRY = 3
#: states that hold a ticket: done, in progress, or queued
_HOLDING = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def storage_url(storage: str | os.PathLike[str]) -> str:
    """A storage URL from a URL or a plain path (a path means a SQLite file)."""
    text = os.fspath(storage)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _retry_callback(max_retry: int | None) -> tuple[str, Any]:
    # Optuna 4.9 renamed the callback and its keyword; support both spellings.
    storages = optuna.storages
    if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):
        cls, keyword = storages.RetryHeartbeatStaleTrialCallback, "heartbeat_stale_trial_callback"
    else:
        cls, keyword = storages.RetryFailedTrialCallback, "failed_trial_callback"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return keyword, cls(max_retry)


def _sqlite_creator(url: str) -> Callable[[], Any]:
    """SQLite connections that wait up to 60 s for a writer (instead of failing "database is
    locked" at once) and use write-ahead logging: readers do not block the writer, and a commit
    does not wait for a disk flush (an OS crash may lose the last trials, a killed process not)."""
    import sqlite3

    from sqlalchemy.engine import make_url

    database = make_url(url).database or ":memory:"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(database, timeout=60, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    return connect


def _make_sqlite_folder(url: str) -> None:
    """Create the folder a SQLite storage file goes in (``sqlite:///runs/studies.db`` in a fresh
    folder), as a run folder's parents are created."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudyStorageError(
            f"cannot open Optuna storage {redact_url(url)}: cannot create the folder of {database}: "
            f"{exc.strerror or exc}"
        ) from None


T = TypeVar("T")


def retry(
    fn: Callable[[], T], transient: Callable[[BaseException], bool], *, attempts: int = 8,
    max_delay: float = 2.0,
) -> T:
    """``fn()``, called again with exponential backoff (0.2 s doubling up to ``max_delay``) while it
    fails with an error ``transient`` accepts; the last error, or any other, is raised."""
    delay = 0.2
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not transient(exc) or attempt == attempts - 1:
                raise
        time.sleep(delay)
        delay = min(2 * delay, max_delay)
    raise AssertionError("unreachable")


def _is_race(exc: BaseException) -> bool:
    text = str(exc)
    races = ("already exists", "duplicate key", "database is locked", "UNIQUE constraint failed")
    return any(s in text for s in races)


def open_storage(
    url: str | os.PathLike[str],
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = MAX_RETRY,
) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage with heartbeats and retries of dead workers' trials.

    ``url`` is any SQLAlchemy URL Optuna accepts (``postgresql://user@host:port/db``,
    ``sqlite:///file.db``) or a path to a SQLite file. Raises :class:`StudyStorageError` with one
    sentence for a missing driver or an unreachable server.
    """
    url = storage_url(url)
    if heartbeat_interval is None:
        heartbeat_interval = _env_seconds("METAOPT_HEARTBEAT_INTERVAL", HEARTBEAT_INTERVAL_S)
    if grace_period is None:
        grace_period = _env_seconds("METAOPT_GRACE_PERIOD", GRACE_PERIOD_S)
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in ("postgresql", "postgres", "sqlite", "mysql"):
        raise StudyStorageError(
            f"cannot open Optuna storage {redact_url(url)}: unsupported URL scheme {scheme!r}; use "
            "postgresql://user@host:port/db or a SQLite file"
        )
    if scheme == "postgres":  # SQLAlchemy only knows the long spelling
        url = "postgresql" + url[len("postgres"):]
        scheme = "postgresql"
    if heartbeat_interval < 1 or grace_period <= heartbeat_interval:
        raise ConfigError(
            f"need heartbeat interval >= 1 s and grace period > interval, got {heartbeat_interval} "
            f"and {grace_period}"
        )
    engine_kwargs: dict[str, Any] = {}
    if scheme == "sqlite":
        engine_kwargs["creator"] = _sqlite_creator(url)
        _make_sqlite_folder(url)
    else:
        engine_kwargs["pool_pre_ping"] = True  # survive a server restart between trials
    if scheme == "postgresql" and "+" not in url.split("://", 1)[0]:
        url = "postgresql+" + _postgres_driver() + url[len("postgresql"):]
    keyword, callback = _retry_callback(max_retry)

    def connect() -> optuna.storages.RDBStorage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                grace_period=grace_period, **{keyword: callback},
            )

    try:
        return retry(connect, _is_race)  # racing table creation is retried
    except Exception as exc:
        raise StudyStorageError(
            f"cannot open Optuna storage {redact_url(url)}: {first_line(exc)}"
        ) from None


def _env_seconds(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number of seconds") from None


def _postgres_driver() -> str:
    """The installed PostgreSQL driver (SQLAlchemy 2.1 assumes psycopg 3 for a bare URL; the
    ``postgres`` extra installs psycopg2)."""
    import importlib.util

    for module in ("psycopg2", "psycopg"):
        if importlib.util.find_spec(module) is not None:
            return module
    raise StudyStorageError(
        "a postgresql:// storage needs a driver: pip install 'metaopt-tuner[postgres]'"
    )


def redact_url(url: str) -> str:
    """The URL without a password, for messages."""
    head, sep, tail = url.partition("://")
    creds, at, rest = tail.rpartition("@")
    if at and ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{head}{sep}{creds}{at}{rest}"


# ---------------------------------------------------------------------- tickets
@contextlib.contextmanager
def _sqlite_lock(url: str) -> Iterator[None]:
    """A lock file beside a SQLite database: its implicit transactions do not make a read and the
    following write atomic, so claims and top-ups are serialized here instead."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        import fcntl

        with open(url[len("sqlite:///"):] + ".metaopt-lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        yield


@contextlib.contextmanager
def _study_lock(study: optuna.Study) -> Iterator[None]:
    """Serialize ticket top-ups of one study: a PostgreSQL advisory lock, a lock file beside a
    SQLite database, nothing for other storages (one process)."""
    storage = _backend(study)
    url = getattr(storage, "url", "")
    key = int.from_bytes(hashlib.sha1(f"metaopt:{study.study_name}".encode()).digest()[:8], "big",
                         signed=True)
    if url.startswith("postgresql"):
        import sqlalchemy

        with storage.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    with _sqlite_lock(url):
        yield


def _backend(study: optuna.Study) -> Any:
    """The study's RDB storage (``create_study`` wraps it in a private caching layer)."""
    storage = study._storage
    return getattr(storage, "_backend", storage)


def count_trials(study: optuna.Study) -> dict[str, int]:
    """Number of trials per state name, e.g. ``{"COMPLETE": 30, "FAIL": 1}``."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def reserve_trials(study: optuna.Study, target: int) -> int:
    """Queue WAITING trials until ``target`` trials are done, running or queued; returns how many
    were added (0 when a previous or concurrent call already reserved them)."""
    if target < 1:
        raise ConfigError(f"the number of trials must be positive, got {target}")
    with _study_lock(study):
        held = len(study.get_trials(deepcopy=False, states=_HOLDING))
        for _ in range(target - held):
            study.enqueue_trial({})
        return max(0, target - held)


def claim_trial(study: optuna.Study) -> optuna.Trial | None:
    """Take one WAITING trial for this process (atomic in the storage), or None if none is left."""
    storage = study._storage
    with _sqlite_lock(getattr(_backend(study), "url", "")):
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                # WAITING -> RUNNING succeeds for one process only (a row lock in PostgreSQL).
                if not storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            if _heartbeat_interval(storage):
                storage.record_heartbeat(frozen._trial_id)
            return optuna.Trial(study, frozen._trial_id)
    return None


def _heartbeat_interval(storage: Any) -> int | None:
    getter = getattr(storage, "get_heartbeat_interval", None)
    return getter() if getter is not None else None


class _Heartbeat:
    """Record a trial's heartbeat every interval while the objective runs (a daemon thread)."""

    def __init__(self, storage: Any, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self.interval = _heartbeat_interval(storage)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a missed beat only shortens the grace
                self.storage.record_heartbeat(self.trial_id)

    def __enter__(self) -> _Heartbeat:
        if self.interval:
            self._thread = threading.Thread(target=self._beat, daemon=True, name="metaopt-heartbeat")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _fail_stale(study: optuna.Study) -> None:
    if _heartbeat_interval(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def run_one(study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], float]) -> None:
    """Run ``objective`` on one claimed ``trial`` with a heartbeat, and record its result."""
    # skip_if_finished: a worker that stalled past the grace period finds its trial failed by
    # another one (and a retry queued); the retry's result counts, this one is dropped.
    storage = study._storage
    with _Heartbeat(storage, trial._trial_id):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # the objective wrote to a trial another worker had already failed as stale
        except Exception:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        except BaseException:  # Ctrl-C, SystemExit: hand the ticket back as a retry at once
            frozen = storage.get_trial(trial._trial_id)
            if not frozen.state.is_finished():
                frozen = study.tell(trial, state=TrialState.FAIL)
                getter = getattr(storage, "get_heartbeat_stale_trial_callback", None)
                callback = getter() if getter is not None else None
                if callback is not None:
                    callback(study, frozen)
            raise
        else:
            study.tell(trial, value, skip_if_finished=True)


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
    poll_interval: float | None = None,
) -> list[int]:
    """Work on ``study`` as one worker: claim and run tickets until none is waiting or running.

    While other workers' trials run, this worker waits (polling) so it can fail and retry the
    trial of a worker that dies. Returns the numbers of the trials this worker ran. An exception
    from ``objective`` marks its trial FAIL and propagates, as in ``study.optimize``.
    """
    interval = _heartbeat_interval(study._storage)
    poll = poll_interval if poll_interval is not None else min(5.0, float(interval or 1))
    ran: list[int] = []
    while True:
        _fail_stale(study)
        trial = claim_trial(study)
        if trial is None:
            if interval and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                time.sleep(poll)  # a live worker finishes it, or it goes stale and comes back
                continue
            return ran
        ran.append(trial.number)
        run_one(study, trial, objective)
        if on_trial is not None:
            on_trial(study._storage.get_trial(trial._trial_id))


def optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    target: int,
    **kwargs: Any,
) -> list[int]:
    """Reserve ``target`` trials in ``study`` and work on them (see :func:`run_trials`)."""
    reserve_trials(study, target)
    return run_trials(study, objective, **kwargs)


# ---------------------------------------------------------------------- worker processes
def _worker_entry(index: int, target: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    os.environ["METAOPT_WORKER"] = str(index)
    target(index, *args, **kwargs)


def _context(target: Callable[..., Any]) -> multiprocessing.context.BaseContext:
    """A forkserver that imports ``target``'s module (and torch with it) once, so each worker
    starts in milliseconds without inheriting the caller's threads or database connections;
    plain spawn where there is no forkserver."""
    try:
        ctx = multiprocessing.get_context("forkserver")
    except ValueError:
        return multiprocessing.get_context("spawn")
    ctx.set_forkserver_preload(sorted({__name__, target.__module__} - {"__main__"}))
    return ctx


class WorkerPool:
    """``n`` fresh worker processes (not forks of the caller) each running ``target(index, *args)``.

    Use as a context manager: leaving it kills whatever still runs, so a failing caller never
    leaves workers behind. ``target`` must be importable (a module-level function).
    """

    def __init__(self, n: int, target: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if n < 1:
            raise ConfigError(f"workers must be a positive integer, got {n}")
        ctx = _context(target)
        self.processes = [
            ctx.Process(target=_worker_entry, args=(i, target, args, kwargs), name=f"metaopt-worker-{i}")
            for i in range(n)
        ]

    def start(self) -> WorkerPool:
        for proc in self.processes:
            proc.start()
        return self

    def wait(self, timeout: float | None = None) -> list[int | None]:
        """Wait for every worker; their exit codes (negative: killed by that signal)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for proc in self.processes:
            proc.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return [proc.exitcode for proc in self.processes]

    def terminate(self) -> None:
        for proc in self.processes:
            if proc.is_alive():
                proc.kill()
        for proc in self.processes:
            proc.join(10)

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.terminate()


def run_workers(n: int, target: Callable[..., Any], *args: Any, **kwargs: Any) -> list[int | None]:
    """Run ``target(index, *args, **kwargs)`` in ``n`` processes and wait; returns exit codes."""
    with WorkerPool(n, target, *args, **kwargs) as pool:
        return pool.wait()
