"""Bounded data: the exact map of a box onto R^D, and estimators built on it."""

import pickle

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from sklearn_arcsm import ARCSMDensity, CSMScoreEstimator
from sklearn_arcsm.bounds import BoxBounds
from tests.conftest import saved_before

# Two-sided, free, two-sided, lower only, upper only.
BOX = BoxBounds([0.0, -np.inf, -2.0, 1.0, -np.inf], [1.0, np.inf, 5.0, np.inf, 3.0])


def _points(n=50, seed=0):
    rng = np.random.RandomState(seed)
    x = np.column_stack(
        [
            rng.uniform(0, 1, n),
            rng.normal(0, 3, n),
            rng.uniform(-2, 5, n),
            1 + rng.exponential(2.0, n),
            3 - rng.exponential(0.5, n),
        ]
    )
    return torch.as_tensor(x, dtype=torch.float64)


def test_map_round_trips_and_keeps_precision_near_the_bounds():
    x = _points()
    np.testing.assert_allclose(BOX.inverse(BOX.forward(x)), x, rtol=0, atol=1e-12)
    # Free column: the identity; one-sided columns: logs.
    y = BOX.forward(x)
    np.testing.assert_array_equal(y[:, 1], x[:, 1])
    np.testing.assert_allclose(y[:, 3], torch.log(x[:, 3] - 1), rtol=1e-14)
    np.testing.assert_allclose(y[:, 4], -torch.log(3 - x[:, 4]), rtol=1e-14)
    assert torch.all(BOX.inside(x))
    assert not BOX.inside(torch.tensor([[0.5, 0.0, 0.0, 0.5, 0.0]])).item()
    # 1e-300 above a lower bound and 1e-12 below an upper one survive, even
    # where the box is a thousand times wider than the bound's magnitude.
    box = BoxBounds([0.0, -1000.0], [1000.0, 1.0])
    edge = torch.tensor([[1e-300, 1.0 - 1e-12]], dtype=torch.float64)
    back = box.inverse(box.forward(edge))
    assert back[0, 0] == pytest.approx(1e-300, rel=1e-9, abs=0)
    assert 1.0 - back[0, 1].item() == pytest.approx(1e-12, rel=1e-3, abs=0)


