"""Exact conditional scores of Gaussian-mixture targets, smoothed or not.

``CSMScoreEstimator`` learns the autoregressive conditional scores
``s_d(y) = d/dy_d log p(y_1, ..., y_d)`` of its training data smoothed by
Gaussian noise (``noise_levels_[-1]`` standardized units). For a mixture of
Gaussians ``p = sum_k w_k N(mu_k, S_k)`` the smoothed density is again one,
with covariances ``S_k + diag(tau^2)``, and every marginal ``p(y_<=d)`` is the
mixture of the components' marginals, so

    s_d(y) = sum_k r_k(y_<=d) * ( -[S_k,<=d^-1 (y_<=d - mu_k,<=d)]_d ),

with ``r_k`` the responsibilities under the marginal. The targets below are
all of this form: a correlated Gaussian (one component), a mixture, and the
rotated banana, written as a continuous mixture over its latent coordinate
(``a ~ N(0, 1)``, ``b | a ~ N(a^2 / 2 - 0.5, 0.2^2)``, ``x = R (a, b)``) and
computed on a fine grid of ``a``: with smoothing noise of standard deviation
0.08 the scores of 2,001 and 32,001 grid points agree to 1e-13; without
noise, each grid slice needs a width (see ``banana``), which biases the
scores by about 1e-2 (of a spread of 4) at 4,001 points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

__all__ = ["ScoreTarget", "banana", "correlated_gaussian", "gaussian_mixture"]


@dataclass
class ScoreTarget:
    """Mixture components ``log_weights (K,)``, ``means (K, D)``, ``covs (K, D, D)``."""

    name: str
    log_weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray
    sampler: callable
    # Added to every covariance when there is no smoothing noise (see banana).
    unsmoothed_jitter: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    def sample(self, n, rng):
        return self.sampler(n, rng)

    def conditional_scores(self, Y, noise_std=None):
        """Exact ``s_d(Y)`` of the target smoothed by ``N(0, diag(noise_std^2))``.

        Parameters
        ----------
        Y : ndarray of shape (n, D)
        noise_std : None, float or ndarray of shape (D,)
            Standard deviation of the smoothing noise per column (None: none).

        Returns
        -------
        scores : ndarray of shape (n, D)
        """
        Y = np.asarray(Y, dtype=np.float64)
        if noise_std is not None:
            tau = np.broadcast_to(np.asarray(noise_std, float), (self.n_features,))
            covs = self.covs + np.diag(tau**2)
        elif self.unsmoothed_jitter is not None:
            covs = self.covs + self.unsmoothed_jitter
        else:
            covs = self.covs
        scores = np.empty_like(Y)
        for d in range(self.n_features):
            sub = covs[:, : d + 1, : d + 1]
            prec = np.linalg.inv(sub)
            diff = Y[:, None, : d + 1] - self.means[None, :, : d + 1]  # (n, K, d+1)
            sol = np.einsum("kij,nkj->nki", prec, diff)
            _, logdet = np.linalg.slogdet(sub)
            log_comp = self.log_weights - 0.5 * logdet - 0.5 * (diff * sol).sum(-1)
            resp = np.exp(log_comp - logsumexp(log_comp, axis=1, keepdims=True))
            scores[:, d] = -(resp * sol[:, :, d]).sum(axis=1)
        return scores


def correlated_gaussian(dim=8, seed=0) -> ScoreTarget:
    """A Gaussian with random correlations and scales from 0.3 to 3."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    cov = q @ np.diag(np.geomspace(0.3, 3.0, dim) ** 2) @ q.T
    mean = rng.normal(0, 2, dim)
    chol = np.linalg.cholesky(cov)

    def sampler(n, rng):
        return mean + rng.standard_normal((n, dim)) @ chol.T

    return ScoreTarget(f"gaussian{dim}", np.zeros(1), mean[None], cov[None], sampler)


def gaussian_mixture() -> ScoreTarget:
    """Three 2-D Gaussians of unequal weight, spread and orientation."""
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]])
    covs = np.array(
        [[[1.0, 0.6], [0.6, 0.8]], [[0.5, -0.3], [-0.3, 0.6]], [[0.3, 0.0], [0.0, 1.2]]]
    )
    chols = np.linalg.cholesky(covs)

    def sampler(n, rng):
        k = rng.choice(3, size=n, p=weights)
        return means[k] + np.einsum("nij,nj->ni", chols[k], rng.standard_normal((n, 2)))

    return ScoreTarget("mixture2", np.log(weights), means, covs, sampler)


def banana(n_grid=4001) -> ScoreTarget:
    """The quality suite's rotated banana as a continuous mixture over ``a``."""
    c = np.sqrt(0.5)
    R = np.array([[c, -c], [c, c]])
    a = np.linspace(-8.0, 8.0, n_grid)
    log_w = -0.5 * a**2 + np.log(a[1] - a[0]) - 0.5 * np.log(2 * np.pi)
    # Each grid slice is a Gaussian along b and a point along a. Smoothing
    # noise much wider than the grid step h makes the sum of slices smooth;
    # without noise each slice gets h as its width along a (a narrower slice
    # makes the sum bumpy and its gradient wrong), which adds h^2 = 1.6e-5
    # to the variance of a.
    h = a[1] - a[0]
    means = np.column_stack([a, 0.5 * a**2 - 0.5]) @ R.T
    covs = np.broadcast_to(R @ np.diag([0.0, 0.2**2]) @ R.T, (n_grid, 2, 2)).copy()
    jitter = R @ np.diag([h**2, 0.0]) @ R.T

    def sampler(n, rng):
        aa = rng.standard_normal(n)
        bb = 0.5 * aa**2 - 0.5 + 0.2 * rng.standard_normal(n)
        return np.column_stack([aa, bb]) @ R.T

    return ScoreTarget("banana", log_w, means, covs, sampler, jitter)
