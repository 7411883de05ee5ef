"""Target distributions with exact log-densities and exact samplers.

Each target stresses one thing a density estimator can get wrong. All are
defined in closed form; ``log_prob`` is exact (the ring's truncation at
``r = 0`` is below 1e-20 of its mass) and ``sample`` draws exact samples.
Parameters that are random (means, mixing matrices) are fixed by the target's
own seed, so the distribution is the same in every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import special, stats

__all__ = ["TARGETS", "Target", "make_targets"]

LOG_2PI = np.log(2.0 * np.pi)


def _normal_logpdf(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * LOG_2PI


@dataclass
class Target:
    """A distribution: name, dimension, what it stresses, exact log p and sampler."""

    name: str
    n_features: int
    stresses: str
    log_prob: callable = field(repr=False)
    sample: callable = field(repr=False)


def rings() -> Target:
    """Two concentric rings of unequal mass: separated, curved modes.

    Radius ~ 0.3 N(1, 0.1^2) + 0.7 N(2.5, 0.1^2), angle uniform, so
    ``p(x) = p_r(|x|) / (2 pi |x|)``. The conditional of ``x_2`` given
    ``x_1`` has two to four separated modes whose weights matter.
    """
    radii, weights, width = np.array([1.0, 2.5]), np.array([0.3, 0.7]), 0.1

    def log_prob(X):
        r = np.linalg.norm(X, axis=1)
        comps = np.log(weights) + _normal_logpdf(r[:, None], radii, width)
        return special.logsumexp(comps, axis=1) - np.log(2 * np.pi * r)

    def sample(n, rng):
        k = rng.choice(2, size=n, p=weights)
        r = np.abs(radii[k] + width * rng.standard_normal(n))
        theta = rng.uniform(0, 2 * np.pi, n)
        return np.column_stack([r * np.cos(theta), r * np.sin(theta)])

    return Target("rings", 2, "separated curved modes, unequal mass", log_prob, sample)


def mixture() -> Target:
    """Eight well-separated Gaussians in 4-D with weights from 0.3 to 0.02."""
    rng = np.random.default_rng(1)
    dim, n_comp = 4, 8
    weights = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02])
    means = rng.uniform(-6, 6, size=(n_comp, dim))
    covs = []
    for _ in range(n_comp):
        A = rng.standard_normal((dim, dim)) * 0.25
        covs.append(A @ A.T + 0.05 * np.eye(dim))
    dists = [stats.multivariate_normal(m, c) for m, c in zip(means, covs, strict=True)]

    def log_prob(X):
        comps = np.column_stack([d.logpdf(X) for d in dists]) + np.log(weights)
        return special.logsumexp(comps, axis=1)

    def sample(n, rng):
        k = rng.choice(n_comp, size=n, p=weights)
        out = np.empty((n, dim))
        for j in range(n_comp):
            idx = np.flatnonzero(k == j)
            out[idx] = rng.multivariate_normal(means[j], covs[j], size=len(idx))
        return out

    return Target(
        "mixture", dim, "separated modes, weights 0.3 to 0.02", log_prob, sample
    )


def banana() -> Target:
    """A curved ridge, rotated 45 degrees so no coordinate order makes it easy.

    ``a ~ N(0, 1)``, ``b | a ~ N(a^2 / 2 - 0.5, 0.2^2)``, ``x = R (a, b)``.
    """
    c = np.sqrt(0.5)
    R = np.array([[c, -c], [c, c]])

    def log_prob(X):
        ab = X @ R  # R orthogonal: (a, b) = R^T x
        a, b = ab[:, 0], ab[:, 1]
        return _normal_logpdf(a, 0, 1) + _normal_logpdf(b, 0.5 * a**2 - 0.5, 0.2)

    def sample(n, rng):
        a = rng.standard_normal(n)
        b = 0.5 * a**2 - 0.5 + 0.2 * rng.standard_normal(n)
        return np.column_stack([a, b]) @ R.T

    return Target("banana", 2, "curved ridge (rotated)", log_prob, sample)


def funnel() -> Target:
    """Neal's funnel in 8-D: ``v ~ N(0, 1.5^2)``, ``x_i | v ~ N(0, e^v)``."""
    dim, scale = 8, 1.5

    def log_prob(X):
        v = X[:, 0]
        return _normal_logpdf(v, 0, scale) + _normal_logpdf(
            X[:, 1:], 0, np.exp(v / 2)[:, None]
        ).sum(axis=1)

    def sample(n, rng):
        v = scale * rng.standard_normal(n)
        return np.column_stack(
            [v, np.exp(v / 2)[:, None] * rng.standard_normal((n, dim - 1))]
        )

    return Target("funnel", dim, "scale varying by a factor 90", log_prob, sample)


