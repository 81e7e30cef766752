"""A local BERT-style encoder folder cut in two: cached lower-layer states, pretrained top layers.

:class:`~metaopt_tuner.models.text.transformer.EncoderTop` adapts the top layers of an encoder; this
module provides what feeds it and identifies it:

* :func:`encoder_checksum`: a content checksum of the folder's model files (portable across
  machines, unlike modification times), recorded in every artifact (never the folder's path: see
  :mod:`.identity`) and checked against the folder a user gives (:func:`verify_encoder` raises
  :class:`~metaopt_tuner.errors.EncoderMismatchError`);
* :func:`encoder_config` / :func:`top_layer_weights`: the shapes and pretrained weights of the top
  layers, read from ``config.json`` and ``model.safetensors`` (no pickle, no transformers needed);
* :func:`states_cached`: the token hidden states at the cut of every text, computed with
  ``transformers`` (offline: ``local_files_only``; never a download) and cached per utterance,
  keyed by the encoder checksum, the cut and the text, in ``$METAOPT_CACHE_DIR`` or the user
  cache dir (never in the data folder). States are stored as float16 (CLINC150's 23,700
  utterances: about 240 MB) and padded per batch by :class:`PackedStates`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...atomic import atomic_write_bytes
from ...errors import ConfigError, DataError, EncoderMismatchError

__all__ = ["PackedStates", "encoder_checksum", "verify_encoder", "encoder_config",
           "top_layer_weights", "states_cached", "states_cache_dir"]

#: files that do not change what the encoder computes
_IGNORED = ("README.md", "LICENSE")
_WEIGHTS = "model.safetensors"
_CHECKSUMS: dict[tuple[Any, ...], str] = {}


def _model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in _IGNORED
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def encoder_checksum(folder: str | os.PathLike[str]) -> str:
    """SHA-256 of the folder's model files (relative names and contents; READMEs ignored).

    Raises:
        EncoderMismatchError: the folder does not exist or holds no files.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise EncoderMismatchError(f"encoder folder {root} does not exist")
    files = _model_files(root)
    if not files:
        raise EncoderMismatchError(f"encoder folder {root} holds no model files")
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if stamp not in _CHECKSUMS:
        digest = hashlib.sha256()
        for f in files:
            digest.update(str(f.relative_to(root)).encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\0")
        _CHECKSUMS[stamp] = digest.hexdigest()
    return _CHECKSUMS[stamp]


def verify_encoder(folder: str | os.PathLike[str], checksum: str, name: str | None = None) -> None:
    """Raise :class:`EncoderMismatchError` unless ``folder`` exists with exactly ``checksum``
    (``name``: the encoder the artifact records, for the message)."""
    actual = encoder_checksum(folder)
    if actual != checksum:
        raise EncoderMismatchError(
            f"encoder folder {folder} differs from the one the artifact was trained with "
            f"(checksum {actual[:12]}, expected {checksum[:12]}); point to that encoder"
            + (f" ({name})" if name else "")
        )


def encoder_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The BERT configuration of ``folder`` (``config.json``) as :class:`EncoderTop` kwargs, plus
    ``num_hidden_layers`` and ``max_seq_length``.

    Raises:
        DataError: ``config.json`` is missing or unreadable.
        ConfigError: the encoder is not a BERT-style model with GELU and mean pooling.
    """
    root = Path(folder).expanduser()
    try:
        cfg = json.loads((root / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {root / 'config.json'}: {exc}") from None
    if cfg.get("model_type") not in ("bert", None) or cfg.get("hidden_act", "gelu") != "gelu":
        raise ConfigError(f"encoder {root}: adapting top layers needs a BERT-style encoder with "
                          f"GELU (model_type {cfg.get('model_type')!r}, {cfg.get('hidden_act')!r})")
    pooling = root / "1_Pooling" / "config.json"
    if pooling.is_file() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"):
        raise ConfigError(f"encoder {root}: adapting top layers needs mean pooling ({pooling})")
    max_len = 512
    st_cfg = root / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_len = int(json.loads(st_cfg.read_text()).get("max_seq_length", max_len))
    try:
        return {
            "hidden_size": int(cfg["hidden_size"]),
            "num_attention_heads": int(cfg["num_attention_heads"]),
            "intermediate_size": int(cfg["intermediate_size"]),
            "layer_norm_eps": float(cfg.get("layer_norm_eps", 1e-12)),
            "num_hidden_layers": int(cfg["num_hidden_layers"]),
            "max_seq_length": max_len,
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{root / 'config.json'}: missing or invalid field {exc}") from None


def top_layer_weights(folder: str | os.PathLike[str], layers: int) -> dict[str, Tensor]:
    """The pretrained weights of the top ``layers`` layers, named as in :class:`EncoderTop`."""
    from safetensors import safe_open

    root = Path(folder).expanduser()
    total = encoder_config(root)["num_hidden_layers"]
    if not 1 <= layers < total + 1:
        raise ConfigError(f"adapt_layers must be in 1..{total} for {root}, got {layers}")
    try:
        with safe_open(str(root / _WEIGHTS), framework="pt") as fh:
            keys = list(fh.keys())
            out = {}
            for j in range(layers):
                marker = f"encoder.layer.{total - layers + j}."
                for key in keys:
                    if marker in key:
                        out[f"layers.{j}." + key.split(marker, 1)[1]] = fh.get_tensor(key).float()
    except Exception as exc:  # safetensors raises its own types on a broken file
        raise DataError(f"cannot read the weights {root / _WEIGHTS}: {exc}") from None
    if not out:
        raise DataError(f"{root / _WEIGHTS} has no encoder.layer.N weights")
    return out


@dataclass
class PackedStates:
    """Token states of M utterances, packed: ``states[offsets[i]:offsets[i + 1]]`` is utterance i."""

    states: Tensor  # [total tokens, H], float16
    offsets: Tensor  # [M + 1], long

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    def __getitem__(self, rows: Tensor | Sequence[int]) -> Tensor:
        return self.gather(torch.as_tensor(rows, dtype=torch.long))

    def gather(self, rows: Tensor, dtype: torch.dtype = torch.float32,
               width: int | None = None) -> Tensor:
        """Utterances ``rows`` (any shape S) as ``[*S, L, H + 1]``: states and mask, padded with
        zeros to the longest of them, or to ``width`` tokens (at least the longest)."""
        flat = rows.reshape(-1)
        starts, lengths = self.offsets[flat], self.offsets[flat + 1] - self.offsets[flat]
        longest = int(lengths.max()) if flat.numel() else 1
        if width is not None and width < longest:
            raise ValueError(f"width {width} is shorter than the longest utterance ({longest})")
        width = longest if width is None else int(width)
        pos = torch.arange(width)
        mask = pos < lengths.unsqueeze(1)  # [R, L]
        index = (starts.unsqueeze(1) + pos).clamp(max=self.states.shape[0] - 1)
        out = torch.zeros(flat.numel(), width, self.states.shape[1] + 1, dtype=dtype)
        out[..., :-1] = self.states[index].to(dtype) * mask.unsqueeze(-1)
        out[..., -1] = mask.to(dtype)
        return out.view(*rows.shape, width, -1)


def states_cache_dir() -> Path:
    """``$METAOPT_CACHE_DIR/encoder-states`` or the user cache dir (never the data folder)."""
    env = os.environ.get("METAOPT_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
        "metaopt-tuner"
    return base / "encoder-states"


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]


def _read_store(path: Path) -> tuple[dict[bytes, int], PackedStates] | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        data = load_file(str(path))
        keys, states, offsets = data["keys"], data["states"], data["offsets"]
    except (OSError, KeyError, ValueError, SafetensorError):
        return None  # unreadable: computed again
    if keys.shape[0] + 1 != offsets.numel() or int(offsets[-1]) != states.shape[0]:
        return None
    index = {bytes(row): i for i, row in enumerate(keys.numpy())}
    return index, PackedStates(states, offsets)


def _compute(folder: Path, texts: list[str], cut: int, batch_size: int = 64) -> list[Tensor]:
    """Hidden states after ``cut`` layers of each text (real tokens only), with transformers."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        raise ConfigError("adapting an encoder's top layers needs transformers "
                          "(pip install 'metaopt-tuner[text]')") from None
    max_len = encoder_config(folder)["max_seq_length"]
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    except Exception as exc:  # a broken folder fails in many library-specific ways
        raise DataError(f"cannot load the encoder in {folder}: {exc}") from None
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding per batch
    out: list[Tensor] = [torch.empty(0)] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                            max_length=max_len, return_tensors="pt")
            hidden = model(**enc, output_hidden_states=True).hidden_states[cut]
            for row, i in enumerate(idx):
                n = int(enc["attention_mask"][row].sum())
                out[i] = hidden[row, :n].to(torch.float16).clone()
    return out


