"""Training and evaluation: ``fit``, ``evaluate``, ``predict`` and atomic, safe checkpoints.

``fit`` is one plain loop in the style of torchvision's ``references/classification``:
:func:`train_one_epoch`, then :func:`evaluate`, with progress bars (tqdm), a per-epoch
history, optional :class:`EarlyStopping`, mixed precision on CUDA, metrics summed on the
device (one host synchronisation per epoch), a checkpoint after every epoch (written
atomically) and ``resume=True`` to continue an interrupted run to the same result, early
stopping included.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

try:  # notebook progress bars need ipywidgets; without it, plain text bars (and no warning)
    import ipywidgets  # noqa: F401
    from tqdm.auto import tqdm
except ImportError:
    from tqdm.std import tqdm

from . import distributed, hardware, provenance, settings
from .errors import CheckpointError, TrainingDivergedError

if TYPE_CHECKING:
    import pandas

Batch = tuple[torch.Tensor, torch.Tensor]
Loader = Iterable[Batch]
Device = torch.device | str | None


def _progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    return settings.progress()


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


def _forward_batches(
    model: nn.Module,
    loader: Iterable[Batch],
    preprocess: Callable | None,
    device: torch.device,
    desc: str,
    progress: bool | None,
):
    """Yield ``(outputs, labels)`` for every batch, in inference mode."""
    if device.type == "cuda":
        hardware.prepare_model(model, device)  # channels-last, cuDNN benchmark
    model.eval()
    if isinstance(preprocess, nn.Module):
        preprocess.to(device).eval()
    bar = tqdm(loader, desc=desc, leave=False, disable=not _progress_enabled(progress) or not distributed.is_main())
    with torch.inference_mode(), hardware.autocast(device):
        for x, y in bar:
            x, y = hardware.to_device(x, device), y.to(device, non_blocking=True)
            if preprocess is not None:
                x = hardware.to_device(preprocess(x), device)  # channels-last on CUDA
            yield model(x).float(), y


def count_correct(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Number of rows of logits ``out (B, K)`` whose arg-max equals the label ``y (B,)``, as a
    0-d tensor on their device (summing it up needs no host synchronisation)."""
    return (out.argmax(1) == y).sum()


def _sum_dtype(device: torch.device) -> torch.dtype:
    """Running sums of losses in float64 where the device has it (MPS has not)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _model_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    *,
    preprocess: Callable | None = None,
    device: torch.device | str | None = None,
    loss_fn: Callable | None = None,
    progress: bool | None = None,
    correct_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | int] = count_correct,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` over ``loader`` (always in eval mode).

    Args:
        loader: yields ``(images (B, C, H, W), labels (B,))``.
        preprocess: applied to each image batch on the device (e.g. :class:`companion.batch_transforms.BatchTransform`).
        device: where to run; default: where the model's parameters are.
        loss_fn: ``loss_fn(logits, labels)``, the mean over the batch (default cross-entropy).
        correct_fn: number of correct predictions in a batch (default :func:`count_correct`).

    Returns:
        ``{"accuracy": 0..1, "loss": float, "n": int}``.
    """
    device = _model_device(model, device)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    total = 0
    correct = torch.zeros((), device=device, dtype=torch.long)
    loss_sum = torch.zeros((), device=device, dtype=_sum_dtype(device))
    for out, y in _forward_batches(model, loader, preprocess, device, "eval", progress):
        loss_sum += loss_fn(out, y) * len(y)  # summed on the device: one sync, at the end
        correct += correct_fn(out, y)
        total += len(y)
    total = torch.tensor(total, device=device)
    distributed.all_reduce_sum(loss_sum, correct, total)  # under torchrun: over every process's shard
    total = int(total)
    if total == 0:
        raise ValueError("evaluate() got an empty loader")
    return {"accuracy": int(correct) / total, "loss": float(loss_sum) / total, "n": total}


