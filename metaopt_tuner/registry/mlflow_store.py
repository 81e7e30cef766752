"""Where MLflow lives for metaopt-tuner: which URI, the embedded SQLite store, the optional import.

MLflow is an optional dependency (``pip install "metaopt-tuner[mlflow]"``); this module is the one
place that imports it, so a missing extra is one :class:`~metaopt_tuner.errors.MissingExtraError`.

URIs, in order of precedence:

* tracking (``metaopt train`` / ``compare``): the ``--tracking-uri`` given, else
  ``$MLFLOW_TRACKING_URI``, else off;
* registry (``publish``, ``registry``, ``models:/`` artifacts): the URI given, else
  ``$MLFLOW_REGISTRY_URI``, else ``$MLFLOW_TRACKING_URI``, else the embedded store
  ``sqlite:///$METAOPT_HOME/mlflow.db`` (``METAOPT_HOME`` defaults to ``~/.metaopt``), whose files
  go to ``$METAOPT_HOME/mlartifacts``: ``publish`` and ``models:/`` work on a laptop without a
  server.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import MissingExtraError, RegistryError, first_line

__all__ = [
    "EXPERIMENT",
    "metaopt_home",
    "embedded_uri",
    "tracking_uri",
    "registry_uri",
    "import_mlflow",
    "client",
    "unreachable_reason",
    "experiment_id",
    "error_code",
]

#: the MLflow experiment that holds metaopt's runs (override with $MLFLOW_EXPERIMENT_NAME)
EXPERIMENT = "metaopt"
_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")
_PROBE_SECONDS = 3.0


def metaopt_home() -> Path:
    """``$METAOPT_HOME`` or ``~/.metaopt``: the embedded registry lives here."""
    return Path(os.environ.get("METAOPT_HOME") or "~/.metaopt").expanduser()


def embedded_uri() -> str:
    """The embedded registry: a SQLite MLflow store in :func:`metaopt_home`."""
    return f"sqlite:///{metaopt_home().resolve() / 'mlflow.db'}"


def _checked(uri: str) -> str:
    try:
        scheme = urllib.parse.urlparse(uri).scheme.split("+")[0]
    except ValueError:  # e.g. "http://[::1": an unclosed IPv6 address
        scheme = ""
    if scheme not in _SCHEMES or not uri.partition(":")[2].strip("/"):
        raise RegistryError(
            f"{uri!r} is not an MLflow tracking URI; expected http(s)://HOST:PORT, "
            "sqlite:///PATH.db, postgresql://..., file:///PATH or databricks"
        )
    return uri.rstrip("/") if scheme in ("http", "https") else uri


def tracking_uri(uri: str | None = None) -> str | None:
    """The tracking URI to log runs to, or None when tracking is off."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    return _checked(uri) if uri else None


def registry_uri(uri: str | None = None) -> str:
    """The registry URI: the one given, MLflow's environment variables, else the embedded store."""
    uri = (uri or os.environ.get("MLFLOW_REGISTRY_URI") or os.environ.get("MLFLOW_TRACKING_URI")
           or embedded_uri())
    return _checked(uri)


def import_mlflow() -> Any:
    """The ``mlflow`` module; :class:`MissingExtraError` naming the extra when it is missing."""
    # Quiet defaults for a library (a user's own setting wins): no "View run" lines on stdout
    # (they would corrupt `--json` output), no download progress bars, no INFO log lines (a CLI
    # error is one line on stderr).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # MLflow retries a failed request 7 times with exponential backoff (minutes when a server is
    # down); metaopt retries on its own terms (tracking) or falls back to the cache (registry).
    # A server that accepts connections but does not answer costs at most about 13 s a request
    # (6 s, one retry after a second), so a pinned version falls back to the cache quickly.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "6")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        import mlflow
        import mlflow.artifacts  # noqa: F401  (a submodule the registry downloads with)
    except ImportError as exc:
        raise MissingExtraError(
            f"MLflow tracking and the model registry need the mlflow extra "
            f"(pip install \"metaopt-tuner[mlflow]\"): {exc}"
        ) from None
    return mlflow


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    rest = uri[len("sqlite:///"):].split("?")[0]
    return Path(rest) if rest and rest != ":memory:" else None


def client(uri: str) -> Any:
    """An ``MlflowClient`` for tracking and registry at ``uri`` (a SQLite file's folder is made)."""
    mlflow = import_mlflow()
    db = _sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create the MLflow store {db}: {exc.strerror or exc}") from None
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def unreachable_reason(uri: str, timeout: float = _PROBE_SECONDS) -> str | None:
    """Why the server at ``uri`` cannot be reached now, or None (local stores always can).

    One short HTTP request to the server's ``/health``: MLflow's own client retries a refused
    connection with backoff for minutes, which is no way to find out that a server is down.
    """
    if urllib.parse.urlparse(uri).scheme not in ("http", "https"):
        return None
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout) as response:
            if response.status == 200:
                return None
            return f"HTTP {response.status} from {uri}/health"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} from {uri}/health"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return first_line(reason) if isinstance(reason, BaseException) else str(reason)


def timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` is a request the server accepted but did not answer in time (MLflow
    reports it as its own exception whose text carries the HTTP library's)."""
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(k in text for k in ("timed out", "timeout", "max retries exceeded"))


def error_code(exc: BaseException) -> str | None:
    """The MLflow error code of ``exc`` (``RESOURCE_DOES_NOT_EXIST``, ...), if it has one."""
    code = getattr(exc, "error_code", None)
    return code if isinstance(code, str) else None


def experiment_id(mlflow_client: Any, uri: str, name: str | None = None) -> str:
    """The id of experiment ``name`` (default ``$MLFLOW_EXPERIMENT_NAME`` or ``metaopt``), created
    when missing; in a SQLite store its files go beside the database, not into the current folder."""
    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    db = _sqlite_path(uri)
    location = (db.resolve().parent / "mlartifacts" / name).as_uri() if db is not None else None
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception as exc:  # created meanwhile by another process
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise exc from None
        return found.experiment_id
