import math
import pickle

import pytest
import torch
from torch import nn

from companion import batch_transforms, files, hardware, inference, loaders, metrics, models, settings, train, transfer
from companion.errors import CheckpointError, TrainingDivergedError


class _OnEachPass:
    """Iterates ``loader`` and calls ``before(n)`` at the start of its n-th pass (1, 2, ...):
    for what happens between epochs (an interruption, weights set by hand). Other attributes
    (the loader's ``generator``) are the loader's own, so checkpoints save the same state."""

    def __init__(self, loader, before):
        self.loader, self.before, self.passes = loader, before, 0

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __iter__(self):
        self.passes += 1
        self.before(self.passes)
        yield from self.loader


def _interrupt_on_pass(n: int):
    def before(passes):
        if passes == n:
            raise KeyboardInterrupt

    return before


def _small_cnn_run(fashion_small, epochs=2, wrap=lambda loader: loader, **kw):
    train_set, test_set = fashion_small
    torch.manual_seed(0)
    model = models.create("simple_cnn", num_classes=10, in_channels=1)
    prep = batch_transforms.BatchTransform(28, (0.5,), (0.5,), channels=1)
    hist = train.fit(
        model,
        wrap(loaders.make_loader(train_set, 50, shuffle=True, seed=0)),
        loaders.make_loader(test_set, 100),
        epochs=epochs,
        optimizer=torch.optim.AdamW(model.parameters(), lr=3e-3),
        preprocess=prep,
        **kw,
    )
    return model, prep, hist


@pytest.mark.slow
def test_fit_learns_real_data(fashion_small):
    model, prep, hist = _small_cnn_run(fashion_small, epochs=4)
    assert len(hist) == 4 and {"train_loss", "val_accuracy", "seconds"} <= hist[0].keys()
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    metrics_ = train.evaluate(model, loaders.make_loader(fashion_small[1], 100), preprocess=prep)
    assert metrics_["accuracy"] > 0.3 and metrics_["n"] == 100  # chance is 0.1
    assert metrics_["accuracy"] == pytest.approx(hist[-1]["val_accuracy"])


def test_evaluate_uses_eval_mode(fashion_small):
    model, prep, _ = _small_cnn_run(fashion_small, epochs=1)
    loader = loaders.make_loader(fashion_small[1], 100)
    model.train()
    a = train.evaluate(model, loader, preprocess=prep)
    model.train()
    b = train.evaluate(model, loader, preprocess=prep)
    assert a == b and not model.training


def test_checkpoint_round_trip(tmp_path, fashion_small):
    model, prep, _ = _small_cnn_run(fashion_small, epochs=1)
    path = files.save_checkpoint(tmp_path / "ckpt.pt", model, epoch=3, classes=["a", "b"])
    fresh = models.create("simple_cnn", num_classes=10, in_channels=1)
    ckpt = files.load_checkpoint(path, fresh)
    assert ckpt["epoch"] == 3 and ckpt["classes"] == ["a", "b"]
    for (k, v), (_, w) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(v, w), k
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_class_count_mismatch(tmp_path):
    files.save_checkpoint(tmp_path / "c.pt", models.create("simple_cnn", num_classes=4))
    with pytest.raises(CheckpointError, match="checkpoint has 4 classes, the model 10.*num_classes=4"):
        files.load_checkpoint(tmp_path / "c.pt", models.create("simple_cnn", num_classes=10))


def test_checkpoint_other_architecture(tmp_path):
    files.save_checkpoint(tmp_path / "c.pt", models.create("simple_cnn"))
    with pytest.raises(CheckpointError, match="does not fit the model|different architecture"):
        files.load_checkpoint(tmp_path / "c.pt", models.create("resnet18"))


class _Evil:
    def __reduce__(self):
        return (print, ("this ran while unpickling",))


