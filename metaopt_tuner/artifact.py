"""Artifacts: what meta-training learned (theta and per-weight rates alpha), saved as data.

An artifact is a directory with two files::

    ARTIFACT/
      tensors.safetensors   theta and the rates, safetensors (no pickle)
      manifest.json         everything else, versioned JSON

``tensors.safetensors`` holds, for every model parameter ``NAME`` (in ``named_parameters`` order):

* ``theta.NAME``: the learned initial value, shape ``SHAPE``;
* ``rates.NAME``: the learned inner learning rates, shape ``(rate_steps, *SHAPE)``. Rates are
  always stored per element, whatever granularity was learned (a scalar or per-tensor rate is
  expanded), so every consumer reads one layout. Inner step ``t`` uses row ``min(t, rate_steps-1)``.

``manifest.json`` (format version 2) is an object with these fields:

=====================  ==========================================================================
``format``             ``"metaopt-tuner/artifact"``
``format_version``     ``2`` (``1``: the same without ``manifest_sha256``); a loader refuses
                       versions newer than it knows
``manifest_sha256``    SHA-256 of the manifest's canonical JSON without this field (sorted keys,
                       no spaces; see :func:`seal_manifest`): an edited manifest is refused
``library_version``    the metaopt-tuner version that wrote it
``created``            UTC time of writing, ISO 8601
``tensors``            ``{"sha256": hex digest of tensors.safetensors, "size": its size in bytes}``
``parameters``         ``[{"name", "shape", "dtype"}, ...]``, in the model's parameter order
``rate_steps``         rows of every rate tensor (1, or one per inner step)
``inner_steps``        inner steps the rates were meta-trained for
``tail``               optional: ``{"horizon": H, "decay": d, "steps": T}``; step ``t >= H``
                       (0-based) uses the last rates times ``d ** (t - H + 1)`` (absent:
                       ``H = inner_steps``, the library's default decay; see
                       ``learners.inner.tail_factor``); meta-training adapted through ``T`` of
                       those steps
``model``              ``{"name": reference architecture, "kwargs": {...}}`` (see
                       ``models.build_model``) or ``{"factory": "module:attr", "kwargs": {...}}``
``suite``              ``{"name", "options", "metric_name", "metric_higher_is_better"}``; options
                       naming places on disk (``TaskSuite.path_options``) are a record only
``learner``            the learner's configuration (``MetaLearner.config()``)
``training``           the training configuration (``TrainConfig.to_dict()``) or ``null``
``metrics``            held-out metrics at the time of saving (free-form numbers)
``provenance``         optional: how the artifact was made (script, command, duration, ...)
=====================  ==========================================================================

Loading never unpickles and never imports code: a ``factory`` model spec, a ``module:Class`` suite
and a ``module:function`` encoder are imported only when the artifact was loaded with
``trust_factory=True``; paths come from the user, never from the manifest; sizes, shapes and step
counts are checked against bounds before anything is read or allocated. Every inconsistency (a
truncated or altered file, a missing or wrongly typed field, a shape that disagrees, NaN in the
tensors, a newer format) raises :class:`~metaopt_tuner.errors.ArtifactError` with a sentence saying
what is wrong. Writes go to a temporary directory that is then renamed into place, so a reader sees
the old artifact or the new one, never half of one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import importlib
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .errors import ArtifactError, MetaOptError, ModelMismatchError
from .learners.proto_head import HEAD_WEIGHT, head_at_width, is_head
from .models import complete_spec

if TYPE_CHECKING:
    from .learners.base import MetaLearner
    from .tasks.base import TaskSuite

__all__ = [
    "Artifact",
    "load_artifact",
    "resolve_artifact",
    "pretrained",
    "list_pretrained",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "TENSORS",
    "seal_manifest",
]

FORMAT = "metaopt-tuner/artifact"
FORMAT_VERSION = 2
#: the first version whose manifest carries its own checksum
_SEALED_VERSION = 2
#: bounds a manifest's numbers must keep before anything is read or allocated
MAX_STEPS = 10_000
MAX_ELEMENTS = 2**32
MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"

_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_MANIFEST_BYTES = 16 * 2**20
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SUITE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def _library_version() -> str:
    from . import __version__

    return __version__


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


def _shape_str(shape: Iterable[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def same_shape(name: str, shape: Iterable[int], expected: Iterable[int], width_free: bool) -> bool:
    """Whether parameter ``name`` of ``shape`` takes the artifact's ``expected`` values: equal
    shapes, or (``width_free``) a head that differs in its number of classes alone."""
    shape, expected = tuple(shape), tuple(expected)
    if shape == expected:
        return True
    return (width_free and is_head(name) and len(shape) == len(expected)
            and shape[1:] == expected[1:])


def _mismatch(
    expected: Mapping[str, tuple[int, ...]], actual: Mapping[str, tuple[int, ...]],
    width_free: bool = False,
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong shape) of ``actual`` parameter shapes against ``expected``."""
    missing = [n for n in expected if n not in actual]
    unexpected = [n for n in actual if n not in expected]
    wrong = [
        f"{n} {_shape_str(actual[n])} vs {_shape_str(expected[n])} in the artifact"
        for n in expected
        if n in actual and not same_shape(n, actual[n], expected[n], width_free)
    ]
    return missing, unexpected, wrong


