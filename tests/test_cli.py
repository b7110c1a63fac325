"""The command line end to end on a small folder of real photos (chelsea vs coffee crops)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from companion import cli

FAST = ["--model", "simple_cnn", "--mode", "scratch", "--image-size", "32", "--batch-size", "4", "--device", "cpu"]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "companion", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TLBOOK_PROGRESS": "0", **(env or {})},
    )


@pytest.mark.slow
def test_train_then_predict_as_a_reader_would(photo_folder: Path, tmp_path: Path):
    run = tmp_path / "run"
    done = run_cli("train", str(photo_folder), *FAST, "--epochs", "2", "--out", str(run))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val_images"] == 2 and metrics["val_accuracy"] in (0.0, 0.5, 1.0)  # plumbing, not accuracy
    assert metrics["classes"] == ["chelsea", "coffee"]
    assert len(metrics["history"]) == 2 and (run / "checkpoint.pt").is_file() and (run / "model.safetensors").is_file()
    image = next((photo_folder / "chelsea").glob("*.png"))
    predicted = run_cli("predict", str(run), str(image), "--top-k", "2")
    assert predicted.returncode == 0, predicted.stderr
    line = predicted.stdout.strip().splitlines()[-1]
    assert line.startswith(str(image)) and "chelsea" in line and "coffee" in line
    probabilities = [float(tok) for tok in line.split(":")[-1].replace(",", " ").split() if tok[0].isdigit()]
    assert abs(sum(probabilities) - 1.0) < 0.01  # top-2 of 2 classes


def test_feature_mode_with_pretrained_backbone_separates_real_photos(photo_folder_large: Path, tmp_path: Path):
    """20 validation images: at chance (0.5) reaching 0.9 has probability 2e-4."""
    out = tmp_path / "feature"
    args = [
        "train",
        str(photo_folder_large),
        "--model",
        "efficientnet_lite0",
        "--mode",
        "feature",
        "--epochs",
        "15",
        "--image-size",
        "96",
        "--val-fraction",
        "0.5",
        "--device",
        "cpu",
        "--batch-size",
        "8",
        "--out",
        str(out),
    ]
    assert cli.main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_images"] == 20 and metrics["train_images"] == 20 and metrics["val_accuracy"] >= 0.9
    assert metrics["trainable_parameters"] == 1280 * 2 + 2  # only the new head
    assert any("efficientnet_lite0" in k for k in metrics["sources"])
    model, config = cli.load_run(out)  # the saved model is backbone + trained head
    assert config["mode"] == "feature" and model.classifier.out_features == 2


def test_predict_prints_the_eval_mode_probabilities_every_time(photo_folder: Path, tmp_path: Path, capsys):
    """``predict`` gives what the saved model in eval mode gives, and the same line twice.

    A model left in training mode fails this: batch-norm would normalise each image with its own
    statistics instead of the stored ones, and dropout would change the output run to run.
    """
    import torch
    from PIL import Image

    from companion import models

    out = tmp_path / "feature"
    assert (
        cli.main(
            [
                "train",
                str(photo_folder),
                "--model",
                "efficientnet_lite0",
                "--mode",
                "feature",
                "--epochs",
                "2",
                "--image-size",
                "64",
                "--device",
                "cpu",
                "--batch-size",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    cat = next((photo_folder / "chelsea").glob("*.png"))
    capsys.readouterr()
    assert cli.main(["predict", str(out), str(cat), "--top-k", "2"]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert cli.main(["predict", str(out), str(cat), "--top-k", "2"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == first

    model, config = cli.load_run(out)
    transform = models.eval_transform(config["model"], config["image_size"])
    with torch.inference_mode(), Image.open(cat) as im:
        probs = model.eval()(transform(im.convert("RGB")).unsqueeze(0)).softmax(1)[0]
    expected = ", ".join(f"{config['classes'][i]} {float(probs[i]):.3f}" for i in probs.argsort(descending=True))
    assert first == f"{cat}: {expected}"


def test_resume_continues_and_existing_run_is_protected(photo_folder: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", str(photo_folder), *FAST, "--epochs", "2", "--out", str(run)]) == 0
    first = json.loads((run / "metrics.json").read_text())["history"]
    assert cli.main(["train", str(photo_folder), *FAST, "--epochs", "2", "--out", str(run)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert cli.main(["train", str(photo_folder), *FAST, "--epochs", "3", "--out", str(run), "--resume"]) == 0
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert len(history) == 3 and history[:2] == first
    assert (
        cli.main(
            [
                "train",
                str(photo_folder),
                *FAST[:1],
                "resnet18",
                *FAST[2:],
                "--epochs",
                "3",
                "--out",
                str(run),
                "--resume",
            ]
        )
        == 2
    )
    assert "model" in capsys.readouterr().err


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (lambda root: root / "missing", [], "does not exist"),
        (lambda root: root, [], "no images found"),
        (lambda root: (root / "only").mkdir() or _png(root / "only" / "a.png") or root, [], "only one class"),
        (lambda root: root, ["--model", "resnet999"], "unknown model 'resnet999'"),
        (lambda root: root, ["--model", "simple_cnn", "--mode", "feature"], "no pretrained weights"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path: Path, capsys, make, extra, message):
    (tmp_path / "data").mkdir()
    folder = make(tmp_path / "data")
    args = ["train", str(folder), *FAST, *extra, "--epochs", "1", "--out", str(tmp_path / "run")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def _png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8), (120, 30, 30)).save(path)


def test_corrupt_image_is_skipped_and_named(photo_folder: Path, tmp_path: Path, capsys):
    broken = photo_folder / "coffee" / "broken.png"
    broken.write_bytes((photo_folder / "coffee" / "0.png").read_bytes()[:200])  # truncated PNG
    (photo_folder / "coffee" / "notes.txt").write_text("not an image")
    assert cli.main(["train", str(photo_folder), *FAST, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"skipping {broken}" in out and "notes.txt" in out
    assert cli.main(["predict", str(tmp_path / "run"), str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"skipped: {broken} is truncated or corrupt" in err and err.strip().endswith(str(broken))


@pytest.mark.slow
def test_weights_unavailable_offline_and_predict_without_run(photo_folder: Path, tmp_path: Path):
    done = run_cli(
        "train",
        str(photo_folder),
        "--model",
        "resnet18",
        "--mode",
        "finetune",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        env={"TLBOOK_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch")},
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ImageNet weights for resnet18") and "efficientnet_lite0" in done.stderr
    assert cli.main(["predict", str(tmp_path / "nothing"), "x.png"]) == 2


def test_ctrl_c_says_how_to_resume(photo_folder: Path, tmp_path: Path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.train, "fit", interrupted)
    run = tmp_path / "run"
    assert cli.main(["train", str(photo_folder), *FAST, "--epochs", "2", "--out", str(run)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err and str(run) in err


# ----------------------------------------------------------------------------- exact answers


def _args(folder, out, *extra):
    return cli.build_parser().parse_args(["train", str(folder), *FAST, "--out", str(out), *extra])


def test_split_is_stratified_disjoint_and_seeded(photo_folder_large: Path):
    split = cli._split_folder(photo_folder_large, 0.25, 3, None, None)
    train_ds, train_eval_ds, val_ds, classes = split
    assert classes == ["chelsea", "coffee"] and (len(train_ds), len(val_ds)) == (30, 10)
    train_idx, val_idx = set(train_ds.indices), set(val_ds.indices)
    assert not train_idx & val_idx and train_idx | val_idx == set(range(40))
    assert train_eval_ds.indices == train_ds.indices
    targets = train_ds.dataset.targets
    assert sorted(targets[i] for i in val_idx) == [0] * 5 + [1] * 5  # stratified
    assert cli._split_folder(photo_folder_large, 0.25, 3, None, None)[2].indices == val_ds.indices
    assert cli._split_folder(photo_folder_large, 0.25, 4, None, None)[2].indices != val_ds.indices
    assert len(cli._split_folder(photo_folder_large, 0.01, 3, None, None)[2]) == 2  # at least one per class


def test_split_uses_train_and_val_folders_when_present(photo_folder: Path, tmp_path: Path):
    import shutil

    root = tmp_path / "split"
    shutil.copytree(photo_folder, root / "train")
    shutil.copytree(photo_folder, root / "val")
    train_ds, _, val_ds, classes = cli._split_folder(root, 0.2, 0, None, None)
    assert (len(train_ds), len(val_ds), classes) == (12, 12, ["chelsea", "coffee"])
    shutil.rmtree(root / "val" / "coffee")
    shutil.copytree(photo_folder / "coffee", root / "val" / "tea")
    with pytest.raises(cli.ImageFolderError, match="has classes"):
        cli._split_folder(root, 0.2, 0, None, None)


def test_resume_names_exactly_the_arguments_that_changed(photo_folder: Path, tmp_path: Path):
    config = {
        "data_dir": "d",
        "model": "m",
        "mode": "feature",
        "classes": ["a"],
        "image_size": 32,
        "seed": 0,
        "val_fraction": 0.2,
        "epochs": 3,
    }
    cli._prepare_run_dir(tmp_path / "run", config, resume=False)
    cli._prepare_run_dir(tmp_path / "run", {**config, "epochs": 9}, resume=True)  # more epochs: allowed
    with pytest.raises(
        cli.CompanionError, match=r"cannot resume .*: seed, val_fraction differ .*seed=0, val_fraction=0.2"
    ):
        cli._prepare_run_dir(tmp_path / "run", {**config, "seed": 1, "val_fraction": 0.3}, resume=True)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 9


def test_finetune_trains_the_head_then_every_stage_with_learning_rates_decaying_by_stage(
    photo_folder: Path, tmp_path: Path, monkeypatch
):
    """Two stages: the new head alone (--head-epochs, frozen body), then every parameter but the
    batch-norm layers', the learning rate halving stage by stage."""
    seen, stages = {}, []

    def record_fit(model, *args, optimizer=None, **kwargs):
        seen["lrs"] = optimizer and [g["lr"] for g in optimizer.param_groups]
        seen["epochs"], seen["lr"] = kwargs["epochs"], kwargs["lr"]
        stages.append(
            (kwargs["epochs"], kwargs["lr"], cli.transfer.trainable_parameters(model), "checkpoint" in kwargs)
        )
        return [{"epoch": 1}]

    monkeypatch.setattr(cli.train, "fit", record_fit)
    create = cli.models.create  # random weights stand in for ImageNet's: only the optimizer is checked
    monkeypatch.setattr(cli.models, "create", lambda name, pretrained=False, **kw: create(name, **kw))
    args = [
        "train",
        str(photo_folder),
        "--model",
        "simple_cnn",
        "--mode",
        "scratch",
        "--epochs",
        "3",
        "--lr",
        "0.01",
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "s"),
    ]
    assert cli.main(args) == 0 and seen["lrs"] is None and (seen["epochs"], seen["lr"]) == (3, 0.01)
    args = [
        "train",
        str(photo_folder),
        "--model",
        "resnet18",
        "--mode",
        "finetune",
        "--epochs",
        "1",
        "--lr",
        "0.01",
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "f"),
    ]
    assert cli.main(args) == 0
    assert seen["lrs"] == pytest.approx([0.01 * 0.5**k for k in range(6)])  # head, layer4 ... stem
    metrics = json.loads((tmp_path / "f" / "metrics.json").read_text())
    resnet = cli.models.create("resnet18", num_classes=2)
    batchnorm = sum(p.numel() for m in resnet.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())
    assert batchnorm == 9600
    assert metrics["trainable_parameters"] == 11_689_512 - 1000 * 513 + 2 * 513 - batchnorm  # 2-way head
    head_stage, body_stage = stages[1:]  # stages[0] is the scratch run
    assert head_stage == (1, 3e-3, 2 * 513, False)  # head alone, no checkpoint of its own
    assert body_stage == (1, 0.01, metrics["trainable_parameters"], True)
    assert (metrics["mode"], metrics["model"], metrics["classes"]) == ("finetune", "resnet18", ["chelsea", "coffee"])


