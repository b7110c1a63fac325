"""Shared fixtures: small real datasets, a temporary image folder of real photos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("TLBOOK_PROFILE", "smoke")
os.environ.setdefault("TLBOOK_PROGRESS", "0")
torch.set_num_threads(int(os.environ.get("TLBOOK_TEST_THREADS", max(1, min(2, os.cpu_count() or 1)))))


@pytest.fixture(scope="session")
def fashion_small():
    """200 real Fashion-MNIST training images (20 per class) and 100 test images."""
    from companion import data

    train = data.balanced_subset(data.load("fashion_mnist", "train"), 20, seed=0)
    test = data.balanced_subset(data.load("fashion_mnist", "test"), 10, seed=0)
    return train, test


@pytest.fixture()
def photo_folder(tmp_path: Path) -> Path:
    """An ImageFolder of real photos: two classes (crops of two scikit-image photos), 6 PNGs each."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for name in ("chelsea", "coffee"):
        photo = getattr(skimage.data, name)()
        (root / name).mkdir(parents=True)
        for i in range(6):
            top, left = rng.integers(0, photo.shape[0] - 96), rng.integers(0, photo.shape[1] - 96)
            Image.fromarray(photo[top : top + 96, left : left + 96]).save(root / name / f"{i}.png")
    return root
