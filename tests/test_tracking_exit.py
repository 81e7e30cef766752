"""Tracking at exit: a server that refuses the connection is not retried or waited for."""

from __future__ import annotations

import socket
import threading

import pytest

from metaopt_tuner.errors import MetaOptWarning
from metaopt_tuner.registry import mlflow_store
from metaopt_tuner.tracking import RunTracker

from .mlflow_fixtures import need_mlflow


def _refused_uri() -> str:
    """An http URI on a local port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("finish_first", [False, True])
def test_a_refused_server_ends_tracking_at_exit_without_retry(tmp_path, monkeypatch, finish_first):
    need_mlflow()
    probes: list[str | None] = []
    clients: list[str] = []
    real_probe = mlflow_store.unreachable_reason
    first_probe_done = threading.Event()
    go = threading.Event()

    def probe(uri: str, *args, **kwargs):
        if finish_first:
            go.wait()  # finish() is called before the first request is tried
        reason = real_probe(uri, *args, **kwargs)
        probes.append(reason)
        first_probe_done.set()
        return reason

    monkeypatch.setattr(mlflow_store, "unreachable_reason", probe)
    monkeypatch.setattr(mlflow_store, "client", lambda uri: clients.append(uri))
    (tmp_path / "report.md").write_text("# report\n")
    # were the exit to wait for the flush timeout, the tracker would retry (probe again) meanwhile
    tracker = RunTracker(_refused_uri(), tmp_path, kind="compare",
                         files=[("", tmp_path / "report.md")], flush_timeout=5)
    with pytest.warns(MetaOptWarning) as caught:
        tracker.log_params({"steps": 3})
        tracker.log_metrics({"meta-learned.query_loss": 0.5}, step=3)
        if not finish_first:
            first_probe_done.wait()  # the first request has been refused (before finish)
        else:
            threading.Timer(0.0, go.set).start()
        sent = tracker.finish()
    assert sent is False and not tracker._thread.is_alive()
    assert len(probes) == 1 and probes[0] is not None  # one refused request, no retry after it
    assert tracker.unreachable == probes[0]
    assert clients == []  # no MLflow request was attempted past the refused probe
    messages = [str(w.message) for w in caught]
    assert any("cannot be reached" in m and str(tmp_path) in m for m in messages), messages


def test_a_server_that_answers_is_still_sent_everything(tmp_path, monkeypatch):
    """The early exit is for unreachable servers only: a reachable one gets every update."""
    need_mlflow()
    sent: list[str] = []

    class Client:
        def get_experiment_by_name(self, name):
            return type("E", (), {"experiment_id": "0"})()

        def create_run(self, experiment, run_name, tags):
            sent.append("run")
            return type("R", (), {"info": type("I", (), {"run_id": "r1"})()})()

        def get_run(self, run_id):
            return type("R", (), {"data": type("D", (), {"params": {}})()})()

        def log_batch(self, run_id, metrics=(), params=()):
            sent.append("batch")

        def set_terminated(self, run_id, status):
            sent.append(status)

    monkeypatch.setattr(mlflow_store, "unreachable_reason", lambda uri, *a, **k: None)
    monkeypatch.setattr(mlflow_store, "client", lambda uri: Client())
    monkeypatch.setattr(mlflow_store, "experiment_id", lambda client, uri, name=None: "0")
    tracker = RunTracker("http://127.0.0.1:1", tmp_path, kind="compare")
    tracker.log_params({"steps": 3})
    tracker.log_metrics({"loss": 0.5})
    assert tracker.finish() is True and tracker.unreachable is None
    assert sent == ["run", "batch", "batch", "FINISHED"]
