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

    def __init__(self, random_state=None, fail=False, bounds=None, whiten=None):
        self.random_state = random_state
        self.fail = fail
        self.bounds = bounds
        self.whiten = whiten

    def fit(self, X, y=None, groups=None):
        if self.fail:
            raise RuntimeError("the density failed")
        self.X_, self.groups_ = X.copy(), groups
        return self

    def log_density_gradient(self, X):
        return -X  # a standard normal's score

    def conditional_scores(self, X):
        return -2.0 * X  # any other function: which one transform used

    def score(self, X, y=None):
        return -0.5 * float(np.mean(np.sum(X**2, axis=1)))


class _GradientOnly(_Recorder):
    conditional_scores = property()  # hasattr(...) is False


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
    X = np.eye(3)
    first, again, other = (
        ARCSMDenoiser(recorder, random_state=seed).fit(X) for seed in (3, 3, 4)
    )
    assert not hasattr(recorder, "X_")
    assert isinstance(first.estimator_.random_state, int)
    assert first.estimator_.random_state == again.estimator_.random_state
    np.testing.assert_array_equal(first.estimator_.X_, again.estimator_.X_)
    assert first.estimator_.random_state != other.estimator_.random_state
    assert not np.allclose(first.estimator_.X_, other.estimator_.X_)


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
    denoiser = ARCSMDenoiser(density, noise_std=s, n_copies=4, random_state=0)
    denoised = denoiser.fit(X).transform(Y)
    # Mean squared distance to the exact posterior mean, against the error
    # of the exact posterior mean itself.
    gap = np.mean((denoised - exact) ** 2)
    optimum = np.mean((exact - clean) ** 2)
    assert gap < 0.05 * optimum, (gap, optimum)
    # The paper's formula on the same fit: the posterior mean of x_d given
    # y_<=d, that is of x_0 given y_0 alone, and of x_1 given all of y.
    conditional = Y + s**2 * denoiser.estimator_.conditional_scores(Y)
    first_only = COV[0, 0] / (COV[0, 0] + s**2) * Y[:, 0]
    assert np.mean((conditional[:, 0] - first_only) ** 2) < 0.05 * optimum
    assert np.mean((conditional[:, 1] - exact[:, 1]) ** 2) < 0.05 * optimum
    # and they differ from the joint posterior mean in the first entry
    assert np.mean((first_only - exact[:, 0]) ** 2) > 0.1 * optimum


def test_the_conditional_formula_uses_the_conditional_scores():
    X = np.random.RandomState(0).normal(size=(30, 2))
    denoiser = ARCSMDenoiser(_Recorder(), noise_std=0.5, formula="conditional")
    denoiser.fit(X)
    assert denoiser.formula_ == "conditional"
    Y = X[:4] + 1.0
    np.testing.assert_allclose(denoiser.transform(Y), Y + 0.25 * (-2.0 * Y))
    # What transform applies is fixed at fit.
    denoiser.set_params(formula="tweedie")
    np.testing.assert_allclose(denoiser.transform(Y), Y + 0.25 * (-2.0 * Y))


def test_the_conditional_formula_needs_conditional_scores_of_the_features():
    from tests.conftest import CHEAP_PARAMS

    X = np.random.RandomState(0).normal(size=(30, 2))
    with pytest.raises(ValueError, match="conditional_scores"):
        ARCSMDenoiser(_GradientOnly(), formula="conditional").fit(X)
    whitened = ARCSMDensity(whiten="pca", **CHEAP_PARAMS)
    denoiser = ARCSMDenoiser(whitened, formula="conditional", n_copies=2)
    with pytest.raises(ValueError, match="whiten"):
        denoiser.fit(X)
    with pytest.raises(NotFittedError):
        denoiser.transform(X)
    # refused before the (costly) fit: this density would fail in fit
    failing = _Recorder(whiten="pca", fail=True)
    with pytest.raises(ValueError, match="whiten"):
        ARCSMDenoiser(failing, formula="conditional").fit(X)


def test_a_bounded_density_is_refused_before_the_fit():
    X = np.random.RandomState(0).uniform(size=(30, 2))
    with pytest.raises(ValueError, match="bounds"):
        ARCSMDenoiser(_Recorder(bounds=(0.0, 1.0), fail=True)).fit(X)


def test_the_score_of_noisy_training_data_is_the_density_likelihood():
    # Without clean rows the error cannot be measured; the held-out
    # likelihood of the noisy density can.
    X = np.random.RandomState(0).normal(size=(30, 2))
    denoiser = ARCSMDenoiser(_Recorder(), training_data="noisy").fit(X)
    assert denoiser.score(X + 1.0) == denoiser.estimator_.score(X + 1.0)


def test_score_is_minus_the_error_of_denoising_noisy_copies():
    # The recorder's score is -y, so with s = 0.5 transform(y) = 0.75 y and
    # the error of a copy y = x + 0.5 z is -0.25 x + 0.375 z.
    rng = np.random.RandomState(0)
    X = rng.normal(size=(4000, 2))
    denoiser = ARCSMDenoiser(_Recorder(), noise_std=0.5, random_state=1).fit(X)
    expected = -(0.0625 * np.mean(X**2) + 0.375**2)
    assert denoiser.score(X) == pytest.approx(expected, rel=0.03)
    assert denoiser.score(X) == denoiser.score(X)  # seeded by random_state


def test_grid_search_chooses_the_formula_by_held_out_error():
    # With the recorder (score -y for "tweedie", -2 y for "conditional")
    # and s = 0.5, "tweedie" shrinks by 0.75 (error 0.20 per entry) and
    # "conditional" by 0.5 (error 0.31): the search must pick "tweedie".
    from sklearn.model_selection import GridSearchCV

    X = np.random.RandomState(0).normal(size=(600, 2))
    search = GridSearchCV(
        ARCSMDenoiser(_Recorder(), noise_std=0.5, random_state=1),
        {"formula": ["conditional", "tweedie"]},
        cv=3,
    ).fit(X)
    assert search.best_params_ == {"formula": "tweedie"}
    assert search.best_score_ == pytest.approx(-0.2, abs=0.03)
