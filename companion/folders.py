"""Folders of photos, one sub-folder per class: checked, then read with torchvision's
``ImageFolder`` and the model's own per-image preprocessing."""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, UnidentifiedImageError

from . import provenance
from .errors import ImageFolderError, UnreadableImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def read_image(path: str | Path) -> Image.Image:
    """Read ``path`` as an RGB image: the one function through which the companion reads image
    files (image folders, ``predict``), with one error policy.

    Every valid PIL mode becomes RGB as a model expects it: grey (``1``, ``L``) repeated, palette
    (``P``) looked up, transparency (``LA``, ``RGBA``, ``PA``) composited over white, ``CMYK``
    converted, and 16-bit, 32-bit and float images (``I;16``, ``I``, ``F``) scaled from their
    range to 0..255 (a plain ``convert("RGB")`` would clip them to white).

    Raises:
        UnreadableImageError: missing (or a broken link), a folder, no permission, empty, not an
            image, truncated or corrupt, or larger than PIL's decompression-bomb limit.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise UnreadableImageError(f"{path} is a folder, not an image file")
        if path.stat().st_size == 0:
            raise UnreadableImageError(f"{path} is empty (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()  # decodes every pixel: catches truncated files that verify() misses
                return _to_rgb(image)
    except UnreadableImageError:
        raise
    except FileNotFoundError:
        raise UnreadableImageError(f"{path} does not exist (or is a broken link)") from None
    except PermissionError:
        raise UnreadableImageError(f"{path} cannot be read: permission denied") from None
    except UnidentifiedImageError:
        raise UnreadableImageError(f"{path} is not an image PIL can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImageError(f"{path} is too large to decode safely ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated, corrupt, unsupported
        raise UnreadableImageError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """``image`` (any PIL mode) as RGB; see :func:`read_image`."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        grey = np.clip((pixels - low) * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode in ("LA", "RGBA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def check_image_folder(root: str | Path) -> tuple[list[str], list[tuple[Path, str]]]:
    """Check a folder of class sub-folders of images.

    Returns:
        ``(classes, bad)``: the class names and ``(file, reason)`` for every file that is not an
        image or cannot be read (:func:`read_image` says why). Hidden files and folders are left out.

    Raises:
        ImageFolderError: the folder is missing, is a file, has no class sub-folders with
            images, or only one class.
    """
    classes, _, bad = _scan(Path(root))
    return classes, bad


def _scan(root: Path) -> tuple[list[str], set[str], list[tuple[Path, str]]]:
    """``(classes, readable image files, bad files with reasons)`` of an image folder."""
    if not root.exists():
        raise ImageFolderError(
            f"image folder {root} does not exist; give a folder with one sub-folder of images per class"
        )
    if not root.is_dir():
        raise ImageFolderError(f"{root} is a file, not a folder; give a folder with one sub-folder of images per class")
    good: dict[str, set[str]] = {}
    bad: list[tuple[Path, str]] = []
    for c in sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        good[c] = set()
        for f in sorted((root / c).rglob("*")):
            if any(part.startswith(".") for part in f.relative_to(root).parts) or f.is_dir():
                continue
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                bad.append((f, f"not an image file (extension {f.suffix or 'none'})"))
                continue
            try:
                read_image(f)
                good[c].add(os.path.abspath(f))
            except UnreadableImageError as exc:
                bad.append((f, str(exc)))
    classes = [c for c in good if good[c]]
    if not classes:
        raise ImageFolderError(
            f"no images found in {root}: expected {root}/<class name>/<image>.jpg with at least two classes"
        )
    if len(classes) == 1:
        raise ImageFolderError(
            f"only one class ({classes[0]!r}) in {root}: a classifier needs at least two class sub-folders"
        )
    return classes, set().union(*good.values()), bad


class _CheckedImageFolder(torchvision.datasets.ImageFolder):
    """``ImageFolder`` whose classes are the checked ones (sub-folders without a readable image are not classes)."""

    def __init__(self, root: str, classes: list[str], **kwargs) -> None:
        self._checked_classes = classes
        super().__init__(root, **kwargs)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return self._checked_classes, {c: i for i, c in enumerate(self._checked_classes)}


class DecodedCache:
    """A loader for ``ImageFolder`` that keeps every decoded image (:func:`read_image`) in
    memory, up to ``budget_mb`` of pixels per process, so that later epochs skip the decoding.
    Each DataLoader worker holds its own cache."""

    def __init__(self, budget_mb: float = 512) -> None:
        self.budget, self.used, self.images = budget_mb * 2**20, 0, {}

    def __call__(self, path: str) -> Image.Image:
        if path in self.images:
            return self.images[path]
        image = read_image(path)
        size = image.width * image.height * 3
        if self.used + size <= self.budget:
            self.images[path], self.used = image, self.used + size
        return image


class TensorCache(torch.utils.data.Dataset):
    """``dataset`` whose items (after a deterministic transform, e.g. the evaluation one) are
    kept after their first read, up to ``budget_mb`` of tensors per process."""

    def __init__(self, dataset, budget_mb: float = 512) -> None:
        self.dataset, self.budget, self.used, self.items = dataset, budget_mb * 2**20, 0, {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if index in self.items:
            return self.items[index]
        x, y = self.dataset[index]
        if self.used + x.nbytes <= self.budget:
            self.items[index], self.used = (x, y), self.used + x.nbytes
        return x, y


def image_folder(
    root: str | Path, transform=None, *, report: bool = True, cache: DecodedCache | None = None
) -> torchvision.datasets.ImageFolder:
    """torchvision's ``ImageFolder`` over ``root`` after :func:`check_image_folder`; files that
    cannot be read are skipped and listed (never silently), sub-folders without a readable
    image are not classes. With ``cache``, decoded images are kept for later epochs."""
    classes, readable, bad = _scan(Path(root))
    if report:
        for f, why in bad:
            print(f"[data] skipping {provenance.short_paths(str(f))}: {why}")
    ds = _CheckedImageFolder(
        str(root),
        classes,
        transform=transform,
        loader=cache or read_image,
        is_valid_file=lambda p: os.path.abspath(p) in readable,  # exactly the files checked and read
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
