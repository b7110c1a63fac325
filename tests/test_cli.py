"""The command line end to end on a small folder of real photos (chelsea vs coffee crops)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from marks import real_data

from companion import cli, folders, photos, recipes, runs, transfer

FAST = ["--model", "simple_cnn", "--mode", "scratch", "--image-size", "32", "--batch-size", "4", "--device", "cpu"]


# The photo_folder fixtures crop real photos that ship with scikit-image.
needs_photos = real_data(
    importlib.util.find_spec("skimage") is not None, "needs scikit-image's sample photos (pip install scikit-image)"
)

needs_stamps = real_data(
    photos.DEBIAN_STAMPS.is_dir(), "needs Tux Paint's photos: apt-get install tuxpaint-stamps-default"
)

# One complete epoch record, as fit returns it (the CLI prints it with train.format_history).
EPOCH = {
    "epoch": 1,
    "lr": 1e-3,
    "train_loss": 0.7,
    "train_accuracy": 0.5,
    "val_loss": 0.5,
    "val_accuracy": 0.5,
    "seconds": 0.1,
}


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "companion", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TLBOOK_PROGRESS": "0", **(env or {})},
    )


@pytest.mark.slow
@needs_photos
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


@needs_photos
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
    model, config = runs.load_run(out)  # the saved model is backbone + trained head
    assert config["mode"] == "feature" and model.classifier.out_features == 2


@needs_stamps
def test_train_and_predict_on_a_slice_of_the_real_colour_photos(tmp_path: Path, capsys):
    """Birds, fruit and mammals, 8 training and 4 validation photos each, at 96 px: a probe on
    ImageNet features. 12 validation images: at chance (1/3), 0.75 or more has probability 5e-3."""
    full = photos.write_photo_folder(tmp_path / "photos")
    folder = tmp_path / "slice"
    for split, n in (("train", 8), ("val", 4)):
        for cls in ("bird", "fruit", "mammal"):
            (folder / split / cls).mkdir(parents=True)
            for image in sorted((full / split / cls).glob("*.png"))[:n]:
                (folder / split / cls / image.name).write_bytes(image.read_bytes())
    out = tmp_path / "run"
    argv = ["train", str(folder), "--model", "efficientnet_lite0", "--mode", "feature", "--epochs", "20"]
    assert cli.main([*argv, "--image-size", "96", "--device", "cpu", "--workers", "0", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["bird", "fruit", "mammal"] and metrics["train_images"] == 24
    assert metrics["val_images"] == 12 and metrics["val_accuracy"] >= 0.75
    capsys.readouterr()
    test_images = [str(sorted((full / "test" / cls).glob("*.png"))[0]) for cls in ("bird", "fruit", "mammal")]
    assert cli.main(["predict", str(out), *test_images, "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(re.search(r": (bird|fruit|mammal) [01]\.\d{3}$", line) for line in lines)


@needs_photos
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

    model, config = runs.load_run(out)
    transform = models.eval_transform(config["model"], config["image_size"])
    with torch.inference_mode(), Image.open(cat) as im:
        probs = model.eval()(transform(im.convert("RGB")).unsqueeze(0)).softmax(1)[0]
    expected = ", ".join(f"{config['classes'][i]} {float(probs[i]):.3f}" for i in probs.argsort(descending=True))
    assert first == f"{cat}: {expected}"


@needs_photos
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
    assert not (tmp_path / "run").exists()  # refused before anything is written


def _refused_by_argparse(capsys, argv: list[str]) -> str:
    """The one ``error:`` line on stderr of ``cli.main(argv)``, which must stop with status 2."""
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert err.count("error:") == 1 and out == ""
    return lines[0]


HELP = "Fix: see `python -m companion train --help`"


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--epochs", "0"], f"error: argument --epochs: must be 1 or more, got 0. {HELP}"),
        (["--epochs", "two"], f"error: argument --epochs: must be 1 or more, got 'two'. {HELP}"),
        (["--batch-size", "-3"], f"error: argument --batch-size: must be 1 or more, got -3. {HELP}"),
        (["--head-epochs", "-1"], f"error: argument --head-epochs: must be 0 or more, got -1. {HELP}"),
        (["--lr", "0"], f"error: argument --lr: must be a number above 0, e.g. 1e-3, got 0. {HELP}"),
        (["--lr", "nan"], f"error: argument --lr: must be a number above 0, e.g. 1e-3, got nan. {HELP}"),
        (
            ["--val-fraction", "1.5"],
            f"error: argument --val-fraction: must be between 0 and 1, e.g. 0.2, got 1.5. {HELP}",
        ),
        (["--image-size", "7"], f"error: argument --image-size: must be 8 pixels or more, got 7. {HELP}"),
        (["--seed", "-1"], f"error: argument --seed: must be 0 or more, got -1. {HELP}"),
        (["--workers", "-2"], f"error: argument --workers: must be 0 or more, got -2. {HELP}"),
    ],
)
def test_an_argument_out_of_range_is_one_argparse_line_and_exit_2(tmp_path: Path, capsys, extra, expected):
    out = tmp_path / "run"
    assert _refused_by_argparse(capsys, ["train", str(tmp_path), *extra, "--out", str(out)]) == expected
    assert not out.exists()  # nothing written


def _choices(*names: str) -> str:
    """argparse's list of choices (quoted or not, as the Python version writes it) as a regex."""
    return ", ".join(f"'?{re.escape(n)}'?" for n in names)


