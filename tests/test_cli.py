"""The command line end to end on a small folder of real photos (chelsea vs coffee crops)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from companion import cli

FAST = ["--model", "simple_cnn", "--mode", "scratch", "--image-size", "32", "--batch-size", "4", "--device", "cpu"]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "companion", *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TLBOOK_PROGRESS": "0", **(env or {})},
    )


def test_train_then_predict_as_a_reader_would(photo_folder: Path, tmp_path: Path):
    run = tmp_path / "run"
    done = run_cli("train", str(photo_folder), *FAST, "--epochs", "2", "--out", str(run))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val_images"] == 2 and metrics["val_accuracy"] in (0.0, 0.5, 1.0)  # plumbing, not accuracy
    assert metrics["classes"] == ["chelsea", "coffee"]
    assert len(metrics["history"]) == 2 and (run / "checkpoint.pt").is_file() and (run / "model.pt").is_file()
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
    args = ["train", str(photo_folder_large), "--model", "efficientnet_lite0", "--mode", "feature", "--epochs", "15",
            "--image-size", "96", "--val-fraction", "0.5", "--device", "cpu", "--batch-size", "8", "--out", str(out)]
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
    assert cli.main(["train", str(photo_folder), "--model", "efficientnet_lite0", "--mode", "feature", "--epochs", "2",
                     "--image-size", "64", "--device", "cpu", "--batch-size", "8", "--out", str(out)]) == 0
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
    assert cli.main(["train", str(photo_folder), *FAST[:1], "resnet18", *FAST[2:], "--epochs", "3", "--out", str(run), "--resume"]) == 2
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
    assert f"cannot read {broken}" in capsys.readouterr().err


def test_weights_unavailable_offline_and_predict_without_run(photo_folder: Path, tmp_path: Path):
    done = run_cli("train", str(photo_folder), "--model", "resnet18", "--mode", "finetune", "--epochs", "1",
                   "--out", str(tmp_path / "run"), env={"TLBOOK_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch")})
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
    config = {"data_dir": "d", "model": "m", "mode": "feature", "classes": ["a"], "image_size": 32, "seed": 0,
              "val_fraction": 0.2, "epochs": 3}
    cli._prepare_run_dir(tmp_path / "run", config, resume=False)
    cli._prepare_run_dir(tmp_path / "run", {**config, "epochs": 9}, resume=True)  # more epochs: allowed
    with pytest.raises(cli.CompanionError, match=r"cannot resume .*: seed, val_fraction differ .*seed=0, val_fraction=0.2"):
        cli._prepare_run_dir(tmp_path / "run", {**config, "seed": 1, "val_fraction": 0.3}, resume=True)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 9


def test_finetune_trains_every_parameter_with_learning_rates_decaying_by_stage(photo_folder: Path, tmp_path: Path, monkeypatch):
    seen = {}

    def record_fit(model, *args, optimizer=None, **kwargs):
        seen["lrs"] = optimizer and [g["lr"] for g in optimizer.param_groups]
        seen["epochs"], seen["lr"] = kwargs["epochs"], kwargs["lr"]
        return [{"epoch": 1}]

    monkeypatch.setattr(cli.train, "fit", record_fit)
    create = cli.models.create  # random weights stand in for ImageNet's: only the optimizer is checked
    monkeypatch.setattr(cli.models, "create", lambda name, pretrained=False, **kw: create(name, **kw))
    args = ["train", str(photo_folder), "--model", "simple_cnn", "--mode", "scratch", "--epochs", "3", "--lr", "0.01",
            "--image-size", "32", "--device", "cpu", "--out", str(tmp_path / "s")]
    assert cli.main(args) == 0 and seen["lrs"] is None and (seen["epochs"], seen["lr"]) == (3, 0.01)
    args = ["train", str(photo_folder), "--model", "resnet18", "--mode", "finetune", "--epochs", "1", "--lr", "0.01",
            "--image-size", "32", "--device", "cpu", "--out", str(tmp_path / "f")]
    assert cli.main(args) == 0
    assert seen["lrs"] == pytest.approx([0.01 * 0.5**k for k in range(6)])  # head, layer4 ... stem
    metrics = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert metrics["trainable_parameters"] == 11_689_512 - 1000 * 513 + 2 * 513  # all of ResNet-18, 2-way head
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
    assert (args.model, args.mode, args.epochs, args.lr, args.batch_size) == ("efficientnet_lite0", "feature", 10, 1e-3, 32)
    assert (args.image_size, args.val_fraction, args.augment, args.seed, args.resume) == (None, 0.2, True, 0, False)
    assert (args.device, args.workers) == (None, None)
    assert cli.build_parser().parse_args(["train", "p", "--out", "r", "--no-augment"]).augment is False
    assert cli.build_parser().parse_args(["predict", "run", "a.png", "b.png"]).top_k == 3


def test_a_class_with_one_image_and_an_unwritable_run_folder_are_errors(photo_folder: Path, tmp_path: Path, capsys):
    (photo_folder / "tea").mkdir()
    next((photo_folder / "coffee").glob("*.png")).rename(photo_folder / "tea" / "only.png")
    assert cli.main(["train", str(photo_folder), *FAST, "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: classes ['tea'] in {photo_folder} have fewer than 2 images: "
                                               "one is needed for training and one for validation")
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
    assert config == {"data_dir": str(photo_folder.resolve()), "model": "simple_cnn", "mode": "scratch",
                      "classes": ["chelsea", "coffee"], "image_size": 32, "epochs": 1, "lr": 1e-3, "batch_size": 4,
                      "seed": 0, "val_fraction": 0.2, "augment": True}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_images"] == 10 and metrics["val_images"] == 2 and metrics["device"].startswith("cpu")
    assert metrics["trainable_parameters"] == sum(p.numel() for p in cli.load_run(run)[0].parameters())
    assert not list(run.glob(".*"))  # no temporary or probe file left behind


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
    assert "Transfer learning on your own images." in top and "train a classifier on a folder of class sub-folders" in top
    assert "top classes of images, with a trained run folder" in top
