"""Inference over whole loaders: model outputs batch by batch, class probabilities, and the
features of a frozen backbone. Always in eval and inference mode."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from . import distributed, hardware, settings
from .progress import tqdm

Batch = tuple[torch.Tensor, torch.Tensor]


def batches(
    model: nn.Module,
    loader: Iterable[Batch],
    *,
    preprocess: Callable | None = None,
    device: torch.device | str | None = None,
    amp: bool = True,
    desc: str = "eval",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(outputs (B, ...) float32, labels (B, ...))`` on the device for every batch of
    ``loader`` (``(images (B, C, H, W), labels)``), in eval and inference mode.

    ``preprocess`` is a batch transform applied on the device; ``amp`` runs the forward pass
    in mixed precision where the device has it (CUDA); ``device`` defaults to the model's (a
    model elsewhere is moved there). Inference mode covers each forward pass, not the caller's
    code between batches.
    """
    device = torch.device(device) if device is not None else hardware.model_device(model)
    model = hardware.prepare_model(model, device)
    model.eval()
    if isinstance(preprocess, nn.Module):
        preprocess.to(device).eval()
    shown = settings.progress() and distributed.is_main()
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not shown):
        with torch.inference_mode(), hardware.autocast(device, amp):
            x, y = hardware.to_device(x, device), y.to(device, non_blocking=True)
            if preprocess is not None:
                x = hardware.to_device(preprocess(x), device)
            out = model(x).float()
        yield out, y


def _collect(model, loader, per_batch: Callable, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_batch(outputs)`` for every batch and the labels, each concatenated on the CPU.
    Under torchrun (an unshuffled loader, sharded) every process gets all rows, in dataset order."""
    outputs, labels = [], []
    for out, y in batches(model, loader, **kwargs):
        outputs.append(per_batch(out).cpu())
        labels.append(y.cpu())
    return distributed.gather_shards(torch.cat(outputs)), distributed.gather_shards(torch.cat(labels))


def predict(
    model: nn.Module, loader: Iterable[Batch], *, preprocess: Callable | None = None, amp: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities ``(N, K)`` and true labels ``(N,)`` for a whole loader, on the CPU."""
    return _collect(model, loader, lambda logits: logits.softmax(1), preprocess=preprocess, amp=amp, desc="predict")


def extract_features(
    backbone: nn.Module, loader: Iterable[Batch], *, preprocess: Callable | None = None, amp: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a frozen ``backbone`` over a whole loader, in eval and inference mode, where its
    parameters are.

    Args:
        backbone: maps images ``(B, C, H, W)`` to features ``(B, D)``, e.g.
            ``models.create(name, pretrained=True, num_classes=0)``.
        loader: yields ``(images, labels (B,))``.
        preprocess: batch transform applied on the device before the backbone.

    Returns:
        ``features (N, D)`` float32 and ``labels (N,)`` int64, on the CPU. Under torchrun each
        process extracts its shard of an unshuffled loader, and every process gets all ``N`` rows
        in dataset order.
    """
    return _collect(backbone, loader, lambda out: out.flatten(1), preprocess=preprocess, amp=amp, desc="features")


def correct(
    model: nn.Module, loader: Iterable[Batch], *, preprocess: Callable | None = None, amp: bool = True
) -> torch.Tensor:
    """Which images of ``loader`` the model classifies right: ``(N,)`` bool, on the CPU, in
    dataset order (for an unshuffled loader); the input of :func:`companion.stats.paired_bootstrap`."""
    probs, labels = predict(model, loader, preprocess=preprocess, amp=amp)
    return probs.argmax(1) == labels
