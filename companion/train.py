"""Training and evaluation: :func:`train_one_epoch`, :func:`evaluate` and :func:`fit`.

``fit`` is one plain loop in the style of torchvision's ``references/classification``:
:func:`train_one_epoch`, then :func:`evaluate`, with a per-epoch history, optional
:class:`EarlyStopping`, mixed precision on CUDA (``GradScaler(enabled=...)`` as in nanoGPT),
metrics summed on the device (one host synchronisation per epoch), a checkpoint after every
epoch (written atomically, :mod:`companion.files`) and ``resume=True`` to continue an
interrupted run to the same result, early stopping included.

A loss function may carry a ``correct(logits, labels)`` method (fastai's losses carry their
``decodes`` the same way); without one, :func:`companion.metrics.count_correct` counts the
correct arg-maxes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from . import distributed, hardware, provenance, settings
from .errors import TrainingDivergedError
from .files import load_checkpoint, save_checkpoint
from .inference import batches
from .metrics import count_correct
from .progress import tqdm

Batch = tuple[torch.Tensor, torch.Tensor]
Loader = Iterable[Batch]


def keep_frozen_batchnorm_in_eval(model: nn.Module) -> None:
    """Put every batch-norm layer whose parameters are all frozen into eval mode.

    ``model.train()`` switches batch-norm layers to batch statistics and updates their running
    means, even when their weights are frozen: a frozen backbone would then drift away from the
    statistics it was trained with (the most reported fine-tuning bug). ``fit`` calls this after
    every ``model.train()``.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


def _sum_dtype(device: torch.device) -> torch.dtype:
    """Running sums of losses in float64 where the device has it (MPS has not)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _correct_fn(loss_fn: Callable) -> Callable:
    return getattr(loss_fn, "correct", count_correct)


def evaluate(
    model: nn.Module,
    loader: Loader,
    *,
    loss_fn: Callable | None = None,
    device: torch.device | str | None = None,
    preprocess: Callable | None = None,
    amp: bool = True,
) -> dict[str, float]:
    """Accuracy and mean loss of ``model`` over ``loader`` (always in eval mode).

    Args:
        loader: yields ``(images (B, C, H, W), labels (B,))``.
        loss_fn: ``loss_fn(logits, labels)``, the mean over the batch (default cross-entropy);
            its ``correct`` method, if it has one, counts the correct predictions.
        device: where to run (the model is moved there); default: where its parameters are.
        preprocess: applied to each image batch on the device.
        amp: mixed precision where the device has it (CUDA); ``fit`` passes its own ``amp``.

    Returns:
        ``{"accuracy": 0..1, "loss": float, "n": int}``.
    """
    device = torch.device(device) if device is not None else hardware.model_device(model)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    correct_fn = _correct_fn(loss_fn)
    total = 0
    correct = torch.zeros((), device=device, dtype=torch.long)
    loss_sum = torch.zeros((), device=device, dtype=_sum_dtype(device))
    for out, y in batches(model, loader, preprocess=preprocess, device=device, amp=amp):
        loss_sum += loss_fn(out, y) * len(y)  # summed on the device: one sync, at the end
        correct += correct_fn(out, y)
        total += len(y)
    total = torch.tensor(total, device=device)
    distributed.all_reduce_sum(loss_sum, correct, total)  # under torchrun: over every process's shard
    total = int(total)
    if total == 0:
        raise ValueError("evaluate() got an empty loader")
    return {"accuracy": int(correct) / total, "loss": float(loss_sum) / total, "n": total}


class EarlyStopping:
    """Stop when the validation loss has not improved for ``patience`` epochs, keeping the
    weights of the best epoch. Its state is saved in ``fit``'s checkpoint, so a resumed run
    stops at the epoch an uninterrupted one would, with the same best weights."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best_loss, self.stale = patience, math.inf, 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def update(self, val_loss: float, model: nn.Module) -> bool:
        """Note the loss of the weights just evaluated; ``True`` when training should stop."""
        if val_loss < self.best_loss:
            self.best_loss, self.stale = val_loss, 0
            self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.stale += 1
        return self.stale >= self.patience

    def state_dict(self) -> dict:
        return {"best_loss": self.best_loss, "stale": self.stale, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict) -> None:
        self.best_loss, self.stale = float(state["best_loss"]), int(state["stale"])
        self.best_weights = state["best_weights"]