def test_unknown_model_and_mode_are_argparse_choices(tmp_path: Path, capsys):
    out = tmp_path / "run"
    line = _refused_by_argparse(capsys, ["train", str(tmp_path), "--model", "resnet999", "--out", str(out)])
    names = cli.models.names()
    assert re.fullmatch(
        rf"error: argument --model: invalid choice: 'resnet999' \(choose from {_choices(*names)}\)\. {re.escape(HELP)}",
        line,
    ), line
    line = _refused_by_argparse(capsys, ["train", str(tmp_path), "--mode", "distill", "--out", str(out)])
    assert re.fullmatch(
        rf"error: argument --mode: invalid choice: 'distill' \(choose from {_choices(*cli.MODES)}\)\. {re.escape(HELP)}",
        line,
    ), line
    assert not out.exists()


def test_an_argument_error_from_the_real_process_is_one_line_and_status_2(tmp_path: Path):
    out = tmp_path / "run"
    done = run_cli("train", str(tmp_path), "--epochs", "0", "--out", str(out))
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: argument --epochs: must be 1 or more, got 0. {HELP}"]
    assert not out.exists()


def _png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8), (120, 30, 30)).save(path)


@needs_photos
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
@needs_photos
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


@needs_photos
def test_ctrl_c_says_how_to_resume(photo_folder: Path, tmp_path: Path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.train, "fit", interrupted)
    run = tmp_path / "run"
    assert cli.main(["train", str(photo_folder), *FAST, "--epochs", "2", "--out", str(run)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err and str(run) in err


# ----------------------------------------------------------------------------- exact answers


@needs_photos
def test_finetune_trains_the_head_then_every_stage_with_learning_rates_decaying_by_stage(
    photo_folder: Path, tmp_path: Path, monkeypatch
):
    """Two stages: the new head alone (--head-epochs, frozen body), then every parameter but the
    batch-norm layers', the learning rate halving stage by stage."""
    seen, stages = {}, []

    def record_fit(model, *args, optimizer, **kwargs):
        seen["lrs"], seen["epochs"] = [g["lr"] for g in optimizer.param_groups], kwargs["epochs"]
        stages.append(
            (kwargs["epochs"], seen["lrs"][0], cli.transfer.trainable_parameters(model), "checkpoint" in kwargs)
        )
        return [dict(EPOCH)]

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
    assert cli.main(args) == 0 and (seen["lrs"], seen["epochs"]) == ([0.01], 3)  # one group: every parameter
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


def _recipe_recorder(monkeypatch) -> list[tuple[str, dict]]:
    """Stand-ins for the three recipes the CLI calls (``recipes.X`` inside cli.py): each records
    its keyword arguments and returns an untrained result, so only what the CLI passes is checked."""
    calls = []

    def network(name):
        def recipe(model, *args, **kwargs):
            calls.append((name, kwargs))
            return recipes.RecipeResult(model, [dict(EPOCH)], name, 0)

        return recipe

    def train_probe(train_features, val_features=None, *, num_classes, **kwargs):
        calls.append(("train_probe", kwargs))
        head = transfer.linear_probe(train_features[0].shape[1], num_classes)
        return recipes.RecipeResult(head, [dict(EPOCH)], "train_probe", 0)

    monkeypatch.setattr(recipes, "fine_tune", network("fine_tune"))
    monkeypatch.setattr(recipes, "train_from_scratch", network("train_from_scratch"))
    monkeypatch.setattr(recipes, "train_probe", train_probe)
    create = cli.models.create  # random weights stand in for ImageNet's: only the learning rate is checked
    monkeypatch.setattr(cli.models, "create", lambda name, pretrained=False, **kw: create(name, **kw))
    return calls


@needs_photos
@pytest.mark.parametrize(
    "mode, model, recipe, default",
    [
        ("finetune", "resnet18", "fine_tune", 1e-4),
        ("feature", "resnet18", "train_probe", 3e-3),
        ("scratch", "simple_cnn", "train_from_scratch", 1e-3),
    ],
)
@pytest.mark.parametrize("given", [None, "0.01"])
def test_each_mode_trains_at_its_own_learning_rate_unless_lr_is_given(
    photo_folder: Path, tmp_path: Path, monkeypatch, capsys, mode, model, recipe, default, given
):
    """Without --lr: 1e-4 for finetune (a pretrained body), 3e-3 for a new head on frozen features,
    1e-3 from scratch; with --lr, that rate in every mode. The effective rate is the one the
    recipe gets, printed, and stored in config.json and metrics.json."""
    calls, run = _recipe_recorder(monkeypatch), tmp_path / "run"
    args = ["train", str(photo_folder), "--model", model, "--mode", mode, "--epochs", "1", "--image-size", "32"]
    args += ["--batch-size", "4", "--device", "cpu", "--out", str(run)] + (["--lr", given] if given else [])
    assert cli.main(args) == 0
    lr = float(given) if given else default
    assert [(name, kwargs["lr"]) for name, kwargs in calls] == [(recipe, lr)]
    assert json.loads((run / "config.json").read_text())["lr"] == lr
    assert json.loads((run / "metrics.json").read_text())["lr"] == lr
    assert f"model {model}, mode {mode}, lr {lr:g}, 32 px" in capsys.readouterr().out


@needs_photos
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


def test_parser_defaults_are_the_documented_ones():
    args = cli.build_parser().parse_args(["train", "photos", "--out", "run"])
    assert (args.model, args.mode, args.epochs, args.lr, args.batch_size, args.head_epochs) == (
        "efficientnet_lite0",
        "feature",
        10,
        None,  # the mode's own rate, cli.DEFAULT_LR
        32,
        1,
    )
    assert cli.DEFAULT_LR == {"feature": 3e-3, "finetune": 1e-4, "scratch": 1e-3}
    assert (args.image_size, args.val_fraction, args.augment, args.seed, args.resume) == (None, 0.2, True, 0, False)
    assert (args.device, args.workers) == (None, None)
    assert cli.build_parser().parse_args(["train", "p", "--out", "r", "--no-augment"]).augment is False
    assert cli.build_parser().parse_args(["predict", "run", "a.png", "b.png"]).top_k == 3


@needs_photos
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


@needs_photos
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
    assert metrics["trainable_parameters"] == sum(p.numel() for p in runs.load_run(run)[0].parameters())
    assert metrics["lr"] == 1e-3 and metrics["mode"] == "scratch"
    assert [p.name for p in run.glob(".*")] == [".lock"]  # no temporary or probe file left behind


def test_help_says_what_each_option_does():
    """``--help`` is the CLI's manual: each option is listed with what it does and its default."""
    train_help = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    for phrase in [
        "data_dir folder with one sub-folder of images per class (or train/ and val/ folders of them)",
        "--model NAME one of: alexnet, vgg16, resnet18, resnet50, mobilenet_v2, efficientnet_lite0, simple_cnn",
        "--mode {scratch,feature,finetune} scratch | feature (frozen backbone, new head) | finetune",
        "--lr LR learning rate (default: the mode's own, feature 3e-3, finetune 1e-4, scratch 1e-3)",
        "--head-epochs HEAD_EPOCHS finetune: epochs of training the new head alone before the backbone is unfrozen",
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
            return [dict(EPOCH)]

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


@needs_photos
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
    assert rec.created == [("simple_cnn", False)]
    assert (call["epochs"], call["checkpoint"], call["resume"]) == (2, run / "checkpoint.pt", False)
    assert [g["lr"] for g in call["optimizer"].param_groups] == [0.02]  # every parameter, at --lr
    assert {id(p) for g in call["optimizer"].param_groups for p in g["params"]} == {
        id(p) for p in call["model"].parameters()
    }
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


@needs_photos
def test_no_augment_trains_on_the_evaluation_transform(photo_folder: Path, tmp_path: Path, monkeypatch):
    rec = _Recorder(monkeypatch)
    assert cli.main(["train", str(photo_folder), *FAST, "--no-augment", "--out", str(tmp_path / "r")]) == 0
    cached = rec.fits[0]["train"].dataset  # without augmentation, every epoch's view is kept
    assert isinstance(cached, folders.TensorCache)
    train_ds = cached.dataset  # a Subset of the image folder
    image, label = train_ds[0]
    expected = cli.models.eval_transform("simple_cnn", 32)(
        _photo(
            photo_folder, train_ds.dataset.classes[label], Path(train_ds.dataset.samples[train_ds.indices[0]][0]).stem
        )
    )
    assert torch.equal(image, expected)


@needs_photos
def test_image_size_defaults_to_the_weights_own_and_the_seed_chooses_the_split(
    photo_folder_large, tmp_path, monkeypatch
):
    rec = _Recorder(monkeypatch)
    base = ["train", str(photo_folder_large), "--model", "simple_cnn", "--mode", "scratch", "--device", "cpu"]
    assert cli.main([*base, "--out", str(tmp_path / "a")]) == 0
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["image_size"] == cli.models.preprocessing("simple_cnn").crop == 32
    assert cli.main([*base, "--seed", "1", "--out", str(tmp_path / "b")]) == 0
    val_a, val_b = (call["val"].dataset.dataset.indices for call in rec.fits)  # TensorCache(Subset)
    assert sorted(val_a) != sorted(val_b)
    assert sorted(val_a) == sorted(runs.split_folder(photo_folder_large, 0.2, 0, None, None)[2].indices)


@needs_photos
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
    extract = cli.inference.extract_features

    def record_extract(backbone, loader, **kwargs):
        seen.setdefault("loaders", []).append(loader)
        with torch.no_grad():  # the first image through the backbone, by hand
            seen.setdefault("first", []).append(backbone.eval()(loader.dataset[0][0].unsqueeze(0))[0])
        return extract(backbone, loader, **kwargs)

    monkeypatch.setattr(cli.inference, "extract_features", record_extract)
    assert cli.main(args) == 0
    call = rec.fits[0]
    assert rec.created[0] == ("resnet18", True)
    train_features, val_features = seen["loaders"]
    for loader in seen["loaders"]:
        assert list(loader.sampler) == list(range(len(loader.dataset)))  # in order, each once
    train_eval_ds = train_features.dataset
    assert train_eval_ds.indices == runs.split_folder(photo_folder, 0.2, 7, None, None)[0].indices
    head_train, head_val = call["train"], call["val"]
    assert (head_train.batch_size, head_train.shuffle, head_val.shuffle) == (4, True, False)
    assert head_train.generator.initial_seed() == 7
    assert head_train.labels.tolist() == [train_eval_ds.dataset.targets[i] for i in train_eval_ds.indices]
    assert torch.allclose(head_train.inputs[0], seen["first"][0], atol=1e-5)  # eval transform: not augmented
    assert torch.allclose(head_val.inputs[0], seen["first"][1], atol=1e-5)
    assert (call["epochs"], call["checkpoint"], call["resume"]) == (3, run / "checkpoint.pt", False)
    head = call["model"]
    assert [g["lr"] for g in call["optimizer"].param_groups] == [0.05]
    assert {id(p) for g in call["optimizer"].param_groups for p in g["params"]} == {id(p) for p in head.parameters()}
    model, _ = runs.load_run(run)
    assert torch.equal(model.fc.weight, head[-1].weight.detach()) and torch.equal(model.fc.bias, head[-1].bias.detach())
    assert json.loads((run / "metrics.json").read_text())["trainable_parameters"] == 512 * 2 + 2
