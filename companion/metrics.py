"""Metrics of predictions: correct counts (on the device), per-class accuracy, the most
confident mistakes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import pandas


def count_correct(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Number of rows of logits ``out (B, K)`` whose arg-max equals the label ``y (B,)``, as a
    0-d tensor on their device (summing it up needs no host synchronisation)."""
    return (out.argmax(1) == y).sum()


def per_class_accuracy(probs: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> pandas.DataFrame:
    """Accuracy (recall), precision and support per class from probabilities ``(N, K)`` and
    labels ``(N,)`` (scikit-learn's ``precision_recall_fscore_support``), worst class first."""
    import pandas as pd  # the `book` extra
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, _, support = precision_recall_fscore_support(
        labels.numpy(), probs.argmax(1).numpy(), labels=list(range(len(classes))), zero_division=0
    )
    table = pd.DataFrame({"accuracy": recall, "precision": precision, "images": support}, index=list(classes))
    return table.sort_values("accuracy")


def worst_mistakes(probs: torch.Tensor, labels: torch.Tensor, k: int = 16) -> torch.Tensor:
    """Indices of the ``k`` wrong predictions made with the highest confidence (most confident first)."""
    confidence, predicted = probs.max(1)
    wrong = (predicted != labels).nonzero().flatten()
    return wrong[confidence[wrong].argsort(descending=True)][:k]
