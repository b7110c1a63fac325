import pickle

import pytest
import torch
from torch import nn

from companion import data, models, train, transfer
from companion.errors import CheckpointError, TrainingDivergedError


def _small_cnn_run(fashion_small, epochs=2, **kw):
    train_set, test_set = fashion_small
    torch.manual_seed(0)
    model = models.create("simple_cnn", num_classes=10, in_channels=1)
    prep = data.BatchTransform(28, (0.5,), (0.5,), channels=1)
    hist = train.fit(
        model,
        data.make_loader(train_set, 50, shuffle=True, seed=0),
        data.make_loader(test_set, 100),
        epochs=epochs,
        lr=3e-3,
        preprocess=prep,
        device="cpu",
        verbose=False,
        **kw,
    )
    return model, prep, hist


@pytest.mark.slow
def test_fit_learns_real_data(fashion_small):
    model, prep, hist = _small_cnn_run(fashion_small, epochs=4)
    assert len(hist) == 4 and {"train_loss", "val_accuracy", "seconds"} <= hist[0].keys()
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    metrics = train.evaluate(model, data.make_loader(fashion_small[1], 100), preprocess=prep)
    assert metrics["accuracy"] > 0.3 and metrics["n"] == 100  # chance is 0.1
    assert metrics["accuracy"] == pytest.approx(hist[-1]["val_accuracy"])


def test_evaluate_uses_eval_mode(fashion_small):
    model, prep, _ = _small_cnn_run(fashion_small, epochs=1)
    loader = data.make_loader(fashion_small[1], 100)
    model.train()
    a = train.evaluate(model, loader, preprocess=prep)
    model.train()
    b = train.evaluate(model, loader, preprocess=prep)
    assert a == b and not model.training


def test_checkpoint_round_trip(tmp_path, fashion_small):
    model, prep, _ = _small_cnn_run(fashion_small, epochs=1)
    path = train.save_checkpoint(tmp_path / "ckpt.pt", model, epoch=3, classes=["a", "b"])
    fresh = models.create("simple_cnn", num_classes=10, in_channels=1)
    ckpt = train.load_checkpoint(path, fresh)
    assert ckpt["epoch"] == 3 and ckpt["classes"] == ["a", "b"]
    for (k, v), (_, w) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(v, w), k
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_class_count_mismatch(tmp_path):
    train.save_checkpoint(tmp_path / "c.pt", models.create("simple_cnn", num_classes=4))
    with pytest.raises(CheckpointError, match="checkpoint has 4 classes, the model 10.*num_classes=4"):
        train.load_checkpoint(tmp_path / "c.pt", models.create("simple_cnn", num_classes=10))


def test_checkpoint_other_architecture(tmp_path):
    train.save_checkpoint(tmp_path / "c.pt", models.create("simple_cnn"))
    with pytest.raises(CheckpointError, match="does not fit the model|different architecture"):
        train.load_checkpoint(tmp_path / "c.pt", models.create("resnet18"))


class _Evil:
    def __reduce__(self):
        return (print, ("this ran while unpickling",))


def test_malicious_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": {}, "payload": _Evil()}, f)
    with pytest.raises(CheckpointError, match="refused to load"):
        train.load_checkpoint(path)
    assert "this ran" not in capsys.readouterr().out


def test_atomic_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    path = train.save_checkpoint(tmp_path / "c.pt", model, epoch=1)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="previous checkpoint, if any, is intact"):
        train.save_checkpoint(path, model, epoch=2)
    monkeypatch.undo()
    assert train.load_checkpoint(path)["epoch"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="cannot write a checkpoint"):
        train.save_checkpoint(blocker / "sub" / "c.pt", nn.Linear(2, 2))


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

    def ctrl_c_after_second_epoch(epoch, model, optimizer):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _small_cnn_run(fashion_small, epochs=3, checkpoint=ckpt, epoch_end=ctrl_c_after_second_epoch)
    kept = train.load_checkpoint(ckpt)
    assert kept["epoch"] == 0  # the checkpoint of the last complete epoch survived the interruption
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
            data.make_loader(train_set, 50),
            epochs=1,
            device="cpu",
            verbose=False,
            preprocess=lambda x: x.float() * float("nan"),
        )