def predict(
    model: nn.Module, loader: Loader, *, preprocess: Callable | None = None, device: Device = None, progress=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities ``(N, K)`` and true labels ``(N,)`` for a whole loader, on the CPU."""
    return _collect(model, loader, preprocess, device, progress, "predict", lambda logits: logits.softmax(1))


def _collect(
    model, loader, preprocess, device, progress, desc: str, per_batch: Callable
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_batch(outputs)`` for every batch and the labels, each concatenated on the CPU.
    Under torchrun (an unshuffled loader, sharded) every process gets all rows, in dataset order."""
    device = _model_device(model, device)
    outputs, labels = [], []
    for out, y in _forward_batches(model, loader, preprocess, device, desc, progress):
        outputs.append(per_batch(out).cpu())
        labels.append(y.cpu())
    return distributed.gather_shards(torch.cat(outputs)), distributed.gather_shards(torch.cat(labels))


def per_class_accuracy(probs: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> pandas.DataFrame:
    """Accuracy (recall), precision and support per class from probabilities ``(N, K)`` and
    labels ``(N,)`` (scikit-learn's ``precision_recall_fscore_support``), worst class first."""
    import pandas as pd
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, _, support = precision_recall_fscore_support(
        labels.numpy(), probs.argmax(1).numpy(), labels=list(range(len(classes))), zero_division=0
    )
    table = pd.DataFrame({"accuracy": recall, "precision": precision, "images": support}, index=list(classes))
    return table.sort_values("accuracy")


def worst_mistakes(probs: torch.Tensor, labels: torch.Tensor, k: int = 16) -> torch.Tensor:
    """Indices of the ``k`` wrong predictions made with the highest confidence (most confident first)."""
    confidence, predicted = probs.max(1)
    wrong = (predicted != labels).nonzero().flatten()
    return wrong[confidence[wrong].argsort(descending=True)][:k]


# ----------------------------------------------------------------------------- checkpoints


def atomic_write(path: str | Path, write: Callable) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temporary binary file in the same folder,
    which is flushed to disk and renamed over ``path``. A crash or a full disk never leaves a
    half-written file, and the previous file survives until the new one is complete; on error
    the temporary file is removed and the ``OSError`` re-raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def save_checkpoint(path: str | Path, model: nn.Module, **state) -> Path:
    """Write ``{"model": model.state_dict(), **state}`` to ``path`` atomically (:func:`atomic_write`).

    ``state`` may hold tensors, numbers, strings and lists/dicts of them (what ``weights_only``
    loading accepts).
    """
    path = Path(path)
    try:
        return atomic_write(path, lambda f: torch.save({"model": model.state_dict(), **state}, f))
    except OSError as exc:
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise CheckpointError(
                f"cannot write a checkpoint in {path.parent}: {exc}. Fix: choose a writable output folder"
            ) from exc
        raise CheckpointError(
            f"writing checkpoint {path} failed ({exc}); the previous checkpoint, if any, is intact. "
            f"Fix: free disk space or choose another output folder"
        ) from exc


def load_checkpoint(path: str | Path, model: nn.Module | None = None, *, strict: bool = True) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True`` (a file that
    holds anything but tensors and plain containers is refused: loading a pickle runs code).

    Given ``model``, its weights are loaded; an architecture or class-count mismatch raises
    :class:`~companion.errors.CheckpointError` naming the tensors that differ.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc) and not _pickles_objects(path):  # damaged bytes
            raise CheckpointError(
                f"{path} is corrupt: not a PyTorch checkpoint, or damaged in writing or copying "
                f"(the unpickler stopped at an invalid byte). Fix: use an intact copy, or train again"
            ) from None
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        raise CheckpointError(
            f"refused to load {path}: it holds objects other than tensors and plain containers "
            f"({refused.group(1) if refused else 'an unknown class'}), and unpickling them could run arbitrary "
            f"code. Only load files you trust, and re-save them as a plain state dict."
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} is truncated or corrupt ({first}). Fix: use an intact copy, or train again"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a companion checkpoint (no 'model' entry)")
    if model is not None:
        load_weights(model, ckpt["model"], strict=strict, what=str(path))
    return ckpt


def _pickles_objects(path: Path) -> bool:
    """Whether ``path`` is a well-formed pickle that names classes or functions (which the safe
    loader refuses), read opcode by opcode without running any of it."""
    import pickletools

    try:
        with open(path, "rb") as f:
            return any(op.name in ("GLOBAL", "STACK_GLOBAL", "REDUCE") for op, _, _ in pickletools.genops(f))
    except Exception:  # not a pickle at all: an invalid opcode, or cut short
        return False


