"""ARCSMEnsemble: orderings, exact mixture density, sampling, gradient."""

import pickle

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture

from sklearn_arcsm import ARCSMDensity, ARCSMEnsemble
from tests.conftest import CHEAP_PARAMS

SMALL = dict(
    CHEAP_PARAMS,
    max_epochs=40,
    hidden_layer_sizes=(32,),
    head_layer_sizes=(16,),
    n_quadrature=16,
    batch_size=64,
    early_stopping=False,
)


def _mixed_columns(n, seed):
    """Three columns on very different scales; the first in (0, 1)."""
    rng = np.random.RandomState(seed)
    u = rng.beta(2.0, 5.0, size=n)
    v = 5.0 + 0.1 * rng.normal(size=n) + 0.05 * u
    w = rng.normal(size=n) + 2.0 * u
    return np.column_stack([u, v, w])


@pytest.fixture(scope="module")
def mixed_fit():
    X = _mixed_columns(600, 0)
    bounds = ([0.0, -np.inf, -np.inf], [1.0, np.inf, np.inf])
    member = ARCSMDensity(**SMALL, bounds=bounds)
    ensemble = ARCSMEnsemble(member, n_orderings=3, random_state=0).fit(X)
    return ensemble, X


def test_fitted_attributes_are_the_documented_ones(mixed_fit):
    from numpydoc.docscrape import ClassDoc

    ensemble, _ = mixed_fit
    documented = {a.name for a in ClassDoc(ARCSMEnsemble)["Attributes"]}
    fitted = {n for n in vars(ensemble) if n.endswith("_") and not n.startswith("_")}
    assert documented - {"feature_names_in_"} == fitted


def test_orderings_start_with_the_identity_and_the_reverse(mixed_fit):
    ensemble, _ = mixed_fit
    order = ensemble.orderings_
    assert order.shape == (3, 3)
    np.testing.assert_array_equal(order[0], [0, 1, 2])
    np.testing.assert_array_equal(order[1], [2, 1, 0])
    for row in order:
        np.testing.assert_array_equal(np.sort(row), [0, 1, 2])
    assert len({tuple(row) for row in order}) == 3
    # One ordering is not its own inverse, so that the tests below can tell
    # a member's columns from their inverse permutation.
    assert not np.array_equal(np.argsort(order[2]), order[2])


def test_score_samples_is_the_log_mean_of_the_members_densities(mixed_fit):
    ensemble, X = mixed_fit
    A = _mixed_columns(50, 1)
    members = [
        est.score_samples(A[:, order])
        for est, order in zip(ensemble.estimators_, ensemble.orderings_, strict=True)
    ]
    expected = np.log(np.mean(np.exp(members), axis=0))
    np.testing.assert_allclose(ensemble.score_samples(A), expected, rtol=1e-12)


def test_members_see_their_own_columns(mixed_fit):
    # Scales differ by 10x and the means by 5: a member scored on columns in
    # the wrong order would fall far below a single Gaussian.
    ensemble, X = mixed_fit
    X_test = _mixed_columns(400, 2)
    gaussian = GaussianMixture(1, random_state=0).fit(X).score(X_test)
    assert ensemble.score(X_test) > gaussian
    for est, order in zip(ensemble.estimators_, ensemble.orderings_, strict=True):
        assert est.score(X_test[:, order]) > gaussian


def test_per_column_bounds_follow_the_columns(mixed_fit):
    # Unpermuted, the (0, 1) box of column 0 would land on column 1 (near 5)
    # of the reversed member, and its fit would refuse the data.
    ensemble, _ = mixed_fit
    reversed_member = ensemble.estimators_[1]
    np.testing.assert_array_equal(reversed_member.bounds[0], [-np.inf, -np.inf, 0.0])
    np.testing.assert_array_equal(reversed_member.bounds[1], [np.inf, np.inf, 1.0])
    samples = ensemble.sample(500, random_state=0)
    assert np.all((samples[:, 0] > 0) & (samples[:, 0] < 1))
    assert ensemble.score_samples([[1.5, 5.0, 0.0]])[0] == -np.inf


def test_samples_match_the_data_column_by_column(mixed_fit):
    ensemble, X = mixed_fit
    samples = ensemble.sample(3000, random_state=0)
    assert samples.shape == (3000, 3)
    assert np.all(np.abs(samples.mean(0) - X.mean(0)) < 0.15 * X.std(0))
    np.testing.assert_allclose(samples.std(0), X.std(0), rtol=0.25)
    # Every member contributes; the draw is reproducible.
    np.testing.assert_array_equal(samples, ensemble.sample(3000, random_state=0))


