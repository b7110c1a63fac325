"""Errors the companion raises, each naming what is wrong and how to fix it."""

from __future__ import annotations


class CompanionError(Exception):
    """Base class of every error the companion raises on purpose."""


class ProfileError(CompanionError, ValueError):
    """An unknown execution profile was asked for."""


class DatasetUnavailableError(CompanionError, FileNotFoundError):
    """A dataset cannot be found locally and cannot be downloaded."""


class WeightsUnavailableError(CompanionError, FileNotFoundError):
    """Pretrained weights cannot be found locally and cannot be downloaded."""


class UnknownModelError(CompanionError, KeyError):
    """A model name the companion does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputShapeError(CompanionError, ValueError):
    """Input tensors whose shape or channel count does not fit the model."""


class CheckpointError(CompanionError, RuntimeError):
    """A checkpoint that cannot be read, or does not fit the model it is loaded into."""


class ImageFolderError(CompanionError, ValueError):
    """An image folder that is missing, empty, has one class, or holds unreadable files."""


class TrainingDivergedError(CompanionError, FloatingPointError):
    """The training loss became NaN or infinite."""


class UnreadableImageError(CompanionError, OSError):
    """A file that cannot be read as an image; the message says why (missing, empty, not an
    image, truncated, too large, a folder, no permission)."""