def test_malicious_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": {}, "payload": _Evil()}, f)
    with pytest.raises(CheckpointError, match="refused to load"):
        files.load_checkpoint(path)
    assert "this ran" not in capsys.readouterr().out


def test_atomic_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    path = files.save_checkpoint(tmp_path / "c.pt", model, epoch=1)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="previous checkpoint, if any, is intact"):
        files.save_checkpoint(path, model, epoch=2)
    monkeypatch.undo()
    assert files.load_checkpoint(path)["epoch"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="cannot write a checkpoint"):
        files.save_checkpoint(blocker / "sub" / "c.pt", nn.Linear(2, 2))


def test_resume_gives_the_same_result(tmp_path, fashion_small):
    _, _, straight = _small_cnn_run(fashion_small, epochs=3)
    ckpt = tmp_path / "run.pt"
    _small_cnn_run(fashion_small, epochs=2, checkpoint=ckpt)  # "interrupted" after epoch 2
    _, _, resumed = _small_cnn_run(fashion_small, epochs=3, checkpoint=ckpt, resume=True)
    assert [h["epoch"] for h in resumed] == [1, 2, 3]
    assert resumed[-1]["train_loss"] == pytest.approx(straight[-1]["train_loss"], rel=1e-5)
    assert resumed[-1]["val_accuracy"] == straight[-1]["val_accuracy"]


def test_ctrl_c_between_epochs_then_resume_gives_the_same_result(tmp_path, fashion_small):
    _, _, straight = _small_cnn_run(fashion_small, epochs=3)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C as the third epoch starts
        _small_cnn_run(fashion_small, epochs=3, checkpoint=ckpt, wrap=lambda ld: _OnEachPass(ld, _interrupt_on_pass(3)))
    kept = files.load_checkpoint(ckpt)
    assert kept["epoch"] == 1  # the checkpoint of the last complete epoch survived the interruption
    _, _, resumed = _small_cnn_run(fashion_small, epochs=3, checkpoint=ckpt, resume=True)
    assert [h["epoch"] for h in resumed] == [1, 2, 3]
    assert resumed[-1]["train_loss"] == pytest.approx(straight[-1]["train_loss"], rel=1e-5)
    assert resumed[-1]["val_accuracy"] == straight[-1]["val_accuracy"]


def test_same_seed_same_metrics(fashion_small):
    _, _, a = _small_cnn_run(fashion_small, epochs=1)
    _, _, b = _small_cnn_run(fashion_small, epochs=1)
    assert a[0]["train_loss"] == b[0]["train_loss"] and a[0]["val_accuracy"] == b[0]["val_accuracy"]


def test_nan_loss_stops_with_clear_message(tmp_path, fashion_small):
    train_set, _ = fashion_small
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(TrainingDivergedError, match="loss became nan.*lower the learning rate"):
        train.fit(
            model,
            loaders.make_loader(train_set, 50),
            epochs=1,
            preprocess=lambda x: x.float() * float("nan"),
        )


def test_nan_loss_keeps_the_last_good_checkpoint(tmp_path, fashion_small):
    train_set, _ = fashion_small
    ckpt = tmp_path / "run.pt"
    poisoned = {"on": False}

    def preprocess(x):
        x = x.float().flatten(1) / 255
        return x * float("nan") if poisoned["on"] else x

    def poison_from_the_second_epoch(passes):
        poisoned["on"] = passes >= 2

    model = nn.Linear(784, 10)
    with pytest.raises(TrainingDivergedError, match=f"last good checkpoint is {ckpt}"):
        train.fit(
            model,
            _OnEachPass(loaders.make_loader(train_set, 50), poison_from_the_second_epoch),
            epochs=3,
            preprocess=preprocess,
            checkpoint=ckpt,
        )
    kept = files.load_checkpoint(ckpt, nn.Linear(784, 10))
    assert kept["epoch"] == 0 and all(torch.isfinite(v).all() for v in kept["model"].values())


