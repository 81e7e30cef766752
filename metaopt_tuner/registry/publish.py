"""The model registry: publish artifacts to MLflow and load them back by ``models:/NAME@ALIAS``.

A registered model version's files are exactly the artifact's ``manifest.json`` and
``tensors.safetensors`` (no pickle, no MLflow flavour), tagged ``format``, ``suite``, ``learner``,
``steps``, ``sha256`` (of the tensor file) and ``manifest_sha256``. ``models:/NAME/VERSION`` and
``models:/NAME@ALIAS`` are downloaded once into the local cache (see ``model_cache``) and
verified on every load; when the server cannot be reached, a pinned version (``/VERSION``) loads
from the cache with a :class:`~metaopt_tuner.errors.MetaOptWarning` saying so.

Which registry: see ``mlflow_store`` (``$MLFLOW_TRACKING_URI``, else an embedded SQLite store).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import FORMAT, MANIFEST, TENSORS, Artifact, local_artifact
from ..errors import (
    ArtifactError,
    MetaOptWarning,
    RegistryError,
    RegistryUnavailableError,
    first_line,
)
from . import mlflow_store
from .model_cache import cached_versions, entry_dir, install_entry, load_entry

__all__ = [
    "ModelRef",
    "RegisteredVersion",
    "parse_model_uri",
    "is_model_uri",
    "publish",
    "list_versions",
    "set_alias",
    "load_registered",
]

SCHEME = "models:"
# Names and aliases are printed in terminals and pages: a safe ASCII set, bounded in length, so a
# shared name can carry no terminal escape, control character or right-to-left override.
_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_. -]{0,98}[A-Za-z0-9_.-])?")
_ALIAS = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VERSION = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``models:/NAME/VERSION`` (``version`` set) or ``models:/NAME@ALIAS`` (``alias``)."""

    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return f"models:/{self.name}/{self.version}" if self.alias is None else \
            f"models:/{self.name}@{self.alias}"


@dataclass
class RegisteredVersion:
    """One registered model version, as ``publish`` / ``list_versions`` report it."""

    name: str
    version: str
    aliases: list[str] = field(default_factory=list)
    suite: str | None = None
    learner: str | None = None
    steps: str | None = None
    sha256: str | None = None
    description: str | None = None
    is_artifact: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_model_uri(source: object) -> bool:
    """True for a string in the ``models:`` scheme (well formed or not)."""
    return isinstance(source, str) and source.startswith(SCHEME)


def parse_model_uri(uri: str) -> ModelRef:
    """``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` as a :class:`ModelRef`.

    Raises :class:`RegistryError` for anything else.
    """
    usage = f"{uri!r} is not a model URI; expected models:/NAME/VERSION or models:/NAME@ALIAS"
    if not is_model_uri(uri) or not uri.startswith(SCHEME + "/") or uri.startswith(SCHEME + "//"):
        raise RegistryError(usage)
    body = uri[len(SCHEME) + 1:]
    if "@" in body:
        name, _, alias = body.rpartition("@")
        if _NAME.fullmatch(name) and _ALIAS.fullmatch(alias):
            return ModelRef(name, alias=alias)
    else:
        name, _, version = body.rpartition("/")
        if _NAME.fullmatch(name) and _VERSION.fullmatch(version) and int(version) > 0:
            return ModelRef(name, version=str(int(version)))
    raise RegistryError(usage)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistryError(f"{ascii(name)} is not a usable model name: up to 100 of letters, "
                            "digits, '_', '.', '-' and inner spaces (ASCII), not starting with "
                            "'.' or '-'")
    return name


def _check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias) or re.fullmatch(r"[vV]\d+", alias) \
            or alias.lower() == "latest":
        raise RegistryError(f"{ascii(alias)} is not a usable alias: up to 64 letters, digits, "
                            "'_' and '-', "
                            "and not 'latest' or v<number> (MLflow reserves those)")
    return alias