def states_cached(
    folder: str | os.PathLike[str], texts: Sequence[str], cut: int, cache_dir: Path | None = None,
) -> PackedStates:
    """Token states after the first ``cut`` layers of ``folder``'s encoder, one entry per text.

    Utterances already in the cache (same encoder checksum, cut and text) are read; the others are
    computed and added. ``cache_dir`` defaults to :func:`states_cache_dir`.
    """
    root = Path(folder).expanduser().resolve()
    checksum = encoder_checksum(root)
    path = (cache_dir or states_cache_dir()) / f"{checksum[:24]}-cut{cut}.safetensors"
    stored = _read_store(path) if path.is_file() else None
    index, packed = stored if stored is not None else ({}, None)
    unique = list(dict.fromkeys(texts))
    missing = [t for t in unique if _key(t) not in index]
    if missing:
        new = _compute(root, missing, cut)
        old = [] if packed is None else [
            packed.states[packed.offsets[i]:packed.offsets[i + 1]] for i in range(len(packed))]
        keys = list(index) + [_key(t) for t in missing]
        pieces = old + new
        lengths = torch.tensor([0] + [p.shape[0] for p in pieces])
        packed = PackedStates(torch.cat(pieces), lengths.cumsum(0))
        index = {k: i for i, k in enumerate(keys)}
        key_tensor = torch.tensor([list(k) for k in keys], dtype=torch.uint8)
        try:
            from safetensors.torch import save

            blob = save({"keys": key_tensor, "states": packed.states, "offsets": packed.offsets})
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, blob)
        except OSError:  # an unwritable cache only costs time
            pass
    assert packed is not None
    rows = torch.tensor([index[_key(t)] for t in texts], dtype=torch.long)
    starts, ends = packed.offsets[rows], packed.offsets[rows + 1]
    lengths = ends - starts
    gather = torch.cat([torch.arange(int(s), int(e)) for s, e in zip(starts, ends)])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    return PackedStates(packed.states[gather], offsets)
