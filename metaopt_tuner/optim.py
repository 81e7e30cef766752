"""MetaSGD: the learned per-weight learning rates of an artifact as a ``torch.optim.Optimizer``.

::

    model, opt = metaopt_tuner.prepare(None, metaopt_tuner.pretrained("sinusoid"))
    for x, y in data:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()

Step ``t`` of a parameter updates ``p <- p - lr * alpha[min(t, S - 1)] * grad`` with the artifact's
learned rates ``alpha`` (``S`` learned steps; the last one's rates carry on), through the same
kernel as the meta-training inner loop (:func:`~metaopt_tuner.learners.inner.metasgd_update`), so
k optimizer steps from the learned theta reproduce the learner's k-step adaptation. A group's
``lr`` multiplies the learned rates (default 1.0): LR schedulers scale them.

Safe for any number of steps: learned rates are positive (never gradient ascent); past the horizon
``H`` the rates were meta-trained for, each step shrinks the last learned rates once more
(:func:`~metaopt_tuner.update_rule.tail_factor`, recorded in the artifact), so the steps after
``H`` together move a weight a bounded distance, and meta-training taught the rates to lower the
loss over those steps; and a step whose result would not be finite raises
:class:`~metaopt_tuner.errors.NonFiniteUpdateError` with every parameter left as it was.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .artifact import Artifact, list_pretrained, pretrained
from .artifact.format import mismatch_message, same_shape, shape_str
from .errors import ConfigError, ModelMismatchError, NonFiniteUpdateError
from .models.proto_head import (
    HEAD_BIAS,
    HEAD_WEIGHT,
    check_labels,
    is_head,
    prototype_head_,
    resize_head_,
    supports_prototype_head,
    tie_classes,
)
from .resolver import resolve_artifact
from .update_rule import bounded_head_update, metasgd_update, rate_row, tail_factor

__all__ = ["MetaSGD", "prepare", "pretrained", "list_pretrained"]


class MetaSGD(torch.optim.Optimizer):
    """SGD with a learned learning rate for every weight and every step, from an artifact.

    Args:
        params: ``model.named_parameters()`` (preferred: rates are matched by name), parameter
            groups of ``(name, param)`` pairs, or parameters in the artifact's order.
        artifact: an :class:`~metaopt_tuner.artifact.Artifact`, an artifact path, a registered
            ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (registry at
            ``$MLFLOW_TRACKING_URI`` or the embedded store; see ``registry``), or the name of a
            pretrained artifact.
        lr: multiplier on the learned rates (default 1.0; what LR schedulers change).
        names: parameter names for a plain parameter list (instead of the artifact's order).
        strict: raise :class:`ModelMismatchError` naming the missing, unexpected and wrong-shape
            parameters; ``False`` gives every unmatched parameter the artifact's median learned
            rate (per step) and warns which.
        foreach: one fused multi-tensor update per group (default: when every parameter is on
            CUDA).

    State per parameter: ``rates`` (``(S, *param.shape)``) and ``step`` (updates so far).

    Raises:
        ConfigError: ``lr`` is negative or not a number.
        ModelMismatchError: (``strict``) parameters and artifact differ; the message names them.
        NonFiniteUpdateError: from :meth:`step`, when an update would not be finite.
    """

    def __init__(
        self,
        params: Iterable[Any],
        artifact: Artifact | str | os.PathLike[str],
        lr: float = 1.0,
        *,
        names: Sequence[str] | None = None,
        strict: bool = True,
        foreach: bool | None = None,
    ) -> None:
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr >= 0.0:
            raise ConfigError(f"Invalid learning rate: {lr}")
        self.artifact = resolve_artifact(artifact)
        self.strict = bool(strict)
        self._names = list(names) if names is not None else None
        self._positional = 0  # parameters named so far from ``names`` or the artifact's order
        self._median = self.artifact.median_rates()
        #: the head's step bounds, read from the manifest once (None: unbounded)
        self._head_bound = self.artifact.head_step_bound
        self._matched: set[str] = set()
        self._param_names: dict[Tensor, str] = {}  # for errors that name a parameter
        # unexpected, wrong-shape and fallback (median-rate) parameters found while grouping
        self._issues: tuple[list[str], list[str], list[str]] = ([], [], [])
        self._initialized = False
        super().__init__(params, {"lr": float(lr), "foreach": foreach})
        self._initialized = True
        missing = [n for n in self.artifact.names if n not in self._matched]
        self._report(missing, *self._issues)

    # ------------------------------------------------------------------ matching rates
    def _group_names(self, group: dict[str, Any]) -> list[str]:
        if "param_names" in group:
            if self._names is not None:
                raise ConfigError("pass either named parameters or names=, not both")
            return list(group["param_names"])
        if self._initialized:
            raise ConfigError("MetaSGD.add_param_group needs named parameters: "
                              "pass [(name, param), ...]")
        source = self._names if self._names is not None else self.artifact.names
        start, self._positional = self._positional, self._positional + len(group["params"])
        if self._positional > len(source) and (self.strict or self._names is not None):
            what = "names= lists" if self._names is not None else "the artifact has"
            raise ModelMismatchError(
                f"the optimizer got more parameters than {what} ({len(source)}); pass "
                "model.named_parameters() so rates are matched by name"
            )
        extra = [f"<parameter {i}>" for i in range(len(source), self._positional)]
        return (list(source) + extra)[start:self._positional]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its parameters get their learned rates (matched by name) as state.

        A group that cannot be added (strict mismatch, unnamed parameters) leaves the optimizer
        as it was.
        """
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            states, issues = self._group_rates(group)
            if self._initialized:
                self._report([], *issues)
        except Exception:
            self.param_groups.pop()
            raise
        self.state.update(states)
        if not self._initialized:
            for pending, new in zip(self._issues, issues):
                pending.extend(new)

    def _group_rates(
        self, group: dict[str, Any]
    ) -> tuple[dict[Tensor, dict[str, Any]], tuple[list[str], list[str], list[str]]]:
        """Initial state of every parameter of ``group``, and (unexpected, wrong-shape, fallback)."""
        states: dict[Tensor, dict[str, Any]] = {}
        unexpected: list[str] = []
        wrong: list[str] = []
        fallback: list[str] = []
        steps = self.artifact.rate_steps
        for name, p in zip(self._group_names(group), group["params"]):
            self._param_names[p] = name
            rates = self.artifact.rates.get(name)
            width_free = self.artifact.width_free
            if rates is not None and same_shape(name, p.shape, rates.shape[1:], width_free):
                self._matched.add(name)
                if width_free and is_head(name):  # one row for every class, at any width
                    rates = tie_classes(rates, 1).expand(steps, *p.shape)
                    if self.artifact.learner_config.get("head_rate_scale") == "classes":
                        rates = rates * p.shape[0]  # as the learner: a row steps alike at any width
            else:
                if rates is None:
                    unexpected.append(name)
                else:
                    wrong.append(f"{name} {shape_str(p.shape)} vs {shape_str(rates.shape[1:])} "
                                 "in the artifact")
                fallback.append(name)
                rates = self._median.reshape(steps, *[1] * p.dim()).expand(steps, *p.shape)
            # artifacts of older versions could hold negative rates: never step against the gradient
            rates = rates.to(device=p.device, dtype=p.dtype).clamp(min=0)
            states[p] = {"rates": rates, "step": 0}
        return states, (unexpected, wrong, fallback)

    def _report(self, missing: list[str], unexpected: list[str], wrong: list[str],
                fallback: list[str]) -> None:
        """Raise (strict) or warn about the parameters that got no learned rates."""
        if self.strict and (missing or unexpected or wrong):
            raise ModelMismatchError(mismatch_message("optimizer", missing, unexpected, wrong))
        if fallback:
            median = ", ".join(f"{v:.4g}" for v in self._median.tolist())
            warnings.warn(
                f"MetaSGD: no learned rates for {', '.join(fallback)} (not in the artifact or "
                f"of another shape); they use the artifact's median learned rate ({median} per "
                "step)",
                stacklevel=3,
            )

    # ------------------------------------------------------------------ the update
    def _bound_head_steps(self, scale: float, params: list[Tensor], grads: list[Tensor],
                          lrs: list[Tensor], new: list[Tensor], horizon: int,
                          decay: float) -> bool:
        """With an artifact that bounds the head's steps, replace the head's new values in
        ``new`` by the bounded step's (as the learner's inner loop); whether it did."""
        bound = self._head_bound
        if bound is None:
            return False
        where = {self._param_names.get(p): i for i, p in enumerate(params)}
        iw, ib = where.get(HEAD_WEIGHT), where.get(HEAD_BIAS)
        if iw is None or ib is None:
            return False
        t = int(self.state[params[iw]]["step"])
        row = rate_row(bound.to(params[iw]), t, horizon, decay)
        new[iw], new[ib] = bounded_head_update(params[iw], params[ib], grads[iw], grads[ib],
                                               lrs[iw], lrs[ib], row, scale)
        return True

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """One update of every parameter that has a gradient; returns ``closure()``'s loss.

        The new values are computed first and written only when all of them are finite.

        Raises:
            NonFiniteUpdateError: some update would be NaN or infinite (a non-finite gradient or
                an overflow); it names those parameters, and no parameter or step count changed.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        horizon, decay = self.artifact.horizon, self.artifact.tail_decay
        names = self._param_names
        updates: list[tuple[list[Tensor], list[Tensor], bool]] = []
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            lrs: list[Tensor] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("MetaSGD does not support sparse gradients")
                state = self.state[p]
                rates = state["rates"]
                if rates.device != p.device or rates.dtype != p.dtype:  # the model moved
                    rates = state["rates"] = rates.to(device=p.device, dtype=p.dtype)
                t = int(state["step"])
                if tail_factor(t, horizon, decay) == 0.0:  # the tail has ended: nothing moves
                    continue
                params.append(p)
                grads.append(p.grad)
                lrs.append(rate_row(rates, t, horizon, decay))
            if not params:
                continue
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.is_cuda for p in params)
            new = metasgd_update(params, grads, lrs, scale=group["lr"], foreach=bool(foreach))
            if self._bound_head_steps(group["lr"], params, grads, lrs, new, horizon, decay):
                foreach = False
            updates.append((params, new, bool(foreach)))
        finite = [t.isfinite().all() for _, new, _ in updates for t in new]
        if finite and not bool(torch.stack(finite).all()):
            bad = [names[p] for params, new, _ in updates for p, t in zip(params, new)
                   if not bool(t.isfinite().all())]
            raise NonFiniteUpdateError(
                f"MetaSGD: the update of {', '.join(bad)} is not finite (a NaN or infinite "
                "gradient, or an overflow); no parameter was changed",
                bad,
            )
        for group in self.param_groups:  # every parameter with a gradient counts the step
            for p in group["params"]:
                if p.grad is not None:
                    self.state[p]["step"] = int(self.state[p]["step"]) + 1
        for params, new, foreach in updates:
            if foreach:
                torch._foreach_copy_(params, new)
            else:
                for p, v in zip(params, new):
                    p.copy_(v)
        return loss


def prepare(
    model: nn.Module | None,
    artifact: Artifact | str | os.PathLike[str],
    lr: float = 1.0,
    *,
    strict: bool = True,
    trust_factory: bool = False,
    foreach: bool | None = None,
    support: tuple[Tensor, Tensor] | None = None,
) -> tuple[nn.Module, MetaSGD]:
    """The common case in one call: ``model, opt = prepare(model_or_None, artifact)``.

    Builds the artifact's model when ``model`` is None, loads the learned initial weights into
    it, and returns it with a :class:`MetaSGD` over its named parameters. ``artifact`` is
    anything :class:`MetaSGD` accepts, ``models:/NAME@ALIAS`` included. An artifact meta-trained
    with a prototype head (``head_init="prototypes"``) needs the new task's ``support=(x, y)``:
    its head starts from their class means (see :func:`~metaopt_tuner.models.proto_head.
    prototype_head_`).

    Args:
        model: your model, or None to build the artifact's reference model.
        artifact: an :class:`~metaopt_tuner.artifact.Artifact`, an artifact folder, or the name of
            a pretrained artifact.
        lr: multiplier on the learned rates (what LR schedulers change).
        strict: raise on parameters that differ from the artifact's; ``False`` warns and gives
            unmatched parameters the median learned rate.
        trust_factory: allow importing the model factory an artifact names.
        foreach: one fused multi-tensor update per group (default: when on CUDA).
        support: the new task's support set ``(x, y)``, for a prototype-head artifact.

    Returns:
        The model, holding the learned initial weights, and its :class:`MetaSGD` optimizer.

    Raises:
        ArtifactError: the artifact is missing, corrupted or needs ``trust_factory``.
        ModelMismatchError: ``strict`` and the model's parameters differ (they are named).
        ConfigError: a prototype-head artifact without ``support``, or an invalid ``lr``.
    """
    art = resolve_artifact(artifact, trust_factory=trust_factory)
    if model is None:
        model = art.build_model().to(dtype=art.dtype)
    if support is not None and art.width_free and supports_prototype_head(model):
        resize_head_(model, check_labels(support[1]))  # the head's width is the task's
    art.initialize(model, strict=strict)
    if getattr(model, "uses_reference", False):  # norm="support": the task's support statistics
        if support is None:
            warnings.warn(
                "this model normalizes with its task's support-set statistics: pass "
                "support=(x, y) to prepare() (or call model.set_reference(x)) before using it",
                stacklevel=2,
            )
        else:
            model.set_reference(support[0])  # type: ignore[operator]
    if art.learner_config.get("head_init") == "prototypes":
        if support is None:
            warnings.warn(
                "this artifact was meta-trained with a prototype head: pass support=(x, y) to "
                "prepare() (or call prototype_head_(model, x, y)) before the first step",
                stacklevel=2,
            )
        else:
            prototype_head_(model, *support, whitening=art.learner_config.get("head_whitening"))
    return model, MetaSGD(model.named_parameters(), art, lr, strict=strict, foreach=foreach)

