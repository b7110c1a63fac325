"""Loaders: in-memory batches by indexing (:class:`ArrayLoader`) or a ``DataLoader``
(:func:`make_loader`), both seeded and, under torchrun, sharded (:mod:`companion.distributed`)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from . import distributed
from .data import ArrayImageDataset
from .hardware import default_num_workers, inference_batch_size


class ArrayLoader:
    """Batches of in-memory tensors by indexing (no per-image Python work, no collate).

    Yields ``(inputs[idx], labels[idx])``: uint8 images ``(B, C, H, W)`` for an
    :class:`~companion.data.ArrayImageDataset`, or cached features ``(B, D)``. With ``device`` set to a CUDA
    device the tensors are moved there once and stay resident (Fashion-MNIST is 55 MB as
    uint8), so a batch costs no host-to-device copy at all.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        *,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | None = None,
    ) -> None:
        if len(inputs) != len(labels):
            raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = torch.Generator().manual_seed(seed)
        resident = device is not None and torch.device(device).type == "cuda"
        self.inputs = inputs.to(device) if resident else inputs
        self.labels = labels.to(device) if resident else labels

    def _shard_size(self) -> int:
        """Images per epoch in this process: all of them, or its shard under torchrun."""
        return len(distributed.ShardSampler(len(self.labels), self.shuffle, self.generator))

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = distributed.ShardSampler(len(self.labels), self.shuffle, self.generator)._order()
        order = order.to(self.inputs.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.inputs[idx], self.labels[idx]


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int | None = None,
    shuffle: bool = False,
    *,
    seed: int = 0,
    device: torch.device | None = None,
    num_workers: int | None = None,
    drop_last: bool = False,
):
    """A loader for ``dataset``: :class:`ArrayLoader` for in-memory datasets, else a
    ``DataLoader`` with seeded shuffling, :func:`~companion.hardware.default_num_workers` workers and pinned memory
    on CUDA. Under torchrun each process reads its shard of every epoch (:mod:`companion.distributed`).

    ``batch_size=None`` is for evaluation: :func:`~companion.hardware.inference_batch_size` of
    ``device`` (default the CPU)."""
    if batch_size is None:
        batch_size = inference_batch_size(torch.device(device if device is not None else "cpu"))
    if isinstance(dataset, ArrayImageDataset):
        return ArrayLoader(
            dataset.images, dataset.labels, batch_size, shuffle, seed=seed, device=device, drop_last=drop_last
        )
    workers = default_num_workers() if num_workers is None else num_workers
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        drop_last=drop_last,
        generator=generator,
        num_workers=workers,
        sampler=distributed.ShardSampler(len(dataset), shuffle, generator),
        pin_memory=device is not None and torch.device(device).type == "cuda",
        persistent_workers=workers > 0,
    )
