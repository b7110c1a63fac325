"""The uncertainty of test results (companion.stats) against reference computations: a plain
bootstrap loop, scipy where it is installed, the Wilson interval solved as a quadratic, and
printed t tables."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import stats

try:
    import scipy.stats as scipy_stats
except ImportError:  # scipy comes with the `book` extra (scikit-learn), not with the package
    scipy_stats = None

needs_scipy = pytest.mark.skipif(scipy_stats is None, reason="scipy is not installed")


def _two_models(n: int, p_a: float, p_b: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random(n) < p_a, rng.random(n) < p_b


def _reference_interval(a, b, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """The paired percentile bootstrap written as a plain loop, one resample per draw."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        idx = rng.integers(0, len(a), size=len(a))
        differences.append(a[idx].mean() - b[idx].mean())
    low, high = np.percentile(differences, [50 * (1 - confidence), 50 * (1 + confidence)])
    return low, high


@pytest.mark.parametrize(("n", "resamples", "confidence"), [(50, 500, 0.95), (2_000, 1_200, 0.9), (3, 100, 0.99)])
def test_the_interval_is_the_plain_loop_with_the_same_draws(n, resamples, confidence):
    a, b = _two_models(n, 0.8, 0.7)
    result = stats.paired_bootstrap(a, b, resamples=resamples, confidence=confidence, seed=7)
    low, high = _reference_interval(a, b, resamples, confidence, seed=7)
    assert result.low == pytest.approx(low, abs=1e-12)
    assert result.high == pytest.approx(high, abs=1e-12)
    assert result.accuracy_a == pytest.approx(a.mean()) and result.accuracy_b == pytest.approx(b.mean())
    assert result.difference == pytest.approx(a.mean() - b.mean())
    assert result.n == n and result.confidence == confidence


def test_the_chunk_size_does_not_change_the_draws(monkeypatch):
    a, b = _two_models(300, 0.6, 0.5)
    whole = stats.paired_bootstrap(a, b, resamples=1_000, seed=3)
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 7 * 300 + 5)  # 7 resamples a chunk, the last one short
    assert stats.paired_bootstrap(a, b, resamples=1_000, seed=3) == whole


def test_the_seed_picks_the_draws():
    a, b = _two_models(200, 0.7, 0.6)
    assert stats.paired_bootstrap(a, b, seed=0) == stats.paired_bootstrap(a, b, seed=0)
    assert stats.paired_bootstrap(a, b, seed=0).low != stats.paired_bootstrap(a, b, seed=1).low


@needs_scipy
def test_the_interval_agrees_with_scipy_paired_percentile_bootstrap():
    a, b = _two_models(500, 0.75, 0.7, seed=5)
    ours = stats.paired_bootstrap(a, b, resamples=10_000)
    theirs = scipy_stats.bootstrap(
        (a.astype(float), b.astype(float)),
        lambda x, y, axis: x.mean(axis) - y.mean(axis),
        paired=True,
        vectorized=True,
        n_resamples=10_000,
        method="percentile",
        rng=np.random.default_rng(11),
    ).confidence_interval
    assert ours.low == pytest.approx(theirs.low, abs=0.006)
    assert ours.high == pytest.approx(theirs.high, abs=0.006)


def test_tensors_arrays_and_lists_give_the_same_comparison():
    a, b = _two_models(120, 0.7, 0.6)
    from_numpy = stats.paired_bootstrap(a, b, resamples=300)
    assert stats.paired_bootstrap(torch.from_numpy(a), torch.from_numpy(b), resamples=300) == from_numpy
    assert stats.paired_bootstrap(a.astype(int).tolist(), b.tolist(), resamples=300) == from_numpy


def test_identical_models_are_indistinguishable():
    a = _two_models(500, 0.8, 0.8)[0]
    result = stats.paired_bootstrap(a, a.copy(), names=("left", "right"))
    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
    assert not result.excludes_zero
    assert result.verdict() == "left and right are indistinguishable at this test size (n=500)"


def test_a_perfect_model_beats_a_coin_and_the_verdict_names_it():
    perfect, coin = np.ones(400, dtype=bool), np.arange(400) % 2 == 0
    result = stats.paired_bootstrap(perfect, coin, names=("perfect", "coin"))
    assert result.excludes_zero and result.low > 0.4
    assert result.verdict() == "perfect beats coin"
    swapped = stats.paired_bootstrap(coin, perfect, names=("coin", "perfect"))
    assert swapped.high < -0.4 and swapped.verdict() == "perfect beats coin"


