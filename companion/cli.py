"""Command line: transfer-learn on your own folder of images, then predict with the result.

::

    python -m companion train photos/ --model efficientnet_lite0 --mode feature --epochs 10 --out runs/photos
    python -m companion train photos/ --model efficientnet_lite0 --mode finetune --epochs 5 --out runs/photos-ft
    python -m companion train photos/ ... --out runs/photos-ft --resume     # after an interruption
    python -m companion predict runs/photos cat.jpg dog.png --top-k 3

``DATA_DIR`` holds one sub-folder of images per class, or ``train/`` and ``val/`` folders that
each hold them. Without ``val/`` a seeded, class-stratified part (``--val-fraction``) is held
out for validation.

``RUN_DIR`` receives ``config.json`` (what was asked), ``checkpoint.pt`` (training state after
the last complete epoch, written atomically; ``--resume`` continues from it), ``model.safetensors``
(the finished model, with its architecture and classes in the file's metadata; loading it never
unpickles anything; ``predict`` also reads the ``model.pt`` of older runs) and ``metrics.json`` (``val_accuracy``, ``val_loss``, history,
sources of data and weights).

Modes: ``scratch`` trains the architecture from random weights; ``feature`` freezes the
ImageNet-pretrained backbone, extracts its features once and trains a new linear head on them;
``finetune`` trains the new head alone for ``--head-epochs``, then the whole pretrained network
with batch-norm statistics frozen and smaller learning rates for lower stages.

Several GPUs (or CPU processes): ``torchrun --nproc_per_node=N -m companion train ...`` trains
data-parallel (``--batch-size`` per process; see :mod:`companion.distributed`).

Bad input (a missing folder or a file in its place, no images, one class, an argument out of
its range, an unknown model, weights unavailable offline, an existing run without ``--resume``,
a run folder another ``train`` is writing to) ends with one line on stderr, ``error: ...``,
and exit status 2, before anything is written; unreadable image files are skipped and listed
(README: the full list).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import data, distributed, export, hardware, models, provenance, recipes, train, transfer
from .errors import CompanionError, ImageFolderError, UnreadableImageError

MODES = ("scratch", "feature", "finetune")


# ----------------------------------------------------------------------------- files in RUN_DIR


def write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` as JSON atomically (:func:`companion.train.atomic_write`)."""
    train.atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def _prepare_run_dir(out: Path, config: dict, resume: bool):
    """Create or check ``RUN_DIR``, lock it (:func:`_lock_run_dir`) and write ``config.json``;
    returns the lock, which the caller keeps for the run's duration."""
    if out.exists() and not out.is_dir():
        raise CompanionError(f"--out {out} is a file, not a folder. Fix: choose a folder for the run")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise CompanionError(f"cannot write to run folder {out} ({exc}). Fix: choose a writable --out folder") from exc
    lock = _lock_run_dir(out)
    config_path = out / "config.json"
    if config_path.exists():
        if not resume:
            raise CompanionError(
                f"{out} already holds a run. Fix: pass --resume to continue it, or choose another --out folder"
            )
        try:
            old = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise CompanionError(
                f"cannot resume {out}: its config.json is unreadable ({exc}). Fix: start a new run in another --out folder"
            ) from None
        changed = [
            k
            for k in ("data_dir", "model", "mode", "classes", "image_size", "seed", "val_fraction")
            if old.get(k) != config.get(k)
        ]
        if changed:
            raise CompanionError(
                f"cannot resume {out}: {', '.join(changed)} differ from the run there "
                f"({', '.join(f'{k}={old.get(k)!r}' for k in changed)}). Fix: use the same arguments, or another --out folder"
            )
    write_json(config_path, config)
    return lock


# ----------------------------------------------------------------------------- data


