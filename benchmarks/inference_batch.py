"""inference_batch_cpu: images/s and peak memory of inference in batches of 32 against 256 on this
machine's CPU, the choice behind ``companion.hardware.inference_batch_size``.

EfficientNet-Lite0 (ImageNet weights, no head) extracts features of real Fashion-MNIST images
at 96 px, the book's ``quick`` size. The two batch sizes run alternately, three times each, in
one process, and the medians are compared; the peak resident memory of one pass at each batch
size is measured in a fresh process of its own (a process's peak only grows).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from unittest import mock

import torch

from companion import batch_transforms, data, hardware, inference, loaders, models

NAME, SIZE, BATCHES = "efficientnet_lite0", 96, (32, 256)


def _images() -> data.ArrayImageDataset:
    return data.balanced_subset(data.load("fashion_mnist", "train"), 64, seed=0)


def _backbone() -> torch.nn.Module:
    """The headless network, prepared for the CPU as the companion prepares it."""
    return hardware.prepare_model(models.create(NAME, pretrained=True, num_classes=0), torch.device("cpu"))


def _images_per_s(backbone, ds, batch: int) -> float:
    prep = batch_transforms.BatchTransform.for_model(NAME, size=SIZE)
    t0 = time.perf_counter()
    inference.extract_features(backbone, loaders.make_loader(ds, batch), preprocess=prep)
    return len(ds) / (time.perf_counter() - t0)


def _status_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in MB."""
    line = next(x for x in open("/proc/self/status") if x.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _pass_mb(batch: int) -> None:
    """Print, as JSON, the resident MB before one pass in batches of ``batch`` and its peak."""
    ds, backbone = _images(), _backbone()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: reset the peak (VmHWM) to what is resident now
    before = _status_mb("VmRSS")
    _images_per_s(backbone, ds, batch)
    print(json.dumps({"before": round(before), "peak": round(_status_mb("VmHWM"))}))


def _peak_mb(batch: int) -> dict:
    """Resident MB before and at the peak of one pass, measured in a fresh process."""
    code = f"from benchmarks import inference_batch as b; b._pass_mb({batch})"
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


FIGURES = ("inference_batch_cpu_speed", "inference_batch_cpu_images_per_s", "inference_batch_cpu_peak_rss_mb",
           "inference_batch_cpu_setup")  # fmt: skip


@mock.patch.dict(os.environ, {"TLBOOK_PROGRESS": "0"})  # no progress bars, here or in the memory subprocesses
def run(partial=None) -> dict:
    ds, backbone = _images(), _backbone()
    _images_per_s(backbone, ds, 32)  # warm-up: oneDNN builds its kernels on first use
    speeds = {batch: [] for batch in BATCHES}
    for _ in range(3):  # alternating, so drift in the machine's speed hits both
        for batch in BATCHES:
            speeds[batch].append(_images_per_s(backbone, ds, batch))
    median = {batch: statistics.median(v) for batch, v in speeds.items()}
    memory = {batch: _peak_mb(batch) for batch in BATCHES}
    ratio = median[32] / median[256]
    for batch, mb in memory.items():
        print(f"batch {batch}: {median[batch]:.1f} images/s, peak {mb['peak']} MB resident, "
              f"{mb['peak'] - mb['before']} MB over the {mb['before']} MB before the pass")  # fmt: skip
    print(f"batch 32 runs at {ratio:.2f}x the speed of batch 256")
    return {
        "inference_batch_cpu_speed": round(ratio, 2),
        "inference_batch_cpu_images_per_s": {str(b): round(v, 1) for b, v in median.items()},
        "inference_batch_cpu_peak_rss_mb": {str(b): m for b, m in memory.items()},
        "inference_batch_cpu_setup": f"{NAME} features, {len(ds)} Fashion-MNIST images at {SIZE} px, batches of "
        f"32 and 256 alternating x3, {hardware.describe(torch.device('cpu'))}; peak memory of one pass in a fresh process",
    }


if __name__ == "__main__":
    run()
