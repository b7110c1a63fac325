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
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and metrics["classes"] == ["chelsea", "coffee"]
    assert len(metrics["history"]) == 2 and (run / "checkpoint.pt").is_file() and (run / "model.pt").is_file()
    image = next((photo_folder / "chelsea").glob("*.png"))
    predicted = run_cli("predict", str(run), str(image), "--top-k", "2")
    assert predicted.returncode == 0, predicted.stderr
    line = predicted.stdout.strip().splitlines()[-1]
    assert line.startswith(str(image)) and "chelsea" in line and "coffee" in line
    probabilities = [float(tok) for tok in line.split(":")[-1].replace(",", " ").split() if tok[0].isdigit()]
    assert abs(sum(probabilities) - 1.0) < 0.01  # top-2 of 2 classes


def test_feature_mode_with_pretrained_backbone_separates_real_photos(photo_folder: Path, tmp_path: Path):
    out = tmp_path / "feature"
    args = ["train", str(photo_folder), "--model", "efficientnet_lite0", "--mode", "feature", "--epochs", "15",
            "--image-size", "64", "--val-fraction", "0.34", "--device", "cpu", "--batch-size", "8", "--out", str(out)]
    assert cli.main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_images"] == 4 and metrics["val_accuracy"] >= 0.75
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
