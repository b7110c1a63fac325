"""Every environment variable the companion reads, in one place.

=========================== ============================================ ==========================
variable                    what it sets                                 default
=========================== ============================================ ==========================
``TLBOOK_PROFILE``          execution profile: smoke, quick or full      full on CUDA, else quick
``TLBOOK_DEVICE``           device to run on: cuda, cuda:1, mps, cpu     the best available
``TLBOOK_DATA``             where datasets are stored and looked for     ``~/.cache/tlbook/data``
``TLBOOK_WORK``             where chapters write: runs, cached features, ``~/.cache/tlbook/work``
                            written image folders, checkpoints
``TLBOOK_OFFLINE``          ``1``: never download; ``0``: always try     probe the network once
``TLBOOK_DOWNLOAD_TIMEOUT`` seconds before a download attempt gives up   20
``TLBOOK_PROGRESS``         ``0``: no progress bars                      bars shown
``TLBOOK_STAMPS``           Tux Paint's ``stamps/`` folder (colour       Debian's, else downloaded
                            photos, :mod:`companion.photos`)
=========================== ============================================ ==========================

torchrun's own variables (``WORLD_SIZE``, ``LOCAL_RANK``) are read by :mod:`companion.distributed`.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

PROFILE = "TLBOOK_PROFILE"
WORK = "TLBOOK_WORK"
DATA = "TLBOOK_DATA"
# One host that every download path of the book shares the fate of (torchvision's weights).
PROBE_HOST = ("download.pytorch.org", 443)


def profile() -> str | None:
    """The profile asked for in ``TLBOOK_PROFILE``, if any."""
    return os.environ.get(PROFILE) or None


def device() -> str | None:
    """The device asked for in ``TLBOOK_DEVICE``, if any."""
    return os.environ.get("TLBOOK_DEVICE") or None


def data_dir() -> Path:
    """``TLBOOK_DATA``, else ``~/.cache/tlbook/data``."""
    return Path(os.environ.get(DATA) or Path.home() / ".cache" / "tlbook" / "data")


def work_dir() -> Path:
    """``TLBOOK_WORK``, else ``~/.cache/tlbook/work``: everything a chapter writes, never read
    back by a stored run (:mod:`edition.run` gives each run an empty one)."""
    return Path(os.environ.get(WORK) or Path.home() / ".cache" / "tlbook" / "work")


def offline() -> bool:
    """Whether downloads are off: ``TLBOOK_OFFLINE=1`` yes, ``0`` no; unset, whether
    :func:`network_reachable` failed (asked once per process)."""
    value = os.environ.get("TLBOOK_OFFLINE")
    if value in ("0", "1"):
        return value == "1"
    return not network_reachable()


def offline_reason() -> str:
    """Why :func:`offline` is true, for an error message."""
    if os.environ.get("TLBOOK_OFFLINE") == "1":
        return "TLBOOK_OFFLINE=1 forbids downloads"
    return f"no network: {PROBE_HOST[0]} cannot be reached"


@functools.cache
def network_reachable() -> bool:
    """Whether :data:`PROBE_HOST` answers within a few seconds; asked once per process, so an
    offline machine makes no failing download per call."""
    try:
        socket.create_connection(PROBE_HOST, timeout=min(5.0, download_timeout())).close()
        return True
    except OSError:
        return False


def download_timeout() -> float:
    """Seconds a download attempt may wait for the network (``TLBOOK_DOWNLOAD_TIMEOUT``, 20)."""
    return float(os.environ.get("TLBOOK_DOWNLOAD_TIMEOUT", "20"))


def progress() -> bool:
    """Whether progress bars are shown (``TLBOOK_PROGRESS`` other than ``0``)."""
    return os.environ.get("TLBOOK_PROGRESS", "1") != "0"


def stamps_dir() -> Path | None:
    """``$TLBOOK_STAMPS``: a Tux Paint ``stamps/`` folder to read the colour photos from."""
    value = os.environ.get("TLBOOK_STAMPS")
    return Path(value) if value else None
