"""Tracking and the registry against a real ``mlflow server`` (the flow the issue documents).

Needs ``METAOPT_TEST_MLFLOW_URI`` (``eval "$(scripts/start_mlflow.sh)"``; ``.ci/run`` starts one);
skips without it, and fails instead under ``METAOPT_REQUIRE_MLFLOW=1``. The offline test starts
and stops a server of its own with the same scripts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from metaopt_tuner import registry
from metaopt_tuner.artifact import TENSORS, load_artifact
from metaopt_tuner.errors import ArtifactError, MetaOptWarning
from metaopt_tuner.registry.model_cache import entry_dir
from metaopt_tuner.tracking import RUN_RECORD, RunTracker
from metaopt_tuner.training import MetaTrainer, TrainConfig

from .helpers import run_cli as _run
from .mlflow_fixtures import cache_files, isolated, server_uri, unique  # noqa: F401

pytestmark = pytest.mark.mlflow  # .ci/run runs these again with a server and the extra

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--iterations", "30", "--log-every", "10", "--eval-every", "15", "--eval-tasks", "5",
         "--checkpoint-every", "15", "--meta-batch", "4", "--no-progress", "--threads", "1"]
# Three MetaSGD steps on a fixed sinusoid batch from an artifact: the SHA-256 of the weights' bytes.
# Run as a script (the artifact on the command line) in a fresh process, or exec'd here.
THREE_STEPS = """
import hashlib, sys, torch
from metaopt_tuner import prepare

def digest(artifact):
    model, opt = prepare(None, artifact)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, generator=g) * 10 - 5
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), torch.sin(x)).backward()
        opt.step()
    return hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()

if __name__ == "__main__":
    torch.set_num_threads(1)
    print(digest(sys.argv[1]))
"""


def _local_three_steps(artifact: Path) -> str:
    """The weights after three steps from a local folder, computed in this process."""
    namespace: dict = {"__name__": "steps"}
    exec(THREE_STEPS, namespace)
    return namespace["digest"](artifact)


def _three_steps(artifact: str, uri: str) -> str:
    """The weights after three steps, computed in a fresh Python process."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", THREE_STEPS, artifact], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def server(isolated):  # noqa: F811
    return server_uri()


