"""peers: the companion's recipes against the recipes readers would otherwise copy.

One task for all: EfficientNet-Lite0 with ImageNet weights, 10 real Fashion-MNIST classes,
``PER_CLASS`` training images per class, resized to 96 px and normalised once (the same
tensors for every recipe, no augmentation), batch 32, ``EPOCHS`` epochs in all, test accuracy
on 1,000 test images (95 % Wilson interval), and each recipe against the most accurate one
by a paired bootstrap over the same test images (:mod:`companion.stats`). The recipes:

* ``companion fine_tune``: one epoch of the new head on the frozen body (AdamW 3e-3), then
  every layer with batch-norm statistics frozen, AdamW 1e-4, halved stage by stage down
  (:func:`companion.recipes.fine_tune` with ``decay=0.5``, what ``--mode finetune`` runs);
* ``companion probe``: features extracted once, a linear head trained on them (AdamW 3e-3);
* ``pytorch tutorial``: every layer from the start, SGD 1e-3, momentum 0.9, StepLR(7, 0.1)
  (PyTorch's "Transfer Learning for Computer Vision" tutorial);
* ``keras guide``: the frozen base and a new head (Adam 1e-3) for half the epochs, then
  everything at Adam 1e-5 with batch-norm kept in inference mode (the Keras transfer-learning guide);
* ``fastai fine_tune``: ``Learner.fine_tune(EPOCHS - 1)`` with fastai's defaults (one frozen
  epoch, one-cycle schedules, Adam, discriminative rates; the optional ``bench`` extra).

The command line is timed on the same images written as PNG files (``--mode finetune``,
``--image-size 96 --no-augment``), against the fastest peer and against the same recipe on
tensors in memory (``companion fine_tune``); the start of a Python process that imports the
companion (``python -m companion --help``) is timed apart.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from companion import batch_transforms, data, hardware, inference, models, recipes, stats, train, transfer

NAME, SIZE, EPOCHS, PER_CLASS, BATCH = "efficientnet_lite0", 96, 5, 40, 32


def _tensors(ds) -> torch.utils.data.TensorDataset:
    prep = batch_transforms.BatchTransform.for_model(NAME, size=SIZE).eval()
    with torch.inference_mode():
        x = torch.cat([prep(ds.images[i : i + 256]) for i in range(0, len(ds), 256)])
    return torch.utils.data.TensorDataset(x.contiguous(), ds.labels)


def _loader(tensors, shuffle: bool) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        tensors, batch_size=BATCH, shuffle=shuffle, generator=torch.Generator().manual_seed(0)
    )


def _pretrained() -> nn.Module:
    hardware.seed_everything(0)
    return models.create(NAME, pretrained=True, num_classes=10)


def companion_fine_tune(train_set, device) -> nn.Module:
    model = hardware.prepare_model(_pretrained(), device)
    recipes.fine_tune(model, NAME, _loader(train_set, True), epochs=EPOCHS - 1, head_epochs=1, decay=0.5)
    return model


def companion_probe(train_set, device) -> nn.Module:
    model = hardware.prepare_model(_pretrained(), device)
    backbone = models.create(NAME, pretrained=True, num_classes=0).to(device)
    features = inference.extract_features(backbone, _loader(train_set, False))
    probe = recipes.train_probe(features, epochs=EPOCHS * 6, device=device)  # a head epoch costs ~1/100 of one
    return transfer.load_probe_head(model, NAME, probe.model)


def pytorch_tutorial(train_set, device) -> nn.Module:
    model = _pretrained().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    train.fit(model, _loader(train_set, True), epochs=EPOCHS, optimizer=optimizer, scheduler=scheduler)
    return model


def keras_guide(train_set, device) -> nn.Module:
    model = _pretrained().to(device)
    head = models.spec(NAME).head
    transfer.freeze(model, except_=(head,))
    frozen = EPOCHS // 2
    head_params = [p for p in model.parameters() if p.requires_grad]
    train.fit(model, _loader(train_set, True), epochs=frozen, optimizer=torch.optim.Adam(head_params, lr=1e-3))
    transfer.freeze_batchnorm(transfer.unfreeze(model))  # BN layers in inference mode, as Keras' training=False
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    train.fit(model, _loader(train_set, True), epochs=EPOCHS - frozen, optimizer=optimizer)
    return model


def fastai_fine_tune(train_set, device) -> nn.Module:
    from fastai.vision.all import CrossEntropyLossFlat, DataLoaders, Learner

    model = _pretrained()
    head = models.spec(NAME).head

    def splitter(m):
        body = [p for n, p in m.named_parameters() if not transfer.under(n, (head,))]
        return [body, list(m.get_submodule(head).parameters())]

    dls = DataLoaders(_loader(train_set, True), _loader(train_set, False), device=device)
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), splitter=splitter)
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(EPOCHS - 1)
    return model.to(device)


RECIPES = {
    "companion fine_tune": companion_fine_tune,
    "companion probe": companion_probe,
    "pytorch tutorial": pytorch_tutorial,
    "keras guide": keras_guide,
    "fastai fine_tune": fastai_fine_tune,
}


def _startup_seconds() -> float:
    """Seconds for ``python -m companion --help``: the interpreter, torch, torchvision, timm."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "companion", "--help"], check=True, capture_output=True)
    return time.perf_counter() - t0


