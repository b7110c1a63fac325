"""Forward hooks, in one place: run a model once and see what chosen layers output.

``model.register_forward_hook`` calls a function with every output of a module. Used by hand,
the hook outlives the measurement unless it is removed, and the model is left in eval mode if
an error comes in between; :func:`trace` does both in a ``finally``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

Record = Callable[[str, nn.Module, torch.Tensor], None]


def trace(
    model: nn.Module, layers: Iterable[tuple[str, nn.Module]], input_size: tuple[int, ...], record: Record
) -> None:
    """One forward pass of a zero input ``(1, *input_size)`` through ``model`` in eval mode and
    without gradients, calling ``record(name, module, output)`` each time one of ``layers``
    (``(name, module)`` pairs) runs, in the order they run. The hooks are removed and the
    model's training mode restored afterwards, even on error."""

    def hook_for(name: str):
        def hook(module: nn.Module, args, output) -> None:
            record(name, module, output[0] if isinstance(output, (tuple, list)) else output)

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in layers]
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters(), None)
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=parameter.device if parameter is not None else None))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
