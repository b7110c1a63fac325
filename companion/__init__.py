"""Companion package of the book *Transfer learning for image classification*.

Modules, one job each: :mod:`~companion.profiles`, :mod:`~companion.hardware`,
:mod:`~companion.provenance`, :mod:`~companion.cnn_math`, :mod:`~companion.models`,
:mod:`~companion.settings`, :mod:`~companion.data` (datasets; with :mod:`~companion.batch_transforms`,
:mod:`~companion.loaders` and :mod:`~companion.folders`), :mod:`~companion.hooks`,
:mod:`~companion.transfer`, :mod:`~companion.train`,
:mod:`~companion.recipes`, :mod:`~companion.distributed`,
:mod:`~companion.plots`, :mod:`~companion.cli`.
"""

import warnings

# Libraries we import (timm, huggingface_hub) pull in tqdm.auto, which warns in notebooks without ipywidgets.
warnings.filterwarnings("ignore", message="IProgress not found")

from . import data, errors, hardware, models, profiles, provenance, recipes, train, transfer  # noqa: E402, F401
from .profiles import get_profile  # noqa: E402, F401

__version__ = "0.1.0"


def start_chapter(seed: int = 0):
    """What every chapter runs first: seed everything, print profile, device and versions.

    Returns ``(profile, device)``.
    """
    profile = profiles.get_profile()
    device = hardware.choose_device()
    hardware.seed_everything(seed)
    print(provenance.header(profile, device))
    return profile, device
