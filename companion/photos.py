"""The book's colour photos: real photographs of objects from Tux Paint's stamp collection,
selected, composited on white, split and written as a torchvision ``ImageFolder``.

Tux Paint's stamps (GPL-2) are photographs cut out on transparent backgrounds, filed by
category, a few dozen per category, about 170 px on their median side. Debian's
``tuxpaint-stamps-default`` installs them under ``DEBIAN_STAMPS``; elsewhere the upstream
release tarball (``UPSTREAM_URL``) is downloaded once into the data folder.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from . import data, provenance, settings
from .errors import DatasetUnavailableError, ImageFolderError

DEBIAN_STAMPS = Path("/usr/share/tuxpaint/stamps")
UPSTREAM_VERSION = "2022.06.04"  # the release Debian's package holds
UPSTREAM_URL = (
    "https://sourceforge.net/projects/tuxpaint/files/tuxpaint-stamps/"
    f"{UPSTREAM_VERSION.replace('.', '-')}/tuxpaint-stamps-{UPSTREAM_VERSION}.tar.gz/download"
)
# class name -> the stamp folders it is read from (their sub-folders included)
CLASSES = {
    "bird": ("animals/birds",),
    "fish": ("animals/fish",),
    "flower": ("plants/flowers",),
    "fruit": ("food/fruit",),
    "mammal": ("animals/mammals",),
    "vegetable": ("food/vegetables",),
}
# The photograph rule: over the opaque pixels, quantised to 5 bits per channel, a photograph
# has hundreds of distinct colours and no colour dominates; flat drawings and silhouettes fail.
MIN_COLOURS, MAX_COLOUR_SHARE = 150, 0.5
MANIFEST = "photos.json"


def is_photograph(image: Image.Image) -> bool:
    """Whether a stamp is a photograph (the rule of ``MIN_COLOURS`` and ``MAX_COLOUR_SHARE``)."""
    rgba = np.asarray(image.convert("RGBA"))
    opaque = rgba[..., :3][rgba[..., 3] >= 128].astype(np.int32) >> 3
    if len(opaque) == 0:
        return False
    _, counts = np.unique(opaque[:, 0] << 10 | opaque[:, 1] << 5 | opaque[:, 2], return_counts=True)
    return bool(len(counts) >= MIN_COLOURS and counts.max() / len(opaque) <= MAX_COLOUR_SHARE)


def on_white_square(image: Image.Image) -> Image.Image:
    """``image`` composited over white and centred on a white square of its longer side, so
    that a centre crop keeps the whole object. RGB."""
    rgba = image.convert("RGBA")
    side = max(rgba.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
    return square.convert("RGB")


def find_stamps() -> tuple[Path, str]:
    """``(stamps folder, where it came from)``: ``$TLBOOK_STAMPS``, Debian's, an earlier
    download, or a new download of the upstream tarball.

    Raises:
        DatasetUnavailableError: none of these, with both fixes.
    """
    if settings.stamps_dir() is not None:
        return settings.stamps_dir(), "TLBOOK_STAMPS"
    if DEBIAN_STAMPS.is_dir():
        return DEBIAN_STAMPS, "Debian package tuxpaint-stamps-default"
    cached = data.data_root() / f"tuxpaint-stamps-{UPSTREAM_VERSION}"
    if not (cached / "stamps").is_dir():
        data.try_download(lambda: _download_tarball(cached), "Tux Paint stamps")
    if (cached / "stamps").is_dir():
        return cached / "stamps", f"tuxpaint-stamps {UPSTREAM_VERSION} release tarball, unpacked in {cached}"
    raise DatasetUnavailableError(
        "Tux Paint's stamp photos not found. Fix: on Debian/Ubuntu `sudo apt-get install "
        f"tuxpaint-stamps-default` (puts them in {DEBIAN_STAMPS}), or with internet download {UPSTREAM_URL} "
        f"and unpack it so that {cached}/stamps exists (or point TLBOOK_STAMPS at its stamps/ folder)."
    )


def _download_tarball(target: Path) -> None:
    """Download the upstream tarball and unpack its ``stamps/`` folder as ``target/stamps``."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "stamps.tar.gz"
        urllib.request.urlretrieve(UPSTREAM_URL, archive)
        unpack_stamps(archive, target)