def test_early_stopping_restores_best(fashion_small):
    x = torch.randn(200, 16)
    y = torch.randint(0, 2, (200,))
    head = nn.Linear(16, 2)
    hist = train.fit(
        head,
        transfer.feature_loader(x, y, 20),
        transfer.feature_loader(x[:50], 1 - y[:50], 50),
        epochs=30,
        optimizer=torch.optim.AdamW(head.parameters(), lr=0.05),
        early_stopping=2,
    )
    assert len(hist) < 30
    best = min(h["val_loss"] for h in hist)
    assert train.evaluate(head, transfer.feature_loader(x[:50], 1 - y[:50], 50))["loss"] == pytest.approx(
        best, rel=1e-5
    )


def test_frozen_batchnorm_statistics_do_not_move(fashion_small):
    train_set, _ = fashion_small
    model = models.create("simple_cnn", num_classes=10, in_channels=1)
    transfer.freeze(model, except_=("classifier",))
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    train.fit(
        model,
        loaders.make_loader(train_set, 50),
        epochs=1,
        preprocess=batch_transforms.BatchTransform(28, (0.5,), (0.5,), channels=1),
    )
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_cosine_schedule_anneals_the_learning_rate(fashion_small):
    _, _, hist = _small_cnn_run(fashion_small, epochs=3, scheduler="cosine")
    lrs = [h["lr"] for h in hist]
    assert lrs[0] == pytest.approx(3e-3) and lrs[0] > lrs[1] > lrs[2] > 0
    with pytest.raises(ValueError, match="cosine"):
        _small_cnn_run(fashion_small, epochs=1, scheduler="linear")


# ----------------------------------------------------------------------------- exact answers
# Metrics against torch.nn.functional on batches of uneven size (7, 3, 1): a mean of batch means,
# or a count taken per batch instead of per image, gives a different number.


def _uneven(x, y, sizes=(7, 3, 1)):
    batches, start = [], 0
    for size in sizes:
        batches.append((x[start : start + size], y[start : start + size]))
        start += size
    return batches


