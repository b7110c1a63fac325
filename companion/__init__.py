"""Companion package of the book *Transfer learning for image classification*.

Modules, one job each: :mod:`~companion.settings` (environment variables),
:mod:`~companion.profiles`, :mod:`~companion.hardware`, :mod:`~companion.provenance`,
:mod:`~companion.cnn_math`, :mod:`~companion.models`, :mod:`~companion.hooks`, data
(:mod:`~companion.data` datasets, :mod:`~companion.photos` the colour photos,
:mod:`~companion.folders` image folders, :mod:`~companion.batch_transforms`,
:mod:`~companion.loaders`), :mod:`~companion.inference`, :mod:`~companion.metrics`,
:mod:`~companion.stats` (intervals and paired comparisons), :mod:`~companion.train`, :mod:`~companion.transfer`,
:mod:`~companion.recipes`, :mod:`~companion.files` (every file written or read back),
:mod:`~companion.runs` (run folders), :mod:`~companion.distributed`, :mod:`~companion.plots`,
:mod:`~companion.cli`.

The names below are the public API, importable from the top level as well as from their
modules (the one re-export in the package).
"""

from . import hardware, profiles, provenance
from .files import load_checkpoint, save_checkpoint
from .inference import extract_features
from .models import create, eval_transform
from .profiles import get_profile
from .runs import load_run
from .train import evaluate

__version__ = "0.2.0"

__all__ = [
    "create",
    "eval_transform",
    "evaluate",
    "extract_features",
    "get_profile",
    "load_checkpoint",
    "load_run",
    "save_checkpoint",
    "start_chapter",
]


def start_chapter(seed: int = 0):
    """What every chapter runs first: seed everything, set the device's backend flags once
    (:func:`~companion.hardware.configure_backends`), print profile, device and versions.

    Returns ``(profile, device)``.
    """
    profile = profiles.get_profile()
    device = hardware.choose_device()
    hardware.configure_backends(device)
    hardware.seed_everything(seed)
    print(provenance.header(profile, device))
    return profile, device