def _version_info(mv: Any) -> RegisteredVersion:
    tags = dict(mv.tags or {})
    return RegisteredVersion(
        name=mv.name, version=str(mv.version), aliases=sorted(mv.aliases or []),
        suite=tags.get("suite"), learner=tags.get("learner"), steps=tags.get("steps"),
        sha256=tags.get("sha256"), description=mv.description or None,
        is_artifact=tags.get("format") == FORMAT,
    )


class _Registry:
    """One registry URI: the reachability check and MLflow's errors as the library's."""

    def __init__(self, uri: str | None) -> None:
        self.uri = mlflow_store.registry_uri(uri)

    def connect(self) -> Any:
        reason = mlflow_store.unreachable_reason(self.uri)
        if reason is not None:
            raise RegistryUnavailableError(f"cannot reach the MLflow server at {self.uri} ({reason})")
        return mlflow_store.client(self.uri)

    def fail(self, exc: Exception, what: str) -> RegistryError:
        code = mlflow_store.error_code(exc)
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS"):
            return RegistryError(f"{what}: {first_line(exc).removeprefix(f'{code}: ')}")
        if mlflow_store.timed_out(exc):  # it answers its health check, not the request
            return RegistryUnavailableError(f"the MLflow server at {self.uri} did not answer in "
                                            f"time ({first_line(exc)})")
        reason = mlflow_store.unreachable_reason(self.uri)
        if reason is not None:
            return RegistryUnavailableError(f"{what}: cannot reach the MLflow server at {self.uri} "
                                            f"({reason})")
        return RegistryError(f"{what} at {self.uri}: {first_line(exc)}")

    def model_version(self, client: Any, ref: ModelRef) -> Any:
        try:
            client.get_registered_model(ref.name)
        except Exception as exc:
            raise self.fail(exc, f"no registered model named {ref.name!r}") from None
        try:
            if ref.alias is not None:
                return client.get_model_version_by_alias(ref.name, ref.alias)
            return client.get_model_version(ref.name, ref.version)
        except Exception as exc:
            what = (f"registered model {ref.name!r} has no alias {ref.alias!r}" if ref.alias
                    else f"registered model {ref.name!r} has no version {ref.version}")
            raise self.fail(exc, what) from None


def _file_digests(folder: Path) -> dict[str, str]:
    return {"sha256": hashlib.sha256((folder / TENSORS).read_bytes()).hexdigest(),
            "manifest_sha256": hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()}


