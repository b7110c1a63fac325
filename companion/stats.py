"""Uncertainty of test results: the paired bootstrap of two models' accuracy difference on the
same test images, the Wilson interval of one accuracy, and the spread of a metric over seeds."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import torch

CHUNK_ELEMENTS = 1_000_000  # resampled image indices held at once (8 MB of int64), whatever N


@dataclasses.dataclass(frozen=True, kw_only=True)
class Comparison:
    """Accuracies of models A and B on the same ``n`` test images, and the paired bootstrap
    interval ``[low, high]`` of their difference ``accuracy_a - accuracy_b``."""

    name_a: str = "A"
    name_b: str = "B"
    accuracy_a: float
    accuracy_b: float
    difference: float
    low: float
    high: float
    confidence: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of zero (one model is better)."""
        return self.low > 0 or self.high < 0

    def verdict(self) -> str:
        """``"A beats B"``, ``"B beats A"`` or that they are indistinguishable at this test size."""
        if self.low > 0:
            return f"{self.name_a} beats {self.name_b}"
        if self.high < 0:
            return f"{self.name_b} beats {self.name_a}"
        return f"{self.name_a} and {self.name_b} are indistinguishable at this test size (n={self.n})"

    def __str__(self) -> str:
        return (
            f"{self.name_a} {self.accuracy_a:.3f} vs {self.name_b} {self.accuracy_b:.3f}: "
            f"difference {self.difference:+.3f}, {_percent(self.confidence)} CI [{self.low:+.3f}, {self.high:+.3f}], "
            f"n={self.n} -> {self.verdict()}"
        )