def _cli_seconds(train_ds, val_ds, folder: Path) -> float:
    data.write_image_folder(train_ds, folder / "train")
    data.write_image_folder(val_ds, folder / "val")
    command = [sys.executable, "-m", "companion", "train", str(folder), "--model", NAME, "--mode", "finetune"]
    command += ["--epochs", str(EPOCHS - 1), "--head-epochs", "1", "--image-size", str(SIZE), "--no-augment"]
    command += ["--batch-size", str(BATCH), "--workers", "0", "--out", str(folder / "run")]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - t0


FIGURES = (
    "peers",
    "peers_best",
    "peers_cli_vs_fastest",
    "peers_cli_vs_in_memory",
    "peers_cli_startup_s",
    "peers_setup",
)


def _correct(model, device, test_loader) -> torch.Tensor:
    """Per-test-image correctness ``(N,)`` of ``model``."""
    probs, labels = inference.predict(hardware.prepare_model(model, device), test_loader)
    return probs.argmax(1) == labels


def run(partial=None) -> dict:
    device = hardware.choose_device()
    full = data.load("fashion_mnist", "train")
    train_ds, val_ds = data.train_val_split(full, PER_CLASS, 10, seed=0)
    test_ds = data.balanced_subset(data.load("fashion_mnist", "test"), 100, seed=0)
    train_set, test_loader = _tensors(train_ds), _loader(_tensors(test_ds), False)
    results, correct = {}, {}
    for name, recipe in RECIPES.items():
        t0 = time.perf_counter()
        model = recipe(train_set, device)
        seconds = time.perf_counter() - t0
        correct[name] = _correct(model, device, test_loader)
        accuracy, low, high = stats.accuracy_interval(correct[name])
        results[name] = {"test_accuracy": round(accuracy, 3), "interval_95": [round(low, 3), round(high, 3)]}
        results[name]["seconds"] = round(seconds, 1)
        print(f"{name:>20}: test accuracy {accuracy:.3f} [{low:.3f}, {high:.3f}], {seconds:.1f} s")
    best = max(results, key=lambda n: results[n]["test_accuracy"])
    for name in results:
        c = stats.paired_bootstrap(correct[name], correct[best], names=(name, best))
        results[name]["vs_best"] = [round(c.difference, 3), round(c.low, 3), round(c.high, 3)]
        print(c)
    with tempfile.TemporaryDirectory() as folder:
        cli = _cli_seconds(train_ds, val_ds, Path(folder))
    startup = _startup_seconds()
    fastest = min(r["seconds"] for n, r in results.items() if not n.startswith("companion"))
    same = results["companion fine_tune"]["seconds"]
    print(
        f"command line {cli:.1f} s = {cli / fastest:.2f}x the fastest peer ({fastest:.1f} s), "
        f"{cli / same:.2f}x its recipe on tensors in memory ({same:.1f} s); process start {startup:.1f} s"
    )
    return {
        "peers": results,
        "peers_best": best,
        "peers_cli_vs_fastest": round(cli / fastest, 2),
        "peers_cli_vs_in_memory": round(cli / same, 2),
        "peers_cli_startup_s": round(startup, 1),
        "peers_setup": f"{NAME} ImageNet weights, {len(train_ds)} Fashion-MNIST training images at {SIZE} px, "
        f"{len(test_ds)} test images, batch {BATCH}, {EPOCHS} epochs per recipe, "
        f"{hardware.describe(device)}",
    }


if __name__ == "__main__":
    run()