def test_train_publish_load_move_alias_tamper(server, isolated, capsys):  # noqa: F811
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=server, registry_uri=server)
    run_dir, name = isolated / "run", unique("sinusoid")

    # train with tracking: parameters, metrics at the log steps, the artifact folder
    code, _, err = _run(capsys, "train", "--out", str(run_dir), "--tracking-uri", server, *TRAIN)
    assert code == 0, err
    run_id = json.loads((run_dir / RUN_RECORD).read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["meta_lr"] == "0.001" and run.data.params["meta_batch"] == "4"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [10, 15, 20, 30]
    assert {"val_mse", "it_per_s", "meta_lr"} <= set(run.data.metrics)
    assert {f.path for f in client.list_artifacts(run_id, "artifact")} == {
        "artifact/manifest.json", "artifact/tensors.safetensors"}

    # publish with an alias; a fresh process loads it by name: three steps equal the folder's
    code, out, err = _run(capsys, "publish", str(run_dir / "artifact"), "--name", name,
                          "--alias", "prod", "--tracking-uri", server)
    assert code == 0 and f"models:/{name}@prod" in out, err
    first = _local_three_steps(run_dir / "artifact")
    assert _three_steps(f"models:/{name}@prod", server) == first

    # --resume continues the same MLflow run; publish v2 and move the alias to it
    code, _, err = _run(capsys, "train", "--out", str(run_dir), "--tracking-uri", server, "--resume",
                        *TRAIN[:1], "45", *TRAIN[2:])
    assert code == 0, err
    assert json.loads((run_dir / RUN_RECORD).read_text())["run_id"] == run_id
    assert [m.step for m in client.get_metric_history(run_id, "loss")][-2:] == [40, 45]
    v2 = registry.publish(run_dir / "artifact", name, tracking_uri=server)
    assert v2.version == "2" and v2.aliases == []
    still = registry.load_registered(f"models:/{name}@prod", tracking_uri=server)
    assert still.manifest["tensors"]["sha256"] != v2.sha256  # no --alias: the alias stays where it was
    code, out, err = _run(capsys, "registry", "alias", name, "2", "prod", "--tracking-uri", server)
    assert code == 0 and out.strip() == f"models:/{name}@prod -> version 2", err
    second = _local_three_steps(run_dir / "artifact")
    assert second != first and _three_steps(f"models:/{name}@prod", server) == second
    code, out, _ = _run(capsys, "registry", "list", name, "--tracking-uri", server, "--json")
    assert [(r["version"], r["aliases"]) for r in json.loads(out)] == [("1", []), ("2", ["prod"])]

    # a tampered cache file: the artifact error, from the API and the CLI, and never used
    cached = entry_dir(server, name, "2") / TENSORS
    cached.write_bytes(cached.read_bytes()[:-1])
    with pytest.raises(ArtifactError, match="not used"):
        registry.load_registered(f"models:/{name}@prod", tracking_uri=server)
    code, out, err = _run(capsys, "inspect", f"models:/{name}/2", "--tracking-uri", server)
    assert code == 2 and out == "" and err.count("\n") == 1 and "SHA-256" in err


def test_bad_input_against_the_server(server, isolated, capsys):  # noqa: F811
    name = unique("bad")
    registry.publish("sinusoid", name, alias="prod", tracking_uri=server)
    before = cache_files(isolated)
    for ref in (f"models:/{name}@staging", f"models:/{name}/5", f"models:/{name}-x@prod"):
        code, out, err = _run(capsys, "evaluate", ref, "--tracking-uri", server)
        assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: "), err
    assert cache_files(isolated) == before


@pytest.fixture
def own_server(tmp_path):
    """A server of this test's own (it is stopped mid-test), from scripts/start_mlflow.sh."""
    server_uri()  # the same requirements: mlflow installed, servers startable here
    folder = Path(f"/tmp/metaopt-mlflow-test-{os.getpid()}-{tmp_path.name}")
    env = {**os.environ, "METAOPT_MLFLOW_DIR": str(folder)}
    started = subprocess.run([str(ROOT / "scripts" / "start_mlflow.sh")], env=env, capture_output=True,
                             text=True, timeout=180)
    assert started.returncode == 0, started.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines())

    def stop():
        subprocess.run([str(ROOT / "scripts" / "stop_mlflow.sh"), str(folder)], capture_output=True,
                       timeout=60)

    yield exports["METAOPT_TEST_MLFLOW_URI"], stop
    stop()


def test_server_gone_training_goes_on_and_pinned_versions_load_from_the_cache(
        own_server, isolated, capsys):  # noqa: F811
    uri, stop = own_server
    name = unique("offline")
    registry.publish("sinusoid", name, alias="prod", tracking_uri=uri)
    pinned = registry.load_registered(f"models:/{name}/1", tracking_uri=uri)

    # the server goes away at iteration 10 of 30: training finishes, warning once, folder complete
    out = isolated / "run"
    config = TrainConfig(iterations=30, meta_batch=4, log_every=5, eval_every=15, eval_tasks=5,
                         checkpoint_every=15)
    trainer = MetaTrainer(config, out, progress=False,
                          callback=lambda record: stop() if record["iteration"] == 10 else None)
    tracker = RunTracker(uri, out, files=[("artifact", out / "artifact")], flush_timeout=2).attach(trainer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run()
        during = [str(w.message) for w in caught if issubclass(w.category, MetaOptWarning)]
        assert tracker.finish() is False
    assert len(during) == 1 and "training goes on" in during[0], during
    assert load_artifact(out / "artifact").metrics["iteration"] == 30
    assert [json.loads(line)["iteration"] for line in (out / "metrics.jsonl").read_text().splitlines()] \
        == [5, 10, 15, 20, 25, 30]

    # a pinned, cached version loads (saying so); an alias cannot be resolved
    with pytest.warns(MetaOptWarning, match=f"cannot reach .*loaded models:/{name}/1 from the cache"):
        offline = registry.load_registered(f"models:/{name}/1", tracking_uri=uri)
    assert all(offline.theta[n].equal(pinned.theta[n]) for n in pinned.names)
    code, out_text, err = _run(capsys, "inspect", f"models:/{name}/1", "--tracking-uri", uri, "--json")
    assert code == 0 and json.loads(out_text)["manifest"]["tensors"] == pinned.manifest["tensors"]
    assert err.startswith("warning: cannot reach the MLflow server") and err.count("\n") == 1
    code, out_text, err = _run(capsys, "inspect", f"models:/{name}@prod", "--tracking-uri", uri)
    assert code == 2 and out_text == "" and "to resolve the alias" in err and err.count("\n") == 1