def test_nan_loss_keeps_the_last_good_checkpoint(tmp_path, fashion_small):
    train_set, _ = fashion_small
    ckpt = tmp_path / "run.pt"
    poisoned = {"on": False}

    def preprocess(x):
        x = x.float().flatten(1) / 255
        return x * float("nan") if poisoned["on"] else x

    def poison_after_first_epoch(epoch, model, optimizer):
        poisoned["on"] = True

    model = nn.Linear(784, 10)
    with pytest.raises(TrainingDivergedError, match=f"last good checkpoint is {ckpt}"):
        train.fit(
            model,
            data.make_loader(train_set, 50),
            epochs=3,
            device="cpu",
            verbose=False,
            preprocess=preprocess,
            checkpoint=ckpt,
            epoch_end=poison_after_first_epoch,
        )
    kept = train.load_checkpoint(ckpt, nn.Linear(784, 10))
    assert kept["epoch"] == 0 and all(torch.isfinite(v).all() for v in kept["model"].values())


def test_early_stopping_restores_best(fashion_small):
    train_set, test_set = fashion_small
    x = torch.randn(200, 16)
    y = torch.randint(0, 2, (200,))
    head = nn.Linear(16, 2)
    hist = train.fit(
        head,
        transfer.feature_loader(x, y, 20),
        transfer.feature_loader(x[:50], 1 - y[:50], 50),
        epochs=30,
        lr=0.05,
        early_stopping=2,
        device="cpu",
        verbose=False,
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
        data.make_loader(train_set, 50),
        epochs=1,
        device="cpu",
        verbose=False,
        preprocess=data.BatchTransform(28, (0.5,), (0.5,), channels=1),
    )
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_cosine_schedule_anneals_the_learning_rate(fashion_small):
    _, _, hist = _small_cnn_run(fashion_small, epochs=3, schedule="cosine")
    lrs = [h["lr"] for h in hist]
    assert lrs[0] == pytest.approx(3e-3) and lrs[0] > lrs[1] > lrs[2] > 0
    with pytest.raises(ValueError, match="cosine"):
        _small_cnn_run(fashion_small, epochs=1, schedule="linear")


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
    assert train.count_correct(logits, y) == int((logits.argmax(1) == y).sum())


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
        device="cpu",
        verbose=False,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
    )
    for record in history:
        assert record["train_loss"] == pytest.approx(loss, rel=1e-6)
        assert record["val_loss"] == pytest.approx(loss, rel=1e-6)
        assert record["train_accuracy"] == record["val_accuracy"] == accuracy
    assert [r["epoch"] for r in history] == [1, 2] and all(r["seconds"] > 0 for r in history)


