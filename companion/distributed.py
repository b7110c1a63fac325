"""Data-parallel training on several GPUs (or CPU processes) with PyTorch's own engine.

``torchrun --nproc_per_node=N -m companion train DIR ...`` starts N processes and sets
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in each. :func:`init_from_environment` joins them
into one process group (NCCL with one GPU per process, gloo on CPUs). From then on:

* every loader made by :func:`companion.loaders.make_loader` or
  :func:`companion.transfer.feature_loader` reads only this process's shard of each epoch's
  order (:func:`shard`);
* :func:`companion.train.fit` wraps the model in ``DistributedDataParallel``, which averages
  the gradients across processes in the backward pass;
* :func:`companion.train.evaluate` and each training epoch sum their metrics over all
  processes (:func:`all_reduce_sum`), and :func:`companion.inference.extract_features` gathers
  every process's features, so every process sees the same numbers;
* only the main process (rank 0) prints, shows progress bars and writes files.

Without torchrun nothing here does anything, and a single process trains as before.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_active() -> bool:
    """Whether this process belongs to a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's number, 0 to ``world_size() - 1`` (0 without a process group)."""
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    """How many processes train together (1 without a process group)."""
    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    """Whether this is the process that prints and writes files (rank 0)."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher using its variables) started more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device: torch.device) -> torch.device:
    """Join the process group torchrun described in the environment and return this process's
    device: ``cuda:LOCAL_RANK`` (NCCL) when ``device`` is CUDA, else ``device`` (gloo).
    Does nothing, and returns ``device``, when not launched by torchrun."""
    if not launched_by_torchrun() or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def shutdown() -> None:
    """Leave the process group (at the end of a torchrun run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (no-op in a single process)."""
    if is_active():
        dist.barrier()


def shard(order: torch.Tensor, pad: bool) -> torch.Tensor:
    """This process's part of an epoch's order of indices ``(N,)``: every ``world_size()``-th
    index from ``rank()``, as ``torch.utils.data.DistributedSampler`` does.

    With ``pad`` (training) the order is first extended by repeating its start, so that every
    process gets the same number of batches (DDP needs that); without it (evaluation) every
    index is used exactly once and shards may differ in length by one.
    """
    if not is_active():
        return order
    world = world_size()
    if pad and len(order) % world:
        extra = world - len(order) % world
        order = torch.cat([order, order.repeat(extra // max(len(order), 1) + 1)[:extra]])
    return order[rank() :: world]


class ShardSampler(torch.utils.data.Sampler):
    """A sampler for ``DataLoader``: a random order from ``generator`` (or ``0..N-1``), then this
    process's :func:`shard` of it, padded when shuffling."""

    def __init__(self, n: int, shuffle: bool, generator: torch.Generator) -> None:
        self.n, self.shuffle, self.generator = n, shuffle, generator

    def _order(self) -> torch.Tensor:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        return shard(order, pad=self.shuffle)

    def __iter__(self):
        return iter(self._order().tolist())

    def __len__(self) -> int:
        world = world_size()
        if self.shuffle:
            return -(-self.n // world)
        return len(range(rank(), self.n, world))


def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over all processes, in place (no-op in a single process)."""
    if is_active():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def gather_shards(local: torch.Tensor) -> torch.Tensor:
    """Undo :func:`shard` (without padding) for per-image results: ``local (n_r, ...)`` from
    each process -> ``(N, ...)`` in the original order, on every process."""
    if not is_active():
        return local
    parts = [None] * world_size()
    dist.all_gather_object(parts, local.cpu())
    total = sum(len(p) for p in parts)
    out = torch.empty((total, *local.shape[1:]), dtype=local.dtype)
    for r, part in enumerate(parts):
        out[r :: world_size()] = part
    return out


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` when a process group is active, else ``model``."""
    if not is_active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_max(*tensors: torch.Tensor) -> None:
    """The largest value of each tensor over all processes, in place (no-op in a single process)."""
    if is_active():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
