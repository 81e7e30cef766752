"""The artifact format: file names, the manifest's schema and its checks (the layout is described
in :mod:`metaopt_tuner.artifact.value`)."""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from ..errors import ArtifactError
from ..models import complete_spec
from ..models.proto_head import is_head
from ..models.text.identity import spec_without_paths
from ..update_rule import TAIL_DECAY
from ..version import __version__

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "TENSORS",
    "DTYPES",
    "DTYPE_NAMES",
    "check_manifest",
    "check_tensors",
    "expand_rates",
    "parameter_mismatch",
    "mismatch_message",
    "shape_str",
    "same_shape",
    "seal_manifest",
    "MAX_STEPS",
    "MAX_ELEMENTS",
    "upgrade",
]

FORMAT = "metaopt-tuner/artifact"
FORMAT_VERSION = 2
#: the first version whose manifest carries its own checksum
SEALED_VERSION = 2
#: bounds a manifest's numbers must keep before anything is read or allocated
MAX_STEPS = 10_000
MAX_ELEMENTS = 2**32
MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"

DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_MANIFEST_BYTES = 16 * 2**20
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_SUITE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def _canonical_digest(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def seal_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """``manifest`` with its ``manifest_sha256`` (re)computed: what :meth:`Artifact.save` writes.

    A loader refuses a manifest whose digest does not match, so an edited manifest must be sealed
    again (a tool that rewrites manifests on purpose calls this).
    """
    sealed = dict(manifest)
    sealed["manifest_sha256"] = _canonical_digest(sealed)
    return sealed


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def shape_str(shape: Iterable[int]) -> str:
    """``(3, 4)``: a shape as error messages print it."""
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def same_shape(name: str, shape: Iterable[int], expected: Iterable[int], width_free: bool) -> bool:
    """Whether parameter ``name`` of ``shape`` takes the artifact's ``expected`` values: equal
    shapes, or (``width_free``) a head that differs in its number of classes alone."""
    shape, expected = tuple(shape), tuple(expected)
    if shape == expected:
        return True
    return (width_free and is_head(name) and len(shape) == len(expected)
            and shape[1:] == expected[1:])


def parameter_mismatch(
    expected: Mapping[str, tuple[int, ...]], actual: Mapping[str, tuple[int, ...]],
    width_free: bool = False,
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong shape) of ``actual`` parameter shapes against ``expected``."""
    missing = [n for n in expected if n not in actual]
    unexpected = [n for n in actual if n not in expected]
    wrong = [
        f"{n} {shape_str(actual[n])} vs {shape_str(expected[n])} in the artifact"
        for n in expected
        if n in actual and not same_shape(n, actual[n], expected[n], width_free)
    ]
    return missing, unexpected, wrong


def mismatch_message(what: str, missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    """One sentence naming the parameters of ``what`` (a model, an optimizer) that differ."""
    parts = []
    if missing:
        parts.append(f"missing (in the artifact, not in the {what}): {', '.join(missing)}")
    if unexpected:
        parts.append(f"unexpected (in the {what}, not in the artifact): {', '.join(unexpected)}")
    if wrong:
        parts.append(f"wrong shape: {', '.join(wrong)}")
    return f"the {what}'s parameters differ from the artifact's; " + "; ".join(parts)


# --------------------------------------------------------------------------- manifest schema
class _Check:
    """Field checks that name the manifest and the field in their errors."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, message: str) -> ArtifactError:
        return ArtifactError(f"{self.where}: {message}")

    def field(self, obj: Mapping[str, Any], key: str, kinds: type | tuple[type, ...],
              label: str, optional: bool = False) -> Any:
        if key not in obj:
            if optional:
                return None
            raise self.fail(f"field {label!r} is missing")
        value = obj[key]
        if optional and value is None:
            return None
        kinds_t = kinds if isinstance(kinds, tuple) else (kinds,)
        ok = isinstance(value, kinds_t) and not (isinstance(value, bool) and bool not in kinds_t)
        if not ok:
            names = " or ".join(k.__name__ for k in kinds_t)
            raise self.fail(f"field {label!r} should be {names}, got {type(value).__name__}")
        return value

    def positive_int(self, obj: Mapping[str, Any], key: str, maximum: int | None = None) -> int:
        value = self.field(obj, key, int, key)
        if value < 1:
            raise self.fail(f"field {key!r} should be a positive integer, got {value}")
        if maximum is not None and value > maximum:
            raise self.fail(f"field {key!r} is {value}, more than the {maximum} this library allows")
        return value


#: how deeply a manifest's values may nest (its own fields need 4; metrics a few more)
MAX_DEPTH = 32


def _depth(value: Any, limit: int = MAX_DEPTH + 1) -> int:
    """How deeply ``value`` nests (counted up to ``limit``, so a hostile file costs nothing)."""
    if limit <= 0 or not isinstance(value, (dict, list)):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in children), default=0)


