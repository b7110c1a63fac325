"""Every environment variable the companion reads, in one place.

=========================== ============================================ ==========================
variable                    what it sets                                 default
=========================== ============================================ ==========================
``TLBOOK_PROFILE``          execution profile: smoke, quick or full      full on CUDA, else quick
``TLBOOK_DEVICE``           device to run on: cuda, cuda:1, mps, cpu     the best available
``TLBOOK_DATA``             where datasets and cached features live      ``~/.cache/tlbook/data``
``TLBOOK_OFFLINE``          ``1``: never try to download                 downloads allowed
``TLBOOK_DOWNLOAD_TIMEOUT`` seconds before a download attempt gives up   20
``TLBOOK_PROGRESS``         ``0``: no progress bars                      bars shown
=========================== ============================================ ==========================

torchrun's own variables (``WORLD_SIZE``, ``LOCAL_RANK``) are read by :mod:`companion.distributed`.
"""

from __future__ import annotations

import os
from pathlib import Path

PROFILE = "TLBOOK_PROFILE"


def profile() -> str | None:
    """The profile asked for in ``TLBOOK_PROFILE``, if any."""
    return os.environ.get(PROFILE) or None


def device() -> str | None:
    """The device asked for in ``TLBOOK_DEVICE``, if any."""
    return os.environ.get("TLBOOK_DEVICE") or None


def data_dir() -> Path:
    """``TLBOOK_DATA``, else ``~/.cache/tlbook/data``."""
    return Path(os.environ.get("TLBOOK_DATA", Path.home() / ".cache" / "tlbook" / "data"))


def offline() -> bool:
    """Whether ``TLBOOK_OFFLINE=1`` forbids downloads."""
    return os.environ.get("TLBOOK_OFFLINE") == "1"


def download_timeout() -> float:
    """Seconds a download attempt may wait for the network (``TLBOOK_DOWNLOAD_TIMEOUT``, 20)."""
    return float(os.environ.get("TLBOOK_DOWNLOAD_TIMEOUT", "20"))


def progress() -> bool:
    """Whether progress bars are shown (``TLBOOK_PROGRESS`` other than ``0``)."""
    return os.environ.get("TLBOOK_PROGRESS", "1") != "0"