def _linear_problem(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(5, 3)
    x, y = torch.randn(11, 5), torch.randint(0, 3, (11,))
    return model, x, y


def test_evaluate_equals_cross_entropy_over_all_images():
    model, x, y = _linear_problem()
    got = train.evaluate(model, _uneven(x, y), device="cpu")
    with torch.no_grad():
        logits = model(x)
    assert got["n"] == 11
    assert got["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-6)
    assert got["accuracy"] == int((logits.argmax(1) == y).sum()) / 11
    assert metrics.count_correct(logits, y) == int((logits.argmax(1) == y).sum())


def test_evaluate_of_an_empty_loader_is_an_error():
    with pytest.raises(ValueError, match="empty loader"):
        train.evaluate(nn.Linear(5, 3), [], device="cpu")


def test_fit_reports_per_image_means_of_the_epoch():
    """With a learning rate of 0 the weights stay put, so an epoch's training loss and accuracy
    must equal the cross-entropy and accuracy of the fixed model over all 11 images."""
    model, x, y = _linear_problem(1)
    with torch.no_grad():
        logits = model(x)
    loss, accuracy = nn.functional.cross_entropy(logits, y).item(), int((logits.argmax(1) == y).sum()) / 11
    history = train.fit(
        model,
        _uneven(x, y),
        _uneven(x, y, (2, 9)),
        epochs=2,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
    )
    for record in history:
        assert record["train_loss"] == pytest.approx(loss, rel=1e-6)
        assert record["val_loss"] == pytest.approx(loss, rel=1e-6)
        assert record["train_accuracy"] == record["val_accuracy"] == accuracy
    assert [r["epoch"] for r in history] == [1, 2] and all(r["seconds"] > 0 for r in history)


def test_cosine_schedule_values_per_epoch():
    """CosineAnnealingLR over ``epochs``: epoch e (from 0) trains at lr * (1 + cos(pi e / E)) / 2."""
    model, x, y = _linear_problem()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    history = train.fit(model, _uneven(x, y), epochs=4, optimizer=optimizer, scheduler="cosine")
    expected = [0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert [r["lr"] for r in history] == pytest.approx(expected, rel=1e-9)


def test_a_scheduler_object_steps_the_given_optimizer_once_per_epoch():
    model, x, y = _linear_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    history = train.fit(model, _uneven(x, y), epochs=3, optimizer=optimizer, scheduler=scheduler)
    assert [r["lr"] for r in history] == pytest.approx([0.1, 0.05, 0.025], rel=1e-9)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0125)


class _NeverIterated:
    """A loader that fails the test if ``fit`` starts training."""

    def __iter__(self):
        raise AssertionError("fit started training despite contradictory options")


def _stray_scheduler():
    return torch.optim.lr_scheduler.StepLR(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), 1)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(early_stopping=2), "early_stopping needs a val_loader"),
        (dict(resume=True), "resume=True needs checkpoint"),
        (dict(scheduler="linear"), "unknown scheduler 'linear'"),
        (dict(scheduler="Cosine"), "unknown scheduler 'Cosine'"),
        (dict(scheduler=_stray_scheduler()), "a scheduler steps an optimizer: pass optimizer="),
    ],
    ids=["early-stopping-without-val", "resume-without-checkpoint", "unknown-scheduler", "case", "scheduler-alone"],
)
def test_contradictory_fit_options_are_refused_before_any_training(options, message, tmp_path):
    model = nn.Linear(2, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        train.fit(model, _NeverIterated(), epochs=1, **options)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_the_options_those_checks_refuse_are_fine_together(tmp_path):
    """The positive side of the checks above: each option with what it needs runs."""
    model, x, y = _linear_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history = train.fit(
        model,
        _uneven(x, y),
        _uneven(x, y),
        epochs=2,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.StepLR(optimizer, 1),
        early_stopping=5,
        checkpoint=tmp_path / "run.pt",
        resume=True,
    )
    assert len(history) == 2 and (tmp_path / "run.pt").exists()


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch():
    """The weights evaluated at epoch e are set as its validation starts (lr 0: training moves
    nothing), so the validation losses are chosen: 2nd best, best, 3rd, 4th, 5th. With patience 2
    the run stops after epoch 4 and never sees epoch 5; the model ends with the weights
    evaluated at epoch 2 (not those set afterwards)."""
    model, x, y = _linear_problem(2)
    torch.manual_seed(3)
    candidates = [(torch.randn(3, 5) * 2, torch.randn(3)) for _ in range(5)]

    def loss_of(weight, bias):
        return nn.functional.cross_entropy(x @ weight.T + bias, y).item()

    ranked = sorted(candidates, key=lambda wb: loss_of(*wb))  # best first
    schedule = [ranked[1], ranked[0], ranked[2], ranked[3], ranked[4]]

    def set_weights(passes):
        with torch.no_grad():
            model.weight.copy_(schedule[passes - 1][0])
            model.bias.copy_(schedule[passes - 1][1])

    history = train.fit(
        model,
        _uneven(x, y),
        _OnEachPass(_uneven(x, y), set_weights),
        epochs=5,
        early_stopping=2,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
    )
    assert len(history) == 4
    assert [r["val_loss"] for r in history] == pytest.approx([loss_of(*wb) for wb in schedule[:4]], rel=1e-6)
    assert torch.equal(model.weight, ranked[0][0]) and torch.equal(model.bias, ranked[0][1])


def test_predict_gives_softmax_of_the_eval_mode_model_in_loader_order():
    model, x, y = _linear_problem()
    model = nn.Sequential(model, nn.Dropout(0.5))
    probs, labels = inference.predict(model, _uneven(x, y))
    with torch.no_grad():
        expected = model.eval()(x).softmax(1)
    assert torch.allclose(probs, expected, atol=1e-7) and torch.equal(labels, y)


def test_correct_marks_each_image_the_eval_mode_model_gets_right_in_loader_order():
    model, x, y = _linear_problem()
    model = nn.Sequential(model, nn.Dropout(0.5))
    right = inference.correct(model, _uneven(x, y))
    with torch.no_grad():
        expected = model.eval()(x).argmax(1) == y
    assert right.dtype == torch.bool and torch.equal(right, expected)
    assert 0 < right.sum() < len(y)  # the check can tell right from wrong


def test_worst_mistakes_are_the_most_confident_wrong_predictions_first():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05]])
    labels = torch.tensor([1, 1, 1, 0, 0])  # wrong: rows 0 (0.9), 2 (0.6), 3 (0.7)
    assert metrics.worst_mistakes(probs, labels).tolist() == [0, 3, 2]
    assert metrics.worst_mistakes(probs, labels, k=2).tolist() == [0, 3]


