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
``head_step_bound``    optional: ``[r_1, ..., r_S]``, one per rate row: the longest step a class
                       row of the head (its weights and bias together) takes at that step (see
                       ``update_rule.bound_head_steps``; absent: unbounded)
``model``              ``{"name": reference architecture, "kwargs": {...}}`` (see
                       ``models.build_model``) or ``{"factory": "module:attr", "kwargs": {...}}``;
                       a model on an encoder folder's features records the encoder's
                       ``encoder_name`` and ``checksum``, never its path
``suite``              ``{"name", "options", "metric_name", "metric_higher_is_better"}``; options
                       naming places on disk (``TaskSuite.path_options``, an ``encoder``
                       folder) are a record only
``learner``            the learner's configuration (``MetaLearner.config()``)
``training``           the training configuration (``TrainConfig.to_dict()``) or ``null``
``metrics``            held-out metrics at the time of saving (free-form numbers)
``provenance``         optional: how the artifact was made (script, command, duration, ...)
=====================  ==========================================================================

Loading never unpickles and never imports code: a ``factory`` model spec, a ``module:Class`` suite
and a ``module:function`` encoder are imported only when the artifact was loaded with
``trust_factory=True``; paths (data, caches, an encoder folder) come from the user, never from
the manifest; sizes, shapes and step
counts are checked against bounds before anything is read or allocated. Every inconsistency (a
truncated or altered file, a missing or wrongly typed field, a shape that disagrees, NaN in the
tensors, a newer format) raises :class:`~metaopt_tuner.errors.ArtifactError` with a sentence saying
what is wrong. Writes go to a temporary directory that is then renamed into place, so a reader sees
the old artifact or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .. import json_text
from ..atomic import atomic_write_directory
from ..errors import ArtifactError, ConfigError, MetaOptError, ModelMismatchError
from ..imports import import_object
from ..models import build_model, complete_spec
from ..models.proto_head import HEAD_WEIGHT, head_at_width, is_head
from ..models.text.identity import EncoderIdentity, identity_in_spec, spec_without_paths
from ..update_rule import tail_reach
from ..version import __version__
from .encoder import encoder_option
from .format import (
    DTYPE_NAMES,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    TENSORS,
    check_manifest,
    check_tensors,
    expand_rates,
    mismatch_message,
    parameter_mismatch,
    same_shape,
    seal_manifest,
    upgrade,
)

if TYPE_CHECKING:
    from ..learners.base import MetaLearner
    from ..tasks.base import TaskSuite