def test_pairing_separates_models_an_unpaired_interval_cannot():
    """B is right on all but 10 of A's correct images: every image tells the same story, so
    the paired interval excludes zero while resampling each model on its own does not."""
    a = _two_models(1_000, 0.8, 0.0, seed=2)[0]
    b = a.copy()
    b[np.flatnonzero(a)[:10]] = False
    paired = stats.paired_bootstrap(a, b)
    assert paired.difference == pytest.approx(0.01) and paired.low > 0 and paired.excludes_zero

    rng = np.random.default_rng(0)
    unpaired = [a[rng.integers(0, 1_000, 1_000)].mean() - b[rng.integers(0, 1_000, 1_000)].mean() for _ in range(2_000)]
    low, high = np.percentile(unpaired, [2.5, 97.5])
    assert low < 0 < high


def test_the_one_line_summary():
    a = np.array([True] * 812 + [False] * 188)
    b = np.concatenate([a[:790], np.zeros(210, dtype=bool)])  # the probe is right on a subset of those
    line = str(stats.paired_bootstrap(a, b, names=("fine-tune", "probe")))
    assert line.startswith("fine-tune 0.812 vs probe 0.790: difference +0.022, 95% CI [+0.")
    assert line.endswith("], n=1000 -> fine-tune beats probe")
    tie = stats.paired_bootstrap(a, a, confidence=0.9)
    assert str(tie) == (
        "A 0.812 vs B 0.812: difference +0.000, 90% CI [+0.000, +0.000], n=1000 "
        "-> A and B are indistinguishable at this test size (n=1000)"
    )


def test_the_comparison_is_frozen():
    result = stats.paired_bootstrap([1, 0, 1], [1, 1, 0], resamples=100)
    with pytest.raises(AttributeError):
        result.low = 0.0


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60), seed=st.integers(0, 100))
def test_the_interval_holds_the_difference_and_swapping_negates_it(pairs, seed):
    a, b = np.array(pairs).T
    forward = stats.paired_bootstrap(a, b, resamples=200, seed=seed)
    backward = stats.paired_bootstrap(b, a, resamples=200, seed=seed)
    assert forward.low <= forward.difference <= forward.high
    assert -1 <= forward.low <= forward.high <= 1
    assert backward.difference == -forward.difference
    assert backward.low == pytest.approx(-forward.high, abs=1e-12)
    assert backward.high == pytest.approx(-forward.low, abs=1e-12)
    assert backward.excludes_zero == forward.excludes_zero


def _wilson_by_quadratic(k: int, n: int, confidence: float) -> tuple[float, float]:
    """The Wilson interval as its definition: the p with |k/n - p| = z sqrt(p (1 - p) / n)."""
    z, p_hat = NormalDist().inv_cdf((1 + confidence) / 2), k / n
    roots = np.roots([1 + z * z / n, -(2 * p_hat + z * z / n), p_hat * p_hat])
    return float(roots.real.min()), float(roots.real.max())


def test_wilson_interval_of_81_out_of_100():
    accuracy, low, high = stats.accuracy_interval([1] * 81 + [0] * 19)
    assert accuracy == 0.81
    assert (round(low, 3), round(high, 3)) == (0.722, 0.875)  # the textbook value
    assert (low, high) == pytest.approx(_wilson_by_quadratic(81, 100, 0.95), abs=1e-12)


@pytest.mark.parametrize(("k", "n", "confidence"), [(0, 20, 0.95), (20, 20, 0.95), (3, 7, 0.9), (950, 1000, 0.99)])
def test_wilson_interval_solves_its_quadratic(k, n, confidence):
    accuracy, low, high = stats.accuracy_interval(torch.arange(n) < k, confidence=confidence)
    assert accuracy == k / n
    assert (low, high) == pytest.approx(_wilson_by_quadratic(k, n, confidence), abs=1e-9)
    assert 0.0 <= low <= accuracy <= high <= 1.0


def test_wilson_interval_at_the_edges():
    z2 = NormalDist().inv_cdf(0.975) ** 2
    assert stats.accuracy_interval([1] * 20) == pytest.approx((1.0, 20 / (20 + z2), 1.0))
    assert stats.accuracy_interval([0] * 20) == pytest.approx((0.0, 0.0, z2 / (20 + z2)))


@needs_scipy
@pytest.mark.parametrize(("k", "n"), [(81, 100), (1, 3), (499, 1000)])
def test_wilson_interval_agrees_with_scipy(k, n):
    expected = scipy_stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    _, low, high = stats.accuracy_interval([1] * k + [0] * (n - k))
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-9)


@pytest.mark.parametrize(
    ("confidence", "df", "table"),
    [(0.95, 1, 12.706), (0.95, 2, 4.303), (0.95, 4, 2.776), (0.95, 9, 2.262), (0.99, 5, 4.032), (0.9, 30, 1.697)],
)
def test_t_critical_against_the_printed_table(confidence, df, table):
    assert stats.t_critical(confidence, df) == pytest.approx(table, abs=5e-4)


@needs_scipy
@pytest.mark.parametrize("df", [1, 2, 3, 6, 29, 31, 200, 5_000])
@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.95, 0.999])
def test_t_critical_agrees_with_scipy(df, confidence):
    assert stats.t_critical(confidence, df) == pytest.approx(scipy_stats.t.ppf((1 + confidence) / 2, df), rel=1e-9)


