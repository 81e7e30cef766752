"""The model registry without a server: models:/ URIs, the cache, the embedded SQLite store, the CLI.

Tests of the embedded store run whenever mlflow is installed (and skip, saying so, when not);
``test_registry_server.py`` runs the same flow against a real ``mlflow server``.
"""

from __future__ import annotations

import json
import sys
import warnings

import pytest

from metaopt_tuner import registry
from metaopt_tuner.artifact import MANIFEST, TENSORS, pretrained
from metaopt_tuner.errors import (
    ArtifactError,
    MetaOptWarning,
    MissingExtraError,
    RegistryError,
    RegistryUnavailableError,
)
from metaopt_tuner.registry.mlflow_store import embedded_uri, registry_uri, tracking_uri
from metaopt_tuner.registry.model_cache import entry_dir, install_entry
from metaopt_tuner.resolver import resolve_artifact

from .helpers import run_cli as _run
from .mlflow_fixtures import cache_files, isolated, need_mlflow, unique  # noqa: F401

pytestmark = pytest.mark.mlflow  # .ci/run runs these again with a server and the extra


# --------------------------------------------------------------------------- no mlflow needed
@pytest.mark.parametrize("uri, expected", [
    ("models:/sinusoid-10step@prod", registry.ModelRef("sinusoid-10step", alias="prod")),
    ("models:/team.opt/12", registry.ModelRef("team.opt", version="12")),
    ("models:/a b@x_1", registry.ModelRef("a b", alias="x_1")),
])
def test_model_uris_parse(uri, expected):
    assert registry.parse_model_uri(uri) == expected
    assert str(expected) == uri


@pytest.mark.parametrize("uri", ["models:/name", "models:name@prod", "models://host/name/1", "models:/@prod",
                                 "models:/name/0", "models:/name/v2", "models:/name@", "models:/a/b/1",
                                 "models:/name@pr od"])
def test_malformed_model_uris_are_registry_errors(uri, isolated):  # noqa: F811
    with pytest.raises(RegistryError, match="not a model URI"):
        resolve_artifact(uri)
    assert cache_files(isolated) == []


def test_uris_default_to_the_environment_then_the_embedded_store(isolated, monkeypatch):  # noqa: F811
    assert tracking_uri() is None
    assert registry_uri() == embedded_uri() == f"sqlite:///{(isolated / 'home').resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000/")
    assert tracking_uri() == registry_uri() == "http://127.0.0.1:5000"
    assert registry_uri("sqlite:///x.db") == "sqlite:///x.db"
    for bad in ("127.0.0.1:5000", "htp://x", "http://", "nonsense"):
        with pytest.raises(RegistryError, match="not an MLflow tracking URI"):
            registry_uri(bad)


