"""Fixtures for the MLflow tests: an isolated home and cache, the embedded store, a real server.

Server tests need ``METAOPT_TEST_MLFLOW_URI`` (``eval "$(scripts/start_mlflow.sh)"``; ``.ci/run``
starts one); with ``METAOPT_REQUIRE_MLFLOW=1`` (CI) a missing server or package fails them
instead of skipping.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path

import pytest

URI_ENV = "METAOPT_TEST_MLFLOW_URI"
REQUIRED = os.environ.get("METAOPT_REQUIRE_MLFLOW") == "1"


def need_mlflow() -> None:
    """Skip (fail in CI) unless the mlflow package is installed."""
    if importlib.util.find_spec("mlflow") is None:
        message = 'needs the mlflow extra: pip install -e ".[mlflow]"'
        if REQUIRED:
            pytest.fail(f"{message} (METAOPT_REQUIRE_MLFLOW=1)")
        pytest.skip(message)


def server_uri() -> str:
    """The test server's URI; skip (fail in CI) when none is running."""
    need_mlflow()
    from metaopt_tuner.registry.mlflow_store import unreachable_reason

    uri = os.environ.get(URI_ENV)
    if not uri:
        if REQUIRED:
            pytest.fail(f"{URI_ENV} is not set but METAOPT_REQUIRE_MLFLOW=1")
        pytest.skip(f"{URI_ENV} is not set: start a server with `eval \"$(scripts/start_mlflow.sh)\"`")
    reason = unreachable_reason(uri)
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"the MLflow server at {uri} is unreachable: {reason}")
        pytest.skip(f"the MLflow server at {uri} is unreachable: {reason}")
    return uri


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh METAOPT_HOME (embedded store) and cache, and no MLflow URI from the environment."""
    monkeypatch.setenv("METAOPT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("METAOPT_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def unique(prefix: str) -> str:
    """A registered-model name no other test (or earlier run on the same server) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def cache_files(root: Path) -> list[str]:
    """Every file under the cache, relative (to show that nothing was half-written)."""
    cache = root / "cache"
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.exists() else []
