"""Read a ``<group>/<class>/*.png`` tree (a folder or zip files), decode it once, cache the tensors.

Decoding thousands of PNGs on every run would dominate a short meta-training run, so the decoded,
resized images are stored as one uint8 tensor in a safetensors file (never a pickle). The file name
carries a fingerprint of the source (every image's path with its size and mtime, or its zip CRC)
and of the decoding options, so any change to the data or the options reads the images again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from torch import Tensor

from ..errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "ImageCollection", "load_image_collection", "default_cache_dir",
           "scan_collection"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_FORMAT = 1  # bump when decoding changes so old caches are not reused
_MEMO: OrderedDict[str, ImageCollection] = OrderedDict()
_MEMO_SIZE = 4


@dataclass(frozen=True)
class ImageCollection:
    """Every image of a tree, grouped by class: class ``i`` owns ``images[offsets[i]:offsets[i+1]]``.

    ``images`` is uint8 ``[M, C, S, S]``; ``groups[i]`` and ``classes[i]`` name class ``i`` (the
    alphabet and the character for Omniglot). Classes are sorted by ``(group, class)``.
    """

    images: Tensor
    offsets: Tensor
    groups: list[str]
    classes: list[str]

    @property
    def counts(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def __len__(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class _Entry:
    group: str
    cls: str
    name: str
    source: str  # the folder or the zip file
    member: str  # the path inside the zip, or relative to the folder
    stamp: str  # CRC and size for zip members, size and mtime for files


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


def _entry(parts: list[str], root_name: str, source: str, member: str, stamp: str) -> _Entry:
    # <...>/<group>/<class>/<file>; a flat <class>/<file> tree is one group named after its root.
    group = parts[-3] if len(parts) >= 3 else root_name
    cls = parts[-2] if len(parts) >= 2 else root_name
    return _Entry(group, cls, parts[-1], source, member, stamp)


def _scan_folder(root: Path) -> list[_Entry]:
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not _is_image(name):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = path.stat()
            entries.append(_entry(rel.split("/"), root.name, str(root), rel,
                                  f"{st.st_size}:{st.st_mtime_ns}"))
    return entries


def _scan_zip(path: Path) -> list[_Entry]:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot read zip file {path}: {exc}") from None
    entries = []
    for info in infos:
        if info.is_dir() or not _is_image(info.filename):
            continue
        parts = [p for p in info.filename.split("/") if p]
        entries.append(_entry(parts, path.stem, str(path), info.filename,
                              f"{info.CRC}:{info.file_size}"))
    return entries


def scan_collection(data_dir: Path) -> list[_Entry]:
    """Every image under ``data_dir``: a folder tree, one zip, or a folder of zips (Omniglot's)."""
    if not data_dir.exists():
        raise DataError(f"data folder {data_dir} does not exist")
    if data_dir.is_file():
        if not zipfile.is_zipfile(data_dir):
            raise DataError(f"{data_dir} is neither a folder nor a zip file")
        entries = _scan_zip(data_dir)
    else:
        entries = _scan_folder(data_dir)
        if not entries:  # no extracted images: read the zips beside them directly
            for path in sorted(data_dir.glob("*.zip")):
                entries.extend(_scan_zip(path))
    if not entries:
        raise DataError(
            f"no images found in {data_dir}; expected <alphabet>/<character>/*.png "
            f"(or {', '.join(IMAGE_EXTENSIONS[1:])}) or zip files of that layout"
        )
    unique: dict[tuple[str, str, str], _Entry] = {}
    for e in entries:  # the same drawing in two sources (e.g. Greek in both minimal splits) once
        unique.setdefault((e.group, e.cls, e.name), e)
    return [unique[k] for k in sorted(unique)]


def _fingerprint(entries: list[_Entry], options: dict[str, object]) -> str:
    h = hashlib.sha256(json.dumps({"format": _FORMAT, **options}, sort_keys=True).encode())
    for e in entries:
        h.update(f"{e.group}/{e.cls}/{e.name}\0{e.stamp}\n".encode())
    return h.hexdigest()


#: the largest image file read (a drawing or a photo is far smaller; an archive member that
#: claims or inflates to more is refused, never read whole)
MAX_IMAGE_BYTES = 64 * 2**20


def _capped(fh: BinaryIO, where: str) -> bytes:
    data = fh.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise DataError(f"{where} is larger than {MAX_IMAGE_BYTES // 2**20} MiB: not an image "
                        "this suite reads")
    return data


def _read_bytes(entries: list[_Entry]) -> Iterator[bytes]:
    open_zips: dict[str, zipfile.ZipFile] = {}
    try:
        for e in entries:
            if e.source.endswith(".zip") and Path(e.source).is_file():
                zf = open_zips.get(e.source)
                if zf is None:
                    zf = open_zips[e.source] = zipfile.ZipFile(e.source)
                with zf.open(e.member) as fh:  # streamed: a member's header may lie
                    yield _capped(fh, f"{e.source}:{e.member}")
            else:
                with open(Path(e.source) / e.member, "rb") as fh:
                    yield _capped(fh, str(Path(e.source) / e.member))
    finally:
        for zf in open_zips.values():
            zf.close()


def _decode(entries: list[_Entry], size: int, channels: int, invert: bool) -> Tensor:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    mode = "L" if channels == 1 else "RGB"
    out = torch.empty(len(entries), channels, size, size, dtype=torch.uint8)
    for i, (e, raw) in enumerate(zip(entries, _read_bytes(entries))):
        try:
            with Image.open(io.BytesIO(raw)) as img:
                img = img.convert(mode).resize((size, size), Image.Resampling.LANCZOS)
                arr = np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"cannot decode image {e.source}/{e.member}: {exc}") from None
        t = torch.from_numpy(arr.copy())
        out[i] = t.unsqueeze(0) if channels == 1 else t.permute(2, 0, 1)
    if invert:
        out = 255 - out
    return out


