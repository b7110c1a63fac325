"""The figures' helpers draw what they are given."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from companion import plots, stats  # noqa: E402


def test_with_intervals_draws_each_value_between_its_own_bounds():
    fig, ax = plt.subplots()
    estimates = [(0.5, 0.4, 0.7), (0.8, 0.75, 0.82)]
    line, _, (bars,) = plots.with_intervals(ax, [10, 20], estimates, label="probe")
    assert np.allclose(line.get_ydata(), [0.5, 0.8])
    segments = [np.asarray(s)[:, 1] for s in bars.get_segments()]
    assert np.allclose(segments, [[0.4, 0.7], [0.75, 0.82]])  # asymmetric bars, not ± one half-width
    assert ax.get_legend_handles_labels()[1] == ["probe"]
    plt.close(fig)


def test_with_intervals_takes_wilson_intervals():
    fig, ax = plt.subplots()
    correct = np.array([True] * 7 + [False] * 3)
    acc, low, high = stats.accuracy_interval(correct)
    line, _, (bars,) = plots.with_intervals(ax, [1], [stats.accuracy_interval(correct)])
    assert np.allclose(np.asarray(bars.get_segments()[0])[:, 1], [low, high]) and line.get_ydata()[0] == acc
    plt.close(fig)