def train_one_epoch(
    model: nn.Module,
    loader: Loader,
    optimizer: torch.optim.Optimizer,
    *,
    loss_fn: Callable,
    device: torch.device,
    scaler: torch.amp.GradScaler,
    preprocess: Callable | None = None,
    amp: bool = False,
    desc: str = "train",
) -> dict[str, float]:
    """One pass over ``loader`` (``(images (B, C, H, W), labels (B,))``), one optimiser step per batch.

    ``amp``: autocast the forward pass (CUDA); ``scaler``: ``GradScaler(enabled=...)``, a no-op
    unless fp16 needs loss scaling. Loss and accuracy accumulate on the device and reach the host
    once, at the end of the epoch: no per-step synchronisation.

    Returns:
        ``{"train_loss", "train_accuracy"}``, means over the epoch's images.

    Raises:
        TrainingDivergedError: a batch's loss was not finite (checked once, at the end).
    """
    model.train()
    keep_frozen_batchnorm_in_eval(model)
    if isinstance(preprocess, nn.Module):
        preprocess.to(device).train()
    correct_fn, seen = _correct_fn(loss_fn), 0
    loss_sum = torch.zeros((), device=device, dtype=_sum_dtype(device))
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)  # first non-finite batch
    bad_loss = torch.zeros((), device=device)  # and its loss
    shown = settings.progress() and distributed.is_main()
    for step, (x, y) in enumerate(tqdm(loader, desc=desc, leave=False, disable=not shown)):
        x, y = hardware.to_device(x, device), y.to(device, non_blocking=True)
        if preprocess is not None:
            x = hardware.to_device(preprocess(x), device)
        with hardware.autocast(device, amp):
            out = model(x)
            loss = loss_fn(out.float(), y)
        newly_bad = (first_bad < 0) & ~torch.isfinite(loss)
        first_bad = torch.where(newly_bad, step, first_bad)
        bad_loss = torch.where(newly_bad, loss.detach(), bad_loss)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        seen += len(y)
        loss_sum += loss.detach() * len(y)
        correct += correct_fn(out.detach(), y)
    seen = torch.tensor(seen, device=device)
    distributed.all_reduce_sum(loss_sum, correct, seen, bad_loss)  # under torchrun: over every process
    distributed.all_reduce_max(first_bad)
    _raise_if_diverged(int(first_bad), float(bad_loss), optimizer, desc)
    seen = max(int(seen), 1)
    return {"train_loss": float(loss_sum) / seen, "train_accuracy": int(correct) / seen}


def _raise_if_diverged(first_bad: int, bad_loss: float, optimizer, desc: str) -> None:
    if first_bad >= 0:
        raise TrainingDivergedError(
            f"loss became {bad_loss} at batch {first_bad + 1} of {desc}. Fix: lower the learning "
            f"rate (now {optimizer.param_groups[0]['lr']:.2g}), check the inputs for NaNs, or keep mixed "
            f"precision off (amp=False)."
        )


