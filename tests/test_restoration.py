"""Denoising and inpainting: the joint score, Tweedie, exact draws and MALA."""

import numpy as np
import pytest
import torch
from scipy import stats

from sklearn_arcsm import ARCSMDensity
from sklearn_arcsm.restoration import mala, missing_after_observed

# A correlated 3-D Gaussian: the conditional of (x0, x2) given x1 is known.
COV = np.array([[1.0, 0.6, 0.3], [0.6, 1.0, 0.5], [0.3, 0.5, 1.5]])
X1 = 0.7


def _gaussian_log_prob(x):
    precision = torch.as_tensor(np.linalg.inv(COV), dtype=x.dtype)
    return -0.5 * torch.einsum("ni,ij,nj->n", x, precision, x)


def _conditional_of_0_and_2():
    """Mean and covariance of (x0, x2) given x1 = X1."""
    keep = [0, 2]
    gain = COV[keep, 1] / COV[1, 1]
    mean = gain * X1
    cov = COV[np.ix_(keep, keep)] - np.outer(gain, COV[1, keep])
    return mean, cov


def _exact_conditional_draws(n, seed):
    mean, cov = _conditional_of_0_and_2()
    draws = np.random.RandomState(seed).multivariate_normal(mean, cov, size=n)
    x = np.full((n, 3), X1)
    x[:, [0, 2]] = draws
    return torch.as_tensor(x)


MOVABLE = torch.tensor([True, False, True])


def test_mala_leaves_the_conditional_invariant():
    # Started at exact draws, a fixed-step chain must stay at the target. A
    # large step (0.8, conditional variances about 0.6 and 1.3) makes
    # unadjusted Langevin visibly wrong (its stationary variance is inflated
    # by a factor 1 / (1 - h / (4 var))), so the Metropolis step is tested.
    n = 4000
    x0 = _exact_conditional_draws(n, seed=0)
    movable = MOVABLE.expand(n, 3)
    generator = torch.Generator().manual_seed(0)
    x, info = mala(
        _gaussian_log_prob,
        x0,
        movable,
        25,
        step_size=0.8,
        n_adapt=0,
        generator=generator,
    )
    assert torch.equal(x[:, 1], x0[:, 1])  # the observed entry never moves
    mean, cov = _conditional_of_0_and_2()
    draws = x[:, [0, 2]].numpy()
    se = np.sqrt(np.diag(cov) / n)
    np.testing.assert_array_less(np.abs(draws.mean(0) - mean), 4 * se)
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.08, atol=0.03)
    assert 0.2 < float(info["acceptance"].mean()) < 0.95


def test_mala_adapts_its_step_and_reaches_the_conditional_from_a_bad_start():
    n = 2000
    x0 = torch.full((n, 3), X1, dtype=torch.float64)
    x0[:, [0, 2]] = 4.0  # far in the tail
    generator = torch.Generator().manual_seed(1)
    x, info = mala(
        _gaussian_log_prob,
        x0,
        MOVABLE.expand(n, 3),
        300,
        step_size=1e-3,
        generator=generator,
    )
    mean, cov = _conditional_of_0_and_2()
    draws = x[:, [0, 2]].numpy()
    np.testing.assert_array_less(
        np.abs(draws.mean(0) - mean), 4 * np.sqrt(np.diag(cov) / n)
    )
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.1, atol=0.03)
    assert abs(float(info["acceptance"].mean()) - 0.574) < 0.1
    assert float(info["step_size"].min()) > 1e-2  # grew from 1e-3


def test_missing_after_observed():
    missing = torch.tensor(
        [
            [False, False, True, True],  # a suffix: exact
            [True, False, False, False],  # observed after missing
            [False, False, False, False],  # nothing missing
            [True, True, True, True],  # nothing observed
            [False, True, False, True],  # interleaved
        ]
    )
    expected = torch.tensor([True, False, True, True, False])
    assert torch.equal(missing_after_observed(missing), expected)


# ----------------------------------------------------------------------
# Estimator level
# ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    # Correlated, non-Gaussian, with a scale far from 1 (so that unit
    # conversions are tested): x1 depends on x0 non-linearly.
    rng = np.random.RandomState(0)
    x0 = rng.normal(size=1500)
    x1 = 0.8 * np.tanh(2 * x0) + 0.4 * rng.normal(size=1500)
    X = np.c_[3.0 * x0, 3.0 * x1 + 1.0]
    est = ARCSMDensity(
        hidden_layer_sizes=(16,),
        head_layer_sizes=(16,),
        max_epochs=25,
        random_state=0,
    ).fit(X)
    return est, X


def _brute_force_cdf(est, row, missing_dim):
    """CDF of the model's conditional of one entry given the other, on a grid."""
    grid = np.linspace(-20.0, 20.0, 8001)
    points = np.repeat(row[None], len(grid), axis=0)
    points[:, missing_dim] = grid
    log_p = est.score_samples(points)
    density = np.exp(log_p - log_p.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]))])
    return lambda t: np.interp(t, grid, cdf / cdf[-1])


@pytest.mark.parametrize(
    "missing_dim, method",
    [(1, "auto"), (0, "auto"), (1, "mala")],
    ids=["suffix-exact", "prefix-mala", "suffix-forced-mala"],
)
def test_inpainting_draws_the_models_conditional(fitted, missing_dim, method):
    # The model's conditional of one entry given the other is a 1-D density
    # known by brute force from score_samples; the draws must follow it. The
    # prefix case needs MALA (the observed entry comes after the missing
    # one); the suffix case is exact, and MALA must agree there too.
    est, X = fitted
    row = np.array([1.5, 1.0])
    n = 1500
    X_in = np.repeat(row[None], n, axis=0)
    mask = np.zeros_like(X_in, dtype=bool)
    mask[:, missing_dim] = True
    drawn = est.inpaint(X_in, mask, method=method, n_steps=60, random_state=0)
    np.testing.assert_array_equal(drawn[:, 1 - missing_dim], row[1 - missing_dim])
    ks = stats.kstest(drawn[:, missing_dim], _brute_force_cdf(est, row, missing_dim))
    assert ks.pvalue > 1e-3, ks