def test_derivatives_match_autograd():
    x = _points().requires_grad_(True)
    y = BOX.forward(x)
    (dy,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    np.testing.assert_allclose(
        BOX.log_derivative(x).detach(), torch.log(dy).detach(), atol=1e-12
    )
    (d_log_dy,) = torch.autograd.grad(torch.log(dy).sum(), x)
    np.testing.assert_allclose(
        BOX.log_derivative_grad(x).detach(), d_log_dy, rtol=1e-10, atol=1e-12
    )


def test_scores_are_the_chain_rule_of_a_known_density():
    # y ~ N(0, 1) per column gives log p(x) = log phi(T(x)) + log T'(x); its
    # derivative must be what BoxBounds.scores makes of the y-score -y.
    x = _points().requires_grad_(True)
    y = BOX.forward(x)
    log_p = (-0.5 * y.square() + BOX.log_derivative(x)).sum()
    (truth,) = torch.autograd.grad(log_p, x)
    np.testing.assert_allclose(BOX.scores(x, -y).detach(), truth, rtol=1e-10)


@pytest.mark.parametrize(
    "low, high, match",
    [
        ([1.0], [1.0], "low < high"),
        ([2.0], [1.0], "low < high"),
        ([np.inf], [np.inf], "low < high"),
        ([np.nan], [1.0], "low < high"),
        ([0.0, 0.0], [1.0], "equal shape"),
    ],
)
def test_bad_boxes_are_refused(low, high, match):
    with pytest.raises(ValueError, match=match):
        BoxBounds(low, high)


@pytest.fixture(scope="module")
def beta_fit():
    X = np.random.RandomState(0).beta(0.7, 2.0, size=(600, 1)) * 4.0 - 1.0
    est = ARCSMDensity(bounds=(-1.0, 3.0), max_epochs=30, random_state=0).fit(X)
    return est, X


def test_bounded_density_integrates_to_one_on_the_box(beta_fit):
    est, _ = beta_fit

    def density(t):
        return np.exp(est.score_samples(np.array([[t]])))[0]

    # The density has an integrable x**-0.3-like spike at the lower bound:
    # integrate in the mapped coordinate, where it is smooth.
    mass = integrate.quad(
        lambda y: density(-1 + 4 * _sigmoid(y)) * 4 * _sigmoid(y) * _sigmoid(-y),
        -40,
        40,
        limit=400,
    )[0]
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_lower_bounded_density_integrates_to_one():
    X = np.random.RandomState(0).gamma(0.8, 2.0, size=(600, 1)) + 1.0
    est = ARCSMDensity(bounds=(1.0, np.inf), max_epochs=30, random_state=0).fit(X)
    assert est.score_samples(np.array([[1.0], [0.5]])).max() == -np.inf

    def integrand(y):  # x = 1 + exp(y), dx = exp(y) dy
        return np.exp(est.score_samples(np.array([[1.0 + np.exp(y)]]))[0] + y)

    mass = integrate.quad(integrand, -40, 8, limit=400)[0]
    assert mass == pytest.approx(1.0, abs=2e-3)


def _sigmoid(y):
    return 1.0 / (1.0 + np.exp(-y))


def test_zero_density_on_and_outside_the_bounds(beta_fit):
    est, _ = beta_fit
    out = est.score_samples(np.array([[-1.0], [3.0], [-1.5], [7.0], [1.0]]))
    assert np.all(np.isneginf(out[:4])) and np.isfinite(out[4])


def test_samples_are_inside_and_follow_the_model(beta_fit):
    est, _ = beta_fit
    draws = est.sample(2000, random_state=1).ravel()
    assert draws.min() > -1.0 and draws.max() < 3.0
    # The model's own CDF, by integrating its density in mapped coordinates.
    grid_y = np.linspace(-25, 25, 4001)
    grid_x = -1 + 4 * _sigmoid(grid_y)
    pdf_y = (
        np.exp(est.score_samples(grid_x[:, None]))
        * 4
        * _sigmoid(grid_y)
        * (_sigmoid(-grid_y))
    )
    cdf = integrate.cumulative_trapezoid(pdf_y, grid_y, initial=0.0)
    cdf /= cdf[-1]
    result = stats.kstest(draws, lambda t: np.interp(t, grid_x, cdf))
    assert result.pvalue > 1e-3


def test_fit_refuses_data_on_a_bound_and_does_not_mutate_it():
    X = np.random.RandomState(0).uniform(0, 1, size=(50, 2))
    X[3, 1] = 1.0
    before = X.copy()
    est = ARCSMDensity(bounds=(0, 1), max_epochs=2)
    with pytest.raises(ValueError, match=r"X\[3, 1\] = 1.0 is not inside"):
        est.fit(X)
    np.testing.assert_array_equal(X, before)
    assert not hasattr(est, "bounds_")


@pytest.mark.parametrize(
    "bounds, match",
    [((0, 1, 2), "shape"), ([[0, 0, 0], [1, 1, 1]], "shape"), ((np.nan, 1), "NaN")],
)
def test_bad_bounds_parameter_is_refused(bounds, match):
    X = np.random.RandomState(0).uniform(0.1, 0.9, size=(50, 2))
    with pytest.raises(ValueError, match=match):
        ARCSMDensity(bounds=bounds, max_epochs=1).fit(X)


@pytest.fixture(scope="module")
def box_fit():
    rng = np.random.RandomState(0)
    u = rng.beta(2.0, 3.0, size=(400, 1))
    X = np.column_stack(
        [
            u * 10.0,
            u[:, 0] * 4 + rng.normal(0, 0.5, 400),
            1 - u**2,
            rng.exponential(1.0, (400, 1)) * (1 + u),
        ]
    )
    est = ARCSMDensity(
        bounds=([0.0, -np.inf, 0.0, 0.0], [10.0, np.inf, 1.0, np.inf]),
        max_epochs=10,
        random_state=0,
    ).fit(X)
    return est, X


def test_gradient_matches_finite_differences(box_fit):
    est, X = box_fit
    x = X[:3]
    grad = est.log_density_gradient(x)
    # Steps of 1e-4 (times each column's spread) and atol 5e-3: score_samples
    # is exact only to ~1e-7..1e-6 nats (the float32 head, the adaptive
    # rule's tolerance), which central differences over 2e-5 turned into
    # errors of 1e-2 once the model was trained enough to be sharp; 1e-3
    # steps err by 0.2 on the column near its bound (gradient 33).
    step = 1e-4 * np.array([10.0, 1.0, 1.0, 1.0])
    numeric = np.column_stack(
        [
            (
                est.score_samples(x + step[j] * np.eye(4)[j])
                - est.score_samples(x - step[j] * np.eye(4)[j])
            )
            / (2 * step[j])
            for j in range(4)
        ]
    )
    np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=5e-3)


