"""GPU figures (CUDA only): time to 94 % on Fashion-MNIST, and fine-tuning throughput at 224 px
with and without the engine's settings, next to the GPU's physical limit.

* ``time_to_94_fashion_mnist_s``: wall-clock seconds from a fresh ImageNet EfficientNet-Lite0 to
  >= 94 % test accuracy on the full Fashion-MNIST test set, fine-tuning on all 60,000 training
  images with ``companion.train.fit`` (GPU-resident data, on-device resize/augment, bf16,
  channels-last), evaluated after every epoch.
* ``train_images_per_s``: one optimiser step (forward, backward, AdamW) of ResNet-50,
  MobileNetV2 and EfficientNet-Lite0 at 224 px, batch 128, on inputs already on the GPU:
  ``engine`` = bf16/fp16 autocast + channels-last + cuDNN benchmark; ``plain`` = fp32, NCHW,
  no benchmark mode. Weights are random (speed does not depend on them). The two alternate.
* ``achieved_tflops``: images/s x 3 x 2 x MACs per image (a training step costs about three
  forward passes), to compare with the GPU's dense bf16 peak.
"""

from __future__ import annotations

import statistics
import time

import torch

from companion import batch_transforms, cnn_math, data, hardware, loaders, models, train

PEAK_BF16_TFLOPS = {"H100 SXM": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H200": 989.0, "A100": 312.0}


def peak_tflops(gpu_name: str) -> float | None:
    """Dense bf16 tensor-core peak of the GPU (vendor data sheets), when known."""
    for key, value in PEAK_BF16_TFLOPS.items():
        if all(part in gpu_name for part in key.split()):
            return value
    if "H100" in gpu_name:
        return PEAK_BF16_TFLOPS["H100 SXM"]
    return None


def _step_rate(name: str, engine: bool, device: torch.device, batch: int, size: int, steps: int) -> float:
    torch.backends.cudnn.benchmark = engine
    model = models.create(name, num_classes=1000).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    if engine and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        with hardware.autocast(device, enabled=engine):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up: cuDNN algorithm search, allocator
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def throughput(
    device: torch.device,
    batch: int = 128,
    size: int = 224,
    steps: int = 20,
    names: tuple[str, ...] = ("resnet50", "mobilenet_v2", "efficientnet_lite0"),
    repeats: int = 2,
) -> dict:
    rows = {}
    for name in names:
        engine, plain = [], []
        for _ in range(repeats):  # A/B alternating
            engine.append(_step_rate(name, True, device, batch, size, steps))
            plain.append(_step_rate(name, False, device, batch, size, steps))
        macs = cnn_math.count_macs(models.create(name, num_classes=1000), (3, size, size))
        e, p = statistics.median(engine), statistics.median(plain)
        rows[name] = {
            "engine": round(e, 1),
            "plain": round(p, 1),
            "speedup": round(e / p, 2),
            "achieved_tflops": round(e * 6 * macs / 1e12, 1),
            "gmacs_per_image": round(macs / 1e9, 2),
        }
        print(
            f"{name:20s} engine {e:8.0f} img/s  plain {p:8.0f} img/s  {e / p:.2f}x  ~{rows[name]['achieved_tflops']} TFLOPS"
        )
    torch.backends.cudnn.benchmark = True
    return rows


def time_to_94(
    device: torch.device,
    size: int = 160,
    max_epochs: int = 10,
    per_class: int | None = None,
    test_per_class: int | None = None,
    target: float = 0.94,
) -> float | None:
    """Seconds until the test accuracy first reaches ``target`` (``None``: not within ``max_epochs``)."""
    hardware.seed_everything(0)
    train_set = data.balanced_subset(data.load("fashion_mnist", "train"), per_class, seed=0)
    test_set = data.balanced_subset(data.load("fashion_mnist", "test"), test_per_class, seed=0)
    augment = batch_transforms.Augment(flip=0.5, shift=0.05)
    prep = batch_transforms.BatchTransform.for_model("efficientnet_lite0", size=size, augment=augment)
    model = models.create("efficientnet_lite0", pretrained=True, num_classes=10).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
    train_loader = loaders.make_loader(train_set, 256, shuffle=True, device=device)
    test_loader = loaders.make_loader(test_set, 1024, device=device)
    t0 = time.perf_counter()
    for epoch in range(max_epochs):  # one epoch per call, to check the target after each
        h = train.fit(
            model,
            train_loader,
            test_loader,
            epochs=1,
            optimizer=optimizer,
            scheduler=scheduler,
            preprocess=prep,
        )
        elapsed = time.perf_counter() - t0
        print(f"epoch {epoch + 1}: test accuracy {h[-1]['val_accuracy']:.4f} after {elapsed:.1f} s")
        if h[-1]["val_accuracy"] >= target:
            return round(elapsed, 1)
    return None


FIGURES = ("gpu_name", "gpu_peak_bf16_tflops", "train_images_per_s_224", "time_to_94_fashion_mnist_s")


def run(partial=None) -> dict:
    if not torch.cuda.is_available():
        print("gpu benchmarks: skipped, no CUDA GPU on this machine")
        return {}
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    figures = {"gpu_name": name, "gpu_peak_bf16_tflops": peak_tflops(name)}
    figures["train_images_per_s_224"] = throughput(device)
    if partial is not None:  # the time-to-94 run is long: keep the throughput if it is cut short
        partial(dict(figures), "cut short: time_to_94_fashion_mnist_s was still running")
    figures["time_to_94_fashion_mnist_s"] = time_to_94(device)
    print(figures)
    return figures


if __name__ == "__main__":
    run()