def _mismatch_message(what: str, missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
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


def _check_manifest(manifest: Any, where: str) -> None:
    """Raise ArtifactError naming the first field of ``manifest`` that is missing or malformed."""
    c = _Check(where)
    if not isinstance(manifest, dict):
        raise c.fail(f"the manifest should be a JSON object, got {type(manifest).__name__}")
    fmt = c.field(manifest, "format", str, "format")
    if fmt != FORMAT:
        raise c.fail(f"not a metaopt-tuner artifact manifest (format {fmt!r})")
    version = c.field(manifest, "format_version", int, "format_version")
    if version > FORMAT_VERSION:
        raise c.fail(
            f"artifact format version {version} is newer than this metaopt-tuner "
            f"({_library_version()}) reads (up to {FORMAT_VERSION}); upgrade metaopt-tuner"
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
        if dtype not in _DTYPES:
            raise c.fail(f"field {label + '.dtype'!r} is {dtype!r}; expected one of "
                         f"{', '.join(_DTYPES)}")
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
    c.field(manifest, "learner", dict, "learner")
    tail = c.field(manifest, "tail", dict, "tail", optional=True)
    if tail is not None:
        c.positive_int(tail, "horizon", MAX_STEPS)
        decay = c.field(tail, "decay", (int, float), "tail.decay")
        if not 0 <= decay < 1:
            raise c.fail(f"field 'tail.decay' must be in [0, 1), got {decay}")
        steps = c.field(tail, "steps", int, "tail.steps", optional=True)
        if steps is not None and not 0 <= steps <= MAX_STEPS:
            raise c.fail(f"field 'tail.steps' must be in [0, {MAX_STEPS}], got {steps}")
    c.field(manifest, "training", dict, "training", optional=True)
    c.field(manifest, "metrics", dict, "metrics")
    c.field(manifest, "provenance", dict, "provenance", optional=True)
    sealed = c.field(manifest, "manifest_sha256", str, "manifest_sha256",
                     optional=version < _SEALED_VERSION)
    if sealed is not None and sealed != _canonical_digest(manifest):
        raise c.fail(f"{MANIFEST} does not match its checksum (manifest_sha256): the file was "
                     "edited or corrupted")


def _check_tensors(
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
        if not value.is_floating_point() or value.dtype not in _DTYPE_NAMES:
            raise c.fail(f"theta for {name} has unsupported dtype {value.dtype}")
        if rate.dtype != value.dtype:
            raise c.fail(f"rates for {name} are {rate.dtype} but theta is {value.dtype}")
        if tuple(rate.shape) != (num_steps, *value.shape):
            raise c.fail(f"rates for {name} have shape {_shape_str(rate.shape)}, expected "
                         f"{_shape_str((num_steps, *value.shape))}")
        if name in entries:
            entry = entries[name]
            if list(value.shape) != entry["shape"]:
                raise c.fail(f"the manifest says {name} has shape {_shape_str(entry['shape'])} "
                             f"but the tensor file holds {_shape_str(value.shape)}")
            if _DTYPE_NAMES[value.dtype] != entry["dtype"]:
                raise c.fail(f"the manifest says {name} is {entry['dtype']} but the tensor file "
                             f"holds {_DTYPE_NAMES[value.dtype]}")
        if not bool(torch.isfinite(value).all()):
            raise c.fail(f"theta for {name} contains NaN or infinite values")
        if not bool(torch.isfinite(rate).all()):
            raise c.fail(f"rates for {name} contain NaN or infinite values")
    if manifest is not None and list(entries) != list(theta):
        raise c.fail("the manifest's parameter list does not match the tensor file: "
                     f"manifest {list(entries)}, file {list(theta)}")


def _expand_rates(rates: Mapping[str, Tensor], params: Mapping[str, Tensor]) -> dict[str, Tensor]:
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


# --------------------------------------------------------------------------- atomic directory swap
def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------- the artifact
@dataclass(eq=False)
class Artifact:
    """Learned theta and per-element rates, plus the manifest that says what they belong to.

    Usually loaded (:func:`load_artifact`) or made from a learner (:meth:`from_learner`) rather
    than built directly.

    Args:
        theta: the learned initial weights, ``name -> Tensor`` in the model's parameter order.
        rates: the learned rates, ``name -> Tensor`` of shape ``(rate_steps, *param_shape)``.
        manifest: the JSON metadata (see the module docstring).
        trust_factory: allow :meth:`build_model` to import a factory model spec.
        path: the folder it was loaded from, if any.

    Raises:
        ArtifactError: the tensors disagree with each other or with the manifest.
    """

    theta: dict[str, Tensor]
    rates: dict[str, Tensor]
    manifest: dict[str, Any]
    trust_factory: bool = False
    path: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # A loaded manifest lists the parameters: check the tensors against it too.
        listed = self.manifest if "parameters" in self.manifest else None
        _check_tensors(self.theta, self.rates, f"artifact {self.path or '(in memory)'}", listed)

    # ------------------------------------------------------------------ manifest views
    @property
    def names(self) -> list[str]:
        """The parameter names, in the model's order."""
        return list(self.theta)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's shape."""
        return {n: tuple(t.shape) for n, t in self.theta.items()}

    @property
    def dtype(self) -> torch.dtype:
        """The tensors' dtype."""
        return next(iter(self.theta.values())).dtype

    @property
    def rate_steps(self) -> int:
        """Rows of every rate tensor (1, or one per learned step)."""
        return int(next(iter(self.rates.values())).shape[0])

    @property
    def model_spec(self) -> dict[str, Any]:
        """The model spec, with arguments that were defaults when it was written spelled out
        (an artifact from before group norm became the ConvNet's default names batch norm)."""
        return complete_spec(self.manifest["model"])

    @property
    def width_free(self) -> bool:
        """Whether the model has a class-indexed ``head`` whose values and rates are tied across
        classes: the artifact then serves tasks of any number of classes."""
        return HEAD_WEIGHT in self.theta and self.theta[HEAD_WEIGHT].dim() == 2

    @property
    def head_width(self) -> int | None:
        """The number of classes the head had in training (None without a head)."""
        return int(self.theta[HEAD_WEIGHT].shape[0]) if self.width_free else None

    @property
    def suite_name(self) -> str:
        """The suite it was trained on (a registered name or ``module:Class``)."""
        return self.manifest["suite"]["name"]

    @property
    def suite_options(self) -> dict[str, Any]:
        """The suite's options at training time."""
        return dict(self.manifest["suite"]["options"])

    @property
    def inner_steps(self) -> int:
        """The inner steps the rates were meta-trained for."""
        return int(self.manifest["inner_steps"])

    @property
    def horizon(self) -> int:
        """The steps the rates were meta-trained for; past it they shrink (see :meth:`tail_rule`)."""
        return int(self.manifest.get("tail", {}).get("horizon", self.inner_steps))

    @property
    def tail_decay(self) -> float:
        """How much each step past the horizon shrinks the rates of the step before."""
        from .learners.inner import TAIL_DECAY

        return float(self.manifest.get("tail", {}).get("decay", TAIL_DECAY))

    def tail_rule(self) -> str:
        """One line that says what the optimizer does after the trained horizon."""
        d = self.tail_decay
        return (
            f"steps 1-{self.horizon} use the learned rates; each later step multiplies the last "
            f"step's rates by {d:g} once more (all later steps together move the weights at most "
            f"{d / (1 - d):g}x one learned step)"
        )

    @property
    def metrics(self) -> dict[str, Any]:
        """Held-out metrics recorded at saving time."""
        return dict(self.manifest.get("metrics") or {})

    @property
    def learner_config(self) -> dict[str, Any]:
        """The learner's configuration (``MetaLearner.config()``)."""
        return dict(self.manifest.get("learner") or {})

    @property
    def training_config(self) -> dict[str, Any] | None:
        """The training configuration (``TrainConfig.to_dict()``), or None."""
        training = self.manifest.get("training")
        return None if training is None else dict(training)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_learner(
        cls,
        learner: MetaLearner,
        suite: TaskSuite,
        config_dict: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        *,
        model_spec: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Snapshot ``learner``'s theta and rates (expanded per element) with their context.

        ``model_spec`` defaults to the suite's reference model; pass ``{"factory": "mod:attr",
        "kwargs": {...}}`` when the learner's model is built by your own code.
        """
        from .tasks import suite_ref

        params = {n: p.detach() for n, p in learner.initial_params().items()}
        theta = {n: p.to("cpu").contiguous().clone() for n, p in params.items()}
        rates = _expand_rates(learner.learning_rates(), theta)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": _library_version(),
            "inner_steps": int(learner.inner_steps),
            "model": complete_spec(model_spec if model_spec is not None else suite.model_spec(),
                                   learner.model),
            "suite": {
                "name": suite_ref(suite),  # a user's suite as module:Class
                "options": suite.options(),
                "metric_name": suite.metric_name,
                "metric_higher_is_better": bool(suite.metric_higher_is_better),
            },
            "learner": learner.config(),
            "tail": {"horizon": int(learner.horizon), "decay": float(learner.tail_decay),
                     "steps": int(learner.tail_steps) if learner.trains_tail else 0},
            "training": dict(config_dict) if config_dict is not None else None,
            "metrics": dict(metrics or {}),
        }
        if provenance is not None:
            manifest["provenance"] = dict(provenance)
        manifest["rate_steps"] = int(next(iter(rates.values())).shape[0])
        return cls(theta, rates, manifest)

    # ------------------------------------------------------------------ writing
    def _tensor_bytes(self) -> bytes:
        from safetensors.torch import save

        tensors = {f"theta.{n}": t.contiguous() for n, t in self.theta.items()}
        tensors.update({f"rates.{n}": t.contiguous() for n, t in self.rates.items()})
        return save(tensors)

    def _full_manifest(self, data: bytes) -> dict[str, Any]:
        manifest = dict(self.manifest)
        manifest.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            library_version=_library_version(),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            tensors={"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)},
            parameters=[
                {"name": n, "shape": list(t.shape), "dtype": _DTYPE_NAMES[t.dtype]}
                for n, t in self.theta.items()
            ],
            rate_steps=self.rate_steps,
        )
        return seal_manifest(manifest)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the artifact directory ``path`` atomically; an existing artifact is replaced.

        Refuses to overwrite anything at ``path`` that is not an artifact.
        """
        target = Path(path)
        if target.exists() and not (target.is_dir() and
                                    (not any(target.iterdir()) or (target / MANIFEST).is_file())):
            raise ArtifactError(f"{target} exists and is not an artifact; refusing to overwrite it")
        data = self._tensor_bytes()
        manifest = self._full_manifest(data)
        try:
            text = json.dumps(manifest, indent=2, allow_nan=True) + "\n"
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"the artifact's manifest is not JSON-serializable: {exc}") from None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp", dir=target.parent))
        except OSError as exc:
            raise ArtifactError(f"cannot write artifact {target}: {exc.strerror or exc}") from None
        try:
            _write_file(tmp / TENSORS, data)
            _write_file(tmp / MANIFEST, text.encode())
            _fsync_dir(tmp)
            os.chmod(tmp, 0o755)
            if target.exists():
                # Prefer an atomic swap (tmp then holds the old artifact, removed below); else
                # move the old one aside first and back if the second rename fails.
                if not _exchange(tmp, target):
                    old = tmp.with_name(tmp.name + ".old")
                    os.rename(target, old)
                    try:
                        os.rename(tmp, target)
                    except OSError:
                        os.rename(old, target)
                        raise
                    tmp = old
            else:
                os.rename(tmp, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            raise ArtifactError(f"cannot write artifact {target}: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.manifest = manifest
        self.path = target
        return target

    # ------------------------------------------------------------------ using it
    def build_model(self) -> nn.Module:
        """A fresh model of the artifact's architecture (weights not loaded: see initialize).

        A ``factory`` spec is imported only when the artifact was loaded with
        ``trust_factory=True``. The model is first built on the meta device (no memory) and
        checked against the artifact's parameters, so a manifest whose model spec disagrees with
        its tensors is an error, never a huge allocation.
        """
        spec = self.model_spec
        kwargs = dict(spec.get("kwargs") or {})
        if "factory" in spec:
            factory_path = spec["factory"]
            if not self.trust_factory:
                raise ArtifactError(
                    f"the artifact's model is built by code ({factory_path}); load it with "
                    "trust_factory=True (CLI: --trust-factory) if you trust that code, or build the "
                    "model yourself and call artifact.initialize(model)"
                )
            module_name, _, attr = factory_path.partition(":")
            try:
                factory: Any = importlib.import_module(module_name)
                for part in attr.split("."):
                    factory = getattr(factory, part)
            except (ImportError, AttributeError) as exc:
                raise ArtifactError(f"cannot import model factory {factory_path}: {exc}") from None
        else:
            from .models import build_model

            def factory(**kw: Any) -> nn.Module:
                return build_model({"name": spec["name"], "kwargs": kw})

        def build() -> nn.Module:
            try:
                model = factory(**kwargs)
            except ArtifactError:  # e.g. the encoder folder it reads differs: keep the type
                raise
            except MetaOptError as exc:
                raise ArtifactError(f"cannot build the artifact's model: {exc}") from None
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ArtifactError(f"cannot build the artifact's model {spec}: {exc}") from None
            if not isinstance(model, nn.Module):
                raise ArtifactError(
                    f"the model factory returned {type(model).__name__}, not an nn.Module")
            return model

        with torch.device("meta"):
            shapes = {n: tuple(p.shape) for n, p in build().named_parameters()}
        missing, unexpected, wrong = _mismatch(self.shapes, shapes)
        if missing or unexpected or wrong:
            raise ModelMismatchError(
                f"the artifact's model spec {spec} does not build its parameters: "
                + _mismatch_message("model", missing, unexpected, wrong)
            )
        return build()

    @torch.no_grad()
    def initialize(self, model: nn.Module, strict: bool = True) -> nn.Module:
        """Load the learned theta into ``model``'s parameters (in place) and return ``model``.

        ``strict`` raises :class:`ModelMismatchError` naming the missing, unexpected and
        wrong-shape parameters; ``strict=False`` loads those that match and warns about the rest.
        A head of another number of classes (:attr:`width_free`) gets the class-tied values.
        """
        named = dict(model.named_parameters())
        missing, unexpected, wrong = _mismatch(
            self.shapes, {n: tuple(p.shape) for n, p in named.items()}, self.width_free
        )
        if missing or unexpected or wrong:
            message = _mismatch_message("model", missing, unexpected, wrong)
            if strict:
                raise ModelMismatchError(message)
            warnings.warn(f"{message}; loaded the learned initial values of the others",
                          stacklevel=2)
        for name, value in self.theta.items():
            p = named.get(name)
            if p is not None and same_shape(name, p.shape, value.shape, self.width_free):
                if is_head(name):
                    value = head_at_width(value, p.shape[0])
                p.copy_(value.to(device=p.device, dtype=p.dtype))
        return model

    def suite_class(self) -> type[TaskSuite]:
        """The class of the suite the artifact was trained on.

        A registered name (a built-in, or one the user's code registered) is looked up; a
        ``module:Class`` name is code the manifest names: like a model factory, it is imported
        only when the artifact was loaded with ``trust_factory=True``.
        """
        from .tasks import is_registered_suite, suite_class

        name = self.suite_name
        if not is_registered_suite(name) and not self.trust_factory:
            raise ArtifactError(
                f"the artifact's suite is code ({name!r} is not a registered suite); load it with "
                "trust_factory=True (CLI: --trust-factory) if you trust that code, or register the "
                "suite yourself (metaopt_tuner.tasks.register_suite)"
            )
        return suite_class(name)

    def build_suite(self, **overrides: Any) -> TaskSuite:
        """The suite the artifact was trained on, with ``overrides`` (e.g. ``data_dir``).

        Options that name places on disk (``data_dir``, ``cache_dir``: the suite's
        ``path_options``) come from ``overrides`` only, never from the manifest. A sentence
        encoder given as ``module:function`` is code the manifest names: like a model factory, it
        is imported only when the artifact was loaded with ``trust_factory=True`` (a model folder
        is data and needs no trust).
        """
        from .tasks import suite_from_class
        from .text.encoders import is_encoder_folder

        cls = self.suite_class()
        recorded = {k: v for k, v in self.suite_options.items() if k not in cls.path_options}
        options = {**recorded, **overrides}
        encoder = options.get("encoder")
        if (isinstance(encoder, str) and "encoder" not in overrides and not self.trust_factory
                and not is_encoder_folder(encoder)):
            raise ArtifactError(
                f"the artifact's suite embeds texts with code ({encoder}); load it with "
                "trust_factory=True (CLI: --trust-factory) if you trust that code, or pass "
                "encoder=... yourself"
            )
        return suite_from_class(cls, self.suite_name, **options)

    def to_learner(self, suite: TaskSuite | None = None, **learner_overrides: Any) -> MetaLearner:
        """A Meta-SGD learner whose theta and rates are the artifact's (for adaptation_curve).

        ``suite`` provides the loss and metric (default :meth:`build_suite`); ``learner_overrides``
        go to the learner (``inner_steps``, ``batching``, ``first_order``, ...).
        """
        from .learners import MetaSGDLearner

        suite = self.build_suite() if suite is None else suite
        trained, asked = self.suite_options.get("ways"), getattr(suite, "ways", None)
        if not self.width_free and trained is not None and asked is not None and trained != asked:
            raise ArtifactError(
                f"this artifact's model has a fixed number of classes ({trained}): evaluate it at "
                f"ways={trained}, or meta-train a model with a linear head (width-free) for "
                f"{asked}-way tasks"
            )
        model = self.build_model().to(dtype=self.dtype)
        self.initialize(model)
        inner_steps = int(learner_overrides.pop("inner_steps", self.inner_steps))
        options: dict[str, Any] = {
            # per-step rates need as many learner steps as rate rows; inner_steps is reset below
            "inner_steps": self.rate_steps if self.rate_steps > 1 else inner_steps,
            "per_step_lrs": self.rate_steps > 1,
            "lr_granularity": "element",
            "head_init": self.learner_config.get("head_init", "theta"),
            "inner_params": self.learner_config.get("inner_params", "all"),
        }
        options.update(learner_overrides)
        learner = MetaSGDLearner(model, suite.loss_per_example, suite.metric_per_example, **options)
        learner.to(dtype=self.dtype)
        learner.rates.load_rates(self.rates)
        learner.inner_steps = inner_steps
        learner.horizon = self.horizon
        learner.tail_decay = self.tail_decay
        return learner

    # ------------------------------------------------------------------ statistics
    def median_rates(self) -> Tensor:
        """The median learned rate over every weight, per step: shape ``(rate_steps,)``."""
        steps = self.rate_steps
        flat = torch.cat([r.reshape(steps, -1) for r in self.rates.values()], dim=1)
        return flat.median(dim=1).values

    def rate_stats(self) -> list[dict[str, Any]]:
        """Per tensor: name, shape and the min / median / max learned rate of every step."""
        stats = []
        for name, r in self.rates.items():
            flat = r.reshape(r.shape[0], -1).double()
            stats.append({
                "name": name,
                "shape": list(r.shape[1:]),
                "min": flat.min(dim=1).values.tolist(),
                "median": flat.median(dim=1).values.tolist(),
                "max": flat.max(dim=1).values.tolist(),
            })
        return stats


# --------------------------------------------------------------------------- loading
def load_artifact(path: str | os.PathLike[str], trust_factory: bool = False) -> Artifact:
    """Load and verify the artifact directory ``path`` (or its ``manifest.json``).

    Raises :class:`ArtifactError` with a plain sentence for anything missing, altered or
    inconsistent. ``trust_factory`` allows :meth:`Artifact.build_model` to import a factory path.

    Args:
        path: the artifact folder, or its ``manifest.json``.
        trust_factory: allow :meth:`Artifact.build_model` to import the model factory it names.

    Returns:
        The verified artifact (loading never unpickles).

    Raises:
        ArtifactError: anything missing, altered, of an unsupported version or inconsistent.
    """
    root = Path(path)
    if root.is_file() and root.name == MANIFEST:
        root = root.parent
    if not root.exists():
        raise ArtifactError(f"no artifact at {root}: the path does not exist")
    if not root.is_dir():
        raise ArtifactError(f"{root} is a file, not an artifact directory")
    manifest_path, tensors_path = root / MANIFEST, root / TENSORS
    where = f"artifact {root}"
    if not manifest_path.is_file():
        raise ArtifactError(f"{root} is not a metaopt artifact (it has no {MANIFEST})")
    try:
        if manifest_path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise ArtifactError(f"{where}: {MANIFEST} is implausibly large")
        raw = manifest_path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {manifest_path}: {exc.strerror or exc}") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{where}: {MANIFEST} is not valid JSON ({exc})") from None
    _check_manifest(manifest, where)
    if not tensors_path.is_file():
        raise ArtifactError(f"{where}: {TENSORS} is missing")
    expected = manifest["tensors"]
    try:
        # the size is compared before reading, so a huge file is refused without being read
        with open(tensors_path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            data = fh.read(expected["size"] + 1) if size == expected["size"] else b""
    except OSError as exc:
        raise ArtifactError(f"cannot read {tensors_path}: {exc.strerror or exc}") from None
    if size != expected["size"] or len(data) != size:
        raise ArtifactError(f"{where}: {TENSORS} has {max(size, len(data))} bytes but the manifest "
                            f"says {expected['size']} (truncated or replaced)")
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise ArtifactError(f"{where}: {TENSORS} does not match the manifest's checksum "
                            "(the file is corrupted or was modified)")
    try:
        from safetensors.torch import load

        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error types on malformed input
        raise ArtifactError(f"{where}: {TENSORS} is not a valid safetensors file ({exc})") from None
    names = [e["name"] for e in manifest["parameters"]]
    expected_keys = {f"theta.{n}" for n in names} | {f"rates.{n}" for n in names}
    if set(tensors) != expected_keys:
        missing = sorted(expected_keys - set(tensors))
        extra = sorted(set(tensors) - expected_keys)
        raise ArtifactError(f"{where}: {TENSORS} does not hold the manifest's tensors "
                            f"(missing: {missing or 'none'}; extra: {extra or 'none'})")
    theta = {n: tensors[f"theta.{n}"] for n in names}
    rates = {n: tensors[f"rates.{n}"] for n in names}
    return Artifact(theta, rates, manifest, trust_factory=trust_factory, path=root)


def list_pretrained() -> list[str]:
    """Names of the artifacts shipped with the package.

    Returns:
        The names :func:`pretrained` accepts, sorted.
    """
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / MANIFEST).is_file())


def pretrained(name: str = "sinusoid") -> Artifact:
    """Load the artifact ``name`` shipped in the package (``metaopt_tuner/pretrained/<name>/``).

    Args:
        name: one of :func:`list_pretrained`.

    Returns:
        The shipped artifact.

    Raises:
        ArtifactError: no shipped artifact has that name, or it is damaged.
    """
    available = list_pretrained()
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name not in available:
        raise ArtifactError(
            f"no pretrained artifact named {name!r}; available: {', '.join(available) or 'none'}"
        )
    return load_artifact(PRETRAINED_DIR / name)


def resolve_artifact(
    source: Artifact | str | os.PathLike[str], trust_factory: bool = False,
    tracking_uri: str | None = None,
) -> Artifact:
    """An Artifact as is; ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` from the model
    registry at ``tracking_uri`` (see ``registry.load_registered``); a path loaded with
    :func:`load_artifact`; else a pretrained name."""
    if isinstance(source, Artifact):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise ArtifactError(f"expected an Artifact, a path, a models:/ URI or a pretrained name, "
                            f"got {type(source).__name__}")
    if isinstance(source, str) and source.startswith("models:"):
        from .registry import load_registered

        return load_registered(source, tracking_uri=tracking_uri, trust_factory=trust_factory)
    path = Path(source)
    if not path.exists() and isinstance(source, str) and source in list_pretrained():
        return pretrained(source)
    return load_artifact(path, trust_factory=trust_factory)