__all__ = ["Artifact", "load_artifact"]


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
        check_tensors(self.theta, self.rates, f"artifact {self.path or '(in memory)'}", listed)

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
        (see ``format.upgrade``)."""
        return upgrade(self.manifest)["model"]

    @property
    def encoder(self) -> EncoderIdentity | None:
        """The encoder folder the model reads features from, as recorded: its name and checksum,
        never a path (None: no encoder folder). ``artifact.encoder.check(folder)`` raises
        :class:`~metaopt_tuner.errors.EncoderMismatchError` unless ``folder`` is that encoder."""
        return identity_in_spec(self.model_spec)

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
        return int(upgrade(self.manifest)["tail"]["horizon"])

    @property
    def tail_decay(self) -> float:
        """How much each step past the horizon shrinks the rates of the step before."""
        return float(upgrade(self.manifest)["tail"]["decay"])

    def tail_rule(self) -> str:
        """One line that says what the optimizer does after the trained horizon."""
        d = self.tail_decay
        return (
            f"steps 1-{self.horizon} use the learned rates; each later step multiplies the last "
            f"step's rates by {d:g} once more (all later steps together move the weights at most "
            f"{tail_reach(d):g}x one learned step)"
        )

    @property
    def head_step_bound(self) -> Tensor | None:
        """The longest step a head class row takes, one per rate row (None: unbounded)."""
        bound = self.manifest.get("head_step_bound")
        return None if bound is None else torch.tensor(bound, dtype=self.dtype)

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
        from ..tasks import suite_ref

        params = {n: p.detach() for n, p in learner.initial_params().items()}
        theta = {n: p.to("cpu").contiguous().clone() for n, p in params.items()}
        rates = expand_rates(learner.learning_rates(), theta)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "inner_steps": int(learner.inner_steps),
            "model": spec_without_paths(complete_spec(
                model_spec if model_spec is not None else suite.model_spec(), learner.model)),
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
        bound = learner.rates.head_bounds()
        if bound is not None:
            rows = bound.detach().to("cpu", torch.float64).expand(manifest["rate_steps"])
            manifest["head_step_bound"] = [float(v) for v in rows]
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
            library_version=__version__,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            tensors={"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)},
            parameters=[
                {"name": n, "shape": list(t.shape), "dtype": DTYPE_NAMES[t.dtype]}
                for n, t in self.theta.items()
            ],
            rate_steps=self.rate_steps,
        )
        return seal_manifest(json_text.finite(manifest))

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
            text = json_text.dumps(manifest, indent=2) + "\n"
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"the artifact's manifest is not JSON-serializable: {exc}") from None
        try:
            atomic_write_directory(target, {TENSORS: data, MANIFEST: text.encode()})
        except OSError as exc:
            raise ArtifactError(f"cannot write artifact {target}: {exc.strerror or exc}") from None
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
            try:
                factory: Any = import_object(factory_path)
            except (ImportError, AttributeError) as exc:
                raise ArtifactError(f"cannot import model factory {factory_path}: {exc}") from None
        else:
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
        missing, unexpected, wrong = parameter_mismatch(self.shapes, shapes)
        if missing or unexpected or wrong:
            raise ModelMismatchError(
                f"the artifact's model spec {spec} does not build its parameters: "
                + mismatch_message("model", missing, unexpected, wrong)
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
        missing, unexpected, wrong = parameter_mismatch(
            self.shapes, {n: tuple(p.shape) for n, p in named.items()}, self.width_free
        )
        if missing or unexpected or wrong:
            message = mismatch_message("model", missing, unexpected, wrong)
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
        from ..tasks import is_registered_suite, suite_class

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
        ``path_options``; an ``encoder`` folder) come from ``overrides`` only, never from the
        manifest. An encoder folder the model was trained on (:attr:`encoder`) must be given
        (``encoder=FOLDER``) and is checked against its recorded checksum. A sentence encoder
        given as ``module:function`` is code the manifest names: like a model factory, it is
        imported only when the artifact was loaded with ``trust_factory=True``.

        Raises:
            EncoderMismatchError: the model reads an encoder folder and ``encoder`` is not
                given, or is another encoder.
        """
        from ..tasks import suite_from_class

        cls = self.suite_class()
        recorded = {k: v for k, v in self.suite_options.items() if k not in cls.path_options}
        for key in cls.model_options:
            if key in overrides and key in recorded and _plain(overrides[key]) != _plain(recorded[key]):
                raise ConfigError(
                    f"the artifact's model was trained with {key}={json.dumps(_plain(recorded[key]))}; "
                    f"{key}={json.dumps(_plain(overrides[key]), default=str)} would give it a model or "
                    f"features it was not trained with: leave {key} out")
        recorded.update(encoder_option(recorded.get("encoder"), overrides.get("encoder"),
                                       self.encoder, self.trust_factory))
        return suite_from_class(cls, self.suite_name, **{**recorded, **overrides})

    def to_learner(self, suite: TaskSuite | None = None, **learner_overrides: Any) -> MetaLearner:
        """A Meta-SGD learner whose theta and rates are the artifact's (for adaptation_curve).

        ``suite`` provides the loss and metric (default :meth:`build_suite`); ``learner_overrides``
        go to the learner (``inner_steps``, ``batching``, ``first_order``, ...). Kept as a method
        for the public API: the learner is built by ``learners.learner_from_artifact``.
        """
        from ..learners.from_artifact import learner_from_artifact

        return learner_from_artifact(self, suite, **learner_overrides)

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
        if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ArtifactError(f"{where}: {MANIFEST} is implausibly large")
        raw = manifest_path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {manifest_path}: {exc.strerror or exc}") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{where}: {MANIFEST} is not valid JSON ({exc})") from None
    check_manifest(manifest, where)
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


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists, as an option reads back from JSON."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
