"""Run folders (companion.runs): splitting an image folder for a run, creating, locking and
checking the run folder (config.json, --resume), and loading a finished run."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from marks import real_data

from companion import files, models, runs
from companion.errors import CheckpointError, CompanionError, ImageFolderError

# The photo_folder fixtures crop real photos that ship with scikit-image.
needs_photos = real_data(
    importlib.util.find_spec("skimage") is not None, "needs scikit-image's sample photos (pip install scikit-image)"
)

CONFIG = {
    "data_dir": "d",
    "model": "m",
    "mode": "feature",
    "classes": ["a"],
    "image_size": 32,
    "seed": 0,
    "val_fraction": 0.2,
}


def _prepare(out: Path, config: dict, resume: bool) -> None:
    """``runs.prepare_run_dir`` as one ``train`` runs it: the folder's lock released at the end."""
    runs.prepare_run_dir(out, config, resume).release()


# ----------------------------------------------------------------------------- splits


@needs_photos
def test_split_is_stratified_disjoint_and_seeded(photo_folder_large: Path):
    split = runs.split_folder(photo_folder_large, 0.25, 3, None, None)
    train_ds, train_eval_ds, val_ds, classes = split
    assert classes == ["chelsea", "coffee"] and (len(train_ds), len(val_ds)) == (30, 10)
    train_idx, val_idx = set(train_ds.indices), set(val_ds.indices)
    assert not train_idx & val_idx and train_idx | val_idx == set(range(40))
    assert train_eval_ds.indices == train_ds.indices
    targets = train_ds.dataset.targets
    assert sorted(targets[i] for i in val_idx) == [0] * 5 + [1] * 5  # stratified
    assert runs.split_folder(photo_folder_large, 0.25, 3, None, None)[2].indices == val_ds.indices
    assert runs.split_folder(photo_folder_large, 0.25, 4, None, None)[2].indices != val_ds.indices
    assert len(runs.split_folder(photo_folder_large, 0.01, 3, None, None)[2]) == 2  # at least one per class


@needs_photos
def test_split_uses_train_and_val_folders_when_present(photo_folder: Path, tmp_path: Path):
    root = tmp_path / "split"
    shutil.copytree(photo_folder, root / "train")
    shutil.copytree(photo_folder, root / "val")
    train_ds, _, val_ds, classes = runs.split_folder(root, 0.2, 0, None, None)
    assert (len(train_ds), len(val_ds), classes) == (12, 12, ["chelsea", "coffee"])
    shutil.rmtree(root / "val" / "coffee")
    shutil.copytree(photo_folder / "coffee", root / "val" / "tea")
    with pytest.raises(ImageFolderError, match="has classes"):
        runs.split_folder(root, 0.2, 0, None, None)


@needs_photos
def test_split_folder_gives_each_part_its_transform(photo_folder: Path, tmp_path: Path):
    train_tf, eval_tf = object(), object()  # stand-ins: only which one goes where is checked
    train_ds, train_eval_ds, val_ds, _ = runs.split_folder(photo_folder, 0.2, 0, train_tf, eval_tf)
    assert (train_ds.dataset.transform, train_eval_ds.dataset.transform, val_ds.dataset.transform) == (
        train_tf,
        eval_tf,
        eval_tf,
    )
    root = tmp_path / "split"
    shutil.copytree(photo_folder, root / "train")
    shutil.copytree(photo_folder, root / "val")
    train_ds, train_eval_ds, val_ds, _ = runs.split_folder(root, 0.2, 0, train_tf, eval_tf)
    assert (train_ds.transform, train_eval_ds.transform, val_ds.transform) == (train_tf, eval_tf, eval_tf)
    shutil.rmtree(root / "val")  # train/ alone is not a train/val layout: train/ is then one class folder
    with pytest.raises(ImageFolderError, match="only one class"):
        runs.split_folder(root, 0.2, 0, train_tf, eval_tf)


