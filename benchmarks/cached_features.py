"""cached_features_speedup: training a linear head on cached features vs. re-running the frozen backbone.

Same backbone (ImageNet EfficientNet-Lite0, frozen), same head, same real Fashion-MNIST images,
same number of epochs. A: every epoch runs the backbone over the images (what a plain frozen
fine-tuning loop does). B: the features are extracted once and the head trains on them. The
two are run alternately, twice each, and the medians compared.
"""

from __future__ import annotations

import statistics
import time

import torch

from companion import batch_transforms, data, hardware, inference, loaders, models, train, transfer

EPOCHS = 3


def _frozen_backbone_epochs(train_set, prep, device) -> float:
    model = transfer.freeze_stages(
        models.create("efficientnet_lite0", pretrained=True, num_classes=10), "efficientnet_lite0", 0
    ).to(device)
    t0 = time.perf_counter()
    train.fit(model, loaders.make_loader(train_set, 64, shuffle=True, device=device), epochs=EPOCHS, preprocess=prep)
    return (time.perf_counter() - t0) / EPOCHS


def _cached_epochs(train_set, prep, device) -> tuple[float, float]:
    backbone = models.create("efficientnet_lite0", pretrained=True, num_classes=0).to(device)
    t0 = time.perf_counter()
    x, y = inference.extract_features(backbone, loaders.make_loader(train_set, 256, device=device), preprocess=prep)
    extract = time.perf_counter() - t0
    head = transfer.linear_probe(x.shape[1], 10).to(device)
    t0 = time.perf_counter()
    train.fit(head, transfer.feature_loader(x, y, 64), epochs=EPOCHS)
    return (time.perf_counter() - t0) / EPOCHS, extract


FIGURES = ("cached_features_speedup", "cached_features_speedup_including_extraction", "cached_features_setup")


def run(per_class: int = 50, size: int = 96, partial=None) -> dict:
    device = hardware.choose_device()
    hardware.seed_everything(0)
    train_set = data.balanced_subset(data.load("fashion_mnist", "train"), per_class, seed=0)
    prep = batch_transforms.BatchTransform.for_model("efficientnet_lite0", size=size)
    a, b, extract = [], [], []
    for _ in range(2):  # A and B alternating
        a.append(_frozen_backbone_epochs(train_set, prep, device))
        cached, ex = _cached_epochs(train_set, prep, device)
        b.append(cached)
        extract.append(ex)
    per_epoch = statistics.median(a) / statistics.median(b)
    total = EPOCHS * statistics.median(a) / (statistics.median(extract) + EPOCHS * statistics.median(b))
    print(
        f"frozen backbone re-run: {statistics.median(a):.3f} s/epoch; cached features: {statistics.median(b):.4f} s/epoch "
        f"(+ {statistics.median(extract):.2f} s once) -> {per_epoch:.0f}x per epoch, {total:.1f}x for {EPOCHS} epochs in all"
    )
    return {
        "cached_features_speedup": round(per_epoch, 1),
        "cached_features_speedup_including_extraction": round(total, 2),
        "cached_features_setup": f"EfficientNet-Lite0 frozen, {len(train_set)} Fashion-MNIST images at {size} px, "
        f"{EPOCHS} epochs, device {device}",
    }


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    run()
