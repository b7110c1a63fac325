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


def write_photo_folder(root: Path, per_class: int) -> Path:
    """Two classes of real photos (96-px crops of two scikit-image photos), ``per_class`` PNGs each."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("chelsea", "coffee"):
        photo = getattr(skimage.data, name)()
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            top, left = rng.integers(0, photo.shape[0] - 96), rng.integers(0, photo.shape[1] - 96)
            Image.fromarray(photo[top : top + 96, left : left + 96]).save(root / name / f"{i}.png")
    return root


@pytest.fixture()
def photo_folder(tmp_path: Path) -> Path:
    """An ImageFolder of real photos: two classes, 6 PNGs each (for checks of plumbing, not accuracy)."""
    return write_photo_folder(tmp_path / "photos", 6)


@pytest.fixture()
def photo_folder_large(tmp_path: Path) -> Path:
    """The same two classes with 20 PNGs each: enough validation images for an accuracy bar to mean something."""
    return write_photo_folder(tmp_path / "photos", 20)


def _write_results() -> bool:
    """Whether this session records the GPU tests in the tracked benchmarks/results.json: only
    when asked (``TLBOOK_WRITE_RESULTS=1``) and on a CUDA machine. A plain test run never
    rewrites a tracked file."""
    return os.environ.get("TLBOOK_WRITE_RESULTS") == "1" and torch.cuda.is_available()


def pytest_runtest_logreport(report):
    """Outcomes of the GPU-marked tests, recorded in benchmarks/results.json when asked."""
    if _write_results() and "gpu" in report.keywords and (report.when == "call" or report.outcome != "passed"):
        from benchmarks import gpu_tests

        gpu_tests.note(report.nodeid, report.outcome)


def pytest_sessionfinish(session, exitstatus):
    if _write_results():
        from benchmarks import gpu_tests

        gpu_tests.write()
