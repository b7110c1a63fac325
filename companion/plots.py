"""Figures of the book: learning curves, points with their intervals, image grids, confusion matrices, filters, feature maps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def learning_curves(
    histories: Mapping[str, Sequence[dict]], metric: str = "val_accuracy", ax=None, title: str | None = None
):
    """One line per run: ``metric`` per epoch from ``fit`` histories, keyed by run label."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    for label, history in histories.items():
        ax.plot([h["epoch"] for h in history], [h[metric] for h in history], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


def with_intervals(ax, x: Sequence[float], estimates: Sequence[Sequence[float]], label: str | None = None):
    """One line of points at ``x`` with error bars: ``estimates`` holds one ``(value, low,
    high)`` triple per point (:func:`companion.stats.accuracy_interval`, or a
    :class:`~companion.stats.Spread`'s ``mean, low, high``)."""
    value, low, high = (np.asarray(column, dtype=float) for column in zip(*estimates))
    return ax.errorbar(x, value, yerr=[value - low, high - value], marker="o", capsize=3, label=label)


def accuracy_vs_parameters(table, accuracy: str, chance: float | None = None, ax=None, title: str | None = None):
    """One labelled point per row of ``table`` (a DataFrame with a ``"trainable parameters"``
    column and an ``accuracy`` column, one row per method): what each method trains against
    what it reaches, on a log scale of parameters; ``chance`` adds a reference line."""
    ax = ax or plt.subplots(figsize=(6.5, 3.8))[1]
    for label, row in table.iterrows():
        ax.scatter(row["trainable parameters"], row[accuracy], zorder=3)
        ax.annotate(str(label).split(" ")[0], (row["trainable parameters"], row[accuracy]),
                    textcoords="offset points", xytext=(5, 4))  # fmt: skip
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", label=f"chance ({chance:.2f})")
        ax.legend(loc="best")
    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.1)  # room for the labels of the outermost points
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(accuracy)
    ax.grid(alpha=0.3, which="both")
    if title:
        ax.set_title(title)
    return ax


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    """A ``(C, H, W)`` tensor (uint8, or float in any range) as an ``(H, W[, 3])`` array in [0, 1]."""
    x = image.detach().float().cpu()
    if image.dtype == torch.uint8:
        x = x / 255.0
    else:
        x = (x - x.min()) / (x.max() - x.min() + 1e-8)
    x = x.permute(1, 2, 0).numpy()
    return x[..., 0] if x.shape[-1] == 1 else x


def image_grid(images: torch.Tensor, titles: Sequence[str] | None = None, ncols: int = 8, size: float = 1.4):
    """Show images ``(N, C, H, W)`` in a grid, with optional titles; returns the figure."""
    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_to_hwc(images[i]), cmap="gray")
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    return fig


def confusion_matrix(
    labels: torch.Tensor, predictions: torch.Tensor, classes: Sequence[str], ax=None, normalize: bool = True
):
    """Confusion matrix (rows: true class, columns: predicted), via scikit-learn."""
    from sklearn.metrics import ConfusionMatrixDisplay

    ax = ax or plt.subplots(figsize=(6.5, 6))[1]
    ConfusionMatrixDisplay.from_predictions(
        labels.numpy(),
        predictions.numpy(),
        display_labels=list(classes),
        normalize="true" if normalize else None,
        values_format=".2f" if normalize else "d",
        ax=ax,
        colorbar=False,
        xticks_rotation=45,
    )
    return ax


def filters(weight: torch.Tensor, ncols: int = 16, size: float = 0.6):
    """First-layer convolution kernels ``(out, 3, k, k)`` as small RGB images (each rescaled)."""
    return image_grid(weight.detach().float(), ncols=ncols, size=size)


def feature_maps(maps: torch.Tensor, n: int = 16, ncols: int = 8, title: str | None = None, size: float = 1.2):
    """The first ``n`` channels of one feature-map tensor ``(C, H, W)``, each rescaled to its own range."""
    fig = image_grid(maps[:n].unsqueeze(1), ncols=ncols, size=size)
    if title:
        fig.suptitle(title, y=1.02)
    return fig
