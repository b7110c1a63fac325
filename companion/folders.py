"""Folders of photos, one sub-folder per class: checked, then read with torchvision's
``ImageFolder`` and the model's own per-image preprocessing."""

from __future__ import annotations

import copy
from pathlib import Path

import torchvision

from . import provenance
from .errors import ImageFolderError

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