@pytest.mark.parametrize("n_samples", [-1, 2.5, "3"])
def test_bad_sample_counts_are_refused_clearly(mixed_fit, n_samples):
    ensemble, _ = mixed_fit
    with pytest.raises(ValueError, match="n_samples must be a non-negative integer"):
        ensemble.sample(n_samples)


def test_mixture_of_orderings_integrates_to_one():
    from sklearn.datasets import make_moons

    X, _ = make_moons(300, noise=0.1, random_state=0)
    ensemble = ARCSMEnsemble(
        ARCSMDensity(**SMALL, random_state=0), n_orderings=2, random_state=0
    ).fit(X)
    lo, hi = X.min(0) - 3.0, X.max(0) + 3.0
    gx = np.linspace(lo[0], hi[0], 200)
    gy = np.linspace(lo[1], hi[1], 200)
    grid = np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2)
    density = np.exp(ensemble.score_samples(grid))
    mass = density.sum() * (gx[1] - gx[0]) * (gy[1] - gy[0])
    assert abs(mass - 1.0) < 0.01


def test_gradient_matches_finite_differences(mixed_fit):
    ensemble, _ = mixed_fit
    A = _mixed_columns(5, 3)
    gradient = ensemble.log_density_gradient(A)
    h = 1e-5
    for j in range(3):
        step = np.zeros(3)
        step[j] = h
        numeric = (
            ensemble.score_samples(A + step) - ensemble.score_samples(A - step)
        ) / (2 * h)
        np.testing.assert_allclose(gradient[:, j], numeric, rtol=2e-3, atol=2e-3)


def test_one_identity_member_is_the_estimator_itself():
    X = _mixed_columns(200, 4)
    member = ARCSMDensity(**CHEAP_PARAMS)
    ensemble = ARCSMEnsemble(member, n_orderings=1, random_state=3).fit(X)
    seed = np.random.RandomState(3).randint(np.iinfo(np.int32).max)
    alone = ARCSMDensity(**CHEAP_PARAMS, random_state=seed).fit(X)
    # Equal up to float64 rounding (the member scores a permuted copy of X).
    np.testing.assert_allclose(
        ensemble.score_samples(X), alone.score_samples(X), rtol=1e-12, atol=1e-12
    )


def test_flips_keep_channels_in_order_within_each_pixel():
    # A 2 x 3 image with 2 channels, rows of X flattened as (height, width,
    # channels): pixel (i, j) holds dimensions 6 i + 2 j and 6 i + 2 j + 1.
    member = ARCSMDensity(image_shape=(2, 2, 3))
    ensemble = ARCSMEnsemble(member, n_orderings=4, orderings="flips")
    order = ensemble._orderings(member, 12, np.random.RandomState(0))
    np.testing.assert_array_equal(order[0], np.arange(12))
    np.testing.assert_array_equal(order[1], [4, 5, 2, 3, 0, 1, 10, 11, 8, 9, 6, 7])
    np.testing.assert_array_equal(order[2], [6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(order[3], [10, 11, 8, 9, 6, 7, 4, 5, 2, 3, 0, 1])


@pytest.mark.parametrize(
    "params, n_features, match",
    [
        (dict(n_orderings=5, orderings="flips"), 16, "at most 4"),
        (dict(n_orderings=2, orderings="flips"), 12, "not a square"),
    ],
)
def test_bad_flips_are_refused_clearly(params, n_features, match):
    ensemble = ARCSMEnsemble(ARCSMDensity(), **params)
    with pytest.raises(ValueError, match=match):
        ensemble._orderings(ARCSMDensity(), n_features, np.random.RandomState(0))


def test_a_failed_member_leaves_the_ensemble_unfitted_and_x_untouched():
    X = _mixed_columns(100, 5)
    before = X.copy()
    # Column 1 lies near 5, outside this box: the first member refuses it.
    member = ARCSMDensity(**CHEAP_PARAMS, bounds=(0.0, 1.0))
    ensemble = ARCSMEnsemble(member, n_orderings=2)
    with pytest.raises(ValueError, match="bound"):
        ensemble.fit(X)
    with pytest.raises(NotFittedError):
        ensemble.score_samples(X)
    np.testing.assert_array_equal(X, before)


def test_pickle_round_trip_keeps_scores_and_samples(mixed_fit):
    ensemble, X = mixed_fit
    again = pickle.loads(pickle.dumps(ensemble))
    np.testing.assert_array_equal(
        again.score_samples(X[:20]), ensemble.score_samples(X[:20])
    )
    np.testing.assert_array_equal(
        again.sample(10, random_state=1), ensemble.sample(10, random_state=1)
    )