def load_weights(
    model: nn.Module, state: dict[str, torch.Tensor], *, strict: bool = True, what: str = "state dict"
) -> None:
    """``model.load_state_dict(state)`` with an error that names what does not fit and how to fix it."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        (k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if k in state and state[k].shape != v.shape
    ]
    if shapes:
        k, theirs, ours = shapes[0]
        hint = ""
        if len(theirs) in (1, 2) and len(ours) == len(theirs) and theirs[1:] == ours[1:]:
            hint = (
                f" It looks like a class-count mismatch: the checkpoint has {theirs[0]} classes, the model "
                f"{ours[0]}. Fix: create the model with num_classes={theirs[0]}, or leave the head out "
                f"(companion.transfer.transferable_state)."
            )
        raise CheckpointError(
            f"{what} does not fit the model: {len(shapes)} tensors differ in shape, first {k}: "
            f"{theirs} in the checkpoint vs {ours} in the model.{hint}"
        )
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{what} is for a different architecture: {len(missing)} tensors missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}). Fix: build the same architecture as "
            f"when it was saved, or load with strict=False."
        )
    model.load_state_dict(state, strict=strict)


# ----------------------------------------------------------------------------- fit


def _loader_generator(loader) -> torch.Generator | None:
    return getattr(loader, "generator", None)


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
    loader: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    loss_fn: Callable,
    correct_fn: Callable = count_correct,
    preprocess: Callable | None = None,
    scaler: torch.amp.GradScaler | None = None,
    use_amp: bool = False,
    forward: Callable | None = None,
    desc: str = "train",
    progress: bool | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` (``(images (B, C, H, W), labels (B,))``), one optimiser step per batch.

    Loss and accuracy accumulate on the device and reach the host once, at the end of the epoch
    (and when the progress bar refreshes, if one is shown): no per-step synchronisation.

    Returns:
        ``{"train_loss", "train_accuracy"}``, means over the epoch's images.

    Raises:
        TrainingDivergedError: a batch's loss was not finite (checked once, at the end).
    """
    forward = forward or model
    model.train()
    keep_frozen_batchnorm_in_eval(model)
    if isinstance(preprocess, nn.Module):
        preprocess.train()
    seen, show = 0, _progress_enabled(progress) and distributed.is_main()
    loss_sum = torch.zeros((), device=device, dtype=_sum_dtype(device))
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)  # first non-finite batch
    bad_loss = torch.zeros((), device=device)  # and its loss
    bar = tqdm(loader, desc=desc, leave=False, disable=not show)
    for step, (x, y) in enumerate(bar):
        x, y = hardware.to_device(x, device), y.to(device, non_blocking=True)
        if preprocess is not None:
            x = hardware.to_device(preprocess(x), device)  # channels-last on CUDA
        with hardware.autocast(device, use_amp):
            out = forward(x)
            loss = loss_fn(out.float(), y)
        newly_bad = (first_bad < 0) & ~torch.isfinite(loss)
        first_bad = torch.where(newly_bad, step, first_bad)
        bad_loss = torch.where(newly_bad, loss.detach(), bad_loss)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        seen += len(y)
        loss_sum += loss.detach() * len(y)
        correct += correct_fn(out.detach(), y)
        if show and step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", acc=f"{int(correct) / seen:.3f}")
    seen = torch.tensor(seen, device=device)
    distributed.all_reduce_sum(loss_sum, correct, seen, bad_loss)  # under torchrun: over every process
    distributed.all_reduce_max(first_bad)
    if int(first_bad) >= 0:
        raise TrainingDivergedError(
            f"loss became {float(bad_loss)} at batch {int(first_bad) + 1} of {desc}. Fix: lower the learning "
            f"rate (now {optimizer.param_groups[0]['lr']:.2g}), check the inputs for NaNs, or keep mixed "
            f"precision off (amp=False)."
        )
    seen = max(int(seen), 1)
    return {"train_loss": float(loss_sum) / seen, "train_accuracy": int(correct) / seen}


def _optimization(model, optimizer, scheduler, schedule, lr: float, epochs: int):
    """(optimizer, scheduler): AdamW over the trainable parameters unless one is given, and a
    cosine schedule when ``schedule == "cosine"`` and no scheduler is given."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("fit() got a model with no trainable parameters: unfreeze something first")
    optimizer = optimizer or torch.optim.AdamW(params, lr=lr)
    if scheduler is None and schedule is not None:
        if schedule != "cosine":
            raise ValueError(f"unknown schedule {schedule!r}: use 'cosine', or pass a scheduler")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return optimizer, scheduler


def _training_state(optimizer, scheduler, scaler, stopper, train_loader) -> dict:
    """Everything a resumed run needs besides the weights: optimiser, schedule, loss scaling,
    early stopping, and the random states of torch and of the loader's shuffling."""
    state = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
    for key, part in (("scheduler", scheduler), ("scaler", scaler), ("early_stopping", stopper)):
        if part is not None:
            state[key] = part.state_dict()
    generator = _loader_generator(train_loader)
    if generator is not None:
        state["loader_rng"] = generator.get_state()
    return state


