"""The three ways to transfer what a network learned on a source task.

* **Parameter transfer** (fine-tuning): start from the source weights and train on the
  target, all of them or the last blocks (:func:`freeze`, :func:`freeze_stages`, :func:`unfreeze`,
  :func:`discriminative_param_groups`).
* **Feature transfer** (frozen extractor): run the source network once, keep its features
  (:func:`companion.inference.extract_features`, :func:`cached_features`, :class:`MultiDepthFeatures` for
  feature fusion) and train a new head on them (:func:`feature_loader`, :func:`linear_probe`).
* **Structure transfer**: reuse the architecture and part of its weights, re-initialise the
  rest (:func:`reinitialize_stages`, :func:`transferable_state`).
* **Multi-task learning**: one shared backbone, one head per task, trained jointly
  (:class:`MultiTaskNet`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from . import distributed, hardware
from .data import work_root
from .files import atomic_write
from .inference import batches, extract_features
from .loaders import ArrayLoader, make_loader
from .models import count_parameters, spec, stages

Batch = tuple[torch.Tensor, torch.Tensor]


def under(name: str, prefixes: Iterable[str]) -> bool:
    """Whether the dotted ``name`` is one of ``prefixes`` or inside one of them, on whole
    components: ``"features.1"`` holds ``"features.1.weight"`` but not ``"features.10.weight"``
    (a plain ``str.startswith`` would take both, and so every layer from 10 to 19)."""
    return any(name == p.rstrip(".") or name.startswith(p.rstrip(".") + ".") for p in prefixes)


# ----------------------------------------------------------------------------- feature transfer


def feature_loader(features: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool = True, seed: int = 0):
    """A loader over cached features ``(N, D)`` and labels ``(N,)`` for training a head with ``fit``."""

    return ArrayLoader(features, labels, batch_size, shuffle, seed=seed)


def linear_probe(in_features: int, num_classes: int, hidden: int | None = None, dropout: float = 0.0) -> nn.Module:
    """A new head for cached features: linear, or an MLP with one ``hidden`` layer.

    Input ``(N, in_features)``, output logits ``(N, num_classes)``.
    """
    if hidden is None:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
    )


def load_probe_head(model: nn.Module, name: str, probe: nn.Module) -> nn.Module:
    """Make the trained linear layer of a :func:`linear_probe` (``hidden=None``), trained on the
    features of ``name``'s pretrained backbone, the head of ``model`` (an architecture ``name``
    with the same number of classes): fine-tuning then starts from a trained head instead of a
    random one. Returns ``model``."""
    model.get_submodule(spec(name).head).load_state_dict(probe[-1].state_dict())
    return model


# ----------------------------------------------------------------------------- parameter transfer


def freeze(model: nn.Module, except_: Sequence[str] = ()) -> nn.Module:
    """Stop gradients for every parameter except those under a prefix in ``except_`` (whole
    dotted components, e.g. ``("classifier",)``; see :func:`under`). Frozen batch-norm layers are kept in eval mode by
    :func:`companion.train.fit`."""
    for name, p in model.named_parameters():
        p.requires_grad = under(name, except_)
    return model


def unfreeze(model: nn.Module, prefixes: Sequence[str] | None = None) -> nn.Module:
    """Let gradients flow again into parameters under one of ``prefixes`` (all if ``None``)."""
    for name, p in model.named_parameters():
        if prefixes is None or under(name, prefixes):
            p.requires_grad = True
    return model


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Freeze the affine parameters of every batch-norm layer, so that ``fit`` also keeps them in
    eval mode (running statistics fixed to the pretraining's). The usual choice when fine-tuning
    with small batches: batch statistics of 16 images are too noisy to normalise with."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
    return model


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters that receive gradients."""
    return count_parameters(model, trainable_only=True)


def transferable_state(
    source: dict[str, torch.Tensor], target: nn.Module, exclude: Sequence[str] = ()
) -> dict[str, torch.Tensor]:
    """The entries of a source state dict that the target can take: same name and shape, and
    not under a prefix in ``exclude`` (e.g. the head). Load the result with
    ``target.load_state_dict(state, strict=False)``."""
    own = target.state_dict()
    return {k: v for k, v in source.items() if k in own and own[k].shape == v.shape and not under(k, exclude)}


