"""ARCSMOutlierDetector: threshold, labels, and separation of outliers."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from sklearn_arcsm import ARCSMDensity, ARCSMOutlierDetector
from tests.conftest import CHEAP_PARAMS

DENSITY = ARCSMDensity(
    **{
        **CHEAP_PARAMS,
        "hidden_layer_sizes": (32,),
        "head_layer_sizes": (16,),
        "max_epochs": 60,
        "early_stopping": False,
        "random_state": 0,
    }
)


@pytest.fixture(scope="module")
def fitted(request):
    from sklearn.datasets import make_moons

    X, _ = make_moons(400, noise=0.05, random_state=0)
    return ARCSMOutlierDetector(DENSITY, contamination=0.05).fit(X), X


def test_threshold_flags_the_contamination_fraction_of_training_rows(fitted):
    detector, X = fitted
    labels = detector.predict(X)
    assert set(np.unique(labels)) == {-1, 1}
    assert abs(np.mean(labels == -1) - 0.05) <= 1 / len(X)
    np.testing.assert_allclose(
        detector.decision_function(X), detector.score_samples(X) - detector.offset_
    )
    np.testing.assert_array_equal(
        labels, np.where(detector.decision_function(X) >= 0, 1, -1)
    )


def test_fit_predict_matches_fit_then_predict(fitted):
    detector, X = fitted
    again = ARCSMOutlierDetector(DENSITY, contamination=0.05)
    np.testing.assert_array_equal(again.fit_predict(X), detector.predict(X))


def test_the_given_estimator_is_cloned_not_fitted(fitted):
    detector, _ = fitted
    assert detector.estimator_ is not DENSITY
    with pytest.raises(NotFittedError):
        DENSITY.score_samples([[0.0, 0.0]])
    np.testing.assert_array_equal(
        detector.score_samples([[0.0, 0.5]]),
        detector.estimator_.score_samples([[0.0, 0.5]]),
    )


def test_separates_uniform_noise_from_the_moons(fitted):
    detector, X = fitted
    rng = np.random.RandomState(1)
    outliers = rng.uniform(X.min(0) - 0.5, X.max(0) + 0.5, size=(200, 2))
    from sklearn.datasets import make_moons

    inliers, _ = make_moons(200, noise=0.05, random_state=2)
    scores = detector.score_samples(np.r_[inliers, outliers])
    truth = np.r_[np.ones(200), np.zeros(200)]
    # Measured: AUROC 0.87 with this small model (0.90 with the default
    # ARCSMDensity, 0.95 for an 8-component GaussianMixture); a detector with
    # the sign of its scores flipped would be near 0.13.
    assert roc_auc_score(truth, scores) > 0.8
    flagged = np.mean(detector.predict(outliers) == -1)
    assert flagged > 0.4, flagged


@pytest.mark.parametrize("contamination", [0.0, 0.6, -0.1])
def test_contamination_out_of_range_is_a_clear_error(contamination):
    with pytest.raises(ValueError, match="contamination"):
        ARCSMOutlierDetector(DENSITY, contamination=contamination).fit(np.zeros((5, 2)))


def test_a_failed_fit_leaves_the_detector_unfitted():
    # The density refuses data outside its box after validate_data has set
    # n_features_in_; the detector must not look fitted.
    X = np.random.RandomState(0).normal(size=(50, 2))
    density = ARCSMDensity(**CHEAP_PARAMS, bounds=(5.0, 6.0))
    detector = ARCSMOutlierDetector(density)
    with pytest.raises(ValueError, match="bound"):
        detector.fit(X)
    with pytest.raises(NotFittedError):
        detector.score_samples(X)


def _dependence_flipped(n, flip, rng):
    # x2 follows x1 (or -x1 for the outliers); four wide independent Laplace
    # features spread the log-density of the inliers without telling the
    # two apart: every marginal of an outlier is an inlier's.
    x1 = rng.normal(size=n)
    x2 = (-x1 if flip else x1) + 0.5 * rng.normal(size=n)
    return np.c_[x1, x2, 2 * rng.laplace(size=(n, 4))]


@pytest.fixture(scope="module")
def dependence_case():
    rng = np.random.default_rng(0)
    X = _dependence_flipped(1000, False, rng)
    inliers = _dependence_flipped(300, False, rng)
    test = np.r_[inliers, _dependence_flipped(300, True, rng)]
    density = ARCSMDensity(
        max_epochs=30,
        hidden_layer_sizes=(32,),
        head_layer_sizes=(16,),
        n_quadrature=16,
        early_stopping=False,
        random_state=0,
    )
    fitted = {
        statistic: ARCSMOutlierDetector(density, statistic=statistic).fit(X)
        for statistic in ("log_density", "log_ratio")
    }
    return fitted, X, test, np.r_[np.ones(300), np.zeros(300)]


def test_log_ratio_is_the_log_density_minus_the_marginal_background(dependence_case):
    fitted, X, test, _ = dependence_case
    ratio = fitted["log_ratio"]
    assert fitted["log_density"].background_ is None
    background = ratio.background_.log_density(test)
    expected = ratio.estimator_.score_samples(test) - background
    np.testing.assert_allclose(ratio.score_samples(test), expected)
    np.testing.assert_allclose(
        ratio.offset_, np.percentile(ratio.score_samples(X), 10.0)
    )


def test_log_ratio_ranks_outliers_of_the_dependence_above_the_log_density(
    dependence_case,
):
    # Measured: AUROC 0.80 for the ratio, 0.64 for the log-density, whose
    # spread over the inliers comes from the independent features. Without
    # the background the ratio is the log-density and fails the margin.
    fitted, _, test, truth = dependence_case
    auroc = {k: roc_auc_score(truth, d.score_samples(test)) for k, d in fitted.items()}
    assert auroc["log_ratio"] > 0.75, auroc
    assert auroc["log_ratio"] > auroc["log_density"] + 0.1, auroc


def test_log_ratio_does_not_reward_a_value_beyond_the_training_range(
    dependence_case,
):
    # Outside the training range the background takes its typical level, so
    # moving one feature past the range lowers the ratio with the
    # log-density (test_background.py checks the level itself).
    fitted, X, _, _ = dependence_case
    detector = fitted["log_ratio"]
    rows = X[:50].copy()
    beyond = rows.copy()
    beyond[:, 3] = X[:, 3].max() + 1.0
    assert np.all(detector.score_samples(beyond) < detector.score_samples(rows))
    far = rows.copy()
    far[:, 3] = X[:, 3].max() + 30.0
    assert np.all(detector.predict(far) == -1)


def test_statistic_must_be_known():
    with pytest.raises(ValueError, match="statistic"):
        ARCSMOutlierDetector(DENSITY, statistic="ratio").fit(np.zeros((5, 2)))
