"""What each chapter actually used: profile, device, and the source of every dataset and weight file.

Loaders in :mod:`companion.data` and :mod:`companion.models` record here where their data
and weights came from; a chapter prints :func:`report` so a reader always sees whether a
result came from the real thing or from an announced stand-in.
"""

from __future__ import annotations

import os
import platform
import re
import sysconfig

import torch

from . import hardware, settings
from .profiles import get_profile

_SOURCES: dict[str, str] = {}


def short_paths(text: str) -> str:
    """``text`` with this machine's folders written as a reader can use them: ``$TLBOOK_WORK/...``
    and ``$TLBOOK_DATA/...`` where those variables are set, ``site-packages/...`` for installed
    packages, ``~/...`` under the home folder."""
    prefixes = {sysconfig.get_paths()[k]: "site-packages" for k in ("purelib", "platlib")}
    for variable in (settings.WORK, settings.DATA):
        if os.environ.get(variable):
            prefixes[os.environ[variable]] = f"${variable}"
    for prefix in sorted(prefixes, key=len, reverse=True):
        folder = prefix.rstrip(os.sep)
        text = re.sub(re.escape(folder) + r"(?=$|[\s/'\":,;)\]])", prefixes[prefix], text)
    home = os.path.expanduser("~").rstrip(os.sep)
    return text.replace(home + os.sep, "~" + os.sep) if home not in ("", os.sep) else text


def record(kind: str, name: str, source: str) -> None:
    """Remember that ``name`` (a dataset or weight file, per ``kind``) came from ``source``
    (with :func:`short_paths`)."""
    source = short_paths(source)
    key = f"{kind} {name}"
    if _SOURCES.get(key) != source:
        _SOURCES[key] = source
        print(f"[{kind}] {name}: {source}")


def sources() -> dict[str, str]:
    """Every source recorded so far in this process, ``{"<kind> <name>": source}``."""
    return dict(_SOURCES)


def header(profile=None, device: torch.device | None = None) -> str:
    """The lines a chapter prints first: profile, device and library versions."""
    profile = profile or get_profile()
    device = device or hardware.choose_device()
    import torchvision

    return "\n".join(
        [
            f"profile : {profile} ({profile.description})",
            f"device  : {hardware.describe(device)}",
            f"software: python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}",
        ]
    )


def report() -> str:
    """All recorded sources as printable lines."""
    if not _SOURCES:
        return "sources : none recorded yet"
    return "\n".join(f"  {key}: {value}" for key, value in _SOURCES.items())