def test_per_class_accuracy_is_recall_and_precision_per_class_worst_first():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.6, 0.4, 0.0], [0.0, 0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1, 2])  # predicted 0, 0, 1, 0, 2
    table = metrics.per_class_accuracy(probs, labels, ["a", "b", "c"])
    assert list(table.index) == ["b", "a", "c"]
    assert table.loc["a", "accuracy"] == 1.0 and table.loc["a", "precision"] == pytest.approx(2 / 3)
    assert table.loc["b", "accuracy"] == 0.5 and table.loc["b", "precision"] == 1.0
    assert table["images"].tolist() == [2, 2, 1]


def test_keep_frozen_batchnorm_in_eval_touches_only_fully_frozen_layers():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.BatchNorm1d(3), nn.BatchNorm1d(3, affine=False), nn.Linear(3, 3))
    model[0].weight.requires_grad_(False)
    model[0].bias.requires_grad_(False)
    model[1].weight.requires_grad_(False)  # bias still trains: the layer is not frozen
    model.train()
    train.keep_frozen_batchnorm_in_eval(model)
    assert [m.training for m in model] == [False, True, True, True]


def test_progress_bars_follow_the_environment(monkeypatch):
    monkeypatch.setenv("TLBOOK_PROGRESS", "0")
    assert settings.progress() is False
    monkeypatch.setenv("TLBOOK_PROGRESS", "1")
    assert settings.progress() is True
    monkeypatch.delenv("TLBOOK_PROGRESS")
    assert settings.progress() is True


def test_fit_keeps_an_epoch_bar_and_extraction_shows_one(capsys, monkeypatch):
    """With TLBOOK_PROGRESS on: a bar over the epochs that stays on screen, and feature extraction
    shows its own bar; with it off, nothing on stderr."""
    x, y = torch.randn(40, 4), torch.arange(40) % 2
    loader = transfer.feature_loader(x, y, 8)
    monkeypatch.setenv("TLBOOK_PROGRESS", "1")  # the default outside tests
    train.fit(nn.Linear(4, 2), loader, loader, epochs=3)
    err = capsys.readouterr().err
    assert "epochs" in err and "3/3" in err
    inference.extract_features(nn.Identity(), loader)
    assert "features" in capsys.readouterr().err
    monkeypatch.setenv("TLBOOK_PROGRESS", "0")
    train.fit(nn.Linear(4, 2), loader, loader, epochs=1)
    inference.extract_features(nn.Identity(), loader)
    assert capsys.readouterr().err == ""


def _shuffled_linear_run(tmp_path, epochs, wrap=lambda loader: loader, **kw):
    """A fast, shuffled, scheduled run of a linear model on fixed random data (for resume checks)."""
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, y = torch.randn(40, 5, generator=torch.Generator().manual_seed(1)), torch.arange(40) % 3
    history = train.fit(
        model,
        wrap(loaders.ArrayLoader(x, y, 8, shuffle=True, seed=2)),
        _uneven(x[:11], y[:11]),
        epochs=epochs,
        optimizer=torch.optim.AdamW(model.parameters(), lr=0.05),
        scheduler="cosine",
        **kw,
    )
    return model, history


