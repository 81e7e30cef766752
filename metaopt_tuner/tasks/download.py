"""Fetch a data set's published files, verified by MD5, written atomically.

Only for users with internet access: every suite reads local folders, and nothing downloads on its
own. Offline (or behind a proxy that refuses), the error says which URL to fetch by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..atomic import atomic_write
from ..errors import ConfigError, DataError

__all__ = ["DATASETS", "Dataset", "DownloadedFile", "md5sum", "download_files", "download_dataset"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Dataset:
    """Files (name -> MD5) published under ``base_url``."""

    base_url: str
    files: Mapping[str, str]


DATASETS: dict[str, Dataset] = {
    # The zips in the python/ folder of github.com/brendenlake/omniglot (as torchvision uses).
    "omniglot": Dataset(
        "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/",
        {
            "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
            "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
        },
    ),
}


@dataclass(frozen=True)
class DownloadedFile:
    """One file in the target folder and whether it was fetched now or already there."""

    path: Path
    md5: str
    size: int
    fetched: bool


def md5sum(path: str | os.PathLike[str]) -> str:
    """The MD5 hex digest of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _offline(url: str, dest: Path, expected_md5: str, exc: BaseException) -> DataError:
    reason = getattr(exc, "reason", None) or exc
    return DataError(
        f"cannot download {url}: {reason}. Are you offline? Fetch it by hand into "
        f"{dest.parent} (MD5 {expected_md5}) and pass that folder as --data-dir"
    )


def _fetch(url: str, dest: Path, expected_md5: str, timeout: float,
           progress: Callable[[str, int, int | None], None] | None) -> int:
    h = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (OSError, ValueError) as exc:  # URLError, timeouts and refused connections
        raise _offline(url, dest, expected_md5, exc) from None

    def write(out: IO[bytes]) -> None:
        nonlocal size
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        try:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                h.update(block)
                size += len(block)
                if progress is not None:
                    progress(dest.name, size, total)
        except (OSError, http.client.HTTPException) as exc:
            raise DataError(f"download of {url} failed after {size} bytes: {exc}") from None
        digest = h.hexdigest()
        if digest != expected_md5:  # raised before the rename: nothing is written
            raise DataError(
                f"MD5 mismatch for {url}: expected {expected_md5}, got {digest}; the download is "
                "corrupted or the file changed upstream (nothing was written)"
            )

    with response:
        try:
            atomic_write(dest, write)
        except OSError as exc:
            raise DataError(f"cannot write {dest}: {exc.strerror or exc}") from None
    return size


def download_files(
    files: Mapping[str, str],
    base_url: str,
    to: str | os.PathLike[str],
    *,
    timeout: float = 60.0,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> list[DownloadedFile]:
    """Fetch ``base_url + name`` for every ``name -> md5`` into ``to``; a file already there with
    the right MD5 is kept. A wrong MD5 raises DataError and leaves no partial file."""
    folder = Path(to).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {folder}: {exc.strerror or exc}") from None
    if not base_url.endswith("/"):
        base_url += "/"
    results = []
    for name, expected in files.items():
        dest = folder / name
        if dest.is_file() and md5sum(dest) == expected:
            results.append(DownloadedFile(dest, expected, dest.stat().st_size, fetched=False))
            continue
        size = _fetch(base_url + name, dest, expected, timeout, progress)
        results.append(DownloadedFile(dest, expected, size, fetched=True))
    return results


def download_dataset(
    name: str,
    to: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    timeout: float = 60.0,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> list[DownloadedFile]:
    """Fetch data set ``name`` (see :data:`DATASETS`) into ``to``; ``base_url`` points at a mirror."""
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; available: {', '.join(sorted(DATASETS))}")
    ds = DATASETS[name]
    return download_files(ds.files, base_url or ds.base_url, to, timeout=timeout, progress=progress)
