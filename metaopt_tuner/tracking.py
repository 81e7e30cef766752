"""MLflow tracking of a run folder: parameters, metrics at the log steps, and its files.

:class:`RunTracker` sends everything from a background thread, in order, so a slow or vanished
server never stops or slows training: the first failure warns once (a
:class:`~metaopt_tuner.errors.MetaOptWarning`), updates are retried until :meth:`RunTracker.finish`,
and the local run folder stays complete whatever happens. A server that cannot be reached at all
(connection refused, unknown host) costs nothing at exit: once :meth:`RunTracker.finish` is called,
the first attempt that finds it unreachable ends the tracking, with no retry and no wait.
The MLflow run's id is kept in ``OUT/mlflow_run.json``, so resuming a run (or re-running
``compare`` into the same folder) continues the same MLflow run.

Use with a trainer::

    tracker = RunTracker("http://mlflow:5000", "runs/a").attach(trainer)
    result = trainer.run()
    tracker.finish(artifacts={"artifact": "runs/a/artifact"})
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import atomic_write_text
from .errors import MetaOptWarning, RegistryError, first_line
from .registry import mlflow_store

if TYPE_CHECKING:
    from .compare import ComparisonResult
    from .config import TrainConfig
    from .training import MetaTrainer

__all__ = ["RunTracker", "RUN_RECORD", "training_params", "track_training", "track_comparison",
           "tracking_uri_checked"]

RUN_RECORD = "mlflow_run.json"
_PARAM_CHARS = 6000  # MLflow's limit on a parameter value
_RETRY_SECONDS = (1.0, 2.0, 5.0)


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = str(value)[:_PARAM_CHARS]


def training_params(config: TrainConfig) -> dict[str, str]:
    """A training configuration as MLflow parameters, defaults resolved (``meta_lr`` is the rate
    used, not None); nested options flattened as ``suite_options.shots``."""
    data = config.to_dict()
    data["outer_optimizer"], data["meta_lr"] = config.resolved_outer()
    data["rates_meta_lr"] = config.resolved_rates_lr()
    out: dict[str, str] = {}
    _flatten("", data, out)
    return out


def _metric_name(name: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", name)


class RunTracker:
    """Track one run folder in MLflow at ``tracking_uri``, from a background thread.

    Args:
        tracking_uri: the MLflow tracking server or store (see ``mlflow_store.tracking_uri``).
        out_dir: the local run folder (holds ``mlflow_run.json``).
        kind: a tag (``train``, ``compare``); the run name is ``KIND OUT_DIR_NAME``.
        files: ``(artifact path, local file or folder)`` pairs uploaded by :meth:`finish` (those
            that exist then; ``""`` is the run's root).
        flush_timeout: seconds :meth:`finish` waits for the updates still queued.

    Raises:
        MissingExtraError: mlflow is not installed.
        RegistryError: ``tracking_uri`` is malformed or missing.
    """

    def __init__(self, tracking_uri: str, out_dir: str | Path, *, kind: str = "train",
                 files: Iterable[tuple[str, str | Path]] = (), flush_timeout: float = 30.0) -> None:
        uri = mlflow_store.tracking_uri(tracking_uri)
        if uri is None:
            raise RegistryError("RunTracker needs a tracking URI (or $MLFLOW_TRACKING_URI)")
        self.uri = uri
        mlflow_store.import_mlflow()  # fail now, with the extra's name, not in the thread
        self.out_dir = Path(out_dir)
        self.kind = kind
        self.files = [(a, Path(f)) for a, f in files]
        self.flush_timeout = flush_timeout
        self.run_id: str | None = None
        self._trainer: MetaTrainer | None = None
        self._chained: Callable[[dict[str, Any]], None] | None = None
        self._queue: queue.Queue[tuple[str, Callable[[Any], None]] | None] = queue.Queue()
        self._started = False
        self._warned = False
        self._giving_up = threading.Event()
        #: set by finish(): wakes a retry's wait; an unreachable server then ends the worker
        self._finishing = threading.Event()
        #: why the server could not be reached at the last attempt (None: it could)
        self.unreachable: str | None = None
        self._thread = threading.Thread(target=self._work, name="metaopt-tracking", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ what is sent
    def attach(self, trainer: MetaTrainer) -> RunTracker:
        """Receive ``trainer``'s logged records (keeping its callback) and log its configuration."""
        self._trainer, self._chained = trainer, trainer.callback
        trainer.callback = self
        return self

    def __call__(self, record: dict[str, Any]) -> None:
        """A trainer callback: log ``record``'s numbers as metrics at its iteration."""
        if self._chained is not None:
            self._chained(record)
        metrics = {k: v for k, v in record.items() if k != "iteration"}
        if self._trainer is not None and "meta_lr" not in metrics:
            metrics["meta_lr"] = self._trainer.meta_lr
        self.log_metrics(metrics, step=int(record.get("iteration", 0)))

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters; on a continued run, those already logged keep their first value."""
        items = {k: str(v)[:_PARAM_CHARS] for k, v in params.items()}
        self._send("parameters", lambda c: self._log_params(c, items))

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        """Log every finite number in ``metrics`` at ``step``."""
        values = {_metric_name(k): float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if not values:
            return
        stamp = int(time.time() * 1000)

        def send(client: Any) -> None:
            from mlflow.entities import Metric

            client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in values.items()])

        self._send("metrics", send)

    def log_artifacts(self, files: Iterable[tuple[str, str | Path]]) -> None:
        """Upload ``(artifact path, local file or folder)`` pairs (``""``: the run's root; a file
        keeps its name)."""
        pairs = [(a, Path(f)) for a, f in files]

        def send(client: Any) -> None:
            for artifact_path, local in pairs:
                if local.is_dir():
                    client.log_artifacts(self.run_id, str(local), artifact_path or None)
                elif local.is_file():
                    client.log_artifact(self.run_id, str(local), artifact_path or None)

        self._send("files", send)

    def finish(self, status: str = "FINISHED") -> bool:
        """Upload the ``files``, end the MLflow run with ``status`` and wait (up to
        ``flush_timeout``) for everything queued. Returns True when all of it reached MLflow."""
        if not self._thread.is_alive():
            return not self._warned
        if self._trainer is not None and not self._started:
            self._ensure_started()  # a resumed run that was already complete logs nothing else
        if self.files:
            self.log_artifacts(self.files)
        if self._started:
            self._send("end", lambda c: c.set_terminated(self.run_id, status=status))
        self._queue.put(None)
        self._finishing.set()
        self._thread.join(self.flush_timeout)
        if self.unreachable is not None and not self._thread.is_alive():
            warnings.warn(f"MLflow tracking at {self.uri}: the server cannot be reached "
                          f"({self.unreachable}); updates were not sent, the run folder "
                          f"{self.out_dir} has everything", MetaOptWarning, stacklevel=2)
            return False
        if self._thread.is_alive():
            self._giving_up.set()
            warnings.warn(f"MLflow tracking at {self.uri}: some updates were not sent within "
                          f"{self.flush_timeout:g} s; the run folder {self.out_dir} has everything",
                          MetaOptWarning, stacklevel=2)
            return False
        return not self._warned

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        self.finish("FINISHED" if kind is None else
                        "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")

    # ------------------------------------------------------------------ the worker
    def _send(self, what: str, fn: Callable[[Any], None]) -> None:
        self._ensure_started()
        self._queue.put((what, fn))

    def _ensure_started(self) -> None:
        if self._started:
            return
        self._started = True
        self._queue.put(("the run", self._start))
        if self._trainer is not None:
            self.log_params(training_params(self._trainer.config))

    def _start(self, client: Any) -> None:
        record_path = self.out_dir / RUN_RECORD
        try:
            saved = json.loads(record_path.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("tracking_uri") == self.uri and saved.get("run_id"):
            self.run_id = saved["run_id"]
            client.update_run(self.run_id, status="RUNNING")
            return
        experiment = mlflow_store.experiment_id(client, self.uri)
        run = client.create_run(experiment, run_name=f"{self.kind} {self.out_dir.resolve().name}",
                                tags={"metaopt.kind": self.kind,
                                      "metaopt.out_dir": str(self.out_dir.resolve())})
        self.run_id = run.info.run_id
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record_path, json.dumps({"tracking_uri": self.uri, "run_id": self.run_id,
                                                   "experiment_id": experiment}, indent=2) + "\n")

    def _log_params(self, client: Any, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        logged = client.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in params.items() if k not in logged]
        for start in range(0, len(new), 100):  # MLflow takes at most 100 parameters a request
            client.log_batch(self.run_id, params=new[start:start + 100])

    def _work(self) -> None:
        client = None
        while True:
            item = self._queue.get()
            if item is None:
                return
            what, fn = item
            attempt = 0
            while not self._giving_up.is_set():
                try:
                    reason = mlflow_store.unreachable_reason(self.uri)
                    self.unreachable = reason
                    if reason is not None:
                        raise ConnectionError(f"cannot reach the server ({reason})")
                    client = client or mlflow_store.client(self.uri)
                    fn(client)
                    break
                except Exception as exc:
                    if not self._warned:
                        self._warned = True
                        warnings.warn(
                            f"MLflow tracking at {self.uri} failed ({what}: {first_line(exc)}); "
                            "training goes on, updates are retried, and "
                            f"{self.out_dir} keeps the complete run", MetaOptWarning, stacklevel=1)
                    delay = _RETRY_SECONDS[min(attempt, len(_RETRY_SECONDS) - 1)]
                    attempt += 1
                    if not self._finishing.is_set():
                        self._finishing.wait(delay)  # finish() cuts the wait short
                    if self.unreachable is not None and self._finishing.is_set():
                        return  # at exit, a server that cannot be reached is not waited for
                    if self._finishing.is_set():
                        self._giving_up.wait(delay)
            if self._giving_up.is_set():
                return


def track_training(trainer: MetaTrainer, tracking_uri: str | None = None) -> Any:
    """A :class:`RunTracker` attached to ``trainer`` when tracking is on (``tracking_uri`` or
    ``$MLFLOW_TRACKING_URI``) and this is the main process, else a context that does nothing.

    Used as ``with track_training(trainer, uri): trainer.run()``: the run's configuration,
    metrics, and at the end its ``artifact/`` folder, ``run.json`` and ``metrics.jsonl`` go to
    MLflow; a failed run is marked FAILED.

    Args:
        trainer: the trainer to track (a trainer without an output folder is not tracked).
        tracking_uri: the MLflow server or store (default: ``$MLFLOW_TRACKING_URI``; neither: off).

    Returns:
        The attached :class:`RunTracker`, or a context that does nothing.

    Raises:
        MissingExtraError: tracking is on but mlflow is not installed.
        RegistryError: a malformed URI.
    """
    from .training import distributed

    uri = mlflow_store.tracking_uri(tracking_uri)
    if uri is None or trainer.out_dir is None or not distributed.is_main_process():
        return contextlib.nullcontext()
    out = trainer.out_dir
    files = [("artifact", out / "artifact"), ("", out / "run.json"), ("", out / "metrics.jsonl")]
    return RunTracker(uri, out, kind="train", files=files).attach(trainer)


def tracking_uri_checked(tracking_uri: str | None = None) -> str | None:
    """The tracking URI in effect (None: tracking is off), checked before a long run starts.

    Raises:
        RegistryError: a malformed URI.
        MissingExtraError: tracking is on but mlflow is not installed.
    """
    uri = mlflow_store.tracking_uri(tracking_uri)
    if uri is not None:
        mlflow_store.import_mlflow()
    return uri


def track_comparison(result: ComparisonResult, out_dir: str | Path,
                     tracking_uri: str | None = None) -> bool | None:
    """Log a comparison to MLflow when tracking is on: its protocol as parameters, every method's
    query loss and metric (mean and 95% CI) as metrics, and the report files. Returns None when
    tracking is off, else whether everything reached MLflow (a failure only warns)."""
    uri = mlflow_store.tracking_uri(tracking_uri)
    if uri is None:
        return None
    data = result.data
    params: dict[str, str] = {}
    _flatten("", {"suite": data["suite"]["name"], "artifact": data.get("artifact"),
                  **data["protocol"]}, params)
    metrics: dict[str, float] = {}
    for method in data["methods"]:
        for key in ("query_loss", "metric"):
            name = "query_" + data["suite"]["metric_name"] if key == "metric" else key
            metrics[f"{method['name']}.{name}"] = method[key]["mean"]
            metrics[f"{method['name']}.{name}_ci95"] = method[key]["ci95"]
    out = Path(out_dir)
    files = [("" if path.parent == out else path.parent.name, path) for path in result.paths.values()]
    tracker = RunTracker(uri, out, kind="compare", files=files)
    tracker.log_params(params)
    tracker.log_metrics(metrics, step=int(data["protocol"]["steps"]))
    return tracker.finish()
