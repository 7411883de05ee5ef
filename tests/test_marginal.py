"""Marginal Gaussianization: the elementwise map, and the density built on it."""

import copy
import pickle

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import trapezoid

from sklearn_arcsm import ARCSMDensity
from sklearn_arcsm.marginal import SPIKE_RATIO, MarginalGaussianization, n_knots_for
from tests.conftest import saved_before

FIT = dict(
    max_epochs=8,
    hidden_layer_sizes=(16,),
    head_layer_sizes=(16,),
    batch_size=64,
    random_state=0,
)


def _spiky(n=600, seed=0):
    """Rain-like data: half the rows in a box of width 0.01, the rest a tail.

    Column 1 depends on column 0; column 2 is a smooth, independent normal.
    """
    rng = np.random.RandomState(seed)
    dry = rng.uniform(size=n) < 0.5
    rain = np.where(dry, rng.uniform(0.0, 0.01, n), rng.exponential(3.0, n))
    other = 0.5 * rain + rng.normal(size=n)
    return np.column_stack([rain, other, rng.normal(2.0, 3.0, n)])


def _standardized(X):
    return (X - X.mean(0)) / X.std(0)


# ----------------------------------------------------------------------------
# The map
# ----------------------------------------------------------------------------
def test_auto_maps_only_the_near_singular_column():
    S = _standardized(_spiky())
    auto = MarginalGaussianization.fit(S, "auto")
    np.testing.assert_array_equal(auto.active, [True, False, False])
    every = MarginalGaussianization.fit(S, "quantile")
    np.testing.assert_array_equal(every.active, [True, True, True])
    # Columns passed through are exactly the identity.
    s = torch.as_tensor(S[:20])
    np.testing.assert_array_equal(auto.forward(s)[:, 1:], s[:, 1:])
    np.testing.assert_array_equal(auto.log_derivative(s)[:, 1:], 0.0)


def test_the_spike_test_reads_the_steepest_secant():
    # A standard normal column is far below the ratio; squeezing its
    # central half into a sliver raises the steepest secant above it.
    rng = np.random.RandomState(0)
    z = rng.normal(size=(2000, 1))
    assert not MarginalGaussianization.fit(z).active[0]
    squeezed = np.where(np.abs(z) < 0.67, z / (2 * SPIKE_RATIO), z)
    assert MarginalGaussianization.fit(squeezed).active[0]


def test_constant_columns_pass_through():
    S = np.column_stack([np.zeros(50), np.random.RandomState(0).normal(size=50)])
    m = MarginalGaussianization.fit(S, "quantile")
    np.testing.assert_array_equal(m.active, [False, True])


def test_map_round_trips_including_the_tails():
    S = _standardized(_spiky())
    m = MarginalGaussianization.fit(S, "quantile")
    s = torch.as_tensor(np.vstack([S[:200], np.full((1, 3), -40.0), [[40.0] * 3]]))
    np.testing.assert_allclose(m.inverse(m.forward(s)), s, rtol=0, atol=1e-10)
    u = torch.linspace(-9, 9, 301, dtype=torch.float64)[:, None].repeat(1, 3)
    np.testing.assert_allclose(m.forward(m.inverse(u)), u, rtol=0, atol=1e-10)


def test_derivatives_match_autograd():
    S = _standardized(_spiky())
    m = MarginalGaussianization.fit(S, "quantile")
    s = torch.as_tensor(np.vstack([S[:200], [[-40.0] * 3, [40.0] * 3]]))
    s.requires_grad_(True)
    (du,) = torch.autograd.grad(m.forward(s).sum(), s, create_graph=True)
    np.testing.assert_allclose(
        m.log_derivative(s).detach(), torch.log(du).detach(), atol=1e-12
    )
    (d_log_du,) = torch.autograd.grad(m.log_derivative(s).sum(), s)
    np.testing.assert_allclose(
        m.log_derivative_grad(s).detach(), d_log_du, rtol=1e-9, atol=1e-9
    )
    # The chain rule: scores of the standard normal pushed through the map.
    scores_u = -m.forward(s).detach()
    log_p = (-0.5 * m.forward(s) ** 2 + m.log_derivative(s)).sum()
    (expected,) = torch.autograd.grad(log_p, s)
    np.testing.assert_allclose(
        m.scores(s.detach(), scores_u), expected, rtol=1e-9, atol=1e-9
    )


