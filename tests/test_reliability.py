"""Hostile input: random bytes and images of every mode, odd folder trees, out-of-range arguments,
a second run on the same folder, a process killed while writing. The properties: a clear error
(never a traceback or an exception of another kind), exit status 0 or 2, and nothing lost."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marks import real_data
from PIL import Image

from companion import cli, files, folders, models, runs
from companion.errors import CompanionError, ImageFolderError, UnreadableImageError

BOUNDED = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# The photo_folder fixtures crop real photos that ship with scikit-image.
needs_photos = real_data(
    importlib.util.find_spec("skimage") is not None, "needs scikit-image's sample photos (pip install scikit-image)"
)


@BOUNDED
@given(payload=st.binary(max_size=600), suffix=st.sampled_from([".png", ".jpg", ".bmp", ".tif", ".webp"]))
def test_random_bytes_are_an_image_or_a_clear_error(tmp_path: Path, payload: bytes, suffix: str):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(payload)
    try:
        image = folders.read_image(path)
    except UnreadableImageError as exc:
        assert str(path) in str(exc)
    else:
        assert image.mode == "RGB"


def _image(mode: str, rng: np.random.Generator, size=(7, 5)) -> Image.Image:
    h, w = size[1], size[0]
    if mode in ("I;16", "I", "F"):
        values = np.linspace(0, {"I;16": 65535, "I": 100_000, "F": 3.5}[mode], h * w).reshape(h, w)
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        image = Image.fromarray(values.astype(dtype))
        assert image.mode == mode
        return image
    bands = {"1": 1, "L": 1, "LA": 2, "P": 1, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    pixels = rng.integers(0, 256, (h, w, bands), dtype=np.uint8)
    if mode in ("1", "L", "P"):
        return Image.fromarray(pixels[..., 0], "L").convert(mode)
    return Image.fromarray(pixels, {"LA": "LA", "RGB": "RGB", "RGBA": "RGBA", "CMYK": "CMYK"}[mode])


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_every_valid_mode_becomes_rgb_over_its_whole_range(tmp_path: Path, mode: str):
    image = _image(mode, np.random.default_rng(0))
    path = tmp_path / f"x.{'tif' if mode in ('CMYK', 'I;16', 'I', 'F') else 'png'}"
    image.save(path)
    rgb = folders.read_image(path)
    pixels = np.asarray(rgb)
    assert rgb.mode == "RGB" and rgb.size == image.size
    if mode in ("I;16", "I", "F"):  # scaled from their range, not clipped to white
        assert pixels.min() == 0 and pixels.max() == 255


def test_each_way_an_image_fails_is_named(tmp_path: Path, monkeypatch):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64)).save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    expected = {
        "empty.png": "is empty",
        "folder.png": "is a folder",
        "text.png": "not an image PIL can read",
        "dangling.png": "does not exist (or is a broken link)",
        "missing.png": "does not exist",
        "cut.png": "truncated or corrupt",
    }
    for name, reason in expected.items():
        with pytest.raises(UnreadableImageError, match=re.escape(reason)):
            folders.read_image(tmp_path / name)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the decompression-bomb guard
    with pytest.raises(UnreadableImageError, match="too large to decode safely"):
        folders.read_image(good)


names = st.text(alphabet="abcé 漢_-.", min_size=1, max_size=6).filter(lambda n: n.strip(". ") == n and n not in ("",))


@BOUNDED
@given(
    tree=st.dictionaries(
        names,
        st.lists(st.sampled_from(["png", "broken", "hidden", "text", "nested"]), max_size=3),
        max_size=4,
    )
)
def test_random_folder_trees_give_a_dataset_or_a_clear_error(tmp_path_factory, tree: dict):
    root = tmp_path_factory.mktemp("tree")
    for cls, kinds in tree.items():
        (root / cls).mkdir()
        for i, kind in enumerate(kinds):
            target = root / cls / ("sub" if kind == "nested" else "") / f"{'.' if kind == 'hidden' else ''}{i}.png"
            target.parent.mkdir(exist_ok=True)
            if kind == "text":
                target.with_suffix(".txt").write_text("notes")
            elif kind == "broken":
                target.write_bytes(b"\x89PNG broken")
            else:
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(target)
    try:
        ds = folders.image_folder(root, report=False)
    except ImageFolderError:
        return
    assert len(ds.classes) >= 2
    for i in range(len(ds)):
        image, label = ds[i]  # every listed file reads: nothing fails in the middle of training
        assert image.mode == "RGB" and 0 <= label < len(ds.classes)


BAD_VALUES = {
    "--epochs": st.integers(-5, 0),
    "--batch-size": st.integers(-5, 0),
    "--lr": st.sampled_from([0.0, -1e-3, float("inf"), float("nan")]),
    "--val-fraction": st.sampled_from([0.0, 1.0, -0.1, 1.5]),
    "--head-epochs": st.integers(-5, -1),
    "--image-size": st.integers(-5, 7),
}


@BOUNDED
@given(argument=st.sampled_from(sorted(BAD_VALUES)), data_=st.data())
def test_an_out_of_range_argument_is_refused_before_anything_is_written(tmp_path_factory, capsys, argument: str, data_):
    value = data_.draw(BAD_VALUES[argument])
    out = tmp_path_factory.mktemp("runs") / "run"
    with pytest.raises(SystemExit) as stop:  # argparse's type= check: before any command runs
        cli.main(["train", str(tmp_path_factory.getbasetemp()), argument, str(value), "--out", str(out)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and err.count("error:") == 1 and "Traceback" not in err
    assert lines[0].startswith(f"error: argument {argument}: must be") and lines[0].endswith("--help`")
    assert not out.exists()  # nothing written


def test_top_k_below_one_is_refused(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["predict", str(tmp_path), "x.png", "--top-k", "0"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "error: argument --top-k: must be 1 or more, got 0. Fix: see `python -m companion predict --help`\n"
    )


def test_paths_of_the_wrong_kind_name_the_real_cause(tmp_path: Path, capsys):
    a_file = tmp_path / "photos.txt"
    a_file.write_text("x")
    assert cli.main(["train", str(a_file), "--out", str(tmp_path / "r")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert cli.main(["train", str(tmp_path / "absent"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["predict", str(a_file), "x.png"]) == 2
    assert "is a file, not a run folder" in capsys.readouterr().err


@needs_photos
def test_a_second_train_on_the_same_folder_is_refused(photo_folder: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    held = files.lock_folder(out)  # as a running `train` holds it
    try:
        args = ["train", str(photo_folder), "--model", "simple_cnn", "--mode", "scratch", "--out", str(out)]
        assert cli.main(args) == 2
        assert "another `train` is writing to" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the first run's folder untouched
    finally:
        held.release()


WRITER = """
import sys, torch
from torch import nn
from companion import files
model = nn.Linear(1000, 1000)
for epoch in range(10_000):
    with torch.no_grad():
        model.weight.fill_(epoch)
    files.save_checkpoint(sys.argv[1], model, epoch=epoch)
    print(epoch, flush=True)
