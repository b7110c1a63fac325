"""Recipes: the whole of a transfer-learning method in one call, in the spirit of fastai's
``fine_tune``.

* :func:`train_probe`: a new head trained on cached features of a frozen backbone (feature
  transfer).
* :func:`fine_tune`: parameter transfer in two stages. The head comes first, then part or all
  of the backbone is unfrozen. Batch-norm statistics stay frozen, and learning rates can shrink
  with depth.
* :func:`train_from_scratch`: the same network from random weights (the baseline that every
  transfer is measured against).

Each returns a :class:`RecipeResult` holding the trained model, ``fit``'s history and the
final validation metrics. The chapters that teach a method (first_transfer, three_modes) write
its steps out once. Everywhere else, and in the CLI, the recipe is called.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import hardware, train, transfer
from .train import Loader

HEAD_LR = 3e-3  # a new head on frozen features: the rate of every probe in the book
FINE_TUNE_LR = 1e-4
SCRATCH_LR = 1e-3

Batch = tuple[torch.Tensor, torch.Tensor]
Features = tuple[torch.Tensor, torch.Tensor]


@dataclass
class RecipeResult:
    """What a recipe returns.

    Attributes:
        model: the trained network (for :func:`train_probe`, the head alone).
        history: ``fit``'s per-epoch records (for :func:`fine_tune`, the second stage's).
        recipe: the recipe's name and main settings, for printing.
        trainable_parameters: how many parameters the recipe trained in its last stage.
        head_history: :func:`fine_tune`'s first stage, when it trained the head itself.
    """

    model: nn.Module
    history: list[dict[str, float]]
    recipe: str
    trainable_parameters: int
    head_history: list[dict[str, float]] = field(default_factory=list)

    @property
    def val_accuracy(self) -> float:
        """Validation accuracy after the last epoch (0..1)."""
        return self._last("val_accuracy")

    @property
    def val_loss(self) -> float:
        """Validation loss after the last epoch."""
        return self._last("val_loss")

    def _last(self, key: str) -> float:
        if not self.history or key not in self.history[-1]:
            raise ValueError(f"{self.recipe} ran without validation data, so it has no {key}")
        return self.history[-1][key]

    def __repr__(self) -> str:
        val = f", val accuracy {self.val_accuracy:.3f}" if self.history and "val_accuracy" in self.history[-1] else ""
        return f"RecipeResult({self.recipe}: {len(self.history)} epochs{val}, {self.trainable_parameters:,} trained parameters)"


def _own_optimizer(fit_kwargs: dict) -> None:
    if "optimizer" in fit_kwargs:
        raise TypeError("a recipe builds its own AdamW optimizer: pass lr= (and decay= to fine_tune) instead")


def train_probe(
    train_features: Features,
    val_features: Features | None = None,
    *,
    num_classes: int | None = None,
    epochs: int = 30,
    lr: float = HEAD_LR,
    batch_size: int = 32,
    hidden: int | None = None,
    dropout: float = 0.0,
    seed: int = 0,
    device: torch.device | str | None = None,
    **fit_kwargs,
) -> RecipeResult:
    """Feature transfer: a new head trained on features of a frozen backbone.

    Args:
        train_features, val_features: ``(features (N, D), labels (N,))``, e.g. from
            :func:`companion.transfer.cached_features`.
        num_classes: ``K``; default: one more than the largest label seen.
        lr: AdamW's learning rate (a head on frozen features takes a large one).
        hidden, dropout: the head's shape (:func:`companion.transfer.linear_probe`).
        seed: seeds the head's initial weights and the order of the training features.
        device: where the head trains (default: the CPU, where the features are).
        fit_kwargs: passed on to :func:`companion.train.fit` (``checkpoint``, ``resume``, ...).

    Returns:
        The trained head (``model``), which maps features ``(N, D)`` to logits ``(N, K)``.
    """
    _own_optimizer(fit_kwargs)
    x, y = train_features
    labels = [y] if val_features is None else [y, val_features[1]]
    num_classes = num_classes or max(int(t.max()) for t in labels) + 1
    hardware.seed_everything(seed)
    head = transfer.linear_probe(x.shape[1], num_classes, hidden=hidden, dropout=dropout).to(device or "cpu")
    val_loader = None if val_features is None else transfer.feature_loader(*val_features, 512, shuffle=False)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr)
    train_loader = transfer.feature_loader(x, y, batch_size, seed=seed)
    history = train.fit(head, train_loader, val_loader, epochs=epochs, optimizer=optimizer, **fit_kwargs)
    return RecipeResult(
        head, history, f"linear probe ({epochs} epochs, lr {lr:g})", transfer.trainable_parameters(head)
    )


def _head_stage(
    model: nn.Module, name: str, head, train_loader, val_loader, head_epochs: int, seed: int, fit_kwargs: dict
) -> list[dict[str, float]]:
    """Stage 1 of :func:`fine_tune`: put a trained head in place, or train one on a frozen body.

    Skipped only when stage 2's checkpoint exists and ``resume`` is set (that checkpoint holds
    the trained head); a resume without one trains the head first, as a first run does."""
    if head is not None:
        transfer.load_probe_head(model, name, head.model if isinstance(head, RecipeResult) else head)
        return []
    checkpoint = fit_kwargs.get("checkpoint")
    if head_epochs == 0 or (fit_kwargs.get("resume") and checkpoint is not None and Path(checkpoint).exists()):
        return []
    transfer.freeze_stages(model, name, trainable_last=0)
    hardware.seed_everything(seed)
    kwargs = {k: v for k, v in fit_kwargs.items() if k not in ("checkpoint", "resume", "early_stopping")}
    if not isinstance(kwargs.get("scheduler"), str | None):
        del kwargs["scheduler"]  # a scheduler object steps stage 2's optimizer, not this one
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=HEAD_LR)
    return train.fit(model, train_loader, val_loader, epochs=head_epochs, optimizer=optimizer, **kwargs)


def fine_tune(
    model: nn.Module,
    name: str,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch] | None = None,
    *,
    epochs: int,
    lr: float = FINE_TUNE_LR,
    head: RecipeResult | nn.Module | None = None,
    head_epochs: int = 1,
    trainable_last: int | None = None,
    decay: float | None = None,
    freeze_bn: bool = True,
    seed: int = 0,
    **fit_kwargs,
) -> RecipeResult:
    """Parameter transfer in two stages: the head first, then the backbone too.

    Stage 1 puts a trained head on ``model``: ``head`` (a :func:`train_probe` result on this
    backbone's features, the fast way) or, without one, ``head_epochs`` epochs of training the
    head alone on the frozen body at learning rate 3e-3 (fastai's ``freeze_epochs``). A random
    head would send large random gradients into the pretrained layers in the first steps.

    Stage 2 unfreezes the last ``trainable_last`` stages (all when ``None``), keeps batch-norm
    statistics frozen (``freeze_bn``: batches of a few dozen images normalise badly), and trains
    for ``epochs`` epochs with AdamW at learning rate ``lr``; with ``decay`` each stage further
    down gets ``decay`` times the learning rate of the one above it
    (:func:`companion.transfer.discriminative_param_groups`).

    Args:
        model: architecture ``name`` with pretrained weights and a head for the new classes,
            on the device it trains on.
        train_loader, val_loader: yield ``(images (B, C, H, W), labels (B,))``.
        seed: seeds each stage's training (the order of batches, dropout, augmentation).
        fit_kwargs: passed on to :func:`companion.train.fit` (``preprocess``, ``scheduler``,
            ``checkpoint`` and ``resume`` for stage 2, ...).
    """
    _own_optimizer(fit_kwargs)
    head_history = _head_stage(model, name, head, train_loader, val_loader, head_epochs, seed, fit_kwargs)
    if trainable_last is None:
        transfer.unfreeze(model)
    else:
        transfer.freeze_stages(model, name, trainable_last=trainable_last)
    if freeze_bn:
        transfer.freeze_batchnorm(model)
    if decay is not None:
        optimizer = torch.optim.AdamW(transfer.discriminative_param_groups(model, name, lr, decay))
    else:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    hardware.seed_everything(seed)
    history = train.fit(model, train_loader, val_loader, epochs=epochs, optimizer=optimizer, **fit_kwargs)
    depth = "all stages" if trainable_last is None else f"last {trainable_last} stages"
    rates = f"lr {lr:g}" + (f" x {decay:g} per stage down" if decay is not None else "")
    return RecipeResult(
        model, history, f"fine-tune {name}, {depth}, {rates}", transfer.trainable_parameters(model), head_history
    )


def train_from_scratch(
    model: nn.Module,
    train_loader: Loader,
    val_loader: Loader | None = None,
    *,
    epochs: int,
    lr: float = SCRATCH_LR,
    seed: int = 0,
    **fit_kwargs,
) -> RecipeResult:
    """Every parameter of ``model`` (on the device it trains on) trained from its current
    (random) weights with AdamW at ``lr``: the baseline that shows what transfer adds.
    ``fit_kwargs`` go to :func:`companion.train.fit`."""
    _own_optimizer(fit_kwargs)
    hardware.seed_everything(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    history = train.fit(model, train_loader, val_loader, epochs=epochs, optimizer=optimizer, **fit_kwargs)
    return RecipeResult(
        model, history, f"from scratch ({epochs} epochs, lr {lr:g})", transfer.trainable_parameters(model)
    )