def test_cosine_schedule_values_per_epoch():
    """CosineAnnealingLR over ``epochs``: epoch e (from 0) trains at lr * (1 + cos(pi e / E)) / 2."""
    import math

    model, x, y = _linear_problem()
    history = train.fit(model, _uneven(x, y), epochs=4, lr=0.1, schedule="cosine", device="cpu", verbose=False)
    expected = [0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert [r["lr"] for r in history] == pytest.approx(expected, rel=1e-9)


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch():
    """The weights evaluated at epoch e are set by ``epoch_end`` of epoch e - 1 (lr 0: training moves
    nothing), so the validation losses are chosen: 2nd best, best, 3rd, 4th, 5th. With patience 2
    the run stops after epoch 4 and never sees epoch 5; the model ends with the weights
    evaluated at epoch 2 (not those ``epoch_end`` set afterwards)."""
    model, x, y = _linear_problem(2)
    torch.manual_seed(3)
    candidates = [(torch.randn(3, 5) * 2, torch.randn(3)) for _ in range(5)]

    def loss_of(weight, bias):
        return nn.functional.cross_entropy(x @ weight.T + bias, y).item()

    ranked = sorted(candidates, key=lambda wb: loss_of(*wb))  # best first
    schedule = [ranked[1], ranked[0], ranked[2], ranked[3], ranked[4]]

    def set_weights(epoch, model, optimizer):
        if epoch + 1 < len(schedule):
            with torch.no_grad():
                model.weight.copy_(schedule[epoch + 1][0])
                model.bias.copy_(schedule[epoch + 1][1])

    with torch.no_grad():
        model.weight.copy_(schedule[0][0])
        model.bias.copy_(schedule[0][1])
    history = train.fit(
        model,
        _uneven(x, y),
        _uneven(x, y),
        epochs=5,
        early_stopping=2,
        device="cpu",
        verbose=False,
        epoch_end=set_weights,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
    )
    assert len(history) == 4
    assert [r["val_loss"] for r in history] == pytest.approx([loss_of(*wb) for wb in schedule[:4]], rel=1e-6)
    assert torch.equal(model.weight, ranked[0][0]) and torch.equal(model.bias, ranked[0][1])


def test_predict_gives_softmax_of_the_eval_mode_model_in_loader_order():
    model, x, y = _linear_problem()
    model = nn.Sequential(model, nn.Dropout(0.5))
    probs, labels = train.predict(model, _uneven(x, y), device="cpu")
    with torch.no_grad():
        expected = model.eval()(x).softmax(1)
    assert torch.allclose(probs, expected, atol=1e-7) and torch.equal(labels, y)


def test_worst_mistakes_are_the_most_confident_wrong_predictions_first():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05]])
    labels = torch.tensor([1, 1, 1, 0, 0])  # wrong: rows 0 (0.9), 2 (0.6), 3 (0.7)
    assert train.worst_mistakes(probs, labels).tolist() == [0, 3, 2]
    assert train.worst_mistakes(probs, labels, k=2).tolist() == [0, 3]


def test_per_class_accuracy_is_recall_and_precision_per_class_worst_first():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.6, 0.4, 0.0], [0.0, 0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1, 2])  # predicted 0, 0, 1, 0, 2
    table = train.per_class_accuracy(probs, labels, ["a", "b", "c"])
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


def test_progress_bars_follow_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("TLBOOK_PROGRESS", "0")
    assert train._progress_enabled(None) is False and train._progress_enabled(True) is True
    monkeypatch.setenv("TLBOOK_PROGRESS", "1")
    assert train._progress_enabled(None) is True and train._progress_enabled(False) is False
    monkeypatch.delenv("TLBOOK_PROGRESS")
    assert train._progress_enabled(None) is True


