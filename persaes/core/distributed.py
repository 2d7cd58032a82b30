"""Many processes on one job: the one place that knows about ``torch.distributed``.

A command launched by ``torchrun`` (``torchrun --nproc-per-node N --no-python persaes …``) runs once per
process; torchrun tells each its place through the environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`init` joins the process group from there
(``gloo`` on the CPU, ``nccl`` on CUDA, each process on GPU ``LOCAL_RANK``); everything else here is a
no-op or the identity in a single process, so code written with these helpers runs unchanged without
torchrun and needs nothing beyond PyTorch.

* :func:`world` — this process's :class:`World` (rank 0 of 1 when not launched by torchrun).
* :func:`shard` — this rank's share of a list: every ``size``-th item from ``rank`` on, so the shares are
  disjoint, cover the list and differ in length by at most one.
* :func:`barrier`, :func:`all_mean`, :func:`all_gather`, :func:`broadcast_module` — collectives.
* :func:`data_parallel` — a module wrapped in ``DistributedDataParallel`` (gradients averaged over the
  ranks at every backward pass), or the module itself in one process.

Example:
    >>> me = world()                                   # not launched by torchrun: one process
    >>> me.rank, me.size, me.is_main
    (0, 1, True)
    >>> shard(["a", "b", "c", "d", "e"])               # one process does all the work
    ['a', 'b', 'c', 'd', 'e']
    >>> [shard(["a", "b", "c", "d", "e"], World(rank, 2)) for rank in (0, 1)]   # two ranks' shares
    [['a', 'c', 'e'], ['b', 'd']]
    >>> all_mean(3.5), all_gather({"done": 2})         # collectives over one process
    (3.5, [{'done': 2}])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["TIMEOUT", "World", "all_gather", "all_mean", "barrier", "broadcast_module", "data_parallel",
           "init", "launched", "rank_device", "shard", "shutdown", "world"]

T = TypeVar("T")

TIMEOUT = timedelta(hours=24)
"""How long a collective waits for the slowest rank: a rank whose share of the features is not cached
yet may extract for hours while the others, resumed from the cache, wait at the barrier."""


@dataclass(frozen=True)
class World:
    """One process's place in a job: its ``rank`` among ``size`` processes, and its GPU ``local_rank``."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.rank < self.size or self.local_rank < 0:
            raise ValueError(f"rank must be in [0, size) and size >= 1, got rank {self.rank} of {self.size}")

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes the job's files and prints its report."""
        return self.rank == 0


def launched() -> bool:
    """Whether torchrun (or another launcher setting ``RANK`` and ``WORLD_SIZE``) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def world() -> World:
    """This process's :class:`World`: the process group's when joined, else the launcher's environment.

    Raises:
        ValueError: ``RANK``, ``WORLD_SIZE`` or ``LOCAL_RANK`` is not a whole number, or out of range.
    """
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if not launched():
        return World()
    try:
        return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError as exc:
        raise ValueError(f"torchrun's environment: RANK={os.environ['RANK']!r}, "
                         f"WORLD_SIZE={os.environ['WORLD_SIZE']!r}: {exc}") from None


def rank_device(device: torch.device) -> torch.device:
    """The device this rank computes on: CUDA device ``LOCAL_RANK`` for ``cuda``, else ``device`` itself."""
    if device.type == "cuda" and device.index is None and world().size > 1:
        return torch.device("cuda", world().local_rank)
    return device


def init(device: torch.device | str = "cpu", timeout: timedelta = TIMEOUT) -> World:
    """Join the process group torchrun's environment describes (once; later calls return the world).

    Nothing happens in a single process (no ``RANK``/``WORLD_SIZE``, or a world of 1). The backend is
    ``nccl`` for a CUDA ``device`` (each rank then on GPU ``LOCAL_RANK``), ``gloo`` otherwise; torchrun's
    ``MASTER_ADDR``/``MASTER_PORT`` say where the ranks meet.

    Args:
        device: the device the job computes on.
        timeout: how long a collective waits for the slowest rank (:data:`TIMEOUT`).

    Returns:
        This process's :class:`World`.

    Raises:
        RuntimeError: ``torch.distributed`` is not available in this PyTorch build.
    """
    me = world()
    if me.size == 1 or dist.is_initialized():
        return me
    if not dist.is_available():
        raise RuntimeError("launched by torchrun, but this PyTorch build has no torch.distributed")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(me.local_rank)
        dist.init_process_group("nccl", timeout=timeout, device_id=torch.device("cuda", me.local_rank))
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return world()


def shutdown() -> None:
    """Leave the process group, if this process joined one (at the end of a command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _joined() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard(items: Sequence[T], where: World | None = None) -> list[T]:
    """This rank's share of ``items``: every ``size``-th item from position ``rank`` on.

    Deterministic; the shares of the ranks are disjoint, together hold every item once, and differ in
    length by at most one.

    Args:
        items: the whole list, the same on every rank.
        where: the world to shard for (default: :func:`world`).
    """
    where = world() if where is None else where
    return list(items[where.rank::where.size])


def barrier() -> None:
    """Wait until every rank gets here (nothing in a single process)."""
    if _joined():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_mean(value: float) -> float:
    """The mean of ``value`` over the ranks (``value`` itself in a single process)."""
    if not _joined():
        return value
    total = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(total)
    return float(total) / dist.get_world_size()


def all_gather(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable, from trusted ranks of the same job), in rank order."""
    if not _joined():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


@torch.no_grad()
def broadcast_module(module: nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers of ``module``, in place."""
    if not _joined():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def data_parallel(module: nn.Module) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` when the process group has several ranks, else itself.

    The wrapper starts every rank from rank 0's parameters and averages the gradients over the ranks at
    every backward pass; ``module`` must use all its parameters in each forward pass.
    """
    if not _joined():
        return module
    device = next(module.parameters()).device
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
