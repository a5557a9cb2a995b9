"""Several processes (``accelerate launch``, ``torchrun``): which share of the work is this one's,
and how the shares come back together in one order.

Sharding is by whole batches (or micro-batches): a batch is computed by one process exactly as a
single process computes it (same rows, same padding, same kernels), and the per-batch results
are gathered and put back in batch order on every process, so every process ends with what one
process computes alone — the same per-example outputs, bit for bit, and from them the same
report. Every process must take part in a sharded pass (a process that skips it leaves the
others waiting in the gather).
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def world() -> tuple[int, int]:
    """``(rank, world size)`` of an initialised ``torch.distributed`` process group, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True in a single process and on rank 0 of a process group."""
    return world()[0] == 0


def launched_processes() -> int:
    """Processes a launcher started (``WORLD_SIZE`` of ``torchrun``/``accelerate launch``), 1 without one."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def under_launcher() -> bool:
    """Whether ``torchrun``/``accelerate launch`` started this process (even as its only one)."""
    return "LOCAL_RANK" in os.environ or launched_processes() > 1


def init_from_launcher() -> tuple[int, int]:
    """Join the process group a launcher prepared through accelerate's ``PartialState`` (gloo on
    CPUs, NCCL on GPUs, each rank on its own device); nothing without a launcher. Returns :func:`world`."""
    if under_launcher():
        from accelerate import PartialState

        PartialState()
    return world()


def device_of_process() -> Any:
    """This process's device under a launcher (its GPU, or the CPU), None without one."""
    if not under_launcher():
        return None
    from accelerate import PartialState

    return PartialState().device


def my_share(count: int, enabled: bool = True) -> list[int]:
    """The indices ``0..count-1`` this process computes: every ``world size``-th from its rank
    (all of them in a single process, or when ``enabled`` is False)."""
    rank, size = world()
    if not enabled or size == 1:
        return list(range(count))
    return list(range(rank, count, size))


def gather_in_order(local: dict[int, T], count: int, enabled: bool = True) -> list[T]:
    """Every process's ``{index: result}`` (its share of ``0..count-1``) merged on every process,
    as a list in index order (picklable results; the per-example arrays of a pass)."""
    rank, size = world()
    if not enabled or size == 1:
        return [local[i] for i in range(count)]
    import torch.distributed as dist

    shares: list[Any] = [None] * size
    dist.all_gather_object(shares, local)
    merged: dict[int, T] = {}
    for share in shares:
        merged.update(share)
    missing = [i for i in range(count) if i not in merged]
    if missing:
        raise RuntimeError(f"no process computed item(s) {missing[:10]} of {count}")
    return [merged[i] for i in range(count)]


def sum_in_order(
    count: int, compute: Callable[[int], Any], add: Callable[[int, Any], None], like: Any, enabled: bool = True,
) -> None:
    """``add(i, compute(i))`` for ``i`` in ``0..count-1``, in that order, on every process, each
    ``compute(i)`` (a tensor shaped and typed like ``like``) run by one process only: the running
    sum ``add`` forms is the one a single process forms, to the last bit."""
    rank, size = world()
    if not enabled or size == 1 or count < 2:
        for i in range(count):
            add(i, compute(i))
        return
    import torch
    import torch.distributed as dist

    device = _collective_device()
    for start in range(0, count, size):
        mine = start + rank
        send = compute(mine) if mine < count else torch.zeros_like(like)
        received = [torch.empty(like.shape, dtype=like.dtype, device=device) for _ in range(size)]
        dist.all_gather(received, send.to(device))
        for offset in range(min(size, count - start)):
            add(start + offset, received[offset].to(like.device))


def _collective_device() -> Any:
    """The device collectives of the current backend take (NCCL: this rank's GPU; gloo: the CPU)."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


__all__ = [
    "device_of_process", "gather_in_order", "init_from_launcher", "is_main_process", "launched_processes", "my_share",
    "sum_in_order", "under_launcher", "world",
]