def _stratified_split(targets: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of the indices of ``targets`` into (training, validation) indices, class by
    class: each class gives ``round(val_fraction * its images)`` to validation, at least one, and
    keeps at least one for training. (scikit-learn's stratified ``train_test_split`` allocates by
    overall proportion, so a small class can end up with no validation image at all.)"""
    if not 0 < val_fraction < 1:
        raise CompanionError(
            f"--val-fraction must lie between 0 and 1, got {val_fraction}. Fix: e.g. --val-fraction 0.2"
        )
    rng, labels = np.random.default_rng(seed), np.asarray(targets)
    train_idx, val_idx = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        val_idx += members[:n_val].tolist()
        train_idx += members[n_val:].tolist()
    return sorted(train_idx), sorted(val_idx)


def _split_folder(root: Path, val_fraction: float, seed: int, train_tf, eval_tf):
    """(train dataset, train dataset with eval transform, val dataset, classes) for ``root``."""
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_ds = data.image_folder(root / "train", train_tf)
        val_ds = data.image_folder(root / "val", eval_tf)
        if train_ds.classes != val_ds.classes:
            raise ImageFolderError(
                f"{root}/train has classes {train_ds.classes} but {root}/val has {val_ds.classes}. "
                f"Fix: give both the same class sub-folders"
            )
        return train_ds, data.with_transform(train_ds, eval_tf), val_ds, train_ds.classes
    full_train = data.image_folder(root, train_tf)
    full_eval = data.with_transform(full_train, eval_tf)
    targets = full_train.targets
    counts = {c: targets.count(i) for i, c in enumerate(full_train.classes)}
    few = [c for c, n in counts.items() if n < 2]
    if few:
        raise ImageFolderError(
            f"classes {few} in {root} have fewer than 2 images: one is needed for training and one for validation"
        )
    train_idx, val_idx = _stratified_split(targets, val_fraction, seed)
    sub = torch.utils.data.Subset
    return sub(full_train, train_idx), sub(full_eval, train_idx), sub(full_eval, val_idx), full_train.classes


# ----------------------------------------------------------------------------- train


def _check_arguments(args: argparse.Namespace) -> None:
    """Every numeric ``train`` argument against its meaning, before anything is read or written."""
    import math

    rules = [
        ("--epochs", args.epochs, args.epochs >= 1, "1 or more"),
        ("--batch-size", args.batch_size, args.batch_size >= 1, "1 or more"),
        ("--lr", args.lr, math.isfinite(args.lr) and args.lr > 0, "a number above 0, e.g. 1e-3"),
        ("--val-fraction", args.val_fraction, 0 < args.val_fraction < 1, "between 0 and 1, e.g. 0.2"),
        ("--head-epochs", args.head_epochs, args.head_epochs >= 0, "0 or more"),
        ("--image-size", args.image_size, args.image_size is None or args.image_size >= 8, "8 pixels or more"),
        ("--workers", args.workers, args.workers is None or args.workers >= 0, "0 or more"),
        ("--seed", args.seed, args.seed >= 0, "0 or more"),
    ]
    for name, value, ok, accepted in rules:
        if not ok:
            raise CompanionError(f"{name} must be {accepted}, got {value}")


def _lock_run_dir(out: Path):
    """Hold ``RUN_DIR/.lock`` for this process (released when it ends, even killed): a second
    ``train`` on the same folder stops instead of writing over the first one's files. Returns
    the open lock file (keep it); no lock where ``fcntl`` does not exist (Windows)."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = (out / ".lock").open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise CompanionError(
            f"another `train` is writing to {out}. Fix: wait for it to finish, or choose another --out folder"
        ) from None
    return handle


def _check_model_and_mode(name: str, mode: str) -> None:
    models.spec(name)  # unknown model: error before touching the data
    if mode not in MODES:
        raise CompanionError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode != "scratch" and models.spec(name).source == "companion":
        raise CompanionError(
            f"{name} has no pretrained weights, so --mode {mode} is impossible. Fix: --mode scratch, or another --model"
        )


def _transforms(name: str, size: int, augment: bool):
    """(training transform, evaluation transform) of ``name`` at ``size`` pixels; the training one
    adds random crops and flips only when ``augment``."""
    eval_tf = models.eval_transform(name, size)
    return (models.train_transform(name, size) if augment else eval_tf), eval_tf


def _run_config(args: argparse.Namespace, root: Path, size: int, classes: list[str]) -> dict:
    """What was asked, as stored in ``RUN_DIR/config.json`` (``--resume`` compares against it)."""
    return {
        "data_dir": str(root.resolve()),
        "model": args.model,
        "mode": args.mode,
        "classes": classes,
        "image_size": size,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "val_fraction": args.val_fraction,
        "augment": args.augment,
        "head_epochs": args.head_epochs,
    }


def _loaders(args: argparse.Namespace, device: torch.device):
    """``loader(dataset, shuffle)`` with the run's batch size, seed, device and workers."""

    def loader(ds, shuffle: bool):
        return data.make_loader(ds, args.batch_size, shuffle, seed=args.seed, device=device, num_workers=args.workers)

    return loader