def unpack_stamps(archive: Path, target: Path) -> Path:
    """Unpack the ``stamps/`` folder of a tuxpaint-stamps tarball as ``target/stamps``
    (``tarfile``'s ``data`` filter: no links out, no absolute paths). Returns it."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp, tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
        found = sorted(Path(tmp).glob("*/stamps")) + sorted(Path(tmp).glob("stamps"))
        if not found:
            raise DatasetUnavailableError(f"{archive} has no stamps/ folder: not a tuxpaint-stamps release")
        target.mkdir(parents=True, exist_ok=True)
        found[0].rename(target / "stamps")
    return target / "stamps"


def select(stamps: Path) -> dict[str, tuple[list[Path], list[tuple[Path, str]]]]:
    """``{class: (photographs kept, [(file dropped, why)])}`` over the PNG files of
    ``CLASSES``: files under ``cartoon/`` and ``toys/`` folders are drawings by Tux Paint's
    own filing; the others are kept when :func:`is_photograph` says so."""
    chosen = {}
    for name, folders in CLASSES.items():
        kept, dropped = [], []
        for folder in folders:
            for path in sorted((stamps / folder).rglob("*.png")):
                if {"cartoon", "toys"} & set(path.relative_to(stamps).parts):
                    dropped.append((path, "filed"))
                    continue
                with Image.open(path) as image:
                    if is_photograph(image):
                        kept.append(path)
                    else:
                        dropped.append((path, "colours"))
        chosen[name] = (kept, dropped)
    return chosen


def split_indices(labels, seed: int, val_fraction: float = 0.2, test_fraction: float = 0.2):
    """Seeded, class-stratified ``(train, val, test)`` index arrays of ``labels`` ``(N,)``:
    each class gives ``round(fraction * its images)`` (at least one) to val and to test."""
    rng, labels = np.random.default_rng(seed), np.asarray(labels)
    parts = ([], [], [])
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = max(1, round(test_fraction * len(members)))
        n_val = max(1, round(val_fraction * len(members)))
        if n_test + n_val >= len(members):
            raise ValueError(f"class {c} has {len(members)} images: too few for train, val and test")
        for part, chunk in zip(parts, (members[n_test + n_val :], members[n_test : n_test + n_val], members[:n_test])):
            part.extend(chunk.tolist())
    return tuple(np.sort(np.array(p, dtype=np.int64)) for p in parts)


def write_photo_folder(root: str | Path, *, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2):
    """Write the photos as ``root/{train,val,test}/<class>/<stamp>.png`` (RGB on white squares),
    print what each class kept and dropped, and return ``root``.

    An existing ``root`` is replaced only when it is an earlier photo folder (its manifest);
    any other existing folder is refused, so nothing of yours is deleted.
    """
    root = Path(root)
    if root.exists() and not (root.is_dir() and ((root / MANIFEST).is_file() or not any(root.iterdir()))):
        raise ImageFolderError(f"{root} exists and is not a photo folder written here. Fix: choose an empty --out")
    stamps, origin = find_stamps()
    chosen = select(stamps)
    files = [f for kept, _ in chosen.values() for f in kept]
    labels = [c for c, (kept, _) in enumerate(chosen.values()) for _ in kept]
    splits = dict(zip(("train", "val", "test"), split_indices(labels, seed, val_fraction, test_fraction)))
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        for split, indices in splits.items():
            for i in indices:
                target = Path(tmp) / split / list(chosen)[labels[i]] / f"{files[i].stem}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(files[i]) as image:
                    on_white_square(image).save(target)
        manifest = {
            "source": origin,
            "seed": seed,
            "classes": list(chosen),
            "splits": {s: len(i) for s, i in splits.items()},
        }
        (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=1))
        shutil.rmtree(root, ignore_errors=True)
        Path(tmp).rename(root)
        Path(tmp).mkdir()  # for TemporaryDirectory's own clean-up
    _report(chosen, splits, labels, origin, root)
    return root


def _report(chosen, splits, labels, origin: str, root: Path) -> None:
    """Print the kept/dropped counts per class and the split sizes; record the source."""
    labels = np.asarray(labels)
    for c, (name, (kept, dropped)) in enumerate(chosen.items()):
        per_split = ", ".join(f"{s} {int((labels[i] == c).sum())}" for s, i in splits.items())
        filed = sum(why == "filed" for _, why in dropped)
        print(
            f"[photos] {name:>9}: {len(kept):>2} photographs kept ({per_split}); drawings dropped: "
            f"{filed} filed as cartoon/toys, {len(dropped) - filed} by the colour rule"
        )
    total = {s: len(i) for s, i in splits.items()}
    provenance.record(
        "data",
        "tuxpaint_photos",
        f"real colour photographs, Tux Paint stamps (GPL-2) from {origin}: {sum(total.values())} images, "
        f"{len(chosen)} classes, written to {root} ({', '.join(f'{s} {n}' for s, n in total.items())})",
    )
