"""ARCSMDenoiser: noisy copies, Tweedie's formula, and its contract."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from sklearn_arcsm import ARCSMDenoiser, ARCSMDensity

# A correlated 2-D Gaussian: the posterior mean of x given y = x + s z is
# COV (COV + s**2 I)^-1 y, in closed form.
COV = np.array([[1.0, 0.8], [0.8, 1.0]])


class _Recorder(BaseEstimator):
    """A density stand-in that records what ``fit`` received."""

    def __init__(self, random_state=None, fail=False):
        self.random_state = random_state
        self.fail = fail

    def fit(self, X, y=None, groups=None):
        if self.fail:
            raise RuntimeError("the density failed")
        self.X_, self.groups_ = X.copy(), groups
        return self

    def log_density_gradient(self, X):
        return -X  # a standard normal's score


def test_copies_are_noisy_rows_grouped_by_their_clean_row():
    rng = np.random.RandomState(0)
    X = rng.uniform(size=(400, 3))
    X_before = X.copy()
    denoiser = ARCSMDenoiser(
        _Recorder(), noise_std=[0.5, 1.0, 2.0], n_copies=5, random_state=0
    ).fit(X)
    np.testing.assert_array_equal(X, X_before)  # the input is not mutated
    fitted = denoiser.estimator_
    assert fitted.X_.shape == (2000, 3)
    np.testing.assert_array_equal(fitted.groups_, np.repeat(np.arange(400), 5))
    noise = fitted.X_ - X[fitted.groups_]
    np.testing.assert_allclose(noise.std(axis=0), [0.5, 1.0, 2.0], rtol=0.06)
    np.testing.assert_allclose(noise.mean(axis=0), 0.0, atol=0.1)
    # transform is Tweedie's formula on the density's gradient
    Y = rng.normal(size=(4, 3))
    np.testing.assert_allclose(
        denoiser.transform(Y), Y - np.array([0.25, 1.0, 4.0]) * Y
    )


def test_noisy_training_data_are_fitted_as_they_are():
    X = np.random.RandomState(0).normal(size=(50, 2))
    denoiser = ARCSMDenoiser(_Recorder(), training_data="noisy").fit(X)
    np.testing.assert_array_equal(denoiser.estimator_.X_, X)
    assert denoiser.estimator_.groups_ is None


def test_the_given_estimator_is_cloned_and_seeded():
    recorder = _Recorder()
    denoiser = ARCSMDenoiser(recorder, random_state=3).fit(np.eye(3))
    assert not hasattr(recorder, "X_")
    assert isinstance(denoiser.estimator_.random_state, int)


def test_a_failed_fit_leaves_the_denoiser_unfitted():
    X = np.random.RandomState(0).normal(size=(20, 2))
    denoiser = ARCSMDenoiser(_Recorder()).fit(X)
    denoiser.set_params(estimator=_Recorder(fail=True))
    with pytest.raises(RuntimeError, match="failed"):
        denoiser.fit(X)
    with pytest.raises(NotFittedError):
        denoiser.transform(X)


@pytest.mark.parametrize("noise_std", [-1.0, np.nan, [1.0, 2.0, 3.0], [[1.0, 1.0]]])
def test_bad_noise_std_is_a_clear_error(noise_std):
    X = np.random.RandomState(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match="noise_std"):
        ARCSMDenoiser(_Recorder(), noise_std=noise_std).fit(X)


def test_denoises_a_gaussian_to_its_posterior_mean():
    # Fitted on copies of clean rows, the density is that of the noisy data,
    # and the denoised rows approach the exact posterior means.
    rng = np.random.RandomState(0)
    s = 0.8
    X = rng.multivariate_normal([0.0, 0.0], COV, size=1500)
    clean = rng.multivariate_normal([0.0, 0.0], COV, size=500)
    Y = clean + s * rng.normal(size=clean.shape)
    exact = Y @ np.linalg.solve(COV + s**2 * np.eye(2), COV).T
    density = ARCSMDensity(hidden_layer_sizes=(16,), max_epochs=40)
    denoised = (
        ARCSMDenoiser(density, noise_std=s, n_copies=4, random_state=0)
        .fit(X)
        .transform(Y)
    )
    # Mean squared distance to the exact posterior mean, against the error
    # of the exact posterior mean itself.
    gap = np.mean((denoised - exact) ** 2)
    optimum = np.mean((exact - clean) ** 2)
    assert gap < 0.05 * optimum, (gap, optimum)