@needs_photos
def test_every_class_gets_a_validation_image_even_a_small_one(photo_folder: Path):
    """6 + 2 images at 0.2: scikit-learn's stratified split gave both validation images to the
    larger class; each class now gives round(0.2 * n), at least one, and keeps one for training."""
    for extra in sorted((photo_folder / "coffee").glob("*.png"))[2:]:
        extra.unlink()
    train_ds, _, val_ds, _ = runs.split_folder(photo_folder, 0.2, 0, None, None)
    targets = train_ds.dataset.targets
    assert sorted(targets[i] for i in val_ds.indices) == [0, 1] and len(train_ds) == 6


@needs_photos
def test_a_class_with_one_image_cannot_be_split(photo_folder: Path):
    (photo_folder / "tea").mkdir()
    next((photo_folder / "coffee").glob("*.png")).rename(photo_folder / "tea" / "only.png")
    with pytest.raises(ImageFolderError, match=r"classes \['tea'\] in .* have fewer than 2 images"):
        runs.split_folder(photo_folder, 0.2, 0, None, None)


def test_stratified_split_exact_counts_and_seed():
    kept, held_out = runs.stratified_split([0] * 10 + [1] * 5, 0.99, 0)
    assert [i < 10 for i in kept] == [True, False] and len(held_out) == 13  # one of each kept for training
    train_idx, val_idx = runs.stratified_split([0] * 10 + [1] * 5, 0.2, 0)
    assert sorted(train_idx + val_idx) == list(range(15)) and train_idx == sorted(train_idx)
    assert [i < 10 for i in val_idx] == [True, True, False]  # round(0.2 * 10) = 2 and round(0.2 * 5) = 1
    assert runs.stratified_split([0] * 10 + [1] * 5, 0.2, 0) == (train_idx, val_idx)
    assert runs.stratified_split([0] * 10 + [1] * 5, 0.2, 1) != (train_idx, val_idx)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_stratified_split_refuses_a_fraction_outside_0_1_with_a_value_error(fraction):
    with pytest.raises(ValueError, match="val_fraction must lie between 0 and 1") as refused:
        runs.stratified_split([0, 0, 1, 1], fraction, 0)
    assert not isinstance(refused.value, CompanionError)  # a programming error, not bad user input


# ----------------------------------------------------------------------------- the run folder


def test_resume_keys_are_what_fixes_a_run():
    assert runs.RESUME_KEYS == ("data_dir", "model", "mode", "classes", "image_size", "seed", "val_fraction")


def test_an_existing_run_is_refused_without_resume(tmp_path: Path):
    run = tmp_path / "run"
    _prepare(run, {**CONFIG, "epochs": 3}, resume=False)
    with pytest.raises(CompanionError, match=rf"{run} already holds a run\. Fix: pass --resume"):
        _prepare(run, {**CONFIG, "epochs": 3}, resume=False)  # the very same arguments: still refused
    assert json.loads((run / "config.json").read_text())["epochs"] == 3
    _prepare(run, {**CONFIG, "epochs": 3}, resume=True)


def test_resume_names_exactly_the_arguments_that_changed(tmp_path: Path):
    config = {**CONFIG, "epochs": 3}
    _prepare(tmp_path / "run", config, resume=False)
    _prepare(tmp_path / "run", {**config, "epochs": 9}, resume=True)  # more epochs: allowed
    with pytest.raises(CompanionError, match=r"cannot resume .*: seed, val_fraction differ .*seed=0, val_fraction=0.2"):
        _prepare(tmp_path / "run", {**config, "seed": 1, "val_fraction": 0.3}, resume=True)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 9


