"""Meta-training across processes and machines with torch.distributed, launched by ``torchrun``.

No cluster code of our own: ``torchrun`` starts the processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` joins the process group
(gloo on CPU, nccl on CUDA) with a timeout on every collective, so a dead or hung peer ends the run
with a :class:`DistributedError` instead of a hang.

Determinism across process counts comes from *task streams*: a meta-batch is the concatenation of
``S`` independent, seeded streams of tasks (stream ``s`` draws ``split_tasks(meta_batch, S)[s]`` tasks
per iteration), and the meta-gradient is the task-weighted mean of the per-stream meta-gradients.
Each process owns a contiguous block of streams, so the same ``S`` and seed give the same tasks and
the same sum, whether one process computes every stream or ``S`` processes compute one each.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ..errors import DistributedError, first_line

__all__ = [
    "DistContext",
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "init_from_env",
    "shutdown",
    "is_main_process",
    "stream_seed",
    "split_tasks",
    "owned_streams",
    "all_reduce_sum",
    "broadcast_object",
    "all_gather_object",
]

#: seconds a collective may wait for the other processes before the run fails
DEFAULT_TIMEOUT_S = 300.0
#: environment variable that overrides :data:`DEFAULT_TIMEOUT_S`
TIMEOUT_ENV = "METAOPT_DIST_TIMEOUT"

_MASK64 = (1 << 64) - 1
T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and the group's backend.

    The default is one process and no process group; every helper below is then a no-op.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    timeout_s: float | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, logs and artifacts."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"environment variable {name}={raw!r} is not an integer") from None


def resolve_timeout(timeout_s: float | None = None) -> float:
    """``timeout_s``, else ``$METAOPT_DIST_TIMEOUT``, else :data:`DEFAULT_TIMEOUT_S`."""
    if timeout_s is None:
        raw = os.environ.get(TIMEOUT_ENV)
        try:
            timeout_s = float(raw) if raw else DEFAULT_TIMEOUT_S
        except ValueError:
            raise DistributedError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not timeout_s > 0:
        raise DistributedError(f"the collective timeout must be positive, got {timeout_s}")
    return float(timeout_s)


def init_from_env(
    device: str | torch.device = "cpu", timeout_s: float | None = None
) -> tuple[DistContext, torch.device]:
    """Join the torchrun process group if this process was launched by torchrun.

    Returns the context and the device this process should use: under torchrun with a CUDA
    device, ``cuda:LOCAL_RANK`` (one GPU per process). Without ``WORLD_SIZE > 1`` in the
    environment this returns the single-process context and ``device`` unchanged. An already
    initialized default group (a caller's own ``init_process_group``) is reused.
    """
    device = torch.device(device)
    import torch.distributed as dist

    already = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if already else _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(), device
    if not dist.is_available():
        raise DistributedError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    timeout = resolve_timeout(timeout_s)
    if already:
        backend = str(dist.get_backend())
    else:
        backend = "nccl" if device.type == "cuda" else "gloo"
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if missing:
            raise DistributedError(
                f"WORLD_SIZE={world} but {', '.join(missing)} is not set; launch with torchrun"
            )
        try:
            dist.init_process_group(
                backend, timeout=datetime.timedelta(seconds=timeout), init_method="env://"
            )
        except Exception as exc:  # rendezvous failures come in many types
            raise DistributedError(
                f"cannot join the process group at {os.environ['MASTER_ADDR']}:"
                f"{os.environ['MASTER_PORT']} as rank {os.environ['RANK']} of {world} "
                f"({backend}, {timeout:.0f} s timeout): {first_line(exc)}"
            ) from None
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend, timeout)
    return ctx, device


def shutdown(wait_for_peers: bool = True) -> None:
    """Leave the default process group if one is initialized (safe to call always).

    ``wait_for_peers`` first meets the other processes at a barrier, so none tears the group
    down (rank 0 hosts its rendezvous store) while another still uses it; pass False after a
    failure, when the peers may be gone.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait_for_peers and dist.get_world_size() > 1:
        with contextlib.suppress(Exception):  # a peer already gone: leave anyway
            dist.barrier()
    dist.destroy_process_group()


def is_main_process() -> bool:
    """False only in a torch.distributed process of rank > 0 (for printing once)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return _env_int("RANK", 0) == 0


# ---------------------------------------------------------------------- task streams
def stream_seed(seed: int, stream: int) -> int:
    """The seed of task stream ``stream``: ``seed`` itself for stream 0 (so a one-stream run
    samples exactly as a plain seeded generator), a splitmix64 mix of both for the others."""
    if stream == 0:
        return int(seed)
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(stream) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def split_tasks(meta_batch: int, streams: int) -> list[int]:
    """Tasks per stream: ``meta_batch`` split as evenly as possible, earlier streams larger."""
    base, extra = divmod(meta_batch, streams)
    return [base + (1 if s < extra else 0) for s in range(streams)]


def owned_streams(streams: int, rank: int, world_size: int) -> range:
    """The contiguous block of streams process ``rank`` of ``world_size`` samples and computes."""
    return range(rank * streams // world_size, (rank + 1) * streams // world_size)


# ---------------------------------------------------------------------- collectives
def _collective(ctx: DistContext, what: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except Exception as exc:  # gloo/nccl raise RuntimeError subclasses (DistBackendError, ...)
        raise DistributedError(
            f"rank {ctx.rank} of {ctx.world_size} lost the other processes during {what}: a "
            f"process died, or none answered within the {ctx.timeout_s or 0:.0f} s collective "
            f"timeout ({first_line(exc)})"
        ) from None


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext, what: str = "all-reduce") -> torch.Tensor:
    """Sum ``tensor`` in place over every process (identity in one process)."""
    if ctx.is_distributed:
        import torch.distributed as dist

        _collective(ctx, what, lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM))
    return tensor


def broadcast_object(obj: T, ctx: DistContext, what: str = "broadcast") -> T:
    """Rank 0's ``obj`` on every process (pickled: only for objects this program made)."""
    if not ctx.is_distributed:
        return obj
    import torch.distributed as dist

    box: list[Any] = [obj if ctx.is_main else None]
    _collective(ctx, what, lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def all_gather_object(obj: T, ctx: DistContext, what: str = "all-gather") -> list[T]:
    """Every process's ``obj``, in rank order."""
    if not ctx.is_distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    _collective(ctx, what, lambda: dist.all_gather_object(out, obj))
    return out