"""


def test_a_process_killed_while_writing_leaves_a_loadable_checkpoint(tmp_path: Path):
    path = tmp_path / "c.pt"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # a few complete checkpoints, then kill in the middle of the next ones
            writer.stdout.readline()
        time.sleep(0.05)
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.wait(timeout=30)
    ckpt = files.load_checkpoint(path)
    weight = ckpt["model"]["weight"]
    assert ckpt["epoch"] >= 2 and torch.all(weight == ckpt["epoch"])  # whole, and of one epoch


def test_the_exported_model_is_safetensors_and_old_run_folders_still_load(tmp_path: Path):
    model = models.create("simple_cnn", num_classes=3)
    config = {"model": "simple_cnn", "classes": ["a", "b", "c"], "image_size": 32}
    new_run, old_run = tmp_path / "new", tmp_path / "old"
    files.save_model(new_run / "model.safetensors", model, config)
    files.save_checkpoint(old_run / "model.pt", model, config=config)  # a run from before the change
    for run in (new_run, old_run):
        loaded, loaded_config = runs.load_run(run)
        assert loaded_config == config and not loaded.training
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    header = json.loads((new_run / "model.safetensors").read_bytes()[8:][: 2**16].split(b"}}")[0] + b"}}")
    assert json.loads(header["__metadata__"]["config"]) == config
    (new_run / "model.safetensors").write_bytes((new_run / "model.safetensors").read_bytes()[:100])
    with pytest.raises(CompanionError, match="not a readable safetensors file"):
        runs.load_run(new_run)


@needs_photos
def test_predict_names_an_unreadable_image_and_exits_2(photo_folder: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    model = models.create("simple_cnn", num_classes=2)
    files.save_model(
        run / "model.safetensors", model, {"model": "simple_cnn", "classes": ["chelsea", "coffee"], "image_size": 32}
    )
    bomb = tmp_path / "not_an_image.png"
    bomb.write_text("hello")
    good = next((photo_folder / "chelsea").glob("*.png"))
    assert cli.main(["predict", str(run), str(good), str(bomb)]) == 2
    out, err = capsys.readouterr()
    assert str(good) in out and "chelsea" in out
    assert f"skipped: {bomb} is not an image PIL can read" in err
    assert err.strip().splitlines()[-1] == f"error: 1 of 2 images could not be read: {bomb}"