def test_map_is_strictly_increasing_and_its_density_integrates_to_one():
    # Uneven quantile spacings (a spike next to wide gaps) are where a cubic
    # without the Fritsch-Carlson bounds would overshoot and turn back.
    S = _standardized(_spiky(n=3000, seed=1))
    m = MarginalGaussianization.fit(S, "quantile")
    s = torch.as_tensor(
        np.unique(np.concatenate([np.linspace(-30, 30, 600_001), S[:, 0]]))
    )[:, None].repeat(1, 3)
    assert torch.all(torch.exp(m.log_derivative(s)) > 0)
    assert torch.all(torch.diff(m.forward(s), dim=0) > 0)
    # The standard normal density of u pulled back, integrated by
    # Gauss-Legendre between consecutive knots (smooth there) and on
    # geometric cells over the tails (steep where a spike ends): one.
    nodes, weights = np.polynomial.legendre.leggauss(40)
    steps = np.geomspace(1e-6, 60.0, 80)
    for d in range(3):
        knots = m.knots[d]
        edges = np.unique(np.concatenate([knots, knots[0] - steps, knots[-1] + steps]))
        lo, hi = edges[:-1, None], edges[1:, None]
        points = (lo + (hi - lo) * (nodes + 1) / 2).ravel()
        column = torch.as_tensor(np.tile(points[:, None], (1, 3)))
        u, log_du = m.forward(column)[:, d], m.log_derivative(column)[:, d]
        density = np.exp(-0.5 * u.numpy() ** 2 + log_du.numpy()) / np.sqrt(2 * np.pi)
        total = np.sum(density * ((hi - lo) / 2 * weights).ravel())
        assert total == pytest.approx(1.0, abs=1e-9)


def test_knots_grow_with_the_square_root_of_the_rows():
    assert n_knots_for(20) == 10
    assert n_knots_for(1600) == 40
    assert n_knots_for(10**6) == 100


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="'auto' or 'quantile'"):
        MarginalGaussianization.fit(np.zeros((5, 1)), "rank")


# ----------------------------------------------------------------------------
# The density
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spiky_fit():
    X = _spiky()
    return ARCSMDensity(**FIT).fit(X), X


def test_default_fit_maps_the_spike(spiky_fit):
    est, _ = spiky_fit
    assert est.marginal_transform == "auto"
    np.testing.assert_array_equal(est.marginal_.active, [True, False, False])


def test_density_and_samples_are_the_unmapped_model_s_pushed_through_the_map(
    spiky_fit,
):
    # The same module without the map models the mapped rows: log p(x)
    # differs by the map's log-derivatives, and samples are its samples
    # mapped back.
    est, X = spiky_fit
    m = est.marginal_
    plain = copy.deepcopy(est)
    plain.marginal_ = None
    S = (X[:50] - est.mean_) / est.scale_
    U = m.forward(torch.as_tensor(S)).numpy()
    log_det = m.log_derivative(torch.as_tensor(S)).sum(1).numpy()
    np.testing.assert_allclose(
        est.score_samples(X[:50]),
        plain.score_samples(U * est.scale_ + est.mean_) + log_det,
        rtol=0,
        atol=1e-9,
    )
    drawn = (plain.sample(20, random_state=3) - est.mean_) / est.scale_
    back = m.inverse(torch.as_tensor(drawn)).numpy()
    np.testing.assert_allclose(
        est.sample(20, random_state=3), back * est.scale_ + est.mean_, atol=1e-9
    )