def fit(
    model: nn.Module,
    train_loader: Loader,
    val_loader: Loader | None = None,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | str | None = None,
    preprocess: Callable | None = None,
    loss_fn: Callable | None = None,
    early_stopping: int | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    amp: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` where its parameters are (``model.to(device)`` first) for ``epochs``
    epochs: each epoch :func:`train_one_epoch`, :func:`evaluate` on ``val_loader``, the
    scheduler's step, the checkpoint and the early-stopping decision.

    Args:
        train_loader, val_loader: yield ``(images (B, C, H, W), labels (B,))``.
        optimizer: default AdamW at learning rate 1e-3 over the trainable parameters.
        scheduler: stepped once per epoch; ``"cosine"`` anneals every group's rate to zero.
        preprocess: batch transform on the device; train mode (augmentation) in training only.
        loss_fn: mean loss over the batch (default cross-entropy); see the module's note.
        early_stopping: patience in epochs of :class:`EarlyStopping` (needs ``val_loader``).
        checkpoint: written after every epoch; ``resume=True`` continues from it, to the same result.
        amp: mixed precision on CUDA (bf16, or fp16 with loss scaling), in training and validation.

    Returns one dict per epoch: ``epoch``, ``train_loss``, ``train_accuracy``, ``lr``,
    ``seconds``, and ``val_loss``, ``val_accuracy`` with a validation loader.
    """
    _check_options(model, val_loader, optimizer, scheduler, early_stopping, checkpoint, resume)
    device = hardware.model_device(model)
    model, loss_fn = hardware.prepare_model(model, device), loss_fn or nn.CrossEntropyLoss()
    optimizer, scheduler = _optimization(model, optimizer, scheduler, epochs)
    use_amp = amp and hardware.amp_dtype(device) is not None
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and hardware.needs_grad_scaler(device))
    stopper = EarlyStopping(early_stopping) if early_stopping is not None else None
    state = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "early_stopping": stopper}
    history = _resume(checkpoint, model, state, train_loader) if resume else []
    forward, step = distributed.wrap(model, device), dict(loss_fn=loss_fn, device=device, preprocess=preprocess)
    for epoch in _epoch_bar(len(history), epochs):
        t0, record = time.perf_counter(), {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        with _naming_the_last_checkpoint(checkpoint):
            record |= train_one_epoch(forward, train_loader, optimizer, scaler=scaler, amp=use_amp, **step)
        if val_loader is not None:
            val = evaluate(model, val_loader, amp=amp, **step)
            record |= {"val_loss": val["loss"], "val_accuracy": val["accuracy"]}
        history.append(record | {"seconds": time.perf_counter() - t0})
        if scheduler is not None:
            scheduler.step()
        stop = stopper is not None and stopper.update(record["val_loss"], model)  # the weights just evaluated
        if checkpoint is not None and distributed.is_main():
            save_checkpoint(checkpoint, model, epoch=epoch, history=history, **_training_state(state, train_loader))
        if stop:
            break
    if stopper is not None and stopper.best_weights is not None:
        model.load_state_dict(stopper.best_weights)
    return history


def _optimization(model, optimizer, scheduler, epochs: int):
    """``(optimizer, scheduler)``: AdamW at 1e-3 over the trainable parameters unless an
    optimizer is given; ``"cosine"`` becomes a cosine annealing over ``epochs``."""
    optimizer = optimizer or torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    if scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return optimizer, scheduler


@contextlib.contextmanager
def _naming_the_last_checkpoint(checkpoint):
    """A :class:`TrainingDivergedError` raised inside says where the last good checkpoint is."""
    try:
        yield
    except TrainingDivergedError as exc:
        if checkpoint is None or not Path(checkpoint).exists():
            raise
        raise TrainingDivergedError(f"{exc} The last good checkpoint is {checkpoint}.") from None


def _check_options(model, val_loader, optimizer, scheduler, early_stopping, checkpoint, resume: bool) -> None:
    """A ``ValueError`` for what :func:`fit` cannot honour, before any training."""
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("fit() got a model with no trainable parameters: unfreeze something first")
    if early_stopping is not None and val_loader is None:
        raise ValueError("early_stopping needs a val_loader: it watches the validation loss")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH: the file to continue from")
    if isinstance(scheduler, str) and scheduler != "cosine":
        raise ValueError(f"unknown scheduler {scheduler!r}: use 'cosine', or pass a torch LRScheduler")
    if scheduler is not None and not isinstance(scheduler, str) and optimizer is None:
        raise ValueError("a scheduler steps an optimizer: pass optimizer= the one it was built on")


def _epoch_bar(start: int, epochs: int):
    """The epochs of :func:`fit` as a progress bar that stays on screen (one process only)."""
    shown = settings.progress() and distributed.is_main()
    return tqdm(range(start, epochs), desc="epochs", initial=start, total=epochs, leave=True, disable=not shown)


def _training_state(state: dict, train_loader) -> dict:
    """Everything a resumed run needs besides the weights: optimiser, schedule, loss scaling,
    early stopping, and the random states of torch and of the loader's shuffling."""
    saved = {key: part.state_dict() for key, part in state.items() if part is not None}
    saved["torch_rng"] = torch.get_rng_state()
    generator = getattr(train_loader, "generator", None)
    if generator is not None:
        saved["loader_rng"] = generator.get_state()
    return saved


def _resume(checkpoint, model: nn.Module, state: dict, train_loader) -> list[dict]:
    """The history so far, with the weights and training state of ``checkpoint`` put back in
    place; ``[]`` when there is no checkpoint yet (a first run)."""
    if not Path(checkpoint).exists():
        return []
    ckpt = load_checkpoint(checkpoint, model)
    for key, part in state.items():
        if part is not None and key in ckpt:
            part.load_state_dict(ckpt[key])
    torch.set_rng_state(ckpt["torch_rng"])
    generator = getattr(train_loader, "generator", None)
    if generator is not None and "loader_rng" in ckpt:
        generator.set_state(ckpt["loader_rng"])
    history = list(ckpt.get("history", []))
    if distributed.is_main():
        print(f"resumed from {provenance.short_paths(str(checkpoint))} after epoch {len(history)}")
    return history


def format_history(history: list[dict[str, float]]) -> str:
    """The history of :func:`fit` as one line per epoch (what a training log shows)."""
    lines = []
    for r in history:
        val = f"  val loss {r['val_loss']:.4f} acc {r['val_accuracy']:.3f}" if "val_loss" in r else ""
        lines.append(
            f"epoch {r['epoch']:>3}/{len(history)}  train loss {r['train_loss']:.4f} "
            f"acc {r['train_accuracy']:.3f}{val}  {r['seconds']:.1f}s"
        )
    return "\n".join(lines)