@pytest.mark.parametrize("key", runs.RESUME_KEYS)
def test_resume_refuses_each_argument_that_fixes_the_run(tmp_path: Path, key: str):
    run = tmp_path / "runs" / "nested" / "run"  # parent folders are created
    _prepare(run, CONFIG, resume=False)
    assert (run / "config.json").read_text() == json.dumps(CONFIG, indent=2) + "\n"  # readable by a person
    with pytest.raises(CompanionError, match=rf"cannot resume .*: {key} differ"):
        _prepare(run, {**CONFIG, key: "changed"}, resume=True)
    assert json.loads((run / "config.json").read_text()) == CONFIG  # the refused run changed nothing


def test_a_run_folder_is_locked_while_its_train_runs(tmp_path: Path):
    run = tmp_path / "run"
    held = runs.prepare_run_dir(run, CONFIG, resume=False)
    try:
        with pytest.raises(CompanionError, match=rf"another `train` is writing to {run}"):
            runs.prepare_run_dir(run, CONFIG, resume=True)
    finally:
        held.release()
    _prepare(run, CONFIG, resume=True)  # free again


def test_out_that_is_a_file_or_unwritable_is_named(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CompanionError, match=rf"--out {blocker} is a file, not a folder"):
        runs.prepare_run_dir(blocker, CONFIG, resume=False)
    with pytest.raises(CompanionError, match=rf"cannot write to run folder {blocker / 'run'} .*writable --out"):
        runs.prepare_run_dir(blocker / "run", CONFIG, resume=False)
    assert blocker.read_text() == "x"


def test_a_corrupt_config_json_is_named_on_resume(tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{not json")
    with pytest.raises(CompanionError, match="its config.json is unreadable"):
        _prepare(out, {"model": "simple_cnn"}, resume=True)
    assert (out / "config.json").read_text() == "{not json"  # left as it was


# ----------------------------------------------------------------------------- finished runs


RUN_CONFIG = {"model": "simple_cnn", "classes": ["a", "b", "c"], "image_size": 32}


def test_load_run_of_a_missing_folder_or_a_file_says_which(tmp_path: Path):
    with pytest.raises(CompanionError, match=rf"run folder {tmp_path / 'absent'} does not exist\. Fix: give the --out"):
        runs.load_run(tmp_path / "absent")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(CompanionError, match="is a file, not a run folder"):
        runs.load_run(tmp_path / "a_file")


def test_load_run_without_a_finished_model_says_how_to_get_one(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    files.write_json(run / "config.json", RUN_CONFIG)
    files.save_checkpoint(run / "checkpoint.pt", models.create("simple_cnn", num_classes=3), epoch=0)
    with pytest.raises(CompanionError, match=r"no finished model in .* \(expected model\.safetensors\).*--resume"):
        runs.load_run(run)  # a checkpoint alone is an unfinished run


def test_load_run_gives_the_saved_model_in_eval_mode(tmp_path: Path):
    model = models.create("simple_cnn", num_classes=3)
    files.save_model(tmp_path / "run" / "model.safetensors", model, RUN_CONFIG)
    loaded, config = runs.load_run(tmp_path / "run")
    assert config == RUN_CONFIG and not loaded.training and loaded.classifier.out_features == 3
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_an_old_model_pt_without_a_usable_config_is_refused(tmp_path: Path):
    model = models.create("simple_cnn", num_classes=3)
    files.save_checkpoint(tmp_path / "old" / "model.pt", model)  # no config at all
    with pytest.raises(CompanionError, match="model.pt holds no run configuration"):
        runs.load_run(tmp_path / "old")
    files.save_checkpoint(tmp_path / "partial" / "model.pt", model, config={"classes": ["a", "b", "c"]})
    with pytest.raises(CompanionError, match=r"the run configuration in .* lacks 'model'"):
        runs.load_run(tmp_path / "partial")


def test_a_model_of_other_classes_than_its_config_is_refused(tmp_path: Path):
    files.save_model(tmp_path / "run" / "model.safetensors", models.create("simple_cnn", num_classes=2), RUN_CONFIG)
    with pytest.raises(CheckpointError, match="class-count mismatch: the checkpoint has 2 classes, the model 3"):
        runs.load_run(tmp_path / "run")
