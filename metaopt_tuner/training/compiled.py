"""A learner's meta-gradient as one ``torch.compile``-d function: fewer, fused GPU kernels.

A CUDA graph (:mod:`metaopt_tuner.training.cuda_graphs`) removes the launch cost of a second-order
meta-iteration's thousands of small kernels, not the kernels: for the Omniglot ConvNet (5 inner
steps, meta-batch 32) about 3,900 of them, a third elementwise and a tenth small reductions, each
reading and writing its tensors from GPU memory. Compiling fuses them.

``torch.compile`` cannot trace ``torch.autograd.grad(..., create_graph=True)``, so here the whole
meta-gradient is written with ``torch.func``: the inner loop differentiates with
``torch.func.grad`` (``adapt_batch(functional=True)``) and the meta-gradient is
``torch.func.grad`` of the mean query loss after adaptation with respect to the meta-parameters.
Dynamo traces that into one graph of plain tensor operations (forward, inner backward, outer
backward all explicit), which Inductor fuses and schedules; matrix products and convolutions stay
library calls. Compose with :class:`~metaopt_tuner.training.cuda_graphs.GraphedMetaGradient` to replay the
compiled kernels from a CUDA graph.

Only gradient-based learners (MAML, first-order MAML, Meta-SGD) have this form; Reptile's
meta-gradient is a parameter difference, cheap already.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from ..errors import ConfigError
from ..learners.base import MetaGradient, MetaLearner
from ..learners.maml import GradientMetaLearner
from ..tasks.base import TaskBatch

__all__ = ["CompiledMetaGradient"]

_MODEL, _RATES = "model.", "rates."


class CompiledMetaGradient:
    """``learner.meta_gradient`` as one compiled ``torch.func`` function.

    The same arithmetic as the eager meta-gradient (tests compare them), in another order, so
    float32 results agree to rounding. The first call for each batch shape compiles (tens of
    seconds to minutes for a 5-step ConvNet); later calls reuse the compiled code. ``backend`` and
    ``mode`` go to ``torch.compile`` (``"aot_eager"`` traces without generating kernels: quick,
    for tests); ``fullgraph=True`` makes a graph break an error instead of a silent slow path.

    Args:
        learner: a gradient-based learner (maml, fomaml, metasgd) with a batched path.
        backend: ``torch.compile``'s backend.
        mode: ``torch.compile``'s mode.
        fullgraph: make a graph break an error.

    Raises:
        ConfigError: Reptile, or a learner whose batching is ``loop``.
    """

    def __init__(
        self,
        learner: MetaLearner,
        *,
        backend: str = "inductor",
        mode: str | None = None,
        fullgraph: bool = True,
    ) -> None:
        if not isinstance(learner, GradientMetaLearner):
            raise ConfigError(
                f"compiling the meta-gradient needs a gradient-based learner (maml, fomaml, "
                f"metasgd), not {learner.learner_name or type(learner).__name__}"
            )
        if learner.resolve_batching(learner.device, allow_loop=False) == "loop":
            raise ConfigError("compiling the meta-gradient needs batching 'batched' or 'vmap', not 'loop'")
        self.learner = learner
        grad = torch.func.grad(self._meta_loss, has_aux=True)

        def entry(*args: Any) -> Any:
            return grad(*args)

        # Dynamo keys its cache of compiled code by the entry function's code object; one shared
        # by every instance would collect each instance's entries up to the recompile limit
        # (and keep them alive): each instance compiles its own copy.
        entry = types.FunctionType(entry.__code__.replace(), entry.__globals__, "compiled_meta_gradient",
                                   entry.__defaults__, entry.__closure__)
        self._compiled = torch.compile(entry, backend=backend, mode=mode, fullgraph=fullgraph,
                                       dynamic=False)

    def _meta_loss(self, meta: dict[str, Tensor], x_support: Tensor, y_support: Tensor,
                   x_query: Tensor, y_query: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        learner = self.learner
        # Parameters outside the meta-parameters (a frozen prototype head) enter as constants.
        theta = {n: meta.get(_MODEL + n, p.detach()) for n, p in learner.initial_params().items()}
        rate_values = {n[len(_RATES):]: v for n, v in meta.items() if n.startswith(_RATES)}
        if rate_values:
            lrs = functional_call(learner.rates, rate_values, ())
        else:
            lrs = {n: r.detach() for n, r in learner.learning_rates().items()}
        outcome = learner.adapt_batch(
            TaskBatch(x_support, y_support, x_query, y_query),
            create_graph=not learner.first_order, params=theta, lrs=lrs, functional=True,
            tail=learner.trains_tail, anytime=learner.trains_every_step,
        )
        loss = outcome.loss.mean().detach()
        return learner.meta_loss(outcome), (loss, outcome.metric.mean().detach())

    def __call__(self, batch: TaskBatch) -> MetaGradient:
        meta = {n: p.detach() for n, p in self.learner.named_meta_parameters()}
        grads, (loss, metric) = self._compiled(
            meta, batch.x_support, batch.y_support, batch.x_query, batch.y_query
        )
        return MetaGradient(loss=loss, metric=metric, grads=dict(grads))