def test_missing_mlflow_names_the_extra(isolated, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(MissingExtraError, match=r"metaopt-tuner\[mlflow\]"):
        registry.load_registered("models:/x@prod")


def test_cache_install_is_atomic_and_verified(isolated):  # noqa: F811
    art = pretrained("sinusoid")
    folder = entry_dir("http://h:1", "name", "3")
    record = json.loads((art.path / MANIFEST).read_text())["tensors"]

    def half_written(staged):
        (staged / MANIFEST).write_bytes((art.path / MANIFEST).read_bytes())
        raise RegistryUnavailableError("the server went away mid-download")

    with pytest.raises(RegistryUnavailableError):
        install_entry(folder, half_written, record)
    assert not folder.exists() and not any(folder.parent.iterdir())

    def altered(staged):
        for name in (MANIFEST, TENSORS):
            (staged / name).write_bytes((art.path / name).read_bytes())
        (staged / TENSORS).write_bytes((staged / TENSORS).read_bytes()[:-3])

    with pytest.raises(ArtifactError):
        install_entry(folder, altered, {"sha256": record["sha256"], "manifest_sha256": "0" * 64})
    assert not folder.exists() and not any(folder.parent.iterdir())


# --------------------------------------------------------------------------- the embedded store
@pytest.fixture(scope="module")
def embedded_home(tmp_path_factory):
    """One embedded store for the module (creating its tables takes seconds); names are unique."""
    return tmp_path_factory.mktemp("embedded-home")


@pytest.fixture
def embedded(isolated, embedded_home, monkeypatch):  # noqa: F811
    need_mlflow()
    monkeypatch.setenv("METAOPT_HOME", str(embedded_home))
    return isolated


def test_publish_and_load_from_the_embedded_store(embedded, embedded_home, capsys):
    name = unique("sinusoid")
    code, out, err = _run(capsys, "publish", "sinusoid", "--name", name, "--alias", "prod",
                          "--description", "shipped one", "--json")
    assert code == 0, err
    published = json.loads(out)
    assert published["version"] == "1" and published["aliases"] == ["prod"]
    local = pretrained("sinusoid")
    assert published["sha256"] == local.manifest["tensors"]["sha256"]
    assert published["suite"] == "sinusoid" and published["steps"] == "10"
    assert (embedded_home / "mlflow.db").is_file() and (embedded_home / "mlartifacts").is_dir()

    loaded = resolve_artifact(f"models:/{name}@prod")
    assert loaded.path == entry_dir(embedded_uri(), name, "1")
    for n in local.names:
        assert loaded.theta[n].equal(local.theta[n]) and loaded.rates[n].equal(local.rates[n])

    code, out, err = _run(capsys, "registry", "list", name, "--json")
    assert code == 0, err
    assert [(r["version"], r["aliases"]) for r in json.loads(out)] == [("1", ["prod"])]
    code, out, _ = _run(capsys, "inspect", f"models:/{name}/1", "--json")
    assert code == 0 and json.loads(out)["manifest"]["tensors"] == local.manifest["tensors"]


def test_a_tampered_cache_entry_is_never_used(embedded, capsys):
    name = unique("tamper")
    registry.publish("sinusoid", name)
    folder = resolve_artifact(f"models:/{name}/1").path
    data = bytearray((folder / TENSORS).read_bytes())
    data[100] ^= 0x01
    (folder / TENSORS).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its SHA-256.*not used"):
        registry.load_registered(f"models:/{name}/1")
    code, out, err = _run(capsys, "evaluate", f"models:/{name}/1", "--tasks", "2")
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: the cached")


def test_bad_registry_input_is_one_line_and_exit_2(embedded, capsys):
    name = unique("bad")
    registry.publish("sinusoid", name, alias="prod")
    before = cache_files(embedded)
    cases = [
        ("inspect", f"models:/{name}-missing@prod"),
        ("inspect", f"models:/{name}@staging"),
        ("inspect", f"models:/{name}/7"),
        ("inspect", "models:/name"),
        ("inspect", f"models:/{name}/1", "--tracking-uri", "not-a-uri"),
        ("inspect", f"models:/{name}@prod", "--tracking-uri", "http://127.0.0.1:9"),
        ("registry", "alias", name, "9", "prod"),
        ("registry", "alias", name, "1", "latest"),
        ("registry", "list", f"{name}-missing"),
        ("publish", "no/such/folder", "--name", name),
        ("publish", "sinusoid", "--name", "bad/name"),
        ("train", "--out", str(embedded / "run"), "--tracking-uri", "localhost:5000"),
        ("compare", "--artifact", "sinusoid", "--out", str(embedded / "cmp"), "--tracking-uri", "nonsense"),
    ]
    for args in cases:
        code, out, err = _run(capsys, *args)
        assert code == 2, (args, out, err)
        assert out == "" and err.count("\n") == 1 and err.startswith("error: "), (args, err)
    assert cache_files(embedded) == before
    assert not (embedded / "run").exists() and not (embedded / "cmp").exists()


def test_a_registered_model_that_is_not_an_artifact(embedded):
    import mlflow

    name = unique("foreign")
    client = mlflow.MlflowClient(tracking_uri=embedded_uri(), registry_uri=embedded_uri())
    client.create_registered_model(name)
    client.create_model_version(name, (embedded / "elsewhere").as_uri(), await_creation_for=0)
    with pytest.raises(ArtifactError, match="not a metaopt-tuner artifact"):
        registry.load_registered(f"models:/{name}/1")
    rows = registry.list_versions(name)
    assert [(r.version, r.is_artifact) for r in rows] == [("1", False)]


def test_offline_alias_needs_the_server_but_pinned_cached_versions_load(embedded, monkeypatch):
    name = unique("offline")
    registry.publish("sinusoid", name, alias="prod")
    registry.load_registered(f"models:/{name}/1")
    monkeypatch.setattr(registry.mlflow_store, "unreachable_reason", lambda uri: "connection refused")
    with pytest.warns(MetaOptWarning, match="unreachable|cannot reach.*loaded .* from the cache"):
        art = registry.load_registered(f"models:/{name}/1")
    assert art.path == entry_dir(embedded_uri(), name, "1")
    with pytest.raises(RegistryUnavailableError, match=f"cached versions: 1 .*models:/{name}/VERSION"):
        registry.load_registered(f"models:/{name}@prod")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RegistryUnavailableError, match="to download it; cached versions: 1 "):
            registry.load_registered(f"models:/{name}/2")


def test_a_server_that_answers_its_health_check_but_not_requests_falls_back_to_the_cache(
        embedded, monkeypatch):
    """A half-dead registry: reachable, but every request times out. A pinned cached version
    loads from the cache with a warning; an alias says the server did not answer (not "no
    such model")."""
    name = unique("hung")
    registry.publish("sinusoid", name, alias="prod")
    registry.load_registered(f"models:/{name}/1")

    class Hung:
        def __getattr__(self, attr):
            def call(*args, **kwargs):
                raise RuntimeError("API request to endpoint /api/2.0/mlflow/registered-models/get "
                                   "failed with exception HTTPConnectionPool: Read timed out.")
            return call

    monkeypatch.setattr(registry.mlflow_store, "client", lambda uri: Hung())
    with pytest.warns(MetaOptWarning, match="did not answer in time.*loaded .* from the cache"):
        art = registry.load_registered(f"models:/{name}/1")
    assert art.path == entry_dir(embedded_uri(), name, "1")
    with pytest.raises(RegistryUnavailableError, match="did not answer in time"):
        registry.load_registered(f"models:/{name}@prod")


def test_compare_logs_its_table_and_report_to_mlflow(embedded, capsys):
    import mlflow

    from .test_report import make_artifact

    art = make_artifact(embedded / "artifact")
    uri = f"sqlite:///{embedded / 'tracking.db'}"
    out = embedded / "compare"
    code, _, err = _run(capsys, "compare", "--artifact", str(art), "--out", str(out), "--steps", "3",
                        "--tasks", "8", "--trials", "2", "--val-tasks", "4", "--oracle-tasks", "0",
                        "--pretrain-steps", "5", "--baselines", "adam", "--no-progress",
                        "--tracking-uri", uri)
    assert code == 0, err
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(json.loads((out / "mlflow_run.json").read_text())["run_id"])
    results = json.loads((out / "results.json").read_text())
    assert run.info.status == "FINISHED" and run.data.params["steps"] == "3"
    for method in results["methods"]:
        assert run.data.metrics[f"{method['name']}.query_loss"] == method["query_loss"]["mean"]
    logged = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "report.html", "results.json"} <= logged
    assert (embedded / "mlartifacts").is_dir()  # beside the database, not in the current folder