def _fit_feature_head(args, splits, loader, device, checkpoint: Path):
    """Feature mode: the frozen pretrained backbone's features of every image, extracted once (eval
    transform, dataset order), then a new linear head trained on them (:func:`~companion.recipes.train_probe`).

    Returns ``(model, head, history)``: the backbone with the trained head in place, the head alone
    (what was trained), and ``fit``'s history.
    """
    _, train_eval_ds, val_ds, classes = splits
    backbone = models.create(args.model, pretrained=True, num_classes=0).to(device)
    features = transfer.extract_features(backbone, loader(train_eval_ds, False), device=device, progress=None)
    val_features = transfer.extract_features(backbone, loader(val_ds, False), device=device, progress=None)
    probe = recipes.train_probe(
        features,
        val_features,
        num_classes=len(classes),
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=device,
        checkpoint=checkpoint,
        resume=args.resume,
        verbose=True,
    )
    model = backbone.cpu()
    models.replace_head(model, args.model, len(classes))
    transfer.load_probe_head(model, args.model, probe.model)
    return model, probe.model, probe.history


def _fit_network(args, splits, loader, device, checkpoint: Path):
    """Scratch mode (:func:`~companion.recipes.train_from_scratch`, random weights) or finetune mode
    (:func:`~companion.recipes.fine_tune`: pretrained weights, ``--head-epochs`` of the new head alone, then
    every stage with batch-norm statistics frozen and learning rates halving stage by stage from
    the head down). Returns ``(model, history)``."""
    train_ds, _, val_ds, classes = splits
    model = models.create(args.model, pretrained=args.mode == "finetune", num_classes=len(classes))
    common = dict(
        epochs=args.epochs, lr=args.lr, seed=args.seed, device=device, checkpoint=checkpoint, resume=args.resume
    )
    if args.mode == "finetune":
        result = recipes.fine_tune(
            model,
            args.model,
            loader(train_ds, True),
            loader(val_ds, False),
            head_epochs=args.head_epochs,
            decay=0.5,
            **common,
        )
    else:
        result = recipes.train_from_scratch(model, loader(train_ds, True), loader(val_ds, False), **common)
    return model, result.history


def train_command(args: argparse.Namespace) -> dict:
    """``python -m companion train``: returns the metrics written to ``RUN_DIR/metrics.json``.

    Started by ``torchrun --nproc_per_node=N``, the N processes train one model data-parallel
    (:mod:`companion.distributed`); ``--batch-size`` is then per process, and only the first
    process prints and writes to ``RUN_DIR``."""
    _check_arguments(args)
    _check_model_and_mode(args.model, args.mode)
    device = distributed.init_from_environment(hardware.choose_device(args.device))
    try:
        return _train(args, device)
    finally:
        distributed.shutdown()


def _train(args: argparse.Namespace, device: torch.device) -> dict:
    name, mode, main = args.model, args.mode, distributed.is_main()
    say = print if main else (lambda *_: None)
    root, out = Path(args.data_dir), Path(args.out)
    hardware.seed_everything(args.seed)
    size = args.image_size or models.preprocessing(name).crop
    splits = _split_folder(root, args.val_fraction, args.seed, *_transforms(name, size, args.augment))
    train_ds, _, val_ds, classes = splits
    config = _run_config(args, root, size, classes)
    lock = _prepare_run_dir(out, config, args.resume) if main else None  # noqa: F841 (held to the end)
    distributed.barrier()
    say(f"{len(train_ds)} training / {len(val_ds)} validation images, {len(classes)} classes: {', '.join(classes)}")
    say(
        f"model {name}, mode {mode}, {size} px, device {hardware.describe(device)}, "
        f"{distributed.world_size()} process(es)"
    )
    loader, checkpoint = _loaders(args, device), out / "checkpoint.pt"
    t0 = time.perf_counter()
    if mode == "feature":
        model, trained, history = _fit_feature_head(args, splits, loader, device, checkpoint)
    else:
        model, history = _fit_network(args, splits, loader, device, checkpoint)
        trained = model
    final = train.evaluate(model.to(device), loader(val_ds, False), device=device)
    metrics = {
        "val_accuracy": final["accuracy"],
        "val_loss": final["loss"],
        "val_images": final["n"],
        "train_images": len(train_ds),
        "classes": classes,
        "model": name,
        "mode": mode,
        "trainable_parameters": transfer.trainable_parameters(trained),
        "seconds": time.perf_counter() - t0,
        "history": history,
        "sources": provenance.sources(),
        "device": hardware.describe(device),
        "processes": distributed.world_size(),
    }
    if main:
        export.save_model(out / "model.safetensors", model, config)
        write_json(out / "metrics.json", metrics)
    say(
        f"validation accuracy {final['accuracy']:.3f} on {final['n']} images; model, checkpoint and metrics.json in "
        f"{provenance.short_paths(str(out))}"
    )
    return metrics