@dataclasses.dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of a metric over ``n`` seeds, and the t-interval
    ``[low, high]`` of the mean (``nan`` for a single seed)."""

    mean: float
    std: float
    n: int
    low: float
    high: float
    confidence: float = 0.95
    unit: str = "seeds"

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly above or wholly below zero (for a difference)."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        if self.n == 1:
            return f"{self.mean:.3f} (one of {self.unit}: no spread and no CI; run more)"
        return (
            f"{self.mean:.3f} ± {self.std:.3f} (mean ± sd over {self.n} {self.unit}; "
            f"{_percent(self.confidence)} CI [{self.low:.3f}, {self.high:.3f}])"
        )


def _percent(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(
            f"confidence must lie strictly between 0 and 1, got {confidence}; pass e.g. 0.95 for a 95% interval"
        )


def _as_correct(correct, name: str) -> np.ndarray:
    """Per-image correctness (bool or 0/1; a tensor, array or list) as an int8 array ``(N,)``."""
    if isinstance(correct, torch.Tensor):
        correct = correct.detach().cpu().numpy()
    values = np.asarray(correct)
    if values.ndim != 1:
        raise ValueError(
            f"{name} must hold one correctness value per test image, shape (N,), got shape {values.shape}; "
            "compare predictions with labels first, e.g. probs.argmax(1) == labels"
        )
    if values.size == 0:
        raise ValueError(f"{name} is empty; pass the correctness of at least one test image")
    if values.dtype == object or not np.isin(values, (0, 1)).all():
        raise ValueError(
            f"{name} must be True/False or 0/1 per test image, got values such as {np.unique(values)[:5]}; "
            "pass predictions == labels, not the predictions or probabilities themselves"
        )
    return values.astype(np.int8)


def _resampled_differences(paired: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Mean of ``paired (N,)`` over ``resamples`` draws of N image indices with replacement,
    drawn a chunk of at most ``CHUNK_ELEMENTS`` indices at a time: ``(resamples,)``."""
    n = len(paired)
    per_chunk = max(1, CHUNK_ELEMENTS // n)
    means = np.empty(resamples)
    for start in range(0, resamples, per_chunk):
        stop = min(start + per_chunk, resamples)
        indices = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = paired[indices].sum(1) / n
    return means


def paired_bootstrap(
    correct_a,
    correct_b,
    *,
    names: tuple[str, str] = ("A", "B"),
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Compare two models evaluated on the same test images.

    ``correct_a`` and ``correct_b`` are their per-image correctness ``(N,)`` (bool or 0/1;
    tensors, arrays or lists), image ``i`` the same in both. Each resample draws N image
    indices with replacement, the same ones for both models (paired), and takes the accuracy
    difference a - b; the interval is the percentile interval of ``resamples`` such
    differences, drawn from ``np.random.default_rng(seed)``.

    Raises:
        ValueError: lengths differ, N is 0, values are not 0/1, ``confidence`` is outside
            (0, 1) or ``resamples`` is under 100.
    """
    a, b = _as_correct(correct_a, "correct_a"), _as_correct(correct_b, "correct_b")
    if len(a) != len(b):
        raise ValueError(
            f"correct_a has {len(a)} test images but correct_b has {len(b)}; a paired comparison needs "
            "both models' correctness on the same test images, in the same order"
        )
    _check_confidence(confidence)
    if not isinstance(resamples, int | np.integer) or resamples < 100:
        raise ValueError(
            f"resamples must be a whole number of at least 100, got {resamples!r}; "
            "the default 10_000 takes about a second for 10,000 test images"
        )
    n = len(a)
    paired = a - b
    means = _resampled_differences(paired, int(resamples), np.random.default_rng(seed))
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Comparison(
        name_a=names[0],
        name_b=names[1],
        accuracy_a=float(a.sum() / n),
        accuracy_b=float(b.sum() / n),
        difference=float(paired.sum() / n),
        low=float(low),
        high=float(high),
        confidence=confidence,
        n=n,
    )


def accuracy_interval(correct, *, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(accuracy, low, high)`` of one model from its per-image correctness ``(N,)``, with the
    Wilson score interval (closed form; unlike the normal interval it stays inside [0, 1])."""
    values = _as_correct(correct, "correct")
    _check_confidence(confidence)
    n = len(values)
    p = float(values.sum() / n)
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return p, max(0.0, centre - half), min(1.0, centre + half)


def _t_within(theta: float, df: int) -> float:
    """P(|T| < sqrt(df) tan(theta)) for Student's t with integer ``df`` (Abramowitz and Stegun
    26.7.3, a finite series in cos(theta))."""
    c2 = math.cos(theta) ** 2
    term, total = 1.0, 1.0
    if df % 2 == 0:
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * c2
            total += term
        return math.sin(theta) * total
    for k in range(1, (df - 1) // 2):
        term *= (2 * k) / (2 * k + 1) * c2
        total += term
    series = math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0
    return 2 / math.pi * (theta + series)


def t_critical(confidence: float, df: int) -> float:
    """Two-sided critical value of Student's t with ``df`` degrees of freedom: the ``t`` with
    ``P(abs(T) < t) = confidence`` (``scipy.stats.t.ppf((1 + confidence) / 2, df)``, computed
    without scipy: the exact CDF for integer ``df``, inverted by bisection)."""
    _check_confidence(confidence)
    if df < 1:
        raise ValueError(f"df must be a positive whole number, got {df}; a t-interval needs at least two values")
    lo, hi = 0.0, math.pi / 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_within(mid, df) < confidence else (lo, mid)
    return math.sqrt(df) * math.tan((lo + hi) / 2)


def seed_spread(
    values: Sequence[float] | np.ndarray | torch.Tensor,
    *,
    confidence: float = 0.95,
    test_to_train: float = 0.0,
    unit: str = "seeds",
) -> Spread:
    """Mean, sample standard deviation (ddof=1; 0.0 for one value) and t-interval of the mean
    of one metric measured over seeds or repeated splits, ``values (S,)``.

    For repeated random train/test splits of one dataset, pass ``test_to_train`` (test images
    over training images): the runs share images, so the plain t-interval is too narrow, and
    Nadeau and Bengio's corrected variance ``(1/S + test_to_train) * sd**2`` widens it."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be one number per seed, shape (S,) with S >= 1, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"values must be finite, got {x.tolist()}; drop the runs that diverged, or report them apart")
    _check_confidence(confidence)
    if test_to_train < 0:
        raise ValueError(f"test_to_train must be 0 or more (test images / training images), got {test_to_train}")
    n, mean = x.size, float(x.mean())
    if n == 1:
        return Spread(mean, 0.0, 1, math.nan, math.nan, confidence, unit)
    std = float(x.std(ddof=1))
    half = t_critical(confidence, n - 1) * std * math.sqrt(1 / n + test_to_train)
    return Spread(mean, std, n, mean - half, mean + half, confidence, unit)
