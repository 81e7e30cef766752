"""The local cache of registered artifacts: downloaded once, verified on every load.

An entry is a folder ``CACHE/registry/SERVER/NAME/VERSION/`` holding the artifact's two files and
``registry.json`` (the server, name, version and the SHA-256 of both files as the registry tags
them). ``CACHE`` is ``$METAOPT_CACHE_DIR``, else the platform's cache folder
(``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%``
on Windows) plus ``metaopt-tuner``. An entry is filled in a temporary folder beside it and renamed
into place once verified, so a reader sees a whole entry or none. A file whose digest differs from
the record raises :class:`~metaopt_tuner.errors.ArtifactError`: the entry is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..artifact import MANIFEST, TENSORS, Artifact, load_artifact
from ..atomic import atomic_write_text
from ..errors import ArtifactError

__all__ = ["cache_root", "entry_dir", "cached_versions", "load_entry", "install_entry", "RECORD"]

RECORD = "registry.json"
#: the registry tags (and record fields) holding each file's SHA-256
DIGEST_TAGS = {TENSORS: "sha256", MANIFEST: "manifest_sha256"}


def cache_root() -> Path:
    """``$METAOPT_CACHE_DIR`` or the platform's per-user cache folder for metaopt-tuner."""
    explicit = os.environ.get("METAOPT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or "~/AppData/Local").expanduser()
    elif sys.platform == "darwin":
        base = Path("~/Library/Caches").expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return base / "metaopt-tuner"


def _safe(text: str) -> str:
    """A folder name for ``text``: readable, collision-free (a digest suffix), never ``..``."""
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", text)[:48].strip("_") or "x"
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def _model_dir(uri: str, name: str) -> Path:
    return cache_root() / "registry" / _safe(uri) / _safe(name)


def entry_dir(uri: str, name: str, version: str) -> Path:
    """The cache folder of registered model ``name`` version ``version`` on the server ``uri``."""
    return _model_dir(uri, name) / str(int(version))


def cached_versions(uri: str, name: str) -> list[str]:
    """Versions of ``name`` from ``uri`` held in the cache, in ascending order."""
    folder = _model_dir(uri, name)
    if not folder.is_dir():
        return []
    return [str(v) for v in sorted(int(p.name) for p in folder.iterdir()
                                   if p.name.isdigit() and (p / RECORD).is_file())]


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ArtifactError(f"cannot read the cached file {path}: {exc.strerror or exc}") from None


def _verify(folder: Path, expected: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entry's record, after checking both files against it (and it against ``expected``)."""
    fix = f"remove {folder} to download it again"
    try:
        record = json.loads((folder / RECORD).read_text())
        digests = {f: str(record[DIGEST_TAGS[f]]) for f in DIGEST_TAGS}
    except (OSError, ValueError, KeyError, TypeError):
        raise ArtifactError(f"the cache entry {folder} has no readable {RECORD}; {fix}") from None
    for filename, digest in digests.items():
        if _digest(folder / filename) != digest:
            raise ArtifactError(f"the cached {filename} in {folder} does not match its SHA-256 "
                                f"(truncated or modified); it was not used; {fix}")
        if expected is not None and expected.get(DIGEST_TAGS[filename]) != digest:
            raise ArtifactError(f"the cached {filename} in {folder} differs from the registry's "
                                f"version (SHA-256); it was not used; {fix}")
    return record


def load_entry(folder: Path, expected: Mapping[str, Any] | None = None,
               trust_factory: bool = False) -> Artifact:
    """Verify the entry ``folder`` (against the registry's ``expected`` digests when known) and
    load its artifact. Raises :class:`ArtifactError` for any mismatch."""
    _verify(folder, expected)
    return load_artifact(folder, trust_factory=trust_factory)


def install_entry(folder: Path, fill: Callable[[Path], None], record: Mapping[str, Any]) -> None:
    """Create the entry ``folder`` atomically: ``fill(tmp)`` writes the artifact's files into a
    temporary folder, which is verified against ``record`` and renamed into place. On any error
    nothing is left behind; an entry another process installed meanwhile is kept."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp", dir=folder.parent))
    except OSError as exc:
        raise ArtifactError(f"cannot write the cache folder {folder.parent}: "
                            f"{exc.strerror or exc}") from None
    try:
        staged = tmp / "entry"
        staged.mkdir()
        fill(staged)
        atomic_write_text(staged / RECORD, json.dumps(dict(record), indent=2) + "\n")
        load_entry(staged, record)
        try:
            os.rename(staged, folder)
        except OSError:
            if not (folder / RECORD).is_file():
                raise
    except OSError as exc:
        raise ArtifactError(f"cannot write the cache entry {folder}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
