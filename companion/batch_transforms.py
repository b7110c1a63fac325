"""Batch transforms on the device: uint8 image batches to model input, and augmentation.

Small in-memory datasets reach a model as whole uint8 batches ``(N, C, h, w)``; scaling,
resizing, augmentation and normalisation then run on the device the model runs on, so on a
GPU the CPU never touches a pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models import preprocessing


class BatchTransform(nn.Module):
    """Turns a batch of uint8 images ``(N, C, h, w)`` into model input ``(N, channels, size, size)``:
    scale to [0, 1], repeat grey to RGB when ``channels == 3``, resize (bilinear, antialiased),
    optional augmentation (training only), normalise with ``mean``/``std``.

    It runs on whatever device the batch is on, so on a GPU the CPU never touches a pixel.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        channels: int = 3,
        augment: Augment | None = None,
    ) -> None:
        super().__init__()
        self.size, self.channels, self.augment = size, channels, augment
        self.register_buffer("mean", torch.tensor(mean[:channels], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std[:channels], dtype=torch.float32).view(1, -1, 1, 1))

    @classmethod
    def for_model(cls, name: str, size: int | None = None, channels: int = 3, augment: Augment | None = None):
        """The transform matching the pretrained weights of model ``name`` at ``size`` px
        (default: the weights' own crop size)."""
        p = preprocessing(name)
        mean, std = (p.mean, p.std) if channels == 3 else ((float(np.mean(p.mean)),), (float(np.mean(p.std)),))
        return cls(size or p.crop, mean, std, channels, augment)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != self.channels:
            raise ValueError(f"cannot turn {x.shape[1]}-channel images into {self.channels}-channel input")
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        if self.augment is not None and self.training:
            x = self.augment(x)
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"size={self.size}, channels={self.channels}, augment={self.augment is not None}"


class Augment(nn.Module):
    """Per-image random augmentation of a float batch ``(N, C, H, W)`` on its own device:
    horizontal flips with probability ``flip``, rotations up to ``degrees`` and shifts up to
    ``shift`` (a fraction of the side), drawn independently for every image."""

    def __init__(self, flip: float = 0.5, degrees: float = 0.0, shift: float = 0.0) -> None:
        super().__init__()
        self.flip, self.degrees, self.shift = flip, degrees, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        angle = (torch.rand(n, device=x.device) * 2 - 1) * np.deg2rad(self.degrees)
        sx = torch.where(torch.rand(n, device=x.device) < self.flip, -1.0, 1.0)
        tx, ty = ((torch.rand(2, n, device=x.device) * 2 - 1) * 2 * self.shift).unbind(0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([cos * sx, -sin, tx], 1), torch.stack([sin * sx, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def extra_repr(self) -> str:
        return f"flip={self.flip}, degrees={self.degrees}, shift={self.shift}"