def check_manifest(manifest: Any, where: str) -> None:
    """Raise ArtifactError naming the first field of ``manifest`` that is missing or malformed."""
    c = _Check(where)
    if not isinstance(manifest, dict):
        raise c.fail(f"the manifest should be a JSON object, got {type(manifest).__name__}")
    if _depth(manifest) > MAX_DEPTH:
        raise c.fail(f"the manifest nests deeper than {MAX_DEPTH} levels")
    fmt = c.field(manifest, "format", str, "format")
    if fmt != FORMAT:
        raise c.fail(f"not a metaopt-tuner artifact manifest (format {fmt!r})")
    version = c.field(manifest, "format_version", int, "format_version")
    if version > FORMAT_VERSION:
        raise c.fail(
            f"artifact format version {version} is newer than this metaopt-tuner "
            f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade metaopt-tuner"
        )
    if version < 1:
        raise c.fail(f"invalid artifact format version {version}")
    c.field(manifest, "library_version", str, "library_version")
    c.field(manifest, "created", str, "created", optional=True)
    tensors = c.field(manifest, "tensors", dict, "tensors")
    digest = c.field(tensors, "sha256", str, "tensors.sha256")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise c.fail("field 'tensors.sha256' is not a hex SHA-256 digest")
    size = c.field(tensors, "size", int, "tensors.size")
    if size < 0:
        raise c.fail(f"field 'tensors.size' is negative ({size})")
    params = c.field(manifest, "parameters", list, "parameters")
    if not params:
        raise c.fail("field 'parameters' is empty")
    seen: set[str] = set()
    for i, entry in enumerate(params):
        label = f"parameters[{i}]"
        if not isinstance(entry, dict):
            raise c.fail(f"field {label!r} should be dict, got {type(entry).__name__}")
        name = c.field(entry, "name", str, f"{label}.name")
        if not name or name in seen:
            raise c.fail(f"field {label + '.name'!r} is empty or repeated ({name!r})")
        seen.add(name)
        shape = c.field(entry, "shape", list, f"{label}.shape")
        if not all(_is_int(s) and s >= 0 for s in shape):
            raise c.fail(f"field {label + '.shape'!r} should be a list of non-negative integers")
        if len(shape) > 8 or math.prod(shape) > MAX_ELEMENTS:
            raise c.fail(f"field {label + '.shape'!r} is implausibly large ({shape})")
        dtype = c.field(entry, "dtype", str, f"{label}.dtype")
        if dtype not in DTYPES:
            raise c.fail(f"field {label + '.dtype'!r} is {dtype!r}; expected one of "
                         f"{', '.join(DTYPES)}")
    c.positive_int(manifest, "rate_steps", MAX_STEPS)
    c.positive_int(manifest, "inner_steps", MAX_STEPS)
    model = c.field(manifest, "model", dict, "model")
    c.field(model, "kwargs", dict, "model.kwargs", optional=True)
    has_name, has_factory = "name" in model, "factory" in model
    if has_name == has_factory:
        raise c.fail("field 'model' needs exactly one of 'name' (a reference architecture) or "
                     "'factory' ('module:attr')")
    if has_name:
        c.field(model, "name", str, "model.name")
    else:
        factory = c.field(model, "factory", str, "model.factory")
        if not _FACTORY.fullmatch(factory):
            raise c.fail(f"field 'model.factory' is not a 'module:attr' path: {factory!r}")
    suite = c.field(manifest, "suite", dict, "suite")
    suite_name = c.field(suite, "name", str, "suite.name")
    if not (_SUITE_NAME.fullmatch(suite_name) or _FACTORY.fullmatch(suite_name)):
        raise c.fail(f"field 'suite.name' is neither a suite name nor 'module:Class': {suite_name!r}")
    c.field(suite, "options", dict, "suite.options")
    c.field(suite, "metric_name", str, "suite.metric_name", optional=True)
    c.field(suite, "metric_higher_is_better", bool, "suite.metric_higher_is_better", optional=True)
    learner = c.field(manifest, "learner", dict, "learner")
    whitening = learner.get("head_whitening")
    if whitening is not None and not (
            isinstance(whitening, (int, float)) and not isinstance(whitening, bool)
            and math.isfinite(whitening) and whitening > 0):
        raise c.fail(f"field 'learner.head_whitening' must be a positive number or null, "
                     f"got {whitening!r}")
    tail = c.field(manifest, "tail", dict, "tail", optional=True)
    if tail is not None:
        c.positive_int(tail, "horizon", MAX_STEPS)
        decay = c.field(tail, "decay", (int, float), "tail.decay")
        if not 0 <= decay < 1:
            raise c.fail(f"field 'tail.decay' must be in [0, 1), got {decay}")
        steps = c.field(tail, "steps", int, "tail.steps", optional=True)
        if steps is not None and not 0 <= steps <= MAX_STEPS:
            raise c.fail(f"field 'tail.steps' must be in [0, {MAX_STEPS}], got {steps}")
    bound = c.field(manifest, "head_step_bound", list, "head_step_bound", optional=True)
    if bound is not None and (
        len(bound) != manifest["rate_steps"]
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   and v > 0 for v in bound)):
        raise c.fail("field 'head_step_bound' must hold one positive number per rate step "
                     f"({manifest['rate_steps']})")
    c.field(manifest, "training", dict, "training", optional=True)
    c.field(manifest, "metrics", dict, "metrics")
    c.field(manifest, "provenance", dict, "provenance", optional=True)
    sealed = c.field(manifest, "manifest_sha256", str, "manifest_sha256",
                     optional=version < SEALED_VERSION)
    if sealed is not None and sealed != _canonical_digest(manifest):
        raise c.fail(f"{MANIFEST} does not match its checksum (manifest_sha256): the file was "
                     "edited or corrupted")