def _stage_prefixes(name: str, which: Sequence[int]) -> tuple[str, ...]:
    all_stages = stages(name)
    return tuple(prefix for i in which for prefix in all_stages[i])


def freeze_stages(model: nn.Module, name: str, trainable_last: int = 0) -> nn.Module:
    """Freeze architecture ``name``'s backbone except its last ``trainable_last`` stages; the
    head always stays trainable. ``trainable_last=0`` is the frozen extractor."""
    n = len(stages(name))
    keep = _stage_prefixes(name, range(n - min(trainable_last, n), n)) + (spec(name).head,)
    return freeze(model, except_=keep)


def discriminative_param_groups(
    model: nn.Module, name: str, lr: float, decay: float = 0.5, weight_decay: float = 0.0
) -> list[dict]:
    """Optimizer parameter groups with smaller learning rates deeper into the backbone.

    The head gets ``lr``; the last stage ``lr * decay``, the one before ``lr * decay**2`` and so
    on (the discriminative fine-tuning of ULMFiT, Howard and Ruder 2018): early layers hold general
    features that need little change. Frozen parameters are left out.
    """
    all_stages = stages(name)
    groups, taken = [], set()
    for depth, stage in enumerate(reversed(all_stages), start=1):
        params = [p for n, p in model.named_parameters() if p.requires_grad and under(n, stage)]
        taken.update(id(p) for p in params)
        if params:
            groups.append(
                {
                    "params": params,
                    "lr": lr * decay**depth,
                    "weight_decay": weight_decay,
                    "stage": len(all_stages) - depth,
                }
            )
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    groups.insert(0, {"params": rest, "lr": lr, "weight_decay": weight_decay, "stage": "head"})
    return groups


# ----------------------------------------------------------------------------- cached features and fusion


