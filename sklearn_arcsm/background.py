"""A background of independent marginals, for likelihood-ratio outlier scores.

A likelihood model ranks inputs first by their low-level statistics: how
much of an image is dark background, how many values sit where every
feature's marginal piles up. Those statistics vary a lot between inliers
and barely between inliers and *semantic* outliers (mirrored digits,
another data set of the same kind), so the log-density's spread among the
inliers hides the outliers (Ren et al., 2019, "Likelihood ratios for
out-of-distribution detection"; Serra et al., 2020, "Input complexity and
out-of-distribution detection"). Their remedy is a ratio to a *background*
model that captures the low-level statistics only. The simplest background
keeps no dependence at all: the product of the features' marginals. The
ratio::

    log p(x) - sum_d log q_d(x_d)

is then the pointwise total correlation of ``x`` under the model: how much
more likely the model finds the features *together* than each on its own.

``q_d`` is a histogram of the training values of feature ``d``
(``ceil(sqrt(n))`` equal-width bins over the training range, half a count
added to every bin so that no bin is empty). Outside the training range the
histogram has seen nothing, and a background that fell there (to an empty
bin's level, or along a tail) would *raise* the ratio of every value beyond
the range: subtracting a very negative ``log q_d`` rewards the value for
being extreme. So outside the range ``log q_d`` takes the feature's typical
level, the median of ``log q_d`` over the training values: the background
then neither rewards nor excuses an extreme value, and the model alone
decides how unlikely it is. Measured with the default ARCSMDensity on three
of scikit-learn's tables (``benchmarks/bench_outliers_tabular.py``'s pilot,
one class against another, where most outliers have a value beyond the
training range): the empty-bin level gave AUROCs of 0.864 (iris) and 0.928
(wine), the typical level 0.935 and 0.959; on digits, where almost no pixel
leaves its range, the two agree within 0.003. Pure numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["HistogramMarginals"]

# Added to every bin's count: no value inside the range has density zero.
PSEUDO_COUNT = 0.5


class HistogramMarginals:
    """Independent per-feature histograms, at a typical level outside the range.

    Parameters
    ----------
    edges : ndarray of shape (n_features, n_bins + 1)
        Bin edges of each feature, increasing.
    log_densities : ndarray of shape (n_features, n_bins)
        Log-density of each bin (count plus :data:`PSEUDO_COUNT`, over the
        total and the bin width).
    log_outside : ndarray of shape (n_features,)
        Value of ``log q_d`` outside ``[edges[:, 0], edges[:, -1]]``: the
        median of ``log q_d`` over the training values of feature ``d``.

    See :meth:`fit` to build one from data.
    """

    def __init__(self, edges, log_densities, log_outside):
        self.edges = np.asarray(edges, dtype=np.float64)
        self.log_densities = np.asarray(log_densities, dtype=np.float64)
        self.log_outside = np.asarray(log_outside, dtype=np.float64)

    @classmethod
    def fit(cls, X: np.ndarray) -> HistogramMarginals:
        """Histograms of the columns of ``X``.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Finite training data.

        Returns
        -------
        HistogramMarginals
        """
        X = np.asarray(X, dtype=np.float64)
        n_samples, n_features = X.shape
        n_bins = int(np.ceil(np.sqrt(n_samples)))
        low, high = X.min(axis=0), X.max(axis=0)
        # A constant feature gets one unit of width around its value: any
        # other value is then outside its range and takes the typical level.
        flat = high <= low
        low, high = np.where(flat, low - 0.5, low), np.where(flat, high + 0.5, high)
        fractions = np.linspace(0.0, 1.0, n_bins + 1)
        edges = low[:, None] + (high - low)[:, None] * fractions
        edges[:, -1] = high  # exact, so that the maximum falls inside
        widths = (high - low) / n_bins
        total = n_samples + PSEUDO_COUNT * n_bins
        # One binning of X gives both the counts and each training value's
        # bin, so the lookup of log_density uses the bins that were counted.
        index = _bin_index(edges, X)
        counts = np.stack(
            [np.bincount(index[:, d], minlength=n_bins) for d in range(n_features)]
        )
        log_widths = np.log(widths)
        log_densities = np.log((counts + PSEUDO_COUNT) / total) - log_widths[:, None]
        typical = np.median(np.take_along_axis(log_densities, index.T, axis=1), axis=1)
        return cls(edges, log_densities, typical)

    @property
    def n_features(self) -> int:
        return self.edges.shape[0]

    def log_density(self, X: np.ndarray) -> np.ndarray:
        """``sum_d log q_d(x_d)`` per row.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        X = np.asarray(X, dtype=np.float64)
        index = _bin_index(self.edges, X)
        per_bin = np.take_along_axis(self.log_densities, index.T, axis=1).T
        inside = (X >= self.edges[:, 0]) & (X <= self.edges[:, -1])
        return np.where(inside, per_bin, self.log_outside).sum(axis=1)


def _bin_index(edges: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Bin of each entry, ``(n_samples, n_features)``, clipped into range.

    Bins are ``[e_k, e_k+1)``, the last one closed, as in numpy.histogram.
    """
    index = [
        np.searchsorted(edges[d], X[:, d], side="right") - 1 for d in range(len(edges))
    ]
    return np.clip(np.stack(index, axis=1), 0, edges.shape[1] - 2)
