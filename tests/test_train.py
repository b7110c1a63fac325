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
        model, data.make_loader(train_set, 50, shuffle=True, seed=0), data.make_loader(test_set, 100),
        epochs=epochs, lr=3e-3, preprocess=prep, device="cpu", verbose=False, **kw,
    )
    return model, prep, hist


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
            model, data.make_loader(train_set, 50), epochs=1, device="cpu", verbose=False,
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
        train.fit(model, data.make_loader(train_set, 50), epochs=3, device="cpu", verbose=False, preprocess=preprocess,
                  checkpoint=ckpt, epoch_end=poison_after_first_epoch)
    kept = train.load_checkpoint(ckpt, nn.Linear(784, 10))
    assert kept["epoch"] == 0 and all(torch.isfinite(v).all() for v in kept["model"].values())


def test_early_stopping_restores_best(fashion_small):
    train_set, test_set = fashion_small
    x = torch.randn(200, 16)
    y = torch.randint(0, 2, (200,))
    head = nn.Linear(16, 2)
    hist = train.fit(
        head, transfer.feature_loader(x, y, 20), transfer.feature_loader(x[:50], 1 - y[:50], 50),
        epochs=30, lr=0.05, early_stopping=2, device="cpu", verbose=False,
    )
    assert len(hist) < 30
    best = min(h["val_loss"] for h in hist)
    assert train.evaluate(head, transfer.feature_loader(x[:50], 1 - y[:50], 50))["loss"] == pytest.approx(best, rel=1e-5)


def test_frozen_batchnorm_statistics_do_not_move(fashion_small):
    train_set, _ = fashion_small
    model = models.create("simple_cnn", num_classes=10, in_channels=1)
    transfer.freeze(model, except_=("classifier",))
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    train.fit(
        model, data.make_loader(train_set, 50), epochs=1, device="cpu", verbose=False,
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
