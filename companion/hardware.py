"""Hardware: device choice (cuda > mps > cpu), mixed-precision policy, seeding and memory format."""

from __future__ import annotations

import contextlib
import os
import platform
import random

import numpy as np
import torch

from . import settings


def choose_device(preferred: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``preferred`` if given, else CUDA, else Apple MPS, else CPU.

    ``TLBOOK_DEVICE`` overrides the automatic choice (e.g. ``TLBOOK_DEVICE=cpu``).
    """
    preferred = preferred or settings.device()
    if preferred is not None:
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe(device: torch.device) -> str:
    """A one-line description of ``device`` for the header every chapter prints."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)}), AMP {amp_dtype(device)}"
    if device.type == "mps":
        return "mps (Apple GPU), fp32"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), fp32"


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Autocast dtype for training on ``device``: bf16 where the GPU supports it, else fp16;
    ``None`` (plain fp32) on CPU and MPS."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """The autocast context for ``device`` (a no-op where :func:`amp_dtype` is ``None``)."""
    dtype = amp_dtype(device)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def needs_grad_scaler(device: torch.device) -> bool:
    """fp16 autocast needs loss scaling; bf16 and fp32 do not."""
    return amp_dtype(device) == torch.float16


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator seeded the same (for loaders)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def configure_backends(device: torch.device) -> None:
    """On CUDA: cuDNN benchmark mode (picks the fastest convolution algorithm for each input
    shape once, then reuses it; our shapes are fixed) and TF32 matrix multiplies for fp32 work.

    Process-wide flags: called once, by :func:`companion.start_chapter` and the command line,
    never by a library function (a test that wants IEEE fp32 turns TF32 off and it stays off).
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def channels_last(device: torch.device) -> bool:
    """Whether image batches and convolution weights use channels-last memory on ``device``:
    on CUDA (tensor cores) and on the CPU (oneDNN); ``benchmarks/channels_last.py`` measures
    the CPU ratio. Not on MPS."""
    return device.type in ("cuda", "cpu")


def inference_batch_size(device: torch.device) -> int:
    """Images per forward pass where nothing trains (features, predictions): 256 on CUDA,
    where large batches keep the GPU busy; 32 elsewhere, where they add memory (the
    activations of every image at once) and little speed."""
    return 256 if device.type == "cuda" else 32


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model``'s parameters are (the CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move ``model`` to ``device``, in channels-last memory where :func:`channels_last`
    (faster convolutions). Parameters stay the same objects, so an optimiser built before
    still holds them."""
    model = model.to(device)
    if channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a batch to ``device`` without blocking (the loader pins memory on CUDA);
    4-D float image batches become channels-last where :func:`channels_last`."""
    batch = batch.to(device, non_blocking=True)
    if channels_last(device) and batch.dim() == 4 and batch.is_floating_point():
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def default_num_workers() -> int:
    """DataLoader workers: 0 where workers use ``spawn`` (Windows, macOS: notebook-defined
    datasets fail there), else up to 4 but never more than the cores minus one."""
    if platform.system() in ("Windows", "Darwin"):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores - 1))