def _restore(ckpt: dict, optimizer, scheduler, scaler, stopper, train_loader) -> None:
    """Put the state that :func:`_training_state` saved back in place."""
    optimizer.load_state_dict(ckpt["optimizer"])
    for key, part in (("scheduler", scheduler), ("scaler", scaler), ("early_stopping", stopper)):
        if part is not None and key in ckpt:
            part.load_state_dict(ckpt[key])
    torch.set_rng_state(ckpt["torch_rng"])
    generator = _loader_generator(train_loader)
    if generator is not None and "loader_rng" in ckpt:
        generator.set_state(ckpt["loader_rng"])


def _epoch_line(record: dict, epochs: int) -> str:
    val = f"  val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.3f}" if "val_loss" in record else ""
    return (
        f"epoch {record['epoch']:>3}/{epochs}  train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.3f}{val}  {record['seconds']:.1f}s"
    )


def fit(
    model: nn.Module,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch] | None = None,
    *,
    epochs: int,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    schedule: str | None = None,
    preprocess: Callable | None = None,
    device: torch.device | str | None = None,
    loss_fn: Callable | None = None,
    early_stopping: int | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    amp: bool = True,
    progress: bool | None = None,
    verbose: bool = True,
    epoch_end: Callable[[int, nn.Module, torch.optim.Optimizer], None] | None = None,
    correct_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | int] = count_correct,
    compile: bool = False,
) -> list[dict[str, float]]:
    """Train ``model`` for ``epochs`` epochs and return the per-epoch history.

    Each epoch is :func:`train_one_epoch`, then :func:`evaluate` on ``val_loader``, then the
    schedule's step, ``epoch_end``, the checkpoint and the early-stopping decision.

    Args:
        train_loader, val_loader: yield ``(images (B, C, H, W), labels (B,))``.
        optimizer: default AdamW over the trainable parameters with learning rate ``lr``.
        scheduler, schedule: stepped once per epoch; or ``schedule="cosine"``, which anneals every
            group's learning rate to zero over ``epochs`` (the usual choice for fine-tuning).
        preprocess: batch transform on the device; train mode (augmentation) in training only.
        early_stopping: stop when validation loss has not improved for this many epochs and
            restore the best weights (:class:`EarlyStopping`).
        checkpoint: file to write after every epoch (atomic); with ``resume=True`` an existing
            one is loaded and training continues after its last epoch, to the same result.
        amp: mixed precision on CUDA (bf16, or fp16 with loss scaling).
        compile: ``torch.compile`` the training forward pass (pays off on long GPU runs only).
        epoch_end: ``epoch_end(epoch, model, optimizer)`` after each epoch (gradual unfreezing).
        loss_fn, correct_fn: the training loss (mean over the batch) and the count of correct
            predictions; override both for models whose output is not one set of logits
            (e.g. :class:`companion.transfer.MultiTaskNet`).

    Returns:
        The history, one dict per epoch with ``epoch``, ``train_loss``, ``train_accuracy``,
        ``lr``, ``seconds``, and ``val_loss``, ``val_accuracy`` with a validation loader (under
        torchrun see :mod:`companion.distributed`).

    Raises:
        TrainingDivergedError: the loss became NaN or infinite (the last checkpoint is kept).
    """
    device = torch.device(device) if device is not None else hardware.choose_device()
    model = hardware.prepare_model(model, device)
    optimizer, scheduler = _optimization(model, optimizer, scheduler, schedule, lr, epochs)
    step = _step_settings(model, device, preprocess, loss_fn, correct_fn, amp, compile, progress)
    stopper = EarlyStopping(early_stopping) if early_stopping is not None and val_loader is not None else None
    parts = (optimizer, scheduler, step["scaler"], stopper, train_loader)
    history, start = _resume_point(checkpoint if resume else None, model, parts, verbose)
    verbose, bar = verbose and distributed.is_main(), _epoch_bar(start, epochs, progress)
    for epoch in bar:
        record = _epoch(model, train_loader, val_loader, optimizer, epoch, epochs, checkpoint, step)
        if scheduler is not None:
            scheduler.step()
        history.append(record)
        _report(record, epochs, bar, verbose)
        stop = stopper is not None and stopper.update(record["val_loss"], model)  # the weights just evaluated
        if epoch_end is not None:
            epoch_end(epoch, model, optimizer)
        if checkpoint is not None and distributed.is_main():
            save_checkpoint(checkpoint, model, epoch=epoch, history=history, **_training_state(*parts))
        if stop:
            if verbose:
                print(f"early stopping after epoch {epoch + 1}: no better validation loss for {stopper.stale} epochs")
            break
    if stopper is not None and stopper.best_weights is not None:
        model.load_state_dict(stopper.best_weights)
    return history


