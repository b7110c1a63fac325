"""The one-call recipes: what each stage trains, with what, and what comes back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from companion import batch_transforms, files, loaders, models, recipes, train, transfer


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
        optimizer = kwargs["optimizer"]  # every recipe passes its own
        names = {id(p): n for n, p in model.named_parameters()}
        optimized = {names[id(p)] for g in optimizer.param_groups for p in g["params"]}
        lrs = [g["lr"] for g in optimizer.param_groups]
        self.calls.append({"trainable": trainable, "optimized": optimized, "lrs": lrs, **kwargs})
        return [{"epoch": 1, "val_accuracy": 0.5, "val_loss": 1.0}]


def _is_batchnorm(model: nn.Module, name: str) -> bool:
    return isinstance(model.get_submodule(name.rsplit(".", 1)[0]), nn.BatchNorm2d)


def test_fine_tune_trains_the_head_first_then_every_stage_but_batchnorm(monkeypatch):
    fits = _FitRecorder(monkeypatch)
    model = models.create("simple_cnn", num_classes=3)
    result = recipes.fine_tune(model, "simple_cnn", [], [], epochs=2, lr=1e-3, head_epochs=1, decay=0.5)
    head_stage, body_stage = fits.calls
    assert head_stage["trainable"] == head_stage["optimized"] == {"classifier.weight", "classifier.bias"}
    assert (head_stage["epochs"], head_stage["lrs"]) == (1, [recipes.HEAD_LR]) and recipes.HEAD_LR == 3e-3
    everything = {n for n, _ in model.named_parameters()}
    assert body_stage["trainable"] == body_stage["optimized"] == {n for n in everything if not _is_batchnorm(model, n)}
    assert body_stage["lrs"] == pytest.approx([1e-3, 5e-4, 2.5e-4, 1.25e-4])  # head, then stages 3, 2, 1
    assert body_stage["epochs"] == 2
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
    assert only_stage["trainable"] == only_stage["optimized"] == last_stage | {"classifier.weight", "classifier.bias"}
    assert only_stage["lrs"] == [recipes.FINE_TUNE_LR] == [1e-4]  # no decay: one AdamW group, one rate
    assert isinstance(only_stage["optimizer"], torch.optim.AdamW)


def test_fine_tune_resuming_skips_the_head_stage(monkeypatch, tmp_path):
    fits = _FitRecorder(monkeypatch)
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"")  # exists: stage 2 resumes from it
    model = models.create("simple_cnn", num_classes=3)
    recipes.fine_tune(model, "simple_cnn", [], [], epochs=1, checkpoint=checkpoint, resume=True)
    assert len(fits.calls) == 1 and fits.calls[0]["checkpoint"] == checkpoint


def test_fine_tune_passes_a_scheduler_object_to_stage_two_only(monkeypatch):
    """A scheduler object steps one optimizer: stage 2's. The head stage gets a scheduler by name
    (its own cosine) but never the object."""
    fits = _FitRecorder(monkeypatch)
    model = models.create("simple_cnn", num_classes=3)
    stray = torch.optim.lr_scheduler.StepLR(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), 1)
    recipes.fine_tune(model, "simple_cnn", [], [], epochs=1, scheduler=stray)
    head_stage, body_stage = fits.calls
    assert "scheduler" not in head_stage and body_stage["scheduler"] is stray
    fits.calls.clear()
    recipes.fine_tune(models.create("simple_cnn", num_classes=3), "simple_cnn", [], [], epochs=1, scheduler="cosine")
    assert [call["scheduler"] for call in fits.calls] == ["cosine", "cosine"]


def test_scratch_trains_everything_with_adamw_at_its_own_rate(monkeypatch):
    fits = _FitRecorder(monkeypatch)
    model = models.create("simple_cnn", num_classes=3)
    result = recipes.train_from_scratch(model, [], [], epochs=3)
    (only,) = fits.calls
    assert only["optimized"] == {n for n, _ in model.named_parameters()} and only["epochs"] == 3
    assert only["lrs"] == [recipes.SCRATCH_LR] == [1e-3] and isinstance(only["optimizer"], torch.optim.AdamW)
    assert result.recipe == "from scratch (3 epochs, lr 0.001)"


# ----------------------------------------------------------------------------- resuming fine_tune for real


class _InterruptedOnFirstPass:
    """A loader whose first pass is cut short by Ctrl-C (before any batch); later passes run."""

    def __init__(self, loader):
        self.loader, self.passes = loader, 0

    def __iter__(self):
        self.passes += 1
        if self.passes == 1:
            raise KeyboardInterrupt
        yield from self.loader


def _tiny_images(n: int = 12, k: int = 3):
    """Random 32-px images and labels: enough for ``simple_cnn`` to run, not to learn."""
    x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % k
    return loaders.ArrayLoader(x, y, 4, shuffle=True, seed=0), loaders.ArrayLoader(x, y, 6)


def _tiny_fine_tune(train_loader, val_loader, checkpoint, epochs=1):
    torch.manual_seed(0)
    model = models.create("simple_cnn", num_classes=3)
    return recipes.fine_tune(
        model, "simple_cnn", train_loader, val_loader, epochs=epochs, head_epochs=1, checkpoint=checkpoint, resume=True
    )


def test_fine_tune_resume_without_a_checkpoint_trains_the_head_first(tmp_path):
    """``resume=True`` with no checkpoint yet is a first run: the head stage runs, then stage 2,
    which writes the checkpoint. Resuming from that checkpoint then skips the head stage."""
    checkpoint = tmp_path / "not-yet.pt"
    first = _tiny_fine_tune(*_tiny_images(), checkpoint)
    assert len(first.head_history) == 1 and [h["epoch"] for h in first.history] == [1]
    assert files.load_checkpoint(checkpoint)["epoch"] == 0  # written by stage 2 only
    resumed = _tiny_fine_tune(*_tiny_images(), checkpoint, epochs=2)
    assert resumed.head_history == [] and [h["epoch"] for h in resumed.history] == [1, 2]


def test_fine_tune_resume_after_an_interrupted_head_stage_trains_the_head(tmp_path):
    """Ctrl-C in the head stage leaves no checkpoint (the head stage writes none), so the resumed
    run must train the head again instead of fine-tuning the backbone under a random head."""
    checkpoint = tmp_path / "run.pt"
    train_loader, val_loader = _tiny_images()
    interrupted = _InterruptedOnFirstPass(train_loader)
    with pytest.raises(KeyboardInterrupt):
        _tiny_fine_tune(interrupted, val_loader, checkpoint)
    assert interrupted.passes == 1 and not checkpoint.exists()
    resumed = _tiny_fine_tune(interrupted, val_loader, checkpoint)
    assert interrupted.passes == 3  # the head stage's epoch, then stage 2's
    assert len(resumed.head_history) == 1 and [h["epoch"] for h in resumed.history] == [1]
    assert checkpoint.exists()


@pytest.mark.slow
def test_fine_tune_and_scratch_run_for_real_on_fashion_mnist(fashion_small):
    train_set, test_set = fashion_small
    preprocess = batch_transforms.BatchTransform.for_model("simple_cnn", size=32)
    split = loaders.make_loader(train_set, 50, shuffle=True), loaders.make_loader(test_set, 100)
    scratch = recipes.train_from_scratch(
        models.create("simple_cnn", num_classes=10), *split, epochs=2, preprocess=preprocess
    )
    assert len(scratch.history) == 2 and 0 <= scratch.val_accuracy <= 1
    assert scratch.trainable_parameters == models.count_parameters(scratch.model)