# ----------------------------------------------------------------------------- predict


def load_run(run_dir: str | Path) -> tuple[torch.nn.Module, dict]:
    """The finished model of a run folder and its config (classes, model, size):
    ``RUN_DIR/model.safetensors``, or ``model.pt`` from runs written before the companion
    exported safetensors (loaded with ``weights_only=True``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "does not exist" if not run_dir.exists() else "is a file, not a run folder"
        raise CompanionError(f"run folder {run_dir} {what}. Fix: give the --out folder of a `train` run")
    path, old = run_dir / "model.safetensors", run_dir / "model.pt"
    if path.is_file():
        state, config = export.read_model(path)
    elif old.is_file():
        ckpt = train.load_checkpoint(old)
        state, config = ckpt["model"], ckpt["config"]
    else:
        raise CompanionError(
            f"no finished model in {run_dir} (expected {path.name}). Fix: run "
            f"`python -m companion train ... --out {run_dir}` to the end (or with --resume)"
        )
    model = models.create(config["model"], num_classes=len(config["classes"]))
    train.load_weights(model, state, what=str(path if path.is_file() else old))
    return model.eval(), config


def predict_command(args: argparse.Namespace) -> list[dict]:
    """``python -m companion predict``: prints and returns the top-k classes of every image."""
    if args.top_k < 1:
        raise CompanionError(f"--top-k must be 1 or more, got {args.top_k}")
    model, config = load_run(args.run_dir)
    transform = models.eval_transform(config["model"], config["image_size"])
    k = min(args.top_k, len(config["classes"]))
    results, failed = [], []
    for image in args.images:
        try:
            x = transform(data.read_image(image)).unsqueeze(0)
        except UnreadableImageError as exc:  # every way a file can fail to be an image
            print(f"skipped: {exc}", file=sys.stderr)
            failed.append(image)
            continue
        with torch.inference_mode():
            probs = model(x).softmax(1)[0]
        top = probs.topk(k)
        ranked = [(config["classes"][i], float(p)) for p, i in zip(top.values, top.indices)]
        print(f"{provenance.short_paths(str(image))}: " + ", ".join(f"{c} {p:.3f}" for c, p in ranked))
        results.append({"image": str(image), "top": ranked})
    if failed:
        raise CompanionError(
            f"{len(failed)} of {len(args.images)} images could not be read: {', '.join(map(str, failed))}"
        )
    return results


# ----------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m companion", description="Transfer learning on your own images.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a classifier on a folder of class sub-folders")
    t.add_argument(
        "data_dir", help="folder with one sub-folder of images per class (or train/ and val/ folders of them)"
    )
    t.add_argument("--model", default="efficientnet_lite0", help=f"one of: {', '.join(models.names())}")
    t.add_argument("--mode", default="feature", help="scratch | feature (frozen backbone, new head) | finetune")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument(
        "--head-epochs",
        type=int,
        default=1,
        help="finetune: epochs of training the new head alone before the backbone is unfrozen",
    )
    t.add_argument("--out", required=True, help="run folder for config, checkpoint, model and metrics")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--image-size", type=int, default=None, help="input size in pixels (default: the weights' own)")
    t.add_argument("--val-fraction", type=float, default=0.2, help="held out when DATA_DIR has no val/ folder")
    t.add_argument("--no-augment", dest="augment", action="store_false", help="no random crops/flips in training")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    t.add_argument("--workers", type=int, default=None, help="DataLoader worker processes (default: by cores)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out after its last complete epoch")
    t.set_defaults(func=train_command)
    p = sub.add_parser("predict", help="top classes of images, with a trained run folder")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", type=int, default=3)
    p.set_defaults(func=predict_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CompanionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        hint = f"; continue with the same command and --resume (checkpoint in {out})" if out else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return 130
    return 0