def test_fit_keeps_an_epoch_bar_with_the_latest_metrics_and_extraction_shows_one(capsys, monkeypatch):
    """With progress on: a bar over the epochs that stays (its last state names the validation
    accuracy), and feature extraction shows its own bar by default."""
    from companion import transfer

    x, y = torch.randn(40, 4), torch.arange(40) % 2
    loader = transfer.feature_loader(x, y, 8)
    train.fit(nn.Linear(4, 2), loader, loader, epochs=3, device="cpu", progress=True, verbose=False)
    err = capsys.readouterr().err
    assert "epochs" in err and "3/3" in err and "val accuracy=" in err
    train.fit(nn.Linear(4, 2), loader, loader, epochs=1, device="cpu", progress=False, verbose=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("TLBOOK_PROGRESS", "1")  # the default outside tests
    transfer.extract_features(nn.Identity(), loader)
    assert "features" in capsys.readouterr().err


def _shuffled_linear_run(tmp_path, epochs, **kw):
    """A fast, shuffled, scheduled run of a linear model on fixed random data (for resume checks)."""
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, y = torch.randn(40, 5, generator=torch.Generator().manual_seed(1)), torch.arange(40) % 3
    history = train.fit(
        model,
        data.ArrayLoader(x, y, 8, shuffle=True, seed=2),
        _uneven(x[:11], y[:11]),
        epochs=epochs,
        lr=0.05,
        schedule="cosine",
        device="cpu",
        verbose=False,
        **kw,
    )
    return model, history


def test_resume_restores_weights_optimizer_schedule_history_and_shuffling(tmp_path):
    """Every piece of state matters: without the optimizer's moments, the schedule's position, the
    history or the loader's random state, the resumed epochs differ from an uninterrupted run."""
    straight_model, straight = _shuffled_linear_run(tmp_path, 4)
    ckpt = tmp_path / "run.pt"

    def interrupt_after_second_epoch(epoch, model, optimizer):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # the same 4-epoch run, stopped after its 2nd epoch was saved
        _shuffled_linear_run(tmp_path, 4, checkpoint=ckpt, epoch_end=interrupt_after_second_epoch)
    resumed_model, resumed = _shuffled_linear_run(tmp_path, 4, checkpoint=ckpt, resume=True)
    strip = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
    assert [strip(h) for h in resumed] == [strip(h) for h in straight]
    assert torch.equal(resumed_model.weight, straight_model.weight)
    kept = train.load_checkpoint(ckpt)
    assert kept["epoch"] == 3 and set(kept) >= {"optimizer", "scheduler", "history", "torch_rng", "loader_rng"}


def test_resume_without_a_checkpoint_starts_fresh_and_fit_needs_trainable_parameters(tmp_path):
    _, history = _shuffled_linear_run(tmp_path, 1, checkpoint=tmp_path / "none-yet.pt", resume=True)
    assert [h["epoch"] for h in history] == [1] and (tmp_path / "none-yet.pt").exists()
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train.fit(frozen, [(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))], epochs=1, device="cpu")


def test_fit_defaults_to_adamw_at_lr_and_uses_the_given_loss_and_count(capsys):
    model, x, y = _linear_problem(4)
    seen = {}

    def loss_fn(out, labels):
        seen["loss_fn"] = True
        return nn.functional.cross_entropy(out, labels) * 0 + 2.0 + out.sum() * 0

    history = train.fit(
        model,
        _uneven(x, y),
        _uneven(x, y),
        epochs=1,
        lr=0.01,
        device="cpu",
        loss_fn=loss_fn,
        correct_fn=lambda out, labels: len(labels),
        epoch_end=lambda e, m, opt: seen.update(opt=opt),
    )
    assert seen["loss_fn"] and isinstance(seen["opt"], torch.optim.AdamW) and seen["opt"].param_groups[0]["lr"] == 0.01
    assert history[0]["train_loss"] == pytest.approx(2.0) and history[0]["val_loss"] == pytest.approx(2.0)
    assert history[0]["train_accuracy"] == 1.0 == history[0]["val_accuracy"] and history[0]["lr"] == 0.01
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("epoch   1/1  train loss 2.0000 acc 1.000  val loss 2.0000 acc 1.000")


def test_evaluate_and_predict_run_the_preprocess_in_eval_mode():
    """Augmentation belongs to training: evaluation must see the un-augmented images."""
    model, x, y = _linear_problem()

    class Flip(nn.Module):
        def forward(self, batch):
            return -batch if self.training else batch

    flip = Flip().train()
    plain = train.evaluate(model, _uneven(x, y), device="cpu")
    assert train.evaluate(model, _uneven(x, y), preprocess=flip, device="cpu") == plain
    probs, _ = train.predict(model, _uneven(x, y), preprocess=Flip().train(), device="cpu")
    assert torch.allclose(probs, train.predict(model, _uneven(x, y), device="cpu")[0])