def test_resume_restores_weights_optimizer_schedule_history_and_shuffling(tmp_path, capsys):
    """Every piece of state matters: without the optimizer's moments, the schedule's position, the
    history or the loader's random state, the resumed epochs differ from an uninterrupted run."""
    straight_model, straight = _shuffled_linear_run(tmp_path, 4)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):  # the same 4-epoch run, stopped after its 2nd epoch was saved
        _shuffled_linear_run(tmp_path, 4, wrap=lambda ld: _OnEachPass(ld, _interrupt_on_pass(3)), checkpoint=ckpt)
    assert files.load_checkpoint(ckpt)["epoch"] == 1
    assert capsys.readouterr().out == ""  # fit prints no epoch lines
    resumed_model, resumed = _shuffled_linear_run(tmp_path, 4, checkpoint=ckpt, resume=True)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and printed[0].startswith("resumed from ") and printed[0].endswith("after epoch 2")
    strip = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
    assert [strip(h) for h in resumed] == [strip(h) for h in straight]
    assert torch.equal(resumed_model.weight, straight_model.weight)
    kept = files.load_checkpoint(ckpt)
    assert kept["epoch"] == 3 and set(kept) >= {"optimizer", "scheduler", "history", "torch_rng", "loader_rng"}


def test_resume_without_a_checkpoint_starts_fresh_and_fit_needs_trainable_parameters(tmp_path):
    _, history = _shuffled_linear_run(tmp_path, 1, checkpoint=tmp_path / "none-yet.pt", resume=True)
    assert [h["epoch"] for h in history] == [1] and (tmp_path / "none-yet.pt").exists()
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train.fit(frozen, [(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))], epochs=1)


class _ConstantLoss:
    """A loss of 2.0 whatever the logits, whose ``correct`` method counts every image correct."""

    def __init__(self):
        self.calls = 0

    def __call__(self, out, labels):
        self.calls += 1
        return nn.functional.cross_entropy(out, labels) * 0 + 2.0 + out.sum() * 0

    def correct(self, out, labels):
        return torch.tensor(len(labels), device=out.device)


def test_fit_defaults_to_adamw_at_1e3_and_uses_the_given_loss_and_its_count(tmp_path, capsys):
    model, x, y = _linear_problem(4)
    model.bias.requires_grad_(False)  # the default optimizer holds only the trainable parameters
    loss_fn = _ConstantLoss()
    history = train.fit(model, _uneven(x, y), _uneven(x, y), epochs=1, loss_fn=loss_fn, checkpoint=tmp_path / "c.pt")
    group = files.load_checkpoint(tmp_path / "c.pt")["optimizer"]["param_groups"][0]
    assert group["lr"] == 1e-3 and group["decoupled_weight_decay"] is True and len(group["params"]) == 1
    assert loss_fn.calls == 6  # 3 training and 3 validation batches
    assert history[0]["train_loss"] == pytest.approx(2.0) and history[0]["val_loss"] == pytest.approx(2.0)
    assert history[0]["train_accuracy"] == 1.0 == history[0]["val_accuracy"] and history[0]["lr"] == 1e-3
    assert train.evaluate(model, _uneven(x, y), loss_fn=loss_fn)["accuracy"] == 1.0
    assert capsys.readouterr().out == ""  # fit prints no epoch lines; format_history gives them
    assert train.format_history(history).startswith(
        "epoch   1/1  train loss 2.0000 acc 1.000  val loss 2.0000 acc 1.000"
    )