def test_mapped_1d_density_integrates_to_one():
    X = _spiky()[:, :1]
    est = ARCSMDensity(**FIT).fit(X)
    assert est.marginal_.active[0]
    # Fine where the box is (width 0.01), coarser over the tail.
    grid = np.unique(
        np.concatenate(
            [np.linspace(-0.5, 0.5, 200_001), np.linspace(-60, 120, 400_001)]
        )
    )
    density = np.exp(est.score_samples(grid[:, None]))
    assert abs(trapezoid(density, grid) - 1.0) < 2e-3


def test_samples_keep_the_spike(spiky_fit):
    # About half of the data lies in [0, 0.01]; samples drawn in the mapped
    # coordinates and not mapped back would put almost none there.
    est, X = spiky_fit
    drawn = est.sample(2000, random_state=0)
    share = np.mean((drawn[:, 0] > -0.005) & (drawn[:, 0] < 0.015))
    assert abs(share - 0.5) < 0.1


def test_gradient_matches_finite_differences(spiky_fit):
    est, X = spiky_fit
    rows = X[X[:, 0] > 0.5][:10]  # off the box, where the density is smooth
    # (The quadrature's error, about 1e-9 nats, over the step bounds the
    # differences' own error.)
    step = 1e-4
    fd = np.column_stack(
        [
            (
                est.score_samples(rows + step * np.eye(3)[j])
                - est.score_samples(rows - step * np.eye(3)[j])
            )
            / (2 * step)
            for j in range(3)
        ]
    )
    np.testing.assert_allclose(est.log_density_gradient(rows), fd, atol=2e-3)


def test_inpaint_draws_follow_the_model_conditional(spiky_fit):
    # The mapped column is drawn given the others: exact draws in the
    # mapped coordinates, mapped back, follow the conditional of x.
    est, X = spiky_fit
    n = 400
    row = X[X[:, 0] > 1][0]
    rows = np.tile(row, (n, 1))
    mask = np.zeros((n, 3), dtype=bool)
    mask[:, 0] = True
    drawn = est.inpaint(rows, mask, n_steps=60, random_state=0)
    np.testing.assert_array_equal(drawn[~mask], rows[~mask])
    grid = np.unique(
        np.concatenate([np.linspace(-0.5, 0.5, 20_001), np.linspace(-30, 60, 90_001)])
    )
    tiled = np.tile(row, (len(grid), 1))
    tiled[:, 0] = grid
    density = np.exp(est.score_samples(tiled))
    cdf = np.concatenate(
        [[0.0], np.cumsum(np.diff(grid) * (density[1:] + density[:-1]) / 2)]
    )
    cdf /= cdf[-1]
    result = stats.kstest(drawn[:, 0], lambda t: np.interp(t, grid, cdf))
    assert result.pvalue > 1e-3


def test_the_map_helps_on_a_spike():
    # Half the rows in a box 0.01 wide: the unmapped model must grow a
    # spike with walls; mapped, the column is near-normal.
    X = _spiky(n=1200, seed=2)
    X_test = _spiky(n=1200, seed=3)
    mapped = ARCSMDensity(**FIT).fit(X).score(X_test)
    plain = ARCSMDensity(marginal_transform=None, **FIT).fit(X).score(X_test)
    assert mapped > plain + 0.5


def test_warm_start_with_another_map_is_refused(spiky_fit):
    est, X = spiky_fit
    est = pickle.loads(pickle.dumps(est))
    est.set_params(warm_start=True, max_epochs=1, marginal_transform="quantile")
    with pytest.raises(ValueError, match="differs from the fitted model's"):
        est.fit(X)


def test_pickle_round_trip_and_old_format(spiky_fit):
    est, X = spiky_fit
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.score_samples(X[:5]), est.score_samples(X[:5]))
    plain = ARCSMDensity(marginal_transform=None, max_epochs=2, random_state=0).fit(X)
    old = saved_before(plain, 6, "marginal_transform", "marginal_")
    assert old.marginal_transform is None and old.marginal_ is None
    np.testing.assert_array_equal(old.score_samples(X[:5]), plain.score_samples(X[:5]))
