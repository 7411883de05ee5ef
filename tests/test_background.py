"""HistogramMarginals: the independent background of likelihood-ratio scores."""

import numpy as np

from sklearn_arcsm.background import HistogramMarginals


def test_each_marginal_integrates_to_one_over_the_training_range():
    X = np.random.default_rng(0).normal(size=(500, 3)) * [1.0, 10.0, 0.1]
    background = HistogramMarginals.fit(X)
    widths = np.diff(background.edges, axis=1)
    mass = (np.exp(background.log_densities) * widths).sum(axis=1)
    np.testing.assert_allclose(mass, 1.0)


def test_log_density_is_the_sum_of_bin_counts_against_a_brute_force_count():
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(100, 2)) * [1.0, 3.0]
    background = HistogramMarginals.fit(X)
    n_bins = 10  # ceil(sqrt(100))
    Y = np.r_[rng.uniform(size=(20, 2)) * [1.0, 3.0], X.max(0, keepdims=True)]
    expected = np.zeros(len(Y))
    for d in range(2):
        low, high = X[:, d].min(), X[:, d].max()
        width = (high - low) / n_bins
        for i, y in enumerate(Y[:, d]):
            k = min(int((y - low) // width), n_bins - 1)
            lo, hi = low + k * width, low + (k + 1) * width
            count = np.sum((X[:, d] >= lo) & ((X[:, d] < hi) | (k == n_bins - 1)))
            expected[i] += np.log((count + 0.5) / (100 + 0.5 * n_bins) / width)
    np.testing.assert_allclose(background.log_density(Y), expected)


def test_values_outside_the_range_take_the_typical_training_level():
    # Neither an empty bin's level nor a decaying tail: either would raise
    # the likelihood ratio of every value beyond the training range.
    X = np.random.default_rng(2).normal(size=(400, 1))
    background = HistogramMarginals.fit(X)
    far = np.array([[X.max() + 1.0], [X.max() + 1e6], [X.min() - 1e3]])
    typical = np.median(background.log_density(X))
    np.testing.assert_allclose(background.log_density(far), typical)
    assert typical > background.log_densities[0].min() + 1.0


def test_a_constant_feature_gets_a_unit_range_and_no_division_by_zero():
    X = np.c_[np.random.default_rng(3).normal(size=50), np.full(50, 2.0)]
    background = HistogramMarginals.fit(X)
    assert np.all(np.isfinite(background.log_densities))
    values = background.log_density(np.array([[0.0, 2.0], [0.0, 5.0]]))
    # 2.0 is the feature's typical value, and 5.0 is outside its range
    np.testing.assert_allclose(values[0], values[1])


def test_the_input_is_not_modified():
    X = np.random.default_rng(4).normal(size=(30, 2))
    copy = X.copy()
    HistogramMarginals.fit(X).log_density(X)
    np.testing.assert_array_equal(X, copy)