def test_format_history_gives_one_line_per_epoch():
    records = [
        {"epoch": 1, "train_loss": 1.5, "train_accuracy": 0.25, "seconds": 0.5},
        {
            "epoch": 2,
            "train_loss": 1.0,
            "train_accuracy": 0.5,
            "val_loss": 0.75,
            "val_accuracy": 0.625,
            "seconds": 1.25,
        },
    ]
    assert train.format_history(records).splitlines() == [
        "epoch   1/2  train loss 1.5000 acc 0.250  0.5s",
        "epoch   2/2  train loss 1.0000 acc 0.500  val loss 0.7500 acc 0.625  1.2s",
    ]


def test_evaluate_and_predict_run_the_preprocess_in_eval_mode():
    """Augmentation belongs to training: evaluation must see the un-augmented images."""
    model, x, y = _linear_problem()

    class Flip(nn.Module):
        def forward(self, batch):
            return -batch if self.training else batch

    flip = Flip().train()
    plain = train.evaluate(model, _uneven(x, y), device="cpu")
    assert train.evaluate(model, _uneven(x, y), preprocess=flip, device="cpu") == plain
    probs, _ = inference.predict(model, _uneven(x, y), preprocess=Flip().train())
    assert torch.allclose(probs, inference.predict(model, _uneven(x, y))[0])


def test_checkpoint_files_that_are_not_ours_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=f"no checkpoint at {tmp_path / 'missing.pt'}"):
        files.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="cut.pt is truncated or corrupt"):
        files.load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 8)  # random bytes: corrupt, not unsafe
    with pytest.raises(CheckpointError, match="noise.pt is truncated or corrupt") as caught:
        files.load_checkpoint(tmp_path / "noise.pt")
    assert "arbitrary code" not in str(caught.value)
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt is not a companion checkpoint \(no 'model' state dict"):
        files.load_checkpoint(tmp_path / "other.pt")


def test_load_weights_names_what_differs_and_loads_partially_when_asked():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    state = {k: v for k, v in model.state_dict().items() if k.startswith("0.")}
    with pytest.raises(CheckpointError, match=r"2 tensors missing \(e.g. \['1.weight', '1.bias'\]\), 0 unexpected"):
        files.load_weights(model, state)
    files.load_weights(model, {k: torch.ones_like(v) for k, v in state.items()}, strict=False)
    assert torch.equal(model[0].weight, torch.ones(2, 3))
    with pytest.raises(
        CheckpointError, match=r"1 tensors differ in shape, first 0.weight: \(4, 3\) in the checkpoint vs \(2, 3\)"
    ):
        files.load_weights(model, {"0.weight": torch.zeros(4, 3), "0.bias": torch.zeros(2)}, strict=False)


def test_predict_applies_the_preprocess_and_finds_the_device_itself():
    model, x, y = _linear_problem()

    class Double(nn.Module):
        def forward(self, batch):
            return batch * 2

    probs, labels = inference.predict(model, _uneven(x, y), preprocess=Double())  # device: where the model is
    with torch.no_grad():
        assert torch.allclose(probs, model(x * 2).softmax(1), atol=1e-7) and torch.equal(labels, y)
    confidence = torch.linspace(0.99, 0.6, 20)  # 20 wrong predictions, the first the most confident
    wrong = torch.stack([1 - confidence, confidence], 1)
    assert metrics.worst_mistakes(wrong, torch.zeros(20, dtype=torch.long)).tolist() == list(range(16))  # k = 16


def test_per_class_accuracy_keeps_every_class_even_one_never_seen():
    """A class absent from labels and predictions still gets its row, with 0 (not 1) for both."""
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]])
    table = metrics.per_class_accuracy(probs, torch.tensor([0, 1, 1]), ["a", "b", "c"])
    assert table.loc["c"].tolist() == [0.0, 0.0, 0] and table.index[0] == "c"
    assert table.loc["a"].tolist() == [1.0, 0.5, 1] and table.loc["b"].tolist() == [0.5, 1.0, 2]


