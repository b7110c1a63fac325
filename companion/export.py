"""The finished model of a run, in the safetensors format: plain tensors plus text metadata.

Loading a ``.safetensors`` file reads numbers and never unpickles anything, so a model file
from someone else cannot run code on your machine (a ``torch.save`` file can, unless loaded
with ``weights_only=True``). The run's configuration (architecture, classes, image size) is
stored in the file's metadata as JSON, so the file alone rebuilds the model.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from .errors import CheckpointError


def save_model(path: str | Path, model: nn.Module, config: dict) -> Path:
    """Write ``model``'s weights and ``config`` (JSON-serialisable) to ``path``, atomically."""
    from safetensors.torch import save

    from .train import atomic_write

    state = {name: tensor.detach().cpu().clone().contiguous() for name, tensor in model.state_dict().items()}
    payload = save(state, metadata={"config": json.dumps(config)})
    return atomic_write(path, lambda f: f.write(payload))


def read_model(path: str | Path) -> tuple[dict, dict]:
    """``(state dict, config)`` from a file written by :func:`save_model`.

    Raises:
        CheckpointError: the file is missing, truncated or not a companion model file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
        state = load(data)
        metadata = _metadata(data)
    except FileNotFoundError:
        raise CheckpointError(f"no model file at {path}") from None
    except (SafetensorError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); it may be truncated") from None
    config = metadata.get("config")
    if config is None:
        raise CheckpointError(f"{path} has no run configuration in its metadata: not written by the companion")
    return state, json.loads(config)


def _metadata(data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors file's header (8-byte length, then JSON)."""
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]).get("__metadata__", {})
