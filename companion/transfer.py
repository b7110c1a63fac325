"""The three ways to transfer what a network learned on a source task.

* **Parameter transfer** (fine-tuning): start from the source weights and train on the
  target, all of them or the last blocks (:func:`freeze`, :func:`unfreeze`,
  :func:`discriminative_param_groups`, :func:`gradual_unfreezer`).
* **Feature transfer** (frozen extractor): run the source network once, keep its features
  (:func:`extract_features`, :func:`cached_features`) and train a new head on them
  (:func:`feature_loader`, :func:`linear_probe`).
* **Structure transfer**: reuse the architecture and part of its weights, re-initialise the
  rest (:func:`transferable_state`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from . import device as dev
from .train import _forward_batches, _model_device

Batch = tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------- feature transfer


def extract_features(
    backbone: nn.Module, loader: Iterable[Batch], *, preprocess: Callable | None = None,
    device: torch.device | str | None = None, progress: bool | None = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a frozen ``backbone`` over a whole loader, in eval and inference mode.

    Args:
        backbone: maps images ``(B, C, H, W)`` to features ``(B, D)``, e.g.
            ``models.create(name, pretrained=True, num_classes=0)``.
        loader: yields ``(images, labels (B,))``.
        preprocess: batch transform applied on the device before the backbone.

    Returns:
        ``features (N, D)`` float32 and ``labels (N,)`` int64, on the CPU.
    """
    device = _model_device(backbone, device)
    feats, labels = [], []
    for out, y in _forward_batches(backbone, loader, preprocess, device, "features", progress):
        feats.append(out.flatten(1).cpu())
        labels.append(y.cpu())
    return torch.cat(feats), torch.cat(labels)


def feature_loader(features: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool = True, seed: int = 0):
    """A loader over cached features ``(N, D)`` and labels ``(N,)`` for training a head with ``fit``."""
    from .data import ArrayLoader

    return ArrayLoader(features, labels, batch_size, shuffle, seed=seed)


def linear_probe(in_features: int, num_classes: int, hidden: int | None = None, dropout: float = 0.0) -> nn.Module:
    """A new head for cached features: linear, or an MLP with one ``hidden`` layer.

    Input ``(N, in_features)``, output logits ``(N, num_classes)``.
    """
    if hidden is None:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))


# ----------------------------------------------------------------------------- parameter transfer


def freeze(model: nn.Module, except_: Sequence[str] = ()) -> nn.Module:
    """Stop gradients for every parameter except those whose name starts with a prefix in
    ``except_`` (e.g. ``("classifier",)``). Frozen batch-norm layers are kept in eval mode by
    :func:`companion.train.fit`."""
    for name, p in model.named_parameters():
        p.requires_grad = any(name.startswith(prefix) for prefix in except_)
    return model


def unfreeze(model: nn.Module, prefixes: Sequence[str] | None = None) -> nn.Module:
    """Let gradients flow again into parameters whose name starts with one of ``prefixes`` (all if ``None``)."""
    for name, p in model.named_parameters():
        if prefixes is None or any(name.startswith(prefix) for prefix in prefixes):
            p.requires_grad = True
    return model


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters that receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def transferable_state(
    source: dict[str, torch.Tensor], target: nn.Module, exclude: Sequence[str] = ()
) -> dict[str, torch.Tensor]:
    """The entries of a source state dict that the target can take: same name and shape, and
    not under a prefix in ``exclude`` (e.g. the head). Load the result with
    ``target.load_state_dict(state, strict=False)``."""
    own = target.state_dict()
    return {
        k: v for k, v in source.items()
        if k in own and own[k].shape == v.shape and not any(k.startswith(prefix) for prefix in exclude)
    }