def test_resume_with_early_stopping_stops_where_an_uninterrupted_run_stops(tmp_path):
    """Early stopping's best loss, patience count and best weights are part of the checkpoint."""
    model0, x, y = _linear_problem(2)
    _, x_val, y_val = _linear_problem(3)  # unrelated labels: validation loss soon rises
    initial = {k: v.clone() for k, v in model0.state_dict().items()}

    def run(checkpoint=None, resume=False, wrap=lambda loader: loader):
        model = _linear_problem(2)[0]
        model.load_state_dict(initial)
        history = train.fit(
            model,
            wrap(loaders.ArrayLoader(x, y, 8, shuffle=True, seed=2)),
            _uneven(x_val, y_val),
            epochs=12,
            optimizer=torch.optim.AdamW(model.parameters(), lr=0.5),
            early_stopping=2,
            checkpoint=checkpoint,
            resume=resume,
        )
        return model, history

    straight_model, straight = run()
    assert len(straight) < 12  # lr 0.5 overshoots: the run does stop early

    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):  # as the last epoch starts: one epoch without improvement counted
        run(ckpt, wrap=lambda ld: _OnEachPass(ld, _interrupt_on_pass(len(straight))))
    assert files.load_checkpoint(ckpt)["early_stopping"]["stale"] == 1
    resumed_model, resumed = run(ckpt, resume=True)
    strip = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
    assert [strip(h) for h in resumed] == [strip(h) for h in straight]
    assert torch.equal(resumed_model.weight, straight_model.weight)  # the same best epoch restored


# ----------------------------------------------------------------------------- mixed precision and backends


class _RecordsAutocast(nn.Linear):
    """A linear layer that notes, per mode, whether each forward pass ran under CPU autocast."""

    def __init__(self):
        super().__init__(5, 3)
        self.seen = {"train": [], "eval": []}

    def forward(self, x):
        self.seen["train" if self.training else "eval"].append(torch.is_autocast_enabled("cpu"))
        return super().forward(x)


def test_evaluate_honours_amp(monkeypatch):
    """``amp=False`` means fp32 in validation too. With bf16 autocast made available on the CPU,
    ``fit(amp=False)`` and ``evaluate(amp=False)`` must run no forward pass under autocast, while
    ``amp=True`` does (so the recording can tell)."""
    monkeypatch.setattr(hardware, "amp_dtype", lambda device: torch.bfloat16)
    _, x, y = _linear_problem()
    model = _RecordsAutocast()
    train.fit(model, _uneven(x, y), _uneven(x, y), epochs=1, amp=False)
    assert model.seen == {"train": [False] * 3, "eval": [False] * 3}

    model.seen["eval"].clear()
    train.evaluate(model, _uneven(x, y), amp=False)
    assert model.seen["eval"] == [False] * 3
    model.seen["eval"].clear()
    train.evaluate(model, _uneven(x, y), amp=True)
    assert model.seen["eval"] == [True] * 3

    model = _RecordsAutocast()
    train.fit(model, _uneven(x, y), _uneven(x, y), epochs=1, amp=True)  # fit passes its own amp on
    assert model.seen == {"train": [True] * 3, "eval": [True] * 3}


def test_fit_and_evaluate_leave_the_backend_flags_alone(monkeypatch, tmp_path):
    """Process-wide backend flags (TF32, cuDNN benchmark) are set once by start_chapter or the
    CLI, never by a library call: a caller that turned TF32 off keeps it off."""

    def refuse(device):
        raise AssertionError("a library call ran configure_backends")

    monkeypatch.setattr(hardware, "configure_backends", refuse)
    model, x, y = _linear_problem()
    train.fit(model, _uneven(x, y), _uneven(x, y), epochs=1, checkpoint=tmp_path / "c.pt")
    train.fit(model, _uneven(x, y), _uneven(x, y), epochs=2, checkpoint=tmp_path / "c.pt", resume=True)
    train.evaluate(model, _uneven(x, y))
    inference.predict(model, _uneven(x, y))
    inference.extract_features(model, _uneven(x, y))