def test_inpainting_nans_by_default_without_mutating_the_input(fitted):
    est, X = fitted
    X_in = X[:5].copy()
    X_in[:, 1] = np.nan
    before = X_in.copy()
    out = est.inpaint(X_in, random_state=0)
    np.testing.assert_array_equal(X_in, before)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[:, 0], X[:5, 0])
    again = est.inpaint(X_in, random_state=0)
    np.testing.assert_array_equal(out, again)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mask=np.ones((5, 2), dtype=int)), "booleans"),
        (dict(mask=np.ones((5, 3), dtype=bool)), "shape of X"),
        (dict(mask=np.zeros((5, 2), dtype=bool)), "NaN or infinite"),
        (dict(n_steps=0), "positive integer"),
        (dict(method="gibbs"), "'auto' or 'mala'"),
    ],
)
def test_inpainting_bad_arguments_are_clear_errors(fitted, kwargs, match):
    est, X = fitted
    X_in = X[:5].copy()
    X_in[:, 1] = np.nan
    with pytest.raises(ValueError, match=match):
        est.inpaint(X_in, **kwargs)


def test_log_density_gradient_matches_finite_differences(fitted):
    # Central differences of score_samples, in the units of X; both
    # partials (the off-diagonal one flows through the context network).
    est, X = fitted
    points = X[:20]
    gradient = est.log_density_gradient(points)
    step = 1e-4
    for k in range(2):
        shift = np.zeros(2)
        shift[k] = step
        numeric = (
            est.score_samples(points + shift) - est.score_samples(points - shift)
        ) / (2 * step)
        np.testing.assert_allclose(gradient[:, k], numeric, rtol=1e-3, atol=1e-3)


def test_denoise_is_tweedie_on_a_gaussian():
    # Clean x ~ N(0, 1) per feature, noisy y = x + s z: the model of the
    # noisy density is N(0, 1 + s**2) and E[x | y] = y / (1 + s**2).
    rng = np.random.RandomState(0)
    s = 0.75
    clean = rng.normal(size=(3000, 2))
    noisy = clean + s * rng.normal(size=clean.shape)
    est = ARCSMDensity(
        hidden_layer_sizes=(8,),
        head_layer_sizes=(16,),
        max_epochs=15,
        random_state=0,
    ).fit(noisy)
    denoised = est.denoise(noisy[:500], s)
    slope = np.polyfit(noisy[:500].ravel(), denoised.ravel(), 1)[0]
    assert abs(slope - 1 / (1 + s**2)) < 0.06, slope
    error = np.mean((denoised - clean[:500]) ** 2)
    assert error < 0.85 * np.mean((noisy[:500] - clean[:500]) ** 2)


@pytest.mark.parametrize("noise_std", [0.0, -1.0, np.nan, [1.0, 2.0, 3.0]])
def test_denoise_bad_noise_std_is_a_clear_error(fitted, noise_std):
    est, X = fitted
    with pytest.raises(ValueError, match="noise_std"):
        est.denoise(X[:3], noise_std)


def _brute_force_first_score(est, points, step=1e-3):
    """d/dx0 log p(x0), with p(x0) the integral of the model's density over x1."""
    grid = np.linspace(-25.0, 25.0, 20001)

    def log_marginal(x0):
        pairs = np.c_[np.full(len(grid), x0), grid]
        log_p = est.score_samples(pairs)
        top = log_p.max()
        return top + np.log(np.trapezoid(np.exp(log_p - top), grid))

    return np.array(
        [(log_marginal(x + step) - log_marginal(x - step)) / (2 * step) for x in points]
    )


@pytest.fixture(scope="module", params=["plain", "quantile", "bounded"])
def fitted_variants(request, fitted):
    # The three elementwise maps between X and the model's coordinates:
    # standardization alone, a marginal map of every column, and a box.
    if request.param == "plain":
        return fitted
    _, X = fitted
    extra = (
        {"marginal_transform": "quantile"}
        if request.param == "quantile"
        else {"bounds": ([-15.0, -12.0], [15.0, 14.0])}
    )
    est = ARCSMDensity(
        hidden_layer_sizes=(16,),
        head_layer_sizes=(16,),
        max_epochs=10,
        random_state=0,
        **extra,
    ).fit(X)
    # the map under test is really there
    assert (est.marginal_ is not None) == (request.param == "quantile")
    assert (est.bounds_ is not None) == (request.param == "bounded")
    return est, X


def test_conditional_scores_are_the_derivatives_of_the_conditionals(fitted_variants):
    # The first conditional is the marginal of x0: its score is the
    # derivative of the log of the density integrated over x1, by brute
    # force. The last conditional's score is the joint score's last entry.
    est, X = fitted_variants
    points = X[:6]
    scores = est.conditional_scores(points)
    np.testing.assert_allclose(
        scores[:, 0], _brute_force_first_score(est, points[:, 0]), atol=2e-3
    )
    np.testing.assert_allclose(
        scores[:, 1], est.log_density_gradient(points)[:, 1], rtol=1e-6, atol=1e-8
    )


def test_conditional_scores_refuse_a_whitened_model(fitted):
    _, X = fitted
    est = ARCSMDensity(whiten="pca", max_epochs=2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="whiten"):
        est.conditional_scores(X[:3])