def test_checkpoint_files_that_are_not_ours_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=f"no checkpoint at {tmp_path / 'missing.pt'}"):
        train.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="cut.pt is truncated or corrupt"):
        train.load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 8)  # random bytes: corrupt, not unsafe
    with pytest.raises(CheckpointError, match="noise.pt is corrupt") as caught:
        train.load_checkpoint(tmp_path / "noise.pt")
    assert "arbitrary code" not in str(caught.value)
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt is not a companion checkpoint \(no 'model' entry\)"):
        train.load_checkpoint(tmp_path / "other.pt")


def test_load_weights_names_what_differs_and_loads_partially_when_asked():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    state = {k: v for k, v in model.state_dict().items() if k.startswith("0.")}
    with pytest.raises(CheckpointError, match=r"2 tensors missing \(e.g. \['1.weight', '1.bias'\]\), 0 unexpected"):
        train.load_weights(model, state)
    train.load_weights(model, {k: torch.ones_like(v) for k, v in state.items()}, strict=False)
    assert torch.equal(model[0].weight, torch.ones(2, 3))
    with pytest.raises(
        CheckpointError, match=r"1 tensors differ in shape, first 0.weight: \(4, 3\) in the checkpoint vs \(2, 3\)"
    ):
        train.load_weights(model, {"0.weight": torch.zeros(4, 3), "0.bias": torch.zeros(2)}, strict=False)


def test_predict_applies_the_preprocess_and_finds_the_device_itself():
    model, x, y = _linear_problem()

    class Double(nn.Module):
        def forward(self, batch):
            return batch * 2

    probs, labels = train.predict(model, _uneven(x, y), preprocess=Double())  # device: where the model is
    with torch.no_grad():
        assert torch.allclose(probs, model(x * 2).softmax(1), atol=1e-7) and torch.equal(labels, y)
    confidence = torch.linspace(0.99, 0.6, 20)  # 20 wrong predictions, the first the most confident
    wrong = torch.stack([1 - confidence, confidence], 1)
    assert train.worst_mistakes(wrong, torch.zeros(20, dtype=torch.long)).tolist() == list(range(16))  # k = 16


def test_per_class_accuracy_keeps_every_class_even_one_never_seen():
    """A class absent from labels and predictions still gets its row, with 0 (not 1) for both."""
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]])
    table = train.per_class_accuracy(probs, torch.tensor([0, 1, 1]), ["a", "b", "c"])
    assert table.loc["c"].tolist() == [0.0, 0.0, 0] and table.index[0] == "c"
    assert table.loc["a"].tolist() == [1.0, 0.5, 1] and table.loc["b"].tolist() == [0.5, 1.0, 2]


def test_resume_with_early_stopping_stops_where_an_uninterrupted_run_stops(tmp_path):
    """Early stopping's best loss, patience count and best weights are part of the checkpoint."""
    model0, x, y = _linear_problem(2)
    _, x_val, y_val = _linear_problem(3)  # unrelated labels: validation loss soon rises
    initial = {k: v.clone() for k, v in model0.state_dict().items()}

    def run(checkpoint=None, resume=False, epoch_end=None):
        model = _linear_problem(2)[0]
        model.load_state_dict(initial)
        history = train.fit(
            model,
            data.ArrayLoader(x, y, 8, shuffle=True, seed=2),
            _uneven(x_val, y_val),
            epochs=12,
            lr=0.5,
            early_stopping=2,
            device="cpu",
            verbose=False,
            checkpoint=checkpoint,
            resume=resume,
            epoch_end=epoch_end,
        )
        return model, history

    straight_model, straight = run()
    assert len(straight) < 12  # lr 0.5 overshoots: the run does stop early

    def interrupt(epoch, model, optimizer):
        if epoch == len(straight) - 2:  # after some epochs without improvement were counted
            raise KeyboardInterrupt

    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        run(ckpt, epoch_end=interrupt)
    resumed_model, resumed = run(ckpt, resume=True)
    strip = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
    assert [strip(h) for h in resumed] == [strip(h) for h in straight]
    assert torch.equal(resumed_model.weight, straight_model.weight)  # the same best epoch restored
