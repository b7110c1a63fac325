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

``--lr`` defaults to each mode's own rate: 3e-3 for the new head on frozen features
(``feature``), 1e-4 for ``finetune`` (with 3e-3 for its head stage), 1e-3 for ``scratch``.

Bad input (a missing folder or a file in its place, no images, one class, an argument out of
its range, an unknown model, weights unavailable offline, an existing run without ``--resume``,
a run folder another ``train`` is writing to) ends with one line on stderr, ``error: ...``,
and exit status 2, before anything is written; unreadable image files are skipped and listed
(README: the full list). Argument errors come from argparse's own ``type=`` and ``choices=``
checks, printed on that one line.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from . import distributed, folders, hardware, inference, loaders, models, provenance, recipes, runs, train, transfer
from .errors import CompanionError, UnreadableImageError
from .files import save_model, write_json

MODES = ("scratch", "feature", "finetune")
DEFAULT_LR = {"feature": recipes.HEAD_LR, "finetune": recipes.FINE_TUNE_LR, "scratch": recipes.SCRATCH_LR}


# ----------------------------------------------------------------------------- arguments


def _number(kind, accepted: str, ok):
    """An argparse ``type=``: ``kind(text)``, refused unless ``ok(value)``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {accepted}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {accepted}, got {text}")
        return value

    return parse


POSITIVE = _number(int, "1 or more", lambda v: v >= 1)
NON_NEGATIVE = _number(int, "0 or more", lambda v: v >= 0)
LEARNING_RATE = _number(float, "a number above 0, e.g. 1e-3", lambda v: math.isfinite(v) and v > 0)
FRACTION = _number(float, "between 0 and 1, e.g. 0.2", lambda v: 0 < v < 1)
IMAGE_SIZE = _number(int, "8 pixels or more", lambda v: v >= 8)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, ``error: ...``, and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}. Fix: see `{self.prog} --help`\n")


def _check_model_and_mode(name: str, mode: str) -> None:
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
    """What was asked, as stored in ``RUN_DIR/config.json`` (``--resume`` compares
    :data:`companion.runs.RESUME_KEYS` against it)."""
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


# ----------------------------------------------------------------------------- train


def _cached(splits, augment: bool):
    """The splits of :func:`~companion.runs.split_folder` with every deterministic view kept in
    memory after its first epoch (:class:`~companion.folders.TensorCache`): validation always,
    training too without augmentation. Decoded images are already cached for the random views."""
    train_ds, train_eval_ds, val_ds, classes = splits
    train_ds = train_ds if augment else folders.TensorCache(train_ds)
    return train_ds, train_eval_ds, folders.TensorCache(val_ds), classes


def _fit_feature_head(args, splits, loader, device, checkpoint: Path):
    """Feature mode: the frozen pretrained backbone's features of every image, extracted once (eval
    transform, dataset order), then a new linear head trained on them (:func:`~companion.recipes.train_probe`).

    Returns ``(model, head, history)``: the backbone with the trained head in place, the head alone
    (what was trained), and ``fit``'s history.
    """
    _, train_eval_ds, val_ds, classes = splits
    backbone = hardware.prepare_model(models.create(args.model, pretrained=True, num_classes=0), device)
    features = inference.extract_features(backbone, loader(train_eval_ds, False))
    val_features = inference.extract_features(backbone, loader(val_ds, False))
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
    model = hardware.prepare_model(model, device)
    common = dict(epochs=args.epochs, lr=args.lr, seed=args.seed, checkpoint=checkpoint, resume=args.resume)
    train_loader, val_loader = loader(train_ds, True), loader(val_ds, False)
    if args.mode == "finetune":
        result = recipes.fine_tune(
            model, args.model, train_loader, val_loader, head_epochs=args.head_epochs, decay=0.5, **common
        )
    else:
        result = recipes.train_from_scratch(model, train_loader, val_loader, **common)
    return model, result.history


def train_command(args: argparse.Namespace) -> dict:
    """``python -m companion train``: returns the metrics written to ``RUN_DIR/metrics.json``.

    Started by ``torchrun --nproc_per_node=N``, the N processes train one model data-parallel
    (:mod:`companion.distributed`); ``--batch-size`` is then per process, and only the first
    process prints and writes to ``RUN_DIR``."""
    _check_model_and_mode(args.model, args.mode)
    args.lr = args.lr if args.lr is not None else DEFAULT_LR[args.mode]
    device = distributed.init_from_environment(hardware.choose_device(args.device))
    hardware.configure_backends(device)
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
    splits = _cached(runs.split_folder(root, args.val_fraction, args.seed, *_transforms(name, size, args.augment),
                                       cache=folders.DecodedCache()), args.augment)  # fmt: skip
    train_ds, _, val_ds, classes = splits
    config = _run_config(args, root, size, classes)
    lock = runs.prepare_run_dir(out, config, args.resume) if main else None  # noqa: F841 (held to the end)
    distributed.barrier()
    say(f"{len(train_ds)} training / {len(val_ds)} validation images, {len(classes)} classes: {', '.join(classes)}")
    say(
        f"model {name}, mode {mode}, lr {args.lr:g}, {size} px, device {hardware.describe(device)}, "
        f"{distributed.world_size()} process(es)"
    )

    def loader(ds, shuffle: bool):
        return loaders.make_loader(
            ds, args.batch_size, shuffle, seed=args.seed, device=device, num_workers=args.workers
        )

    checkpoint, t0 = out / "checkpoint.pt", time.perf_counter()
    if mode == "feature":
        model, trained, history = _fit_feature_head(args, splits, loader, device, checkpoint)
    else:
        model, history = _fit_network(args, splits, loader, device, checkpoint)
        trained = model
    say(train.format_history(history))
    final = train.evaluate(hardware.prepare_model(model, device), loader(val_ds, False))
    metrics = {
        "val_accuracy": final["accuracy"],
        "val_loss": final["loss"],
        "val_images": final["n"],
        "train_images": len(train_ds),
        "classes": classes,
        "model": name,
        "mode": mode,
        "lr": args.lr,
        "trainable_parameters": transfer.trainable_parameters(trained),
        "seconds": time.perf_counter() - t0,
        "history": history,
        "sources": provenance.sources(),
        "device": hardware.describe(device),
        "processes": distributed.world_size(),
    }
    if main:
        save_model(out / "model.safetensors", model.cpu(), config)
        write_json(out / "metrics.json", metrics)
    say(
        f"validation accuracy {final['accuracy']:.3f} on {final['n']} images; model, checkpoint and metrics.json in "
        f"{provenance.short_paths(str(out))}"
    )
    return metrics


# ----------------------------------------------------------------------------- predict


def predict_command(args: argparse.Namespace) -> list[dict]:
    """``python -m companion predict``: prints and returns the top-k classes of every image."""
    model, config = runs.load_run(args.run_dir)
    transform = models.eval_transform(config["model"], config["image_size"])
    k = min(args.top_k, len(config["classes"]))
    results, failed = [], []
    for image in args.images:
        try:
            x = transform(folders.read_image(image)).unsqueeze(0)
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


def _train_parser(sub) -> None:
    t = sub.add_parser("train", help="train a classifier on a folder of class sub-folders")
    t.add_argument(
        "data_dir", help="folder with one sub-folder of images per class (or train/ and val/ folders of them)"
    )
    t.add_argument("--model", default="efficientnet_lite0", choices=models.names(), metavar="NAME",
                   help=f"one of: {', '.join(models.names())}")  # fmt: skip
    t.add_argument("--mode", default="feature", choices=MODES,
                   help="scratch | feature (frozen backbone, new head) | finetune")  # fmt: skip
    t.add_argument("--epochs", type=POSITIVE, default=10)
    t.add_argument("--head-epochs", type=NON_NEGATIVE, default=1,
                   help="finetune: epochs of training the new head alone before the backbone is unfrozen")  # fmt: skip
    t.add_argument("--out", required=True, help="run folder for config, checkpoint, model and metrics")
    t.add_argument("--lr", type=LEARNING_RATE, default=None,
                   help="learning rate (default: the mode's own, feature 3e-3, finetune 1e-4, scratch 1e-3)")  # fmt: skip
    t.add_argument("--batch-size", type=POSITIVE, default=32)
    t.add_argument("--image-size", type=IMAGE_SIZE, default=None,
                   help="input size in pixels (default: the weights' own)")  # fmt: skip
    t.add_argument("--val-fraction", type=FRACTION, default=0.2, help="held out when DATA_DIR has no val/ folder")
    t.add_argument("--no-augment", dest="augment", action="store_false", help="no random crops/flips in training")
    t.add_argument("--seed", type=NON_NEGATIVE, default=0)
    t.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    t.add_argument("--workers", type=NON_NEGATIVE, default=None, help="DataLoader worker processes (default: by cores)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out after its last complete epoch")
    t.set_defaults(func=train_command)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m companion", description="Transfer learning on your own images.")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    p = sub.add_parser("predict", help="top classes of images, with a trained run folder")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", type=POSITIVE, default=3)
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