def _step_settings(model, device, preprocess, loss_fn, correct_fn, amp: bool, compile: bool, progress) -> dict:
    """The keyword arguments of :func:`train_one_epoch` for a run of :func:`fit`: mixed precision
    where the device has it (with loss scaling for fp16), the forward pass wrapped in
    ``DistributedDataParallel`` under torchrun and compiled on request."""
    if isinstance(preprocess, nn.Module):
        preprocess.to(device)
    use_amp = amp and hardware.amp_dtype(device) is not None
    scaler = torch.amp.GradScaler(device.type) if use_amp and hardware.needs_grad_scaler(device) else None
    forward = distributed.wrap(model, device)
    return dict(
        device=device,
        loss_fn=loss_fn or nn.CrossEntropyLoss(),
        correct_fn=correct_fn,
        preprocess=preprocess,
        scaler=scaler,
        use_amp=use_amp,
        forward=torch.compile(forward) if compile else forward,
        progress=progress,
    )


def _epoch_bar(start: int, epochs: int, progress: bool | None):
    """The epochs of :func:`fit` as a progress bar that stays on screen (one process only)."""
    show = _progress_enabled(progress) and distributed.is_main()
    return tqdm(range(start, epochs), desc="epochs", initial=start, total=epochs, leave=True, disable=not show)


def _report(record: dict, epochs: int, bar, verbose: bool) -> None:
    """The epoch's line (``verbose``), and its metrics on the epoch bar."""
    if verbose:
        tqdm.write(_epoch_line(record, epochs))  # above the bar, which keeps its place
    if not bar.disable:
        keys = ("train_loss", "val_loss", "val_accuracy")
        bar.set_postfix({k.replace("_", " "): f"{record[k]:.3f}" for k in keys if k in record})


def _resume_point(checkpoint, model: nn.Module, parts: tuple, verbose: bool) -> tuple[list[dict], int]:
    """``(history so far, first epoch to run)``: from ``checkpoint`` when it exists (its weights
    and training state put back in place), else ``([], 0)``."""
    if checkpoint is None or not Path(checkpoint).exists():
        return [], 0
    ckpt = load_checkpoint(checkpoint, model)
    _restore(ckpt, *parts)
    start = int(ckpt["epoch"]) + 1
    if verbose and distributed.is_main():
        print(f"resumed from {provenance.short_paths(str(checkpoint))} after epoch {start}")
    return list(ckpt.get("history", [])), start


def _epoch(model, train_loader, val_loader, optimizer, epoch: int, epochs: int, checkpoint, step: dict) -> dict:
    """One epoch of :func:`fit`: train, then evaluate; returns the epoch's record (before the
    schedule steps)."""
    t0 = time.perf_counter()
    record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
    try:
        record.update(train_one_epoch(model, train_loader, optimizer, desc=f"epoch {epoch + 1}/{epochs}", **step))
    except TrainingDivergedError as exc:
        if checkpoint is None or not Path(checkpoint).exists():
            raise
        raise TrainingDivergedError(f"{exc} The last good checkpoint is {checkpoint}.") from None
    if val_loader is not None:
        val = evaluate(
            model,
            val_loader,
            preprocess=step["preprocess"],
            device=step["device"],
            loss_fn=step["loss_fn"],
            correct_fn=step["correct_fn"],
            progress=False,  # the epoch bar shows the result
        )
        record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
    record["seconds"] = time.perf_counter() - t0
    return record