def test_inpaint_keeps_the_observed_entries_and_the_box(box_fit):
    est, X = box_fit
    Xm = X[:20].copy()
    Xm[:, 2] = np.nan
    Xm[:5, 0] = np.nan
    filled = est.inpaint(Xm, random_state=0, n_steps=5)
    observed = ~np.isnan(Xm)
    np.testing.assert_array_equal(filled[observed], Xm[observed])
    assert np.all((filled[:, 2] > 0) & (filled[:, 2] < 1))
    assert np.all((filled[:, 0] > 0) & (filled[:, 0] < 10))


def test_bounded_fit_is_an_unbounded_fit_of_the_mapped_data(box_fit):
    # Same seeds, same mapped data: the same module, and log p(x) differs by
    # exactly the log-derivative of the map.
    est, X = box_fit
    Y = est.bounds_.forward(torch.as_tensor(X)).numpy()
    plain = ARCSMDensity(max_epochs=10, random_state=0).fit(Y)
    jacobian = est.bounds_.log_derivative(torch.as_tensor(X[:50])).sum(1).numpy()
    np.testing.assert_allclose(
        est.score_samples(X[:50]), plain.score_samples(Y[:50]) + jacobian, atol=1e-8
    )


def test_score_estimator_scores_are_the_chain_rule_of_the_mapped_fit():
    rng = np.random.RandomState(1)
    X = rng.beta(2.0, 5.0, size=(300, 2))
    box = CSMScoreEstimator(bounds=(0, 1), max_epochs=3, random_state=0).fit(X)
    x = torch.as_tensor(X[:40])
    Y = box.bounds_.forward(x).numpy()
    plain = CSMScoreEstimator(max_epochs=3, random_state=0).fit(
        box.bounds_.forward(torch.as_tensor(X)).numpy()
    )
    expected = box.bounds_.scores(x, torch.as_tensor(plain.predict(Y))).numpy()
    np.testing.assert_allclose(box.predict(X[:40]), expected, rtol=1e-9, atol=1e-9)
    torch_scores = box.conditional_scores_torch(x.float()).detach().numpy()
    np.testing.assert_allclose(torch_scores, expected, rtol=1e-3, atol=1e-3)
    # The per-sample CSM value in X's units: s_d**2 / 2 + ds_d/dx_d, with the
    # diagonal derivative checked by finite differences of predict.
    step = 1e-6
    diag = np.column_stack(
        [
            (
                box.predict(X[:40] + step * np.eye(2)[j])[:, j]
                - box.predict(X[:40] - step * np.eye(2)[j])[:, j]
            )
            / (2 * step)
            for j in range(2)
        ]
    )
    csm = (0.5 * expected**2 + diag).sum(1)
    # rtol 1e-4: near the box's edge scores reach 1e4 and the central
    # difference of predict errs by ~1e-5 relative there.
    np.testing.assert_allclose(-box.score_samples(X[:40]), csm, rtol=1e-4, atol=1e-5)


def test_pickle_round_trip_and_old_format(box_fit):
    est, X = box_fit
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.score_samples(X[:5]), est.score_samples(X[:5]))
    plain = ARCSMDensity(max_epochs=2, random_state=0).fit(X)
    old = saved_before(plain, 3, "bounds", "bounds_")
    assert old.bounds is None and old.bounds_ is None
    np.testing.assert_array_equal(old.score_samples(X[:5]), plain.score_samples(X[:5]))


def test_warm_start_with_other_bounds_is_refused(box_fit):
    est, X = box_fit
    est = pickle.loads(pickle.dumps(est))
    est.set_params(warm_start=True, max_epochs=1, bounds=(0.0, 20.0))
    with pytest.raises(ValueError, match="differs from the fitted bounds_"):
        est.fit(np.clip(X, 1e-3, None))
    est.set_params(bounds=([0.0, -np.inf, 0.0, 0.0], [10.0, np.inf, 1.0, np.inf]))
    est.fit(X)
    assert est.n_iter_ == 11