def student() -> Target:
    """Correlated multivariate Student t in 8-D, 3 degrees of freedom."""
    rng = np.random.default_rng(2)
    dim, df = 8, 3.0
    A = rng.standard_normal((dim, dim))
    cov = A @ A.T / dim + 0.1 * np.eye(dim)
    dist = stats.multivariate_t(np.zeros(dim), cov, df=df)

    def log_prob(X):
        return dist.logpdf(X)

    def sample(n, rng):
        return dist.rvs(size=n, random_state=rng)

    return Target("student_t", dim, "heavy tails (df=3), correlated", log_prob, sample)


def switching() -> Target:
    """A 16-D Markov chain with bimodal conditionals whose weights switch.

    ``x_1 ~ N(0, 1)``; ``x_d | x_{d-1}`` is ``w N(m + 1.5, 0.4^2) +
    (1 - w) N(m - 1.5, 0.4^2)`` with ``m = sin(x_{d-1})`` and
    ``w = sigmoid(2 x_{d-1})``.
    """
    dim, gap, width = 16, 1.5, 0.4

    def cond_logpdf(x, prev):
        m, logw = np.sin(prev), -np.logaddexp(0, -2 * prev)
        log1mw = -np.logaddexp(0, 2 * prev)
        return np.logaddexp(
            logw + _normal_logpdf(x, m + gap, width),
            log1mw + _normal_logpdf(x, m - gap, width),
        )

    def log_prob(X):
        return _normal_logpdf(X[:, 0], 0, 1) + cond_logpdf(X[:, 1:], X[:, :-1]).sum(1)

    def sample(n, rng):
        X = np.empty((n, dim))
        X[:, 0] = rng.standard_normal(n)
        for d in range(1, dim):
            prev = X[:, d - 1]
            up = rng.uniform(size=n) < special.expit(2 * prev)
            X[:, d] = np.sin(prev) + np.where(up, gap, -gap)
            X[:, d] += width * rng.standard_normal(n)
        return X

    return Target(
        "switching", dim, "bimodal conditionals, switching weights", log_prob, sample
    )


def mixed_ica() -> Target:
    """32-D linear mixture of independent non-Gaussian sources.

    ``x = A z`` with a random well-conditioned ``A``; 8 sources are bimodal
    (``0.5 N(-1, 0.4^2) + 0.5 N(1, 0.4^2)``), 8 are Student t (5 dof), 16
    are Gaussian. Every coordinate is correlated with every other.
    """
    rng = np.random.default_rng(3)
    dim = 32
    Q1, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    Q2, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    A = Q1 @ np.diag(np.geomspace(0.5, 2.0, dim)) @ Q2
    A_inv = np.linalg.inv(A)
    log_det = np.linalg.slogdet(A)[1]

    def log_prob(X):
        Z = X @ A_inv.T
        bi = np.logaddexp(
            _normal_logpdf(Z[:, :8], -1, 0.4), _normal_logpdf(Z[:, :8], 1, 0.4)
        ) + np.log(0.5)
        heavy = stats.t.logpdf(Z[:, 8:16], df=5)
        gauss = _normal_logpdf(Z[:, 16:], 0, 1)
        return bi.sum(1) + heavy.sum(1) + gauss.sum(1) - log_det

    def sample(n, rng):
        Z = np.empty((n, dim))
        Z[:, :8] = rng.choice([-1.0, 1.0], size=(n, 8)) + 0.4 * rng.standard_normal(
            (n, 8)
        )
        Z[:, 8:16] = rng.standard_t(5, size=(n, 8))
        Z[:, 16:] = rng.standard_normal((n, 16))
        return Z @ A.T

    return Target(
        "mixed_ica32", dim, "correlated 32-D, non-Gaussian sources", log_prob, sample
    )


_FACTORIES = (rings, mixture, banana, funnel, student, switching, mixed_ica)
TARGETS = {factory().name: factory for factory in _FACTORIES}


def make_targets(names=None) -> list[Target]:
    """Instantiate the named targets (all by default), in suite order."""
    names = list(TARGETS) if names is None else names
    return [TARGETS[n]() for n in names]
