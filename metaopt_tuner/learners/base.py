"""MetaLearner: the batched evaluation of a meta-batch, shared by every learner.

A learner owns the model (whose parameters are the initial weights theta) and the inner learning
rates alpha. It adapts every task of a :class:`TaskBatch` with the one inner loop
(:func:`inner.adapt`) and turns the adapted parameters into a meta-gradient; subclasses differ only
in that last part. Three batching paths compute the same thing:

* ``"batched"``: the hand-batched forward of the reference architectures, parameters expanded to a
  leading task dimension, inner gradients of the summed task losses (exactly the per-task
  gradients, since tasks are independent). The fastest path.
* ``"vmap"``: ``torch.func.vmap`` over any ``nn.Module`` through ``functional_call``.
* ``"loop"``: a Python loop over tasks; the reference in tests and a fallback.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..config import BATCHING_MODES, HEAD_RATE_SCALES, INNER_PARAMS
from ..errors import ConfigError
from ..heap import release_freed_memory
from ..models import supports_batched
from ..models.proto_head import (
    HEAD_BIAS,
    HEAD_INITS,
    HEAD_WEIGHT,
    head_at_width,
    is_head,
    prototype_head,
    supports_prototype_head,
    task_width,
)
from ..tasks.base import TaskBatch
from ..update_rule import TAIL_DECAY, TAIL_STEPS, tail_factor
from .inner import GradFn, Params, adapt, autograd_grads, functorch_grads
from .rates import LearningRates

__all__ = ["MetaLearner", "MetaGradient", "AdaptationOutcome", "BATCHING_MODES", "INNER_PARAMS",
           "HEAD_RATE_SCALES"]


LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class MetaGradient:
    """One meta-batch's result: mean query loss and metric (detached) and the meta-gradient."""

    loss: Tensor
    metric: Tensor
    grads: dict[str, Tensor]


@dataclass
class AdaptationOutcome:
    """Per-task query loss and metric, shape ``[T]`` (or ``[T, steps + 1]`` for curves)."""

    loss: Tensor
    metric: Tensor
    adapted: Params | None = None
    #: per-task query loss after the meta-training tail past the horizon (``adapt_batch(tail=True)``)
    tail_loss: Tensor | None = None
    #: per-task mean query loss after each step before the horizon (``adapt_batch(anytime=True)``)
    step_loss: Tensor | None = None


def _forward_kwargs(head: bool, reference: Tensor | None,
                    with_reference: bool = False) -> dict[str, Any]:
    """Keyword arguments of a reference model's forward; only those that differ from defaults."""
    kwargs: dict[str, Any] = {} if head else {"head": False}
    if reference is not None:
        kwargs["reference"] = reference
    if with_reference:
        kwargs["with_reference"] = True
    return kwargs


def _adapted_by(inner_params: str, name: str) -> bool:
    """Whether the inner loop adapts parameter ``name`` under ``inner_params``."""
    return inner_params == "all" or name in (HEAD_WEIGHT, HEAD_BIAS)