def _fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            h.update(str((part.dtype, tuple(part.shape))).encode())
            h.update(part.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(part, nn.Module):
            for k, v in part.state_dict().items():
                h.update(k.encode())
                h.update(
                    v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b""
                )
            h.update(repr(part).encode())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()[:24]


def cached_features(
    backbone: nn.Module,
    dataset,
    *,
    preprocess: Callable | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    cache_dir: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~companion.inference.extract_features` over an in-memory dataset, computed once and then reused.

    The cache key hashes everything the features depend on: the backbone's weights and
    structure, the images and labels of this exact subset, and the input transform; a stale
    entry can therefore never be returned. Entries live on disk in ``cache_dir`` (default
    ``$TLBOOK_WORK/features``), written atomically; nothing is kept in memory between calls.

    ``device`` (default: the backbone's) is where the backbone runs; it is moved there, hit or miss.
    ``batch_size`` defaults to :func:`~companion.hardware.inference_batch_size`.
    Returns ``features (N, D)`` and ``labels (N,)`` on the CPU.
    """
    device = torch.device(device) if device is not None else hardware.model_device(backbone)
    backbone = hardware.prepare_model(backbone, device)
    key = _fingerprint(backbone, dataset.images, dataset.labels, preprocess)
    folder = Path(cache_dir) if cache_dir is not None else work_root() / "features"
    path = folder / f"{key}.pt"
    if path.exists():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        result = (stored["features"], stored["labels"])
    else:
        batch_size = batch_size or hardware.inference_batch_size(device)
        result = extract_features(backbone, make_loader(dataset, batch_size, device=device), preprocess=preprocess)
        if distributed.is_main():
            atomic_write(path, lambda f: torch.save({"features": result[0], "labels": result[1]}, f))
    return result


class MultiDepthFeatures(nn.Module):
    """Feature fusion: global-average-pooled activations of several layers, concatenated.

    Wraps ``model`` and records the outputs of the modules named in ``layers`` with forward
    hooks; input images ``(N, C, H, W)``, output ``(N, sum of the layers' channels)``.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        super().__init__()
        self.model, self.layers = model, list(layers)
        self._outputs: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            model.get_submodule(layer).register_forward_hook(self._keep(layer))

    def extra_repr(self) -> str:
        """The fused layers, part of the module's ``repr``: :func:`cached_features` keys its
        cache by that ``repr``, so two fusions of the same model never share features."""
        return f"layers={self.layers}"

    def _keep(self, layer: str):
        def hook(module, args, output):
            self._outputs[layer] = output

        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._outputs.clear()
        self.model(x)
        return torch.cat([self._outputs[layer].float().mean(dim=(2, 3)) for layer in self.layers], dim=1)


# ----------------------------------------------------------------------------- structure transfer


def reinitialize_stages(model: nn.Module, name: str, keep_first: int) -> nn.Module:
    """Structure transfer: keep the weights of the first ``keep_first`` stages of ``name`` and
    give every later stage (and the head) fresh random weights, keeping the architecture."""
    reset = _stage_prefixes(name, range(keep_first, len(stages(name)))) + (spec(name).head,)
    for module_name, module in model.named_modules():
        if under(module_name, reset) and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model


# ----------------------------------------------------------------------------- multi-task


class MultiTaskLoss:
    """The loss of a :class:`MultiTaskNet`: the weighted sum of the tasks' cross-entropies, with
    a ``correct`` method that :func:`companion.train.fit` and :func:`~companion.train.evaluate`
    use to count an image as right when every task is.

    Args:
        tasks: task name -> number of classes, in the order of the logits' columns.
        weights: task name -> weight of its loss.
    """

    def __init__(self, tasks: dict[str, int], weights: dict[str, float]) -> None:
        self.tasks, self.weights = tasks, weights

    def split(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, sum K)`` -> task name -> logits ``(B, K_task)``."""
        return dict(zip(self.tasks, logits.split(list(self.tasks.values()), dim=1)))

    def check(self, labels: torch.Tensor) -> None:
        if labels.dim() != 2 or labels.shape[1] != len(self.tasks):
            raise ValueError(
                f"MultiTaskNet with tasks {list(self.tasks)} needs labels of shape (B, {len(self.tasks)}), "
                f"one column per task; got {tuple(labels.shape)}"
            )

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the tasks' cross-entropies (each a mean over the batch), a 0-d tensor."""
        self.check(labels)
        return sum(
            self.weights[t] * nn.functional.cross_entropy(out, labels[:, i])
            for i, (t, out) in enumerate(self.split(logits).items())
        )

    def correct(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Number of images for which *every* task is predicted correctly (0-d, on the device)."""
        self.check(labels)
        hits = [out.argmax(1) == labels[:, i] for i, out in enumerate(self.split(logits).values())]
        return torch.stack(hits).all(0).sum()


class MultiTaskNet(nn.Module):
    """One shared backbone with a linear head per task, trained jointly.

    Args:
        backbone: images ``(B, C, H, W)`` -> pooled features ``(B, feature_dim)``, e.g.
            ``models.create(name, pretrained=True, num_classes=0)``.
        feature_dim: ``D``, the backbone's feature size.
        tasks: task name -> number of classes, e.g. ``{"category": 10, "group": 4}``.
        weights: task name -> weight of its loss (default 1 for every task).

    ``forward`` returns the logits of all tasks side by side, ``(B, sum of the class counts)``,
    so the model goes through :func:`companion.train.fit` unchanged with ``loss_fn=net.loss``
    (a :class:`MultiTaskLoss`) and labels ``(B, number of tasks)`` (one column per task, in
    the order of ``tasks``).
    """

    def __init__(
        self, backbone: nn.Module, feature_dim: int, tasks: dict[str, int], weights: dict[str, float] | None = None
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("MultiTaskNet needs at least one task, e.g. tasks={'category': 10}")
        self.backbone = backbone
        self.tasks = dict(tasks)
        self.heads = nn.ModuleDict({t: nn.Linear(feature_dim, k) for t, k in self.tasks.items()})
        self.loss = MultiTaskLoss(self.tasks, {t: 1.0 for t in self.tasks} | dict(weights or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return torch.cat([head(features) for head in self.heads.values()], dim=1)

    def task_accuracy(self, loader: Iterable[Batch], *, preprocess: Callable | None = None) -> dict[str, float]:
        """Accuracy of each task's head over ``loader`` (labels ``(B, number of tasks)``)."""
        hits = {t: 0 for t in self.tasks}
        total = 0
        for logits, y in batches(self, loader, preprocess=preprocess):
            self.loss.check(y)
            for i, (t, out) in enumerate(self.loss.split(logits).items()):
                hits[t] += int((out.argmax(1) == y[:, i]).sum())
            total += len(y)
        return {t: h / max(total, 1) for t, h in hits.items()}