def test_predict_caps_top_k_and_lists_classes_by_probability(photo_folder: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", str(photo_folder), *FAST, "--epochs", "1", "--out", str(run)]) == 0
    image = next((photo_folder / "coffee").glob("*.png"))
    capsys.readouterr()
    assert cli.main(["predict", str(run), str(image), "--top-k", "5"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    pairs = [part.rsplit(" ", 1) for part in line.split(": ", 1)[1].split(", ")]
    assert sorted(c for c, _ in pairs) == ["chelsea", "coffee"]  # 5 asked, 2 classes exist
    probabilities = [float(p) for _, p in pairs]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1, abs=2e-3)


def test_unknown_mode_is_one_error_line(photo_folder: Path, tmp_path: Path, capsys):
    assert cli.main(["train", str(photo_folder), *FAST[:2], "--mode", "distill", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown mode 'distill'; choose one of scratch, feature, finetune"


def test_parser_defaults_are_the_documented_ones():
    args = cli.build_parser().parse_args(["train", "photos", "--out", "run"])
    assert (args.model, args.mode, args.epochs, args.lr, args.batch_size) == (
        "efficientnet_lite0",
        "feature",
        10,
        1e-3,
        32,
    )
    assert (args.image_size, args.val_fraction, args.augment, args.seed, args.resume) == (None, 0.2, True, 0, False)
    assert (args.device, args.workers) == (None, None)
    assert cli.build_parser().parse_args(["train", "p", "--out", "r", "--no-augment"]).augment is False
    assert cli.build_parser().parse_args(["predict", "run", "a.png", "b.png"]).top_k == 3


def test_a_class_with_one_image_and_an_unwritable_run_folder_are_errors(photo_folder: Path, tmp_path: Path, capsys):
    (photo_folder / "tea").mkdir()
    next((photo_folder / "coffee").glob("*.png")).rename(photo_folder / "tea" / "only.png")
    assert cli.main(["train", str(photo_folder), *FAST, "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: classes ['tea'] in {photo_folder} have fewer than 2 images: "
        "one is needed for training and one for validation"
    )
    (photo_folder / "tea" / "only.png").unlink()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["train", str(photo_folder), *FAST, "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write to run folder {blocker / 'run'}") and "choose a writable --out" in err


def test_run_folder_files_are_complete_json(photo_folder: Path, tmp_path: Path):
    run = tmp_path / "run"
    assert cli.main(["train", str(photo_folder), *FAST, "--epochs", "1", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config == {
        "data_dir": str(photo_folder.resolve()),
        "model": "simple_cnn",
        "mode": "scratch",
        "classes": ["chelsea", "coffee"],
        "image_size": 32,
        "epochs": 1,
        "lr": 1e-3,
        "batch_size": 4,
        "seed": 0,
        "val_fraction": 0.2,
        "augment": True,
        "head_epochs": 1,
    }
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_images"] == 10 and metrics["val_images"] == 2 and metrics["device"].startswith("cpu")
    assert metrics["trainable_parameters"] == sum(p.numel() for p in cli.load_run(run)[0].parameters())
    assert [p.name for p in run.glob(".*")] == [".lock"]  # no temporary or probe file left behind


def test_help_says_what_each_option_does():
    """``--help`` is the CLI's manual: each option is listed with what it does and its default."""
    train_help = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    for phrase in [
        "data_dir folder with one sub-folder of images per class (or train/ and val/ folders of them)",
        "--model MODEL one of: alexnet, vgg16, resnet18, resnet50, mobilenet_v2, efficientnet_lite0, simple_cnn",
        "--mode MODE scratch | feature (frozen backbone, new head) | finetune",
        "--out OUT run folder for config, checkpoint, model and metrics",
        "--image-size IMAGE_SIZE input size in pixels (default: the weights' own)",
        "--val-fraction VAL_FRACTION held out when DATA_DIR has no val/ folder",
        "--no-augment no random crops/flips in training",
        "--device DEVICE cuda, mps or cpu (default: the best available)",
        "--workers WORKERS DataLoader worker processes (default: by cores)",
        "--resume continue the run in --out after its last complete epoch",
    ]:
        assert phrase in train_help, phrase
    top = " ".join(cli.build_parser().format_help().split())
    assert (
        "Transfer learning on your own images." in top and "train a classifier on a folder of class sub-folders" in top
    )
    assert "top classes of images, with a trained run folder" in top


# ----------------------------------------------------------------------------- how a run is wired


class _Recorder:
    """Stands in for ``train.fit`` (and records the real ``train.evaluate``): keeps every argument."""

    def __init__(self, monkeypatch):
        self.fits, self.evaluations, self.created = [], [], []
        evaluate, create = cli.train.evaluate, cli.models.create

        def fit(model, train_loader, val_loader, **kwargs):
            self.fits.append({"model": model, "train": train_loader, "val": val_loader, **kwargs})
            return [{"epoch": 1, "val_loss": 0.5}]

        def record_evaluate(*args, **kwargs):
            self.evaluations.append(evaluate(*args, **kwargs))
            return self.evaluations[-1]

        def record_create(name, pretrained=False, **kwargs):  # random weights stand in for ImageNet's
            self.created.append((name, pretrained))
            return create(name, **kwargs)

        monkeypatch.setattr(cli.train, "fit", fit)
        monkeypatch.setattr(cli.train, "evaluate", record_evaluate)
        monkeypatch.setattr(cli.models, "create", record_create)


def _photo(folder: Path, cls: str, i: int):
    from PIL import Image

    with Image.open(folder / cls / f"{i}.png") as im:
        return im.convert("RGB")


def test_scratch_run_passes_its_arguments_through(photo_folder: Path, tmp_path: Path, monkeypatch):
    """Batch size, seed, workers, checkpoint, resume and the two loaders reach ``fit`` as asked."""
    rec, run = _Recorder(monkeypatch), tmp_path / "run"
    extra = [
        "--model",
        "simple_cnn",
        "--mode",
        "scratch",
        "--image-size",
        "40",
        "--batch-size",
        "3",
        "--seed",
        "5",
        "--workers",
        "0",
        "--epochs",
        "2",
        "--lr",
        "0.02",
        "--device",
        "cpu",
        "--out",
        str(run),
    ]
    started = time.perf_counter()
    assert cli.main(["train", str(photo_folder), *extra]) == 0
    wall = time.perf_counter() - started
    call = rec.fits[0]
    assert rec.created == [("simple_cnn", False)] and call.get("optimizer") is None
    assert (call["epochs"], call["lr"], call["checkpoint"], call["resume"]) == (2, 0.02, run / "checkpoint.pt", False)
    train_loader, val_loader = call["train"], call["val"]
    assert (train_loader.batch_size, train_loader.num_workers, val_loader.num_workers) == (3, 0, 0)
    assert train_loader.sampler.shuffle and len(train_loader.sampler) == len(train_loader.dataset)
    assert train_loader.generator.initial_seed() == 5
    assert list(val_loader.sampler) == list(range(len(val_loader.dataset)))  # in order, each once
    assert train_loader.dataset.dataset[0][0].shape == (3, 40, 40)  # augmented: random crop each time
    assert not torch.equal(train_loader.dataset.dataset[0][0], train_loader.dataset.dataset[0][0])
    metrics = json.loads((run / "metrics.json").read_text())
    final = rec.evaluations[-1]
    assert (metrics["val_loss"], metrics["val_accuracy"], metrics["val_images"]) == (
        final["loss"],
        final["accuracy"],
        2,
    )
    assert 0 < metrics["seconds"] < wall
    assert cli.main(["train", str(photo_folder), *extra, "--resume"]) == 0
    assert rec.fits[1]["resume"] is True


def test_no_augment_trains_on_the_evaluation_transform(photo_folder: Path, tmp_path: Path, monkeypatch):
    rec = _Recorder(monkeypatch)
    assert cli.main(["train", str(photo_folder), *FAST, "--no-augment", "--out", str(tmp_path / "r")]) == 0
    train_ds = rec.fits[0]["train"].dataset  # a Subset of the image folder
    image, label = train_ds[0]
    expected = cli.models.eval_transform("simple_cnn", 32)(
        _photo(
            photo_folder, train_ds.dataset.classes[label], Path(train_ds.dataset.samples[train_ds.indices[0]][0]).stem
        )
    )
    assert torch.equal(image, expected)


def test_image_size_defaults_to_the_weights_own_and_the_seed_chooses_the_split(
    photo_folder_large, tmp_path, monkeypatch
):
    rec = _Recorder(monkeypatch)
    base = ["train", str(photo_folder_large), "--model", "simple_cnn", "--mode", "scratch", "--device", "cpu"]
    assert cli.main([*base, "--out", str(tmp_path / "a")]) == 0
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["image_size"] == cli.models.preprocessing("simple_cnn").crop == 32
    assert cli.main([*base, "--seed", "1", "--out", str(tmp_path / "b")]) == 0
    val_a, val_b = (call["val"].dataset.indices for call in rec.fits)
    assert sorted(val_a) != sorted(val_b)
    assert sorted(val_a) == sorted(cli._split_folder(photo_folder_large, 0.2, 0, None, None)[2].indices)


def test_feature_run_trains_a_head_on_features_in_dataset_order(photo_folder: Path, tmp_path: Path, monkeypatch):
    """Features come from the eval transform in dataset order; the trained head ends up in the model."""
    rec, run = _Recorder(monkeypatch), tmp_path / "run"
    args = [
        "train",
        str(photo_folder),
        "--model",
        "resnet18",
        "--mode",
        "feature",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--seed",
        "7",
        "--epochs",
        "3",
        "--lr",
        "0.05",
        "--device",
        "cpu",
        "--out",
        str(run),
    ]
    seen = {}
    extract = cli.transfer.extract_features

    def record_extract(backbone, loader, **kwargs):
        seen.setdefault("loaders", []).append(loader)
        with torch.no_grad():  # the first image through the backbone, by hand
            seen.setdefault("first", []).append(backbone.eval()(loader.dataset[0][0].unsqueeze(0))[0])
        return extract(backbone, loader, **kwargs)

    monkeypatch.setattr(cli.transfer, "extract_features", record_extract)
    assert cli.main(args) == 0
    call = rec.fits[0]
    assert rec.created[0] == ("resnet18", True)
    train_features, val_features = seen["loaders"]
    for loader in seen["loaders"]:
        assert list(loader.sampler) == list(range(len(loader.dataset)))  # in order, each once
    train_eval_ds = train_features.dataset
    assert train_eval_ds.indices == cli._split_folder(photo_folder, 0.2, 7, None, None)[0].indices
    head_train, head_val = call["train"], call["val"]
    assert (head_train.batch_size, head_train.shuffle, head_val.shuffle) == (4, True, False)
    assert head_train.generator.initial_seed() == 7
    assert head_train.labels.tolist() == [train_eval_ds.dataset.targets[i] for i in train_eval_ds.indices]
    assert torch.allclose(head_train.inputs[0], seen["first"][0], atol=1e-5)  # eval transform: not augmented
    assert torch.allclose(head_val.inputs[0], seen["first"][1], atol=1e-5)
    assert (call["epochs"], call["lr"], call["checkpoint"], call["resume"]) == (3, 0.05, run / "checkpoint.pt", False)
    head = call["model"]
    model, _ = cli.load_run(run)
    assert torch.equal(model.fc.weight, head[-1].weight.detach()) and torch.equal(model.fc.bias, head[-1].bias.detach())
    assert json.loads((run / "metrics.json").read_text())["trainable_parameters"] == 512 * 2 + 2


@pytest.mark.parametrize("key", ["data_dir", "model", "mode", "classes", "image_size", "seed", "val_fraction"])
def test_resume_refuses_each_argument_that_fixes_the_run(tmp_path: Path, key: str):
    config = {
        "data_dir": "d",
        "model": "m",
        "mode": "feature",
        "classes": ["a"],
        "image_size": 32,
        "seed": 0,
        "val_fraction": 0.2,
    }
    run = tmp_path / "runs" / "nested" / "run"  # parent folders are created
    cli._prepare_run_dir(run, config, resume=False)
    assert (run / "config.json").read_text() == json.dumps(config, indent=2)  # readable by a person
    with pytest.raises(cli.CompanionError, match=rf"cannot resume .*: {key} differ"):
        cli._prepare_run_dir(run, {**config, key: "changed"}, resume=True)


def test_split_folder_gives_each_part_its_transform(photo_folder: Path, tmp_path: Path):
    import shutil

    train_tf, eval_tf = object(), object()  # stand-ins: only which one goes where is checked
    train_ds, train_eval_ds, val_ds, _ = cli._split_folder(photo_folder, 0.2, 0, train_tf, eval_tf)
    assert (train_ds.dataset.transform, train_eval_ds.dataset.transform, val_ds.dataset.transform) == (
        train_tf,
        eval_tf,
        eval_tf,
    )
    root = tmp_path / "split"
    shutil.copytree(photo_folder, root / "train")
    shutil.copytree(photo_folder, root / "val")
    train_ds, train_eval_ds, val_ds, _ = cli._split_folder(root, 0.2, 0, train_tf, eval_tf)
    assert (train_ds.transform, train_eval_ds.transform, val_ds.transform) == (train_tf, eval_tf, eval_tf)
    shutil.rmtree(root / "val")  # train/ alone is not a train/val layout: train/ is then one class folder
    with pytest.raises(cli.ImageFolderError, match="only one class"):
        cli._split_folder(root, 0.2, 0, train_tf, eval_tf)


def test_every_class_gets_a_validation_image_even_a_small_one(photo_folder: Path, tmp_path: Path, capsys):
    """6 + 2 images at 0.2: scikit-learn's stratified split gave both validation images to the
    larger class; each class now gives round(0.2 * n), at least one, and keeps one for training."""
    for extra in sorted((photo_folder / "coffee").glob("*.png"))[2:]:
        extra.unlink()
    train_ds, _, val_ds, _ = cli._split_folder(photo_folder, 0.2, 0, None, None)
    targets = train_ds.dataset.targets
    assert sorted(targets[i] for i in val_ds.indices) == [0, 1] and len(train_ds) == 6
    kept, held_out = cli._stratified_split([0] * 10 + [1] * 5, 0.99, 0)
    assert [i < 10 for i in kept] == [True, False] and len(held_out) == 13  # one of each kept for training
    assert cli.main(["train", str(photo_folder), *FAST, "--val-fraction", "1.5", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == ("error: --val-fraction must be between 0 and 1, e.g. 0.2, got 1.5")
