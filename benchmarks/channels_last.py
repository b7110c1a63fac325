"""channels_last_cpu: training and inference images/s with channels-last memory against the
default (contiguous NCHW) layout, on this machine's CPU.

EfficientNet-Lite0 (ImageNet weights, every layer trained) on real Fashion-MNIST images: training
at 96 px, batch 32, and inference at 224 px, batch 32. The two layouts run alternately, three
times each, in one process, and the medians are compared; the companion uses channels-last on
the CPU (``companion.hardware.channels_last``) because of this ratio.
"""

from __future__ import annotations

import statistics
import time

import torch

from companion import batch_transforms, data, hardware, models

NAME = "efficientnet_lite0"


def _images_per_s(images: torch.Tensor, labels: torch.Tensor, size: int, train: bool, last: bool) -> float:
    """One pass over ``images (N, 1, 28, 28)`` uint8 in batches of 32, in one memory layout."""
    model = models.create(NAME, pretrained=True, num_classes=10)
    prep = batch_transforms.BatchTransform.for_model(NAME, size=size)
    layout = torch.channels_last if last else torch.contiguous_format
    model = model.to(memory_format=layout).train(train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    t0 = time.perf_counter()
    for start in range(0, len(images), 32):
        x = prep(images[start : start + 32]).contiguous(memory_format=layout)
        y = labels[start : start + 32]
        if train:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            with torch.inference_mode():
                model(x)
    return len(images) / (time.perf_counter() - t0)


FIGURES = (
    "channels_last_cpu_train",
    "channels_last_cpu_inference",
    "channels_last_cpu_images_per_s",
    "channels_last_cpu_setup",
)


def run(partial=None, per_class: int = 16) -> dict:
    hardware.seed_everything(0)
    ds = data.balanced_subset(data.load("fashion_mnist", "train"), per_class, seed=0)
    speeds = {(task, last): [] for task in ("train", "inference") for last in (False, True)}
    for _ in range(3):  # the two layouts alternate, so drift in the machine's speed hits both
        for last in (False, True):
            speeds["train", last].append(_images_per_s(ds.images, ds.labels, 96, True, last))
            speeds["inference", last].append(_images_per_s(ds.images, ds.labels, 224, False, last))
    median = {key: statistics.median(v) for key, v in speeds.items()}
    ratios = {task: median[task, True] / median[task, False] for task in ("train", "inference")}
    for task in ratios:
        print(
            f"{task}: channels-last {median[task, True]:.1f} images/s, NCHW {median[task, False]:.1f} images/s "
            f"-> {ratios[task]:.2f}x"
        )
    return {
        "channels_last_cpu_train": round(ratios["train"], 2),
        "channels_last_cpu_inference": round(ratios["inference"], 2),
        "channels_last_cpu_images_per_s": {
            f"{task} {'channels-last' if last else 'NCHW'}": round(v, 1) for (task, last), v in median.items()
        },
        "channels_last_cpu_setup": f"{NAME}, {len(ds)} Fashion-MNIST images, training at 96 px and inference at "
        f"224 px, batch 32, layouts alternating x3, {hardware.describe(torch.device('cpu'))}",
    }


if __name__ == "__main__":
    run()
