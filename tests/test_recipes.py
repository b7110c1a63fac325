"""The one-call recipes: what each stage trains, with what, and what comes back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from companion import data, models, recipes, train, transfer


def _features(n: int = 60, d: int = 8, k: int = 3, seed: int = 0):
    """Linearly separable features ``(n, d)``: class ``c`` sits at ``+4`` on axis ``c``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, d, generator=g)
    x[torch.arange(n), y] += 4
    return x, y


def test_probe_learns_separable_features_and_is_reproducible():
    train_set, val_set = _features(seed=0), _features(seed=1)
    first = recipes.train_probe(train_set, val_set, epochs=15, lr=0.05, device="cpu")
    again = recipes.train_probe(train_set, val_set, epochs=15, lr=0.05, device="cpu")
    assert first.val_accuracy >= 0.95 and first.val_accuracy == first.history[-1]["val_accuracy"]
    assert first.val_loss == first.history[-1]["val_loss"] and len(first.history) == 15
    assert torch.equal(first.model[-1].weight, again.model[-1].weight)  # seeded: the same head twice
    assert first.trainable_parameters == 8 * 3 + 3 and first.model(train_set[0]).shape == (60, 3)
    assert "linear probe (15 epochs, lr 0.05)" in repr(first) and "val accuracy" in repr(first)


def test_probe_counts_classes_from_both_splits_or_as_told():
    (x, y), (xv, yv) = _features(k=3), _features(k=4)
    assert recipes.train_probe((x, y), (xv, yv), epochs=1, device="cpu").model[-1].out_features == 4
    assert recipes.train_probe((x, y), epochs=1, num_classes=7, device="cpu").model[-1].out_features == 7
    without_val = recipes.train_probe((x, y), epochs=1, device="cpu")
    with pytest.raises(ValueError, match="without validation data"):
        without_val.val_accuracy  # noqa: B018


class _FitRecorder:
    """Stands in for ``train.fit``: records what each call trains, and with which learning rates."""

    def __init__(self, monkeypatch):
        self.calls = []
        monkeypatch.setattr(train, "fit", self)

    def __call__(self, model, train_loader, val_loader=None, **kwargs):
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        optimizer = kwargs.get("optimizer")
        lrs = optimizer and [g["lr"] for g in optimizer.param_groups]
        self.calls.append({"trainable": trainable, "lrs": lrs, **kwargs})
        return [{"epoch": 1, "val_accuracy": 0.5, "val_loss": 1.0}]


def _is_batchnorm(model: nn.Module, name: str) -> bool:
    return isinstance(model.get_submodule(name.rsplit(".", 1)[0]), nn.BatchNorm2d)


def test_fine_tune_trains_the_head_first_then_every_stage_but_batchnorm(monkeypatch):
    fits = _FitRecorder(monkeypatch)
    model = models.create("simple_cnn", num_classes=3)
    result = recipes.fine_tune(model, "simple_cnn", [], [], epochs=2, lr=1e-3, head_epochs=1, decay=0.5)
    head_stage, body_stage = fits.calls
    assert head_stage["trainable"] == {"classifier.weight", "classifier.bias"}
    assert (head_stage["epochs"], head_stage["lr"]) == (1, 3e-3)
    everything = {n for n, _ in model.named_parameters()}
    assert body_stage["trainable"] == {n for n in everything if not _is_batchnorm(model, n)}
    assert body_stage["lrs"] == pytest.approx([1e-3, 5e-4, 2.5e-4, 1.25e-4])  # head, then stages 3, 2, 1
    assert (body_stage["epochs"], body_stage["lr"]) == (2, 1e-3)
    trained = sum(p.numel() for n, p in model.named_parameters() if n in body_stage["trainable"])
    assert result.head_history and result.trainable_parameters == trained
    assert "fine-tune simple_cnn, all stages, lr 0.001 x 0.5 per stage down" == result.recipe


def test_fine_tune_from_a_probe_loads_its_head_and_keeps_early_stages_frozen(monkeypatch):
    fits = _FitRecorder(monkeypatch)
    probe = transfer.linear_probe(128, 3)
    model = models.create("simple_cnn", num_classes=3)
    recipes.fine_tune(model, "simple_cnn", [], [], epochs=1, head=probe, trainable_last=1, freeze_bn=False)
    (only_stage,) = fits.calls  # a trained head: no head stage
    assert torch.equal(model.classifier.weight, probe[-1].weight)
    last_stage = {n for n, _ in model.named_parameters() if transfer.under(n, models.stages("simple_cnn")[-1])}
    assert only_stage["trainable"] == last_stage | {"classifier.weight", "classifier.bias"}
    assert only_stage["lrs"] is None and only_stage["lr"] == 1e-4  # no decay: fit's AdamW, one rate


def test_fine_tune_resuming_skips_the_head_stage(monkeypatch, tmp_path):
    fits = _FitRecorder(monkeypatch)
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"")  # exists: stage 2 resumes from it
    model = models.create("simple_cnn", num_classes=3)
    recipes.fine_tune(model, "simple_cnn", [], [], epochs=1, checkpoint=checkpoint, resume=True)
    assert len(fits.calls) == 1 and fits.calls[0]["checkpoint"] == checkpoint


@pytest.mark.slow
def test_fine_tune_and_scratch_run_for_real_on_fashion_mnist(fashion_small):
    train_set, test_set = fashion_small
    preprocess = data.BatchTransform.for_model("simple_cnn", size=32)
    loaders = data.make_loader(train_set, 50, shuffle=True), data.make_loader(test_set, 100)
    scratch = recipes.train_from_scratch(
        models.create("simple_cnn", num_classes=10), *loaders, epochs=2, preprocess=preprocess, device="cpu"
    )
    assert len(scratch.history) == 2 and 0 <= scratch.val_accuracy <= 1
    assert scratch.trainable_parameters == models.count_parameters(scratch.model)
