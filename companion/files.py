"""Every file the companion writes or reads back: atomic writes, JSON, checkpoints, the
finished model in safetensors, and the lock on a run folder.

Writes are atomic (a temporary file in the same folder, flushed, then renamed over the
target), so a crash or a full disk never leaves half a file. Checkpoints load with
``weights_only=True``; a finished model is a ``.safetensors`` file, which holds plain tensors
and text metadata and never unpickles anything.
"""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import filelock
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from .errors import CheckpointError, CompanionError


def atomic_write(path: str | Path, write: Callable) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temporary binary file in the same folder,
    which is flushed to disk and renamed over ``path``. The previous file survives until the
    new one is complete; on error the temporary file is removed and the error re-raised."""
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


def write_bytes(path: str | Path, payload: bytes) -> Path:
    """``payload`` to ``path``, atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(payload))


def write_json(path: str | Path, obj) -> Path:
    """``obj`` as indented JSON (with a final newline) to ``path``, atomically."""
    return write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | Path, model: nn.Module, **state) -> Path:
    """Write ``{"model": model.state_dict(), **state}`` to ``path`` atomically.

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
    :class:`~companion.errors.CheckpointError` naming the tensors that differ. Any file that
    cannot be read as a checkpoint raises :class:`~companion.errors.CheckpointError`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc) or _pickles_objects(path):
            raise _refused(path, exc) from None
        raise _corrupt(path, "the unpickler stopped at an invalid byte") from None
    except Exception as exc:  # noqa: BLE001 (torch's unpickler raises many types on damaged bytes)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _corrupt(path, first) from None
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a companion checkpoint (no 'model' state dict of tensors)")
    if model is not None:
        load_weights(model, state, strict=strict, what=str(path))
    return ckpt


def _corrupt(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is truncated or corrupt ({why}): not a PyTorch checkpoint, or damaged in writing "
        f"or copying. Fix: use an intact copy, or train again"
    )


def _refused(path: Path, exc: Exception) -> CheckpointError:
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    return CheckpointError(
        f"refused to load {path}: it holds objects other than tensors and plain containers "
        f"({refused.group(1) if refused else 'an unknown class'}), and unpickling them could run arbitrary "
        f"code. Only load files you trust, and re-save them as a plain state dict."
    )


def _pickles_objects(path: Path) -> bool:
    """Whether ``path`` is a well-formed pickle that names classes or functions (which the safe
    loader refuses), read opcode by opcode without running any of it."""
    try:
        with open(path, "rb") as f:
            return any(op.name in ("GLOBAL", "STACK_GLOBAL", "REDUCE") for op, _, _ in pickletools.genops(f))
    except Exception:  # noqa: BLE001 (not a pickle at all: an invalid opcode, or cut short)
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


# ----------------------------------------------------------------------------- finished models


def save_model(path: str | Path, model: nn.Module, config: dict) -> Path:
    """Write ``model``'s weights and ``config`` (JSON-serialisable, stored in the file's
    metadata) to ``path`` in the safetensors format, atomically."""
    state = {name: tensor.detach().cpu().clone().contiguous() for name, tensor in model.state_dict().items()}
    return write_bytes(path, safetensors_bytes(state, metadata={"config": json.dumps(config)}))


def read_model(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state dict, config)`` from a file written by :func:`save_model`.

    Raises:
        CheckpointError: the file is missing, truncated or not a companion model file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no model file at {path}")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        config = json.loads(metadata["config"]) if "config" in metadata else None
    except Exception as exc:  # noqa: BLE001 (safetensors and json raise several types on damaged bytes)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable safetensors file ({first}); it may be truncated") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} has no run configuration in its metadata: not written by the companion")
    return state, config


# ----------------------------------------------------------------------------- run folders


def lock_folder(folder: str | Path, what: str = "another `train`") -> filelock.BaseFileLock:
    """Hold ``folder/.lock`` (the ``filelock`` package; released when the process ends, even killed), so
    that a second writer stops instead of writing over the first one's files. Returns the held
    lock; call ``.release()`` when done, or keep it for the process's life."""
    lock = filelock.FileLock(Path(folder) / ".lock", timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise CompanionError(
            f"{what} is writing to {folder}. Fix: wait for it to finish, or choose another --out folder"
        ) from None
    return lock