def test_t_critical_tends_to_the_normal_quantile():
    assert stats.t_critical(0.95, 10_000) == pytest.approx(NormalDist().inv_cdf(0.975), abs=1e-3)


def test_seed_spread_against_numpy():
    values = [0.78, 0.77, 0.795, 0.781, 0.779]
    spread = stats.seed_spread(values)
    assert spread.mean == pytest.approx(np.mean(values)) and spread.std == pytest.approx(np.std(values, ddof=1))
    half = 2.7764451 * np.std(values, ddof=1) / math.sqrt(5)  # t(0.975, 4)
    assert (spread.low, spread.high) == pytest.approx((np.mean(values) - half, np.mean(values) + half), abs=1e-6)
    assert spread.n == 5
    assert str(spread) == (
        f"0.781 ± {spread.std:.3f} (mean ± sd over 5 seeds; 95% CI [{spread.low:.3f}, {spread.high:.3f}])"
    )


@needs_scipy
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_seed_spread_agrees_with_scipy_t_interval(confidence):
    values = np.array([0.61, 0.64, 0.58, 0.66, 0.6, 0.63, 0.62])
    spread = stats.seed_spread(torch.tensor(values), confidence=confidence)
    low, high = scipy_stats.t.interval(confidence, len(values) - 1, loc=values.mean(), scale=scipy_stats.sem(values))
    assert (spread.low, spread.high) == pytest.approx((low, high), abs=1e-9)


def test_one_seed_has_no_spread_and_no_interval():
    spread = stats.seed_spread([0.8])
    assert (spread.mean, spread.std, spread.n) == (0.8, 0.0, 1)
    assert math.isnan(spread.low) and math.isnan(spread.high)
    assert str(spread) == "0.800 (one of seeds: no spread and no CI; run more)"


def test_the_corrected_interval_of_repeated_splits_is_nadeau_and_bengios():
    values = np.array([0.10, 0.04, 0.07, 0.13])
    plain = stats.seed_spread(values, unit="splits")
    corrected = stats.seed_spread(values, test_to_train=0.25, unit="splits")
    sd, t = values.std(ddof=1), stats.t_critical(0.95, 3)
    assert corrected.high - corrected.mean == pytest.approx(t * sd * math.sqrt(1 / 4 + 0.25))
    assert plain.high - plain.mean == pytest.approx(t * sd / 2)
    assert corrected.low < plain.low and "over 4 splits" in str(corrected)
    assert plain.excludes_zero and not corrected.excludes_zero  # the correction can change the verdict
    with pytest.raises(ValueError, match="test_to_train"):
        stats.seed_spread(values, test_to_train=-1)


def test_equal_seeds_have_a_zero_width_interval():
    spread = stats.seed_spread(np.full(4, 0.5))
    assert (spread.std, spread.low, spread.high) == (0.0, 0.5, 0.5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: stats.paired_bootstrap([1, 0, 1], [1, 0]), "3 test images but correct_b has 2"),
        (lambda: stats.paired_bootstrap([], []), "correct_a is empty"),
        (lambda: stats.paired_bootstrap([[1, 0]], [[1, 0]]), r"shape \(N,\), got shape \(1, 2\)"),
        (lambda: stats.paired_bootstrap([0.9, 0.2], [1, 0]), "True/False or 0/1"),
        (lambda: stats.paired_bootstrap([1, 0], [2, 0]), "correct_b must be True/False or 0/1"),
        (lambda: stats.paired_bootstrap(["1", "0"], [1, 0]), "True/False or 0/1"),
        (lambda: stats.paired_bootstrap([1, 0], [1, 0], confidence=95), "strictly between 0 and 1, got 95"),
        (lambda: stats.paired_bootstrap([1, 0], [1, 0], confidence=0.0), "strictly between 0 and 1"),
        (lambda: stats.paired_bootstrap([1, 0], [1, 0], confidence=1.0), "strictly between 0 and 1"),
        (lambda: stats.paired_bootstrap([1, 0], [1, 0], resamples=99), "at least 100, got 99"),
        (lambda: stats.paired_bootstrap([1, 0], [1, 0], resamples=1e4), "whole number"),
        (lambda: stats.accuracy_interval([]), "correct is empty"),
        (lambda: stats.accuracy_interval([1, 0], confidence=1.5), "strictly between 0 and 1"),
        (lambda: stats.seed_spread([]), r"shape \(S,\) with S >= 1"),
        (lambda: stats.seed_spread([0.7, float("nan")]), "must be finite"),
        (lambda: stats.seed_spread([0.7, 0.8], confidence=-0.1), "strictly between 0 and 1"),
        (lambda: stats.t_critical(0.95, 0), "df must be a positive whole number"),
    ],
)
def test_bad_input_is_named_with_a_fix(call, message):
    with pytest.raises(ValueError, match=message):
        call()