def check_tensors(
    theta: Mapping[str, Tensor], rates: Mapping[str, Tensor], where: str,
    manifest: Mapping[str, Any] | None = None,
) -> None:
    """Raise ArtifactError unless theta and rates agree (with each other and the manifest)."""
    c = _Check(where)
    if not theta:
        raise c.fail("the artifact has no parameters")
    if list(theta) != list(rates):
        raise c.fail("theta and rates name different parameters: "
                     f"{sorted(set(theta) ^ set(rates))}")
    steps = {int(r.shape[0]) if r.dim() > 0 else 0 for r in rates.values()}
    if len(steps) != 1 or 0 in steps:
        raise c.fail("every rate tensor needs the same positive number of steps in its first "
                     "dimension")
    (num_steps,) = steps
    entries = {}
    if manifest is not None:
        entries = {e["name"]: e for e in manifest["parameters"]}
        if num_steps != manifest["rate_steps"]:
            raise c.fail(f"the rates have {num_steps} step(s) but the manifest says "
                         f"{manifest['rate_steps']}")
    for name, value in theta.items():
        rate = rates[name]
        if not value.is_floating_point() or value.dtype not in DTYPE_NAMES:
            raise c.fail(f"theta for {name} has unsupported dtype {value.dtype}")
        if rate.dtype != value.dtype:
            raise c.fail(f"rates for {name} are {rate.dtype} but theta is {value.dtype}")
        if tuple(rate.shape) != (num_steps, *value.shape):
            raise c.fail(f"rates for {name} have shape {shape_str(rate.shape)}, expected "
                         f"{shape_str((num_steps, *value.shape))}")
        if name in entries:
            entry = entries[name]
            if list(value.shape) != entry["shape"]:
                raise c.fail(f"the manifest says {name} has shape {shape_str(entry['shape'])} "
                             f"but the tensor file holds {shape_str(value.shape)}")
            if DTYPE_NAMES[value.dtype] != entry["dtype"]:
                raise c.fail(f"the manifest says {name} is {entry['dtype']} but the tensor file "
                             f"holds {DTYPE_NAMES[value.dtype]}")
        if not bool(torch.isfinite(value).all()):
            raise c.fail(f"theta for {name} contains NaN or infinite values")
        if not bool(torch.isfinite(rate).all()):
            raise c.fail(f"rates for {name} contain NaN or infinite values")
    if manifest is not None and list(entries) != list(theta):
        raise c.fail("the manifest's parameter list does not match the tensor file: "
                     f"manifest {list(entries)}, file {list(theta)}")


def expand_rates(rates: Mapping[str, Tensor], params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``name -> (steps, *broadcast)`` rates as ``(steps, *param.shape)`` per-element tensors."""
    out = {}
    rows = max(r.shape[0] for r in rates.values())
    for name, p in params.items():
        if name not in rates:  # a parameter the inner loop does not adapt: a rate of zero
            out[name] = torch.zeros(rows, *p.shape, dtype=p.dtype)
            continue
        r = rates[name].detach()
        steps = r.shape[0]
        lead = [1] * (p.dim() - (r.dim() - 1))
        r = r.reshape(steps, *lead, *r.shape[1:]).expand(steps, *p.shape)
        out[name] = r.to(device="cpu", dtype=p.dtype).contiguous().clone()
    return out


def upgrade(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest as this version reads it: what an older version left out, with the value it
    meant then. The one place that knows older manifests (the files are never rewritten):

    * no ``tail``: the rates were meta-trained for ``inner_steps`` steps, and later steps follow
      the library's decay;
    * a model spec that omits an argument whose default has changed since: the old default (see
      ``models.complete_spec``; an old ConvNet names its batch norm);
    * a model spec that names an encoder folder's path (``encoder``): its name only (the last
      two parts), as ``encoder_name``; the path is never used (``models.text.identity.spec_without_paths``).
    """
    out = dict(manifest)
    tail = dict(manifest.get("tail", {}))
    if "horizon" not in tail:
        tail["horizon"] = int(manifest["inner_steps"])
    tail.setdefault("decay", TAIL_DECAY)
    out["tail"] = tail
    if "model" in manifest:
        out["model"] = spec_without_paths(complete_spec(manifest["model"]))
    return out

