"""Run folders: splitting an image folder for a run, creating, locking and checking the run
folder (``config.json``), and loading a finished run for inference (:func:`load_run`).

A run folder holds ``config.json`` (what was asked), ``checkpoint.pt`` (the training state
after the last complete epoch), ``model.safetensors`` (the finished model, its configuration
in the file's metadata) and ``metrics.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import filelock
import numpy as np
import torch

from . import folders, models
from .errors import CompanionError, ImageFolderError
from .files import load_checkpoint, load_weights, lock_folder, read_model, write_json

# What a resumed run must share with the run it continues (the rest, such as epochs, may change).
RESUME_KEYS = ("data_dir", "model", "mode", "classes", "image_size", "seed", "val_fraction")


def stratified_split(targets: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of the indices of ``targets`` into (training, validation) indices, class by
    class: each class gives ``round(val_fraction * its images)`` to validation, at least one, and
    keeps at least one for training. (scikit-learn's stratified ``train_test_split`` allocates by
    overall proportion, so a small class can end up with no validation image at all.)"""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie between 0 and 1, got {val_fraction}")
    rng, labels = np.random.default_rng(seed), np.asarray(targets)
    train_idx, val_idx = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        val_idx += members[:n_val].tolist()
        train_idx += members[n_val:].tolist()
    return sorted(train_idx), sorted(val_idx)


def split_folder(root: Path, val_fraction: float, seed: int, train_tf, eval_tf, *, cache=None):
    """``(train dataset, train dataset with eval transform, val dataset, classes)`` for the image
    folder ``root``: its ``train/`` and ``val/`` folders, or a :func:`stratified_split` of it.
    ``cache`` (a :class:`~companion.folders.DecodedCache`) keeps decoded images for later epochs."""
    root = Path(root)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_ds = folders.image_folder(root / "train", train_tf, cache=cache)
        val_ds = folders.image_folder(root / "val", eval_tf, cache=cache)
        if train_ds.classes != val_ds.classes:
            raise ImageFolderError(
                f"{root}/train has classes {train_ds.classes} but {root}/val has {val_ds.classes}. "
                f"Fix: give both the same class sub-folders"
            )
        return train_ds, folders.with_transform(train_ds, eval_tf), val_ds, train_ds.classes
    full_train = folders.image_folder(root, train_tf, cache=cache)
    full_eval = folders.with_transform(full_train, eval_tf)
    targets = full_train.targets
    counts = {c: targets.count(i) for i, c in enumerate(full_train.classes)}
    few = [c for c, n in counts.items() if n < 2]
    if few:
        raise ImageFolderError(
            f"classes {few} in {root} have fewer than 2 images: one is needed for training and one for validation"
        )
    train_idx, val_idx = stratified_split(targets, val_fraction, seed)
    sub = torch.utils.data.Subset
    return sub(full_train, train_idx), sub(full_eval, train_idx), sub(full_eval, val_idx), full_train.classes


def prepare_run_dir(out: Path, config: dict, resume: bool) -> filelock.BaseFileLock:
    """Create or check the run folder ``out``, lock it (:func:`companion.files.lock_folder`) and
    write ``config.json``. A run already there is continued only with ``resume``, and only when
    :data:`RESUME_KEYS` match. Returns the held lock (keep it for the run's duration)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CompanionError(f"--out {out} is a file, not a folder. Fix: choose a folder for the run")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise CompanionError(f"cannot write to run folder {out} ({exc}). Fix: choose a writable --out folder") from exc
    lock = lock_folder(out)
    config_path = out / "config.json"
    if config_path.exists():
        _check_resumable(out, _read_config(config_path, out), config, resume)
    write_json(config_path, config)
    return lock


def _read_config(path: Path, out: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CompanionError(
            f"cannot resume {out}: its config.json is unreadable ({exc}). Fix: start a new run in another --out folder"
        ) from None


def _check_resumable(out: Path, old: dict, config: dict, resume: bool) -> None:
    if not resume:
        raise CompanionError(
            f"{out} already holds a run. Fix: pass --resume to continue it, or choose another --out folder"
        )
    changed = [k for k in RESUME_KEYS if old.get(k) != config.get(k)]
    if changed:
        raise CompanionError(
            f"cannot resume {out}: {', '.join(changed)} differ from the run there "
            f"({', '.join(f'{k}={old.get(k)!r}' for k in changed)}). Fix: use the same arguments, or another --out folder"
        )


def load_run(run_dir: str | Path) -> tuple[torch.nn.Module, dict]:
    """The finished model of a run folder, in eval mode on the CPU, and its config (classes,
    model, image size): ``RUN_DIR/model.safetensors``, or ``model.pt`` from runs written before
    the companion exported safetensors (loaded with ``weights_only=True``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "does not exist" if not run_dir.exists() else "is a file, not a run folder"
        raise CompanionError(f"run folder {run_dir} {what}. Fix: give the --out folder of a `train` run")
    path, old = run_dir / "model.safetensors", run_dir / "model.pt"
    if path.is_file():
        state, config = read_model(path)
    elif old.is_file():
        ckpt = load_checkpoint(old)
        state, config = ckpt["model"], ckpt.get("config")
        if not isinstance(config, dict):
            raise CompanionError(f"{old} holds no run configuration. Fix: train the run again")
    else:
        raise CompanionError(
            f"no finished model in {run_dir} (expected {path.name}). Fix: run "
            f"`python -m companion train ... --out {run_dir}` to the end (or with --resume)"
        )
    try:
        model = models.create(config["model"], num_classes=len(config["classes"]))
    except (KeyError, TypeError) as exc:
        raise CompanionError(f"the run configuration in {run_dir} lacks {exc}. Fix: train the run again") from None
    load_weights(model, state, what=str(path if path.is_file() else old))
    return model.eval(), config