def _writable(path: Path) -> bool:
    # os.access is always true for root; a folder with no write bit (shared, read-only data) is
    # left alone even then.
    try:
        return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)
    except OSError:
        return False


def default_cache_dir(data_dir: Path) -> Path:
    """Beside the data when that folder is writable, else ``$METAOPT_CACHE_DIR`` or the user cache."""
    env = os.environ.get("METAOPT_CACHE_DIR")
    if env:
        return Path(env)
    base = data_dir if data_dir.is_dir() else data_dir.parent
    beside = base / ".metaopt-cache"
    if _writable(beside if beside.is_dir() else base):
        return beside
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "metaopt-tuner"


def _load_cached(path: Path) -> ImageCollection | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads(fh.metadata()["index"])
            images, offsets = fh.get_tensor("images"), fh.get_tensor("offsets")
    except (OSError, KeyError, ValueError, SafetensorError):
        return None  # unreadable or from another version: decode again
    if offsets.numel() != len(meta["classes"]) + 1 or int(offsets[-1]) != images.shape[0]:
        return None
    return ImageCollection(images, offsets, list(meta["groups"]), list(meta["classes"]))


def _save_cached(path: Path, coll: ImageCollection, prefix: str) -> None:
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        meta = {"index": json.dumps({"groups": coll.groups, "classes": coll.classes})}
        try:
            save_file({"images": coll.images, "offsets": coll.offsets}, str(tmp), metadata=meta)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        for stale in path.parent.glob(f"{prefix}-*.safetensors"):  # the folder changed: drop old
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:
        pass  # a cache we cannot write only costs time


def load_image_collection(
    data_dir: str | os.PathLike[str],
    *,
    image_size: int = 28,
    channels: int = 1,
    invert: bool = False,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ImageCollection:
    """Every image under ``data_dir``, decoded to ``[M, channels, image_size, image_size]`` uint8.

    Reuses the in-process copy or the cache file when the source and options are unchanged.
    """
    root = Path(data_dir).expanduser().resolve()
    entries = scan_collection(root)
    options = {"image_size": int(image_size), "channels": int(channels), "invert": bool(invert)}
    key = _fingerprint(entries, options)
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    prefix = "images-" + hashlib.sha256(
        json.dumps([str(root), options], sort_keys=True).encode()).hexdigest()[:12]
    path = (Path(cache_dir) if cache_dir else default_cache_dir(root)) / f"{prefix}-{key[:20]}.safetensors"
    coll = _load_cached(path) if cache and path.is_file() else None
    if coll is None:
        images = _decode(entries, options["image_size"], options["channels"], options["invert"])
        groups, classes, counts = [], [], []
        for e in entries:  # entries are sorted, so a class's images are contiguous
            if not classes or (groups[-1], classes[-1]) != (e.group, e.cls):
                groups.append(e.group)
                classes.append(e.cls)
                counts.append(0)
            counts[-1] += 1
        offsets = torch.zeros(len(counts) + 1, dtype=torch.int64)
        offsets[1:] = torch.tensor(counts, dtype=torch.int64).cumsum(0)
        coll = ImageCollection(images, offsets, groups, classes)
        if cache:
            _save_cached(path, coll, prefix)
    _MEMO[key] = coll
    while len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return coll
