"""fit_vs_naive: images/s of ``companion.train.fit`` vs. the training loop the seed tutorials write.

Both train the same thing on the same real Fashion-MNIST images: the ImageNet EfficientNet-Lite0
with its base frozen and a new 10-way head, for one epoch, re-running the frozen base on every
batch (no feature cache: that is a separate benchmark).

* naive (B): fp32, a torchvision dataset with per-image PIL transforms (grey to RGB, resize,
  to-tensor, normalise) in a default ``DataLoader``, ``model.train()`` on the whole model, a
  ``.to(device)`` per batch;
* engine (A): ``fit`` with the in-memory :class:`~companion.loaders.ArrayLoader` (GPU-resident on
  CUDA), batched resizing/normalisation on the device, frozen batch-norm in eval mode, bf16/fp16
  autocast and cuDNN benchmark on CUDA, channels-last memory on CUDA and the CPU.

A and B alternate, three times each; the medians are compared.
"""

from __future__ import annotations

import statistics
import time

import torch
import torchvision.transforms as T
from torch import nn

from companion import batch_transforms, data, hardware, loaders, models, train, transfer

NAME = "efficientnet_lite0"


class _PILDataset(torch.utils.data.Dataset):
    """The tutorials' way: one PIL image at a time through a torchvision transform pipeline."""

    def __init__(self, ds: data.ArrayImageDataset, size: int) -> None:
        p = models.preprocessing(NAME)
        self.ds = ds
        self.tf = T.Compose(
            [T.ToPILImage(), T.Grayscale(3), T.Resize((size, size)), T.ToTensor(), T.Normalize(p.mean, p.std)]
        )

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        image, label = self.ds[i]
        return self.tf(image), label


def _model() -> nn.Module:
    model = models.create(NAME, pretrained=True, num_classes=10)
    return transfer.freeze(model, except_=(models.spec(NAME).head,))


def naive_epoch(ds, size: int, batch: int, device: torch.device) -> float:
    model = _model().to(device)
    loader = torch.utils.data.DataLoader(_PILDataset(ds, size), batch_size=batch, shuffle=True)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model.train()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(ds) / (time.perf_counter() - t0)


def engine_epoch(ds, size: int, batch: int, device: torch.device) -> float:
    model = _model().to(device)
    loader = loaders.make_loader(ds, batch, shuffle=True, device=device)
    prep = batch_transforms.BatchTransform.for_model(NAME, size=size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train.fit(model, loader, epochs=1, preprocess=prep)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(ds) / (time.perf_counter() - t0)


FIGURES = ("fit_vs_naive", "fit_images_per_s", "naive_images_per_s", "fit_vs_naive_setup")


def run(per_class: int | None = None, size: int | None = None, batch: int = 64, partial=None) -> dict:
    device = hardware.choose_device()
    per_class = per_class or (600 if device.type == "cuda" else 40)
    size = size or (224 if device.type == "cuda" else 96)
    hardware.seed_everything(0)
    ds = data.balanced_subset(data.load("fashion_mnist", "train"), per_class, seed=0)
    engine_epoch(ds.subset(range(batch)), size, batch, device)  # warm-up: weights cached, kernels chosen
    a, b = [], []
    for _ in range(3):
        a.append(engine_epoch(ds, size, batch, device))
        b.append(naive_epoch(ds, size, batch, device))
    ratio = statistics.median(a) / statistics.median(b)
    print(
        f"fit: {statistics.median(a):.0f} images/s; naive loop: {statistics.median(b):.0f} images/s -> {ratio:.2f}x "
        f"({len(ds)} images at {size} px, batch {batch}, {device})"
    )
    return {
        "fit_vs_naive": round(ratio, 2),
        "fit_images_per_s": round(statistics.median(a), 1),
        "naive_images_per_s": round(statistics.median(b), 1),
        "fit_vs_naive_setup": f"EfficientNet-Lite0, base frozen, new head, {len(ds)} Fashion-MNIST images at {size} px, "
        f"batch {batch}, one epoch, A/B alternating x3, device {hardware.describe(device)}",
    }


if __name__ == "__main__":
    run()