def publish(
    artifact: Artifact | str | os.PathLike[str],
    name: str,
    *,
    alias: str | None = None,
    description: str | None = None,
    tracking_uri: str | None = None,
) -> RegisteredVersion:
    """Register ``artifact`` (a folder, a pretrained name or a saved Artifact) as a new version of
    the registered model ``name``, optionally pointing ``alias`` at it.

    Args:
        artifact: the artifact to publish; it is verified before anything is sent.
        name: the registered model's name (created when new).
        alias: an alias to move to the new version (e.g. ``prod``).
        description: the version's description.
        tracking_uri: the MLflow server or store [default: see ``mlflow_store.registry_uri``].

    Returns:
        The new version.

    Raises:
        ArtifactError: the artifact is missing or invalid.
        RegistryError: a bad name or alias, or the registry refused (RegistryUnavailableError:
            the server cannot be reached).
    """
    _check_name(name)
    if alias is not None:
        _check_alias(alias)
    art = local_artifact(artifact)
    if art.path is None:
        raise ArtifactError("only a saved artifact can be published: save it first (artifact.save)")
    registry = _Registry(tracking_uri)
    client = registry.connect()
    staging = Path(tempfile.mkdtemp(prefix="metaopt-publish-"))
    try:
        for filename in (MANIFEST, TENSORS):  # exactly the verified files, nothing else
            shutil.copyfile(art.path / filename, staging / filename)
        digests = _file_digests(staging)
        if digests["sha256"] != art.manifest["tensors"]["sha256"]:
            raise ArtifactError(f"artifact {art.path} changed while it was being published")
        tags = {"format": FORMAT, "suite": art.suite_name,
                "learner": str(art.learner_config.get("learner", "")),
                "steps": str(art.inner_steps), **digests}
        try:
            experiment = mlflow_store.experiment_id(client, registry.uri)
            run = client.create_run(experiment, run_name=f"publish {name}",
                                    tags={"metaopt.kind": "publish", **tags})
            client.log_artifacts(run.info.run_id, str(staging), "artifact")
            client.set_terminated(run.info.run_id)
            try:
                client.get_registered_model(name)
            except Exception as exc:
                if mlflow_store.error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                    raise
                client.create_registered_model(name, tags={"format": FORMAT})
            mv = client.create_model_version(name, f"{run.info.artifact_uri}/artifact",
                                             run_id=run.info.run_id, tags=tags,
                                             description=description, await_creation_for=0)
            if alias is not None:
                client.set_registered_model_alias(name, alias, mv.version)
            return _version_info(client.get_model_version(name, mv.version))
        except Exception as exc:
            raise registry.fail(exc, f"cannot publish {art.path} as {name!r}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def list_versions(name: str | None = None, *, tracking_uri: str | None = None) -> list[RegisteredVersion]:
    """Every version of registered model ``name`` (default: of every registered model), by name
    then version. Versions that are not metaopt artifacts are listed with ``is_artifact=False``.

    Args:
        name: a registered model (default: every one).
        tracking_uri: the MLflow server or store [default: see ``mlflow_store.registry_uri``].

    Returns:
        The versions, with their aliases, suite, learner, steps and digests.

    Raises:
        RegistryError: ``name`` is not registered, or the registry cannot be read.
        MissingExtraError: mlflow is not installed.
    """
    registry = _Registry(tracking_uri)
    client = registry.connect()
    try:
        if name is not None:
            _check_name(name)
            try:
                models = [client.get_registered_model(name)]
            except Exception as exc:
                raise registry.fail(exc, f"no registered model named {name!r}") from None
        else:
            models = _pages(client.search_registered_models)
        rows = []
        for model in models:
            escaped = model.name.replace("\\", "\\\\").replace("'", "\\'")
            for mv in _pages(client.search_model_versions, filter_string=f"name = '{escaped}'"):
                row = _version_info(mv)  # a search leaves a version's aliases out: the model has them
                row.aliases = sorted(a for a, v in (model.aliases or {}).items() if str(v) == row.version)
                rows.append(row)
    except RegistryError:
        raise
    except Exception as exc:
        raise registry.fail(exc, "cannot list the registered models") from None
    return sorted(rows, key=lambda r: (r.name, int(r.version)))


def _pages(search: Any, **kwargs: Any) -> list[Any]:
    items, token = [], None
    while True:
        page = search(page_token=token, **kwargs)
        items += list(page)
        token = getattr(page, "token", None)
        if not token:
            return items


def set_alias(name: str, version: int | str, alias: str, *,
              tracking_uri: str | None = None) -> RegisteredVersion:
    """Point ``alias`` of registered model ``name`` at ``version`` (moving it from any other).

    Args:
        name: the registered model.
        version: the version the alias should name.
        alias: the alias to set or move (e.g. ``prod``).
        tracking_uri: the MLflow server or store [default: see ``mlflow_store.registry_uri``].

    Returns:
        The version the alias now names.

    Raises:
        RegistryError: an unknown name or version, or an unusable alias.
        MissingExtraError: mlflow is not installed.
    """
    _check_alias(alias)
    ref = parse_model_uri(f"models:/{_check_name(name)}/{version}")
    registry = _Registry(tracking_uri)
    client = registry.connect()
    mv = registry.model_version(client, ref)
    if dict(mv.tags or {}).get("format") != FORMAT:
        raise ArtifactError(f"{ref} is not a metaopt-tuner artifact (no 'format' tag {FORMAT!r})")
    try:
        client.set_registered_model_alias(name, alias, ref.version)
        return _version_info(client.get_model_version(name, ref.version))
    except Exception as exc:
        raise registry.fail(exc, f"cannot set alias {alias!r} of {name!r}") from None


def load_registered(
    uri: str | ModelRef,
    *,
    tracking_uri: str | None = None,
    trust_factory: bool = False,
) -> Artifact:
    """The artifact registered as ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``.

    Downloaded into the cache on first use and verified (SHA-256 of both files against the
    registry's tags) on every load. When the server cannot be reached, a pinned version loads
    from the cache with a :class:`MetaOptWarning`.

    Args:
        uri: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` (or a parsed :class:`ModelRef`).
        tracking_uri: the MLflow server or store [default: see ``mlflow_store.registry_uri``].
        trust_factory: allow importing the model factory the artifact names.

    Returns:
        The verified artifact.

    Raises:
        RegistryError: a malformed URI, an unknown name, version or alias
            (RegistryUnavailableError: the server is down and the cache cannot stand in).
        ArtifactError: the registered files are not a metaopt artifact, or the cached copy was
            altered (it is never used).
    """
    ref = uri if isinstance(uri, ModelRef) else parse_model_uri(uri)
    registry = _Registry(tracking_uri)
    try:
        client = registry.connect()
    except RegistryUnavailableError as exc:
        return _load_offline(ref, registry.uri, exc, trust_factory)
    try:
        mv = registry.model_version(client, ref)
    except RegistryUnavailableError as exc:  # reachable, but not answering
        return _load_offline(ref, registry.uri, exc, trust_factory)
    tags = dict(mv.tags or {})
    if tags.get("format") != FORMAT or not all(tags.get(k) for k in ("sha256", "manifest_sha256")):
        raise ArtifactError(f"{ref} (version {mv.version}) is not a metaopt-tuner artifact: it lacks "
                            f"the tags 'format' = {FORMAT!r}, 'sha256' and 'manifest_sha256'")
    folder = entry_dir(registry.uri, ref.name, mv.version)
    if not folder.exists():
        record = {"tracking_uri": registry.uri, "name": ref.name, "version": str(mv.version),
                  "source": mv.source, "sha256": tags["sha256"],
                  "manifest_sha256": tags["manifest_sha256"]}
        install_entry(folder, lambda staged: _download(registry, mv, staged), record)
    return load_entry(folder, tags, trust_factory=trust_factory)


def _download(registry: _Registry, mv: Any, staged: Path) -> None:
    """Download version ``mv``'s two artifact files into ``staged``."""
    mlflow = mlflow_store.import_mlflow()
    where = tempfile.mkdtemp(prefix="download", dir=staged.parent)
    try:
        got = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=mv.source, dst_path=where, tracking_uri=registry.uri))
    except Exception as exc:
        raise registry.fail(exc, f"cannot download version {mv.version} of {mv.name!r}") from None
    for filename in (MANIFEST, TENSORS):
        if not (got / filename).is_file():
            raise ArtifactError(f"version {mv.version} of {mv.name!r} is not a metaopt-tuner "
                                f"artifact: its files lack {filename}")
        os.replace(got / filename, staged / filename)


def _load_offline(ref: ModelRef, uri: str, exc: RegistryUnavailableError,
                  trust_factory: bool) -> Artifact:
    cached = cached_versions(uri, ref.name)
    if ref.version is None or ref.version not in cached:
        hint = (f"; cached versions: {', '.join(cached)} (load one as models:/{ref.name}/VERSION)"
                if cached else "; no version of it is cached")
        need = "to resolve the alias" if ref.alias else "to download it"
        raise RegistryUnavailableError(f"{exc}: {ref} needs the server {need}{hint}") from None
    folder = entry_dir(uri, ref.name, ref.version)
    artifact = load_entry(folder, trust_factory=trust_factory)
    warnings.warn(f"{exc}; loaded {ref} from the cache ({folder})", MetaOptWarning, stacklevel=3)
    return artifact