class MetaLearner(nn.Module, abc.ABC):
    """Base of every learner: holds theta (the model) and alpha (the rates), adapts batches.

    Call order: build, move with ``.to(device, dtype)``, then call :meth:`meta_gradient` once per
    meta-batch; the trainer writes the returned gradients into the meta-parameters' ``.grad`` and
    steps the outer optimizer. :meth:`adaptation_curve` evaluates without building a meta-graph.

    Args:
        model: the model whose initial weights (theta) are meta-learned; any ``nn.Module`` whose
            forward is a function of its parameters.
        loss_fn: ``loss_fn(prediction, target)``, one loss per example (a suite's
            ``loss_per_example``).
        metric_fn: the same for the reported metric (default: ``loss_fn``).
        inner_steps: adaptation steps per task: the horizon the rates are meta-trained for.
        inner_lr: the inner rate (the initial value when the rates are learned).
        lr_granularity: ``"scalar"``, ``"tensor"`` or ``"element"`` (one rate per weight).
        per_step_lrs: one set of rates per inner step.
        learn_lrs: meta-learn the rates (stored as logarithms: always positive).
        first_order: treat inner gradients as constants (no second derivatives).
        batching: ``"auto"``, ``"batched"`` (hand-batched reference architectures), ``"vmap"`` or
            ``"loop"``.
        head_init: ``"theta"`` (the meta-learned head) or ``"prototypes"`` (each task's head
            starts from its support set's class means; models with a Linear ``head``).
        inner_params: ``"all"`` (the steps move every parameter) or ``"head"`` (the Linear head
            alone, on features computed once per task; the other parameters get no rates).
        step_loss_weight: the weight in the meta-loss of the mean query loss after the steps
            before the horizon (steps 1 to H - 1), beside the loss at the horizon: with a weight,
            every step is meta-trained to help, so a user may stop after any of them (MAML++'s
            multi-step loss, kept for the whole run). 0: the horizon's loss alone.
        head_rate_scale: ``"none"`` or ``"classes"``: the head's rates are multiplied by the
            task's number of classes. The mean support loss gives each class row about 1/C of
            the gradient, so with one set of rates for every width a row's step shrinks as
            classes are added; scaled, a row steps alike at any width (the optimizer does the
            same, so its steps stay the learner's).
        head_step_bound: with a value, each step of a head class row (its weight row and bias
            together) is at most a learned length, one per step row, starting at this value
            (:func:`~metaopt_tuner.update_rule.bound_head_steps`): a bound per row is the same at
            any number of classes, where rates alone overshoot at some widths. None: unbounded.
        head_whitening: with ``head_init="prototypes"``, a positive strength whitens each task's
            prototype head by its support set's within-class covariance, shrunk toward the
            identity by ``a / (a + examples per class - 1)``
            (:func:`~metaopt_tuner.models.proto_head.whitening_matrix`). None: plain prototypes.

    Raises:
        ConfigError: an unknown ``head_init``, ``inner_params`` or ``batching``, a model that
            cannot do what they ask, a non-positive ``inner_steps``, or invalid rate options.
    """

    #: registry name, e.g. "maml"
    learner_name: str = ""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        metric_fn: LossFn | None = None,
        *,
        inner_steps: int = 1,
        inner_lr: float = 0.01,
        lr_granularity: str = "scalar",
        per_step_lrs: bool = False,
        learn_lrs: bool = False,
        first_order: bool = False,
        batching: str = "auto",
        head_init: str = "theta",
        inner_params: str = "all",
        step_loss_weight: float = 0.0,
        head_rate_scale: str = "none",
        head_step_bound: float | None = None,
        head_whitening: float | None = None,
    ) -> None:
        super().__init__()
        if head_whitening is not None and not (
                isinstance(head_whitening, (int, float)) and not isinstance(head_whitening, bool)
                and math.isfinite(head_whitening) and head_whitening > 0):
            raise ConfigError(f"head_whitening must be a positive number, got {head_whitening!r}")
        if head_whitening is not None and head_init != "prototypes":
            raise ConfigError("head_whitening whitens a prototype head: it needs head_init "
                              f"'prototypes', got {head_init!r}")
        self.head_whitening = None if head_whitening is None else float(head_whitening)
        if head_step_bound is not None and not supports_prototype_head(model):
            raise ConfigError(f"head_step_bound needs a model with a Linear 'head' and "
                              f"forward(x, head=False); {type(model).__name__} has none")
        if head_rate_scale not in HEAD_RATE_SCALES:
            raise ConfigError(f"unknown head rate scale {head_rate_scale!r}; expected one of "
                              f"{', '.join(HEAD_RATE_SCALES)}")
        if head_rate_scale != "none" and not supports_prototype_head(model):
            raise ConfigError(f"head_rate_scale={head_rate_scale!r} needs a model with a Linear "
                              f"'head' and forward(x, head=False); {type(model).__name__} has none")
        self.head_rate_scale = head_rate_scale
        if not (isinstance(step_loss_weight, (int, float)) and step_loss_weight >= 0):
            raise ConfigError(f"step_loss_weight must be a non-negative number, got {step_loss_weight}")
        self.step_loss_weight = float(step_loss_weight)
        if inner_params not in INNER_PARAMS:
            raise ConfigError(
                f"unknown inner params {inner_params!r}; expected one of {', '.join(INNER_PARAMS)}"
            )
        if inner_params == "head" and not supports_prototype_head(model):
            raise ConfigError(
                f"{type(model).__name__} cannot adapt its head alone (it needs a Linear 'head' "
                "and forward(x, head=False)); use inner params 'all'"
            )
        if head_init not in HEAD_INITS:
            raise ConfigError(
                f"unknown head init {head_init!r}; expected one of {', '.join(HEAD_INITS)}"
            )
        if head_init == "prototypes" and not supports_prototype_head(model):
            raise ConfigError(
                f"{type(model).__name__} has no prototype head (a Linear 'head' and "
                "forward(x, head=False)); use head init 'theta'"
            )
        if inner_steps < 1:
            raise ConfigError(f"inner_steps must be a positive integer, got {inner_steps}")
        if batching not in BATCHING_MODES:
            raise ConfigError(
                f"unknown batching {batching!r}; expected one of {', '.join(BATCHING_MODES)}"
            )
        if batching == "batched" and not supports_batched(model):
            raise ConfigError(
                f"{type(model).__name__} has no hand-batched forward; use --batching vmap or loop"
            )
        self.model = model
        self.loss_fn = loss_fn
        self.metric_fn = metric_fn or loss_fn
        self.inner_steps = int(inner_steps)
        #: the steps the rates are meta-trained for; past it the rates shrink (``inner.tail_factor``)
        self.horizon = int(inner_steps)
        #: steps past the horizon that meta-training adapts through (first order) to train the
        #: tail: at most as many as the horizon, so the tail costs at most the trained steps again
        self.tail_steps = min(TAIL_STEPS, self.inner_steps)
        self.tail_decay = TAIL_DECAY
        self.first_order = bool(first_order)
        self.batching = batching
        self.head_init = head_init
        if head_init == "prototypes":
            # Labels are shuffled per episode, so a meta-learned head offset only collects
            # zero-mean noise, which Adam turns into a random walk: the head is the prototypes'
            # alone (as in Proto-MAML), zero and frozen in theta.
            head = model.head
            with torch.no_grad():
                head.weight.zero_()
                head.bias.zero_()
            head.weight.requires_grad_(False)
            head.bias.requires_grad_(False)
        self.inner_params = inner_params
        #: the head's rows are classes, which labels shuffle in every episode: its rates are tied
        #: across classes (one row for all), so the learner and its artifact serve any width
        self.width_free = supports_prototype_head(model)
        shapes = {n: (1, *p.shape[1:]) if self.width_free and is_head(n) else p.shape
                  for n, p in model.named_parameters() if _adapted_by(inner_params, n)}
        self.rates = LearningRates(
            shapes,
            init=inner_lr,
            granularity=lr_granularity,
            steps=self.inner_steps if per_step_lrs else 1,
            learnable=learn_lrs,
            head_bound=head_step_bound,
        )

    # ----------------------------------------------------------------- meta-parameters
    # Walking the module tree costs more than a sinusoid meta-iteration's arithmetic, so the
    # name -> tensor maps are cached; ``_apply`` (``.to()``, ``.double()``, ...) clears the cache.
    _cache: dict[str, Any] | None = None

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> MetaLearner:
        self._cache = None
        return super()._apply(fn, *args, **kwargs)

    def _cached(self) -> dict[str, Any]:
        if self._cache is None:
            self._cache = {
                "theta": dict(self.model.named_parameters()),
                "meta": [(n, p) for n, p in self.named_parameters() if p.requires_grad],
            }
        return self._cache

    def initial_params(self) -> Params:
        """theta: the model's parameters by name (the live tensors)."""
        return dict(self._cached()["theta"])

    @property
    def device(self) -> torch.device:
        """Where theta (and with it every meta-parameter) lives."""
        return next(iter(self._cached()["theta"].values())).device

    def learning_rates(self) -> dict[str, Tensor]:
        """alpha: ``name -> (steps, ...)`` rates for every adapted parameter (the live tensors;
        with ``inner_params="head"`` the head's alone: the others never move)."""
        return self.rates.forward()

    def named_meta_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Every tensor the outer optimizer updates, with a stable name."""
        return list(self._cached()["meta"])

    def config(self) -> dict[str, Any]:
        """The constructor options as JSON-able data (recorded in checkpoints and artifacts)."""
        return {
            "learner": self.learner_name,
            "inner_steps": self.inner_steps,
            "lr_granularity": self.rates.granularity,
            "per_step_lrs": self.rates.steps > 1,
            "learn_lrs": self.rates.learnable,
            "first_order": self.first_order,
            "batching": self.batching,
            "head_init": self.head_init,
            "inner_params": self.inner_params,
            "step_loss_weight": self.step_loss_weight,
            "head_rate_scale": self.head_rate_scale,
            "head_step_bound": self.rates.head_bound is not None,
            "head_whitening": self.head_whitening,
        }

    # ----------------------------------------------------------------- batching
    def resolve_batching(self, device: torch.device, allow_loop: bool = True) -> str:
        """The path ``"auto"`` picks: loop for convolutional models on CPU, where grouped and
        vmapped convolutions are no faster (docs/benchmarks.md); else hand-batched when the model
        has it, else vmap.
        ``allow_loop=False`` leaves the loop out of the choice."""
        if self.batching != "auto":
            return self.batching
        if allow_loop and device.type == "cpu" and any(
            isinstance(m, nn.modules.conv._ConvNd) for m in self.model.modules()
        ):
            return "loop"
        if supports_batched(self.model):
            return "batched"
        return "vmap"

    def _functional_forward(self, params: Params, x: Tensor, head: bool = True,
                            reference: Tensor | None = None, with_reference: bool = False) -> Tensor:
        return functional_call(self.model, params, (x,),
                               _forward_kwargs(head, reference, with_reference))

    def _batched_forward(self, params: Params, x: Tensor, head: bool = True,
                         reference: Tensor | None = None, with_reference: bool = False) -> Tensor:
        return self.model.batched_forward(  # type: ignore[operator]
            params, x, **_forward_kwargs(head, reference, with_reference))

    def _with_prototype_head(
        self, params: Params, xs: Tensor, ys: Tensor, forward: Callable[..., Tensor]
    ) -> Params:
        """``params`` with the head set from the support prototypes (``head_init="prototypes"``).

        The other parameters come back as aliases: the new head is computed from them, and
        ``autograd.grad`` with respect to the originals would add the path through the head to
        their inner gradients; the inner loop needs each parameter's own partial derivative (as
        ``torch.func.grad`` gives). The meta-gradient still flows through both.
        """
        weight, bias = prototype_head(
            forward(params, xs, head=False), ys, params[HEAD_WEIGHT], params[HEAD_BIAS],
            self.head_whitening,
        )
        return {**{k: v.view_as(v) for k, v in params.items()}, HEAD_WEIGHT: weight, HEAD_BIAS: bias}

    def _solve(
        self,
        params: Params,
        lrs: dict[str, Tensor],
        xs: Tensor,
        ys: Tensor,
        xq: Tensor,
        yq: Tensor,
        forward: Callable[..., Tensor],
        grad_fn: GradFn,
        steps: int,
        create_graph: bool,
        curve: bool,
        tail: bool = False,
        anytime: bool = False,
    ) -> tuple[Tensor, Tensor, Params, Tensor, Tensor]:
        """Adapt one task (or one hand-batched stack of tasks) and score it on its query set.

        Returns query loss, metric, the adapted parameters (every one of the model's), with
        ``tail`` the mean query loss after each of :attr:`tail_steps` more first-order steps past
        the horizon (else the query loss again), and with ``anytime`` the mean query loss after
        each step before the last (else the query loss again); with ``curve``,
        ``[..., steps + 1]`` curves. With ``inner_params="head"`` the steps move the head alone.
        """
        loss_fn, metric_fn = self.loss_fn, self.metric_fn
        # a model normalizing with its support set's statistics (ConvNet(norm="support")) gets
        # them for the queries
        reference = xs if getattr(self.model, "uses_reference", False) else None
        if self.inner_params == "head":
            # the body does not move: its features are computed once, in one pass when the
            # support's statistics normalize the queries, and each step runs on the head alone
            if reference is not None:
                both = forward(params, xq, head=False, reference=reference, with_reference=True)
                shots = ys.shape[-1]
                fs, fq = both[..., :shots, :], both[..., shots:, :]
            else:
                fs, fq = forward(params, xs, head=False), forward(params, xq, head=False)
            weight, bias = params[HEAD_WEIGHT], params[HEAD_BIAS]
            if self.head_init == "prototypes":
                weight, bias = prototype_head(fs, ys, weight, bias, self.head_whitening)
            moving = {HEAD_WEIGHT: weight, HEAD_BIAS: bias}
            if grad_fn is autograd_grads and not weight.requires_grad:
                moving = {k: v.detach().requires_grad_() for k, v in moving.items()}

            def head_out(h: Params, features: Tensor) -> Tensor:
                return features @ h[HEAD_WEIGHT].transpose(-1, -2) + h[HEAD_BIAS].unsqueeze(-2)

            def support_out(h: Params) -> Tensor:
                return head_out(h, fs)

            def query_out(h: Params) -> Tensor:
                return head_out(h, fq)
        else:
            if self.head_init == "prototypes":
                params = self._with_prototype_head(params, xs, ys, forward)
            moving = params

            def support_out(p: Params) -> Tensor:
                return forward(p, xs)

            def query_out(p: Params) -> Tensor:
                return forward(p, xq, reference=reference)

        def support_loss(p: Params) -> Tensor:
            return loss_fn(support_out(p), ys).mean(-1).sum()

        if self.head_rate_scale == "classes":
            lrs = self._scaled_head_rates(lrs, moving[HEAD_WEIGHT].shape[-2])

        def query(p: Params) -> tuple[Tensor, Tensor]:
            out = query_out(p)
            return loss_fn(out, yq).mean(-1), metric_fn(out, yq).mean(-1)

        loss, metric, moved, tail_loss, step_loss = self._run_steps(
            moving, lrs, support_loss, query, grad_fn, steps, create_graph, curve, tail, anytime)
        return loss, metric, {**params, **moved}, tail_loss, step_loss

    def _run_steps(
        self,
        params: Params,
        lrs: dict[str, Tensor],
        support_loss: Callable[[Params], Tensor],
        query: Callable[[Params], tuple[Tensor, Tensor]],
        grad_fn: GradFn,
        steps: int,
        create_graph: bool,
        curve: bool,
        tail: bool,
        anytime: bool = False,
    ) -> tuple[Tensor, Tensor, Params, Tensor, Tensor]:
        """The steps of :meth:`_solve` on ``params`` (the moving ones), scored by ``query``."""
        horizon, decay = self.horizon, self.tail_decay
        bound = self.rates.head_bounds()
        if not curve:
            step_losses, adapted = [], params
            if anytime and steps > 1:  # score every step before the last: each must help
                for t in range(steps - 1):
                    adapted = adapt(
                        adapted, lrs, support_loss, 1, create_graph=create_graph,
                        grad_fn=grad_fn, first_step=t, horizon=horizon, decay=decay, head_bound=bound,
                    )
                    step_losses.append(query(adapted)[0])
            done = len(step_losses)
            adapted = adapt(
                adapted, lrs, support_loss, steps - done, create_graph=create_graph,
                grad_fn=grad_fn, first_step=done, horizon=horizon, decay=decay, head_bound=bound,
            )
            q_loss, q_metric = query(adapted)
            step_loss = torch.stack(step_losses).mean(0) if step_losses else q_loss
            tail_loss = q_loss
            if tail:  # the mean query loss after each of the tail's steps: every one must help
                tail_losses, current = [], adapted
                for t in range(steps, steps + self.tail_steps):
                    current = adapt(
                        current, lrs, support_loss, 1, create_graph=False, grad_fn=grad_fn,
                        first_step=t, horizon=horizon, decay=decay, head_bound=bound,
                    )
                    tail_losses.append(query(current)[0])
                tail_loss = torch.stack(tail_losses).mean(0)
            return q_loss, q_metric, adapted, tail_loss, step_loss
        losses, metrics = [], []
        for t in range(steps + 1):
            if t > 0 and tail_factor(t - 1, horizon, decay) == 0.0:  # the tail ended: unchanged
                losses.append(losses[-1])
                metrics.append(metrics[-1])
                continue
            q_loss, q_metric = query(params)
            losses.append(q_loss.detach())
            metrics.append(q_metric.detach())
            if t < steps:
                params = adapt(
                    params, lrs, support_loss, 1, create_graph=False, grad_fn=grad_fn,
                    first_step=t, horizon=horizon, decay=decay, head_bound=bound,
                )
                params = {k: v.detach() for k, v in params.items()}
                if grad_fn is autograd_grads:
                    params = {k: v.requires_grad_() for k, v in params.items()}
        loss_curve = torch.stack(losses, -1)
        return loss_curve, torch.stack(metrics, -1), params, loss_curve, loss_curve

    def adapt_batch(
        self,
        batch: TaskBatch,
        steps: int | None = None,
        *,
        create_graph: bool = True,
        curve: bool = False,
        params: Params | None = None,
        lrs: dict[str, Tensor] | None = None,
        functional: bool = False,
        tail: bool = False,
        anytime: bool = False,
    ) -> AdaptationOutcome:
        """Adapt every task of ``batch`` from ``params`` (default theta) for ``steps`` steps.

        Returns per-task query loss and metric (``[T]``, or ``[T, steps + 1]`` with ``curve``) and
        the adapted parameters with a leading task dimension. ``functional=True`` takes the inner
        gradients with ``torch.func.grad`` on every path, so that the whole adaptation can sit
        inside an outer ``torch.func`` transform (:mod:`metaopt_tuner.training.compiled` needs that); with
        batching ``"auto"`` it then never picks the per-task loop, which a compiler would unroll.
        ``tail=True`` also scores each task after :attr:`tail_steps` first-order steps past the
        horizon (``tail_loss``), which meta-training adds to the meta-loss; ``anytime=True``
        scores each step before the last (``step_loss``, the mean over those steps).
        """
        steps = self.inner_steps if steps is None else int(steps)
        params = self.initial_params() if params is None else params
        lrs = self.learning_rates() if lrs is None else lrs
        if self.width_free and not torch.compiler.is_compiling():
            # (a compiled meta-gradient traces one width: the labels cannot size it there)
            params = self._at_width(params, max(task_width(batch.y_support), task_width(batch.y_query)))
        mode = self.resolve_batching(batch.x_support.device, allow_loop=not functional)
        grad_fn = functorch_grads if functional else autograd_grads
        tensors = (batch.x_support, batch.y_support, batch.x_query, batch.y_query)
        if mode == "batched":
            n = len(batch)
            expanded = {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in params.items()}
            loss, metric, adapted, tail_loss, step_loss = self._solve(
                expanded, lrs, *tensors, self._batched_forward, grad_fn, steps,
                create_graph, curve, tail, anytime,
            )
        elif mode == "vmap":

            def one_task(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor):
                return self._solve(
                    params, lrs, xs, ys, xq, yq, self._functional_forward, functorch_grads,
                    steps, create_graph, curve, tail, anytime,
                )

            loss, metric, adapted, tail_loss, step_loss = vmap(
                one_task, randomness="different")(*tensors)
        else:
            results = [
                self._solve(
                    params, lrs, *(t[i] for t in tensors), self._functional_forward,
                    grad_fn, steps, create_graph, curve, tail, anytime,
                )
                for i in range(len(batch))
            ]
            loss = torch.stack([r[0] for r in results])
            metric = torch.stack([r[1] for r in results])
            adapted = {k: torch.stack([r[2][k] for r in results]) for k in params}
            tail_loss = torch.stack([r[3] for r in results])
            step_loss = torch.stack([r[4] for r in results])
        return AdaptationOutcome(loss, metric, adapted, tail_loss if tail else None,
                                 step_loss if anytime else None)

    @staticmethod
    def _scaled_head_rates(lrs: dict[str, Tensor], width: int) -> dict[str, Tensor]:
        """``lrs`` with the head's rates multiplied by the task's ``width`` (``"classes"``)."""
        return {k: v * width if is_head(k) else v for k, v in lrs.items()}

    @staticmethod
    def _at_width(params: Params, width: int) -> Params:
        """``params`` with the head sized for a task of ``width`` classes (class-tied rows)."""
        if params[HEAD_WEIGHT].shape[-2] == width:
            return params
        dim = params[HEAD_WEIGHT].dim() - 2  # a leading task dimension moves the class rows
        return {**params, HEAD_WEIGHT: head_at_width(params[HEAD_WEIGHT], width, dim),
                HEAD_BIAS: head_at_width(params[HEAD_BIAS], width, dim)}

    @property
    def trains_tail(self) -> bool:
        """Whether meta-training adds the loss after the tail past the horizon: when the rates are
        learned (the tail is what teaches them to be safe when repeated)."""
        return self.rates.learnable and self.tail_steps > 0

    @property
    def trains_every_step(self) -> bool:
        """Whether meta-training scores every step before the horizon (``step_loss_weight``)."""
        return self.step_loss_weight > 0 and self.inner_steps > 1

    def meta_loss(self, outcome: AdaptationOutcome) -> Tensor:
        """The meta-objective of an adapted batch: the mean query loss at the horizon, plus the
        mean query loss after the tail when there is one, plus ``step_loss_weight`` times the
        mean query loss after the steps before the horizon when they were scored."""
        loss = outcome.loss.mean()
        if outcome.tail_loss is not None:
            loss = loss + outcome.tail_loss.mean()
        if outcome.step_loss is not None and self.step_loss_weight > 0:
            loss = loss + self.step_loss_weight * outcome.step_loss.mean()
        return loss

    # ----------------------------------------------------------------- the learner's own part
    @abc.abstractmethod
    def meta_gradient(self, batch: TaskBatch) -> MetaGradient:
        """The meta-gradient of one meta-batch for every tensor of :meth:`named_meta_parameters`."""

    @torch.no_grad()
    def _detached(self) -> Params:
        return {k: v.detach() for k, v in self.initial_params().items()}

    def adaptation_curve(
        self,
        batch: TaskBatch | Iterable[TaskBatch],
        steps: int | None = None,
        chunk: int = 100,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> AdaptationOutcome:
        """Query loss and metric after 0..steps inner steps for every task, ``[T, steps + 1]``.

        No meta-graph is built. A :class:`TaskBatch` is adapted ``chunk`` tasks at a time; chunks
        of tasks (a :class:`~metaopt_tuner.tasks.TaskStream`, which builds each only when it is
        reached) are adapted one at a time as they come, the memory each freed given back to the
        operating system before the next (:mod:`metaopt_tuner.heap`: else the peak grows with
        the number of chunks). ``on_progress(done, total)`` is called after each chunk
        (``total``: ``len(batch)`` when it has one).
        """
        steps = self.inner_steps if steps is None else int(steps)
        lrs = {k: v.detach() for k, v in self.learning_rates().items()}
        if isinstance(batch, TaskBatch):
            whole = batch
            parts: Iterable[TaskBatch] = (whole.slice(s, s + chunk) for s in range(0, len(whole), chunk))
        else:
            parts = batch
        total = len(batch) if isinstance(batch, Sized) else 0
        losses, metrics = [], []
        done = 0
        for part in parts:
            params = {k: v.requires_grad_() for k, v in self._detached().items()}
            with torch.enable_grad():
                out = self.adapt_batch(part, steps, create_graph=False, curve=True,
                                       params=params, lrs=lrs)
            losses.append(out.loss.detach())
            metrics.append(out.metric.detach())
            done += len(part)
            del out, params, part  # the chunk's tensors, freed before the heap is trimmed
            release_freed_memory()
            if on_progress is not None:
                on_progress(done, max(total, done))
        return AdaptationOutcome(torch.cat(losses), torch.cat(metrics))
