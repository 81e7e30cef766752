"""Optional sentence encoders for the intents suite: a model the user has locally, never a download.

``encoder`` is either a folder holding a sentence-transformers model (loaded with the Hugging Face
hub switched offline, so a missing file is an error instead of a download), or ``"module:function"``
naming a callable ``f(texts: list[str]) -> Tensor [M, D]`` of the user's own. Encoding a dataset
is slow (CLINC150's 23,700 utterances take a minute or two on a laptop CPU with a small model),
so the embeddings are cached on disk, keyed by the texts and the model's files.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ...atomic import atomic_write
from ...errors import ConfigError, DataError
from ...imports import import_object

__all__ = ["Encoder", "load_encoder", "encode_cached", "is_encoder_folder", "names_code"]

Encoder = Callable[[list[str]], Tensor]

_CODE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def names_code(spec: object) -> bool:
    """Whether ``spec`` is written as ``module:function``, judged from the text alone (a value
    read from a manifest is never looked up on disk)."""
    return isinstance(spec, str) and _CODE.fullmatch(spec) is not None


def is_encoder_folder(spec: object) -> bool:
    """Whether ``spec`` names a local model folder (data) rather than ``module:function`` (code)."""
    return isinstance(spec, str) and bool(spec) and Path(spec).expanduser().is_dir()


def _sentence_transformer(folder: Path) -> Encoder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError(
            f"encoder {folder} is a model folder, but sentence-transformers is not installed "
            "(pip install sentence-transformers)"
        ) from None
    try:
        model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    except Exception as exc:  # a broken folder fails in many library-specific ways
        raise DataError(f"cannot load the sentence encoder in {folder}: {exc}") from None

    def encode(texts: list[str]) -> Tensor:
        out = model.encode(texts, batch_size=128, convert_to_tensor=True, show_progress_bar=False)
        return out.detach().cpu().float()

    return encode


def load_encoder(spec: str) -> Encoder:
    """The encoder named by ``spec`` (a local model folder or ``"module:function"``)."""
    if is_encoder_folder(spec):
        return _sentence_transformer(Path(spec).expanduser())
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr or "/" in spec:
        raise ConfigError(
            f"encoder {spec!r} is neither a local model folder nor 'module:function'; models are "
            "never downloaded: point to a folder that holds one"
        )
    try:
        fn = import_object(spec)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import encoder {spec!r}: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"encoder {spec!r} is not callable")
    return fn


def _fingerprint(spec: str, texts: Sequence[str]) -> str:
    digest = hashlib.sha256(spec.encode())
    path = Path(spec).expanduser()
    if path.is_dir():  # a changed model file changes the embeddings
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = f.stat()
            digest.update(f"{f.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def encode_cached(spec: str, texts: Sequence[str], cache_dir: Path | None) -> Tensor:
    """Embeddings ``[M, D]`` (float32, each row L2-normalized) of ``texts`` with encoder ``spec``.

    With ``cache_dir``, a file there keyed by the encoder and the texts is reused or written.
    """
    target = None
    if cache_dir is not None:
        target = cache_dir / f"embeddings-{_fingerprint(spec, texts)}.pt"
        if target.is_file():
            try:
                cached = torch.load(target, weights_only=True)
                if isinstance(cached, Tensor) and cached.shape[0] == len(texts):
                    return cached
            except Exception:  # a damaged cache file is recomputed
                pass
    out = load_encoder(spec)(list(texts))
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != len(texts):
        raise DataError(
            f"encoder {spec!r} must return a [{len(texts)}, D] tensor, got "
            f"{getattr(out, 'shape', type(out).__name__)}"
        )
    out = torch.nn.functional.normalize(out.detach().float(), dim=1)
    if not bool(torch.isfinite(out).all()):
        raise DataError(f"encoder {spec!r} returned non-finite embeddings")
    if target is not None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda fh: torch.save(out, fh))
        except OSError:  # an unwritable cache only costs time
            pass
    return out
