"""keep_unless_better: a GridSearchCV refit rule that keeps a reference."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_arcsm import ARCSMDensity
from sklearn_arcsm.model_selection import keep_unless_better


def _results(params, split_scores):
    """A single-score ``cv_results_`` with the given per-split scores."""
    scores = np.asarray(split_scores, float)
    results = {"params": params, "mean_test_score": scores.mean(axis=1)}
    for k in range(scores.shape[1]):
        results[f"split{k}_test_score"] = scores[:, k]
    return results


PARAMS = [{"a": 0}, {"a": 1}, {"a": 2}]


def test_a_lead_inside_the_noise_keeps_the_reference():
    # Candidate 1 has the higher mean (by 0.1) but its paired differences
    # (+1, -0.8, +0.1) straddle zero: the plain search would take it.
    scores = [[0.0, 0.0, 0.0], [1.0, -0.8, 0.1], [-1.0, -1.0, -1.0]]
    assert keep_unless_better({"a": 0})(_results(PARAMS, scores)) == 0


def test_a_consistent_lead_is_taken_and_the_best_of_several_wins():
    # Both 1 and 2 beat the reference on every fold; 2 by more.
    scores = [[0.0, 0.1, -0.1], [0.5, 0.6, 0.4], [1.0, 1.2, 0.9]]
    assert keep_unless_better({"a": 0})(_results(PARAMS, scores)) == 2
    # A reference that is itself clearly best stays.
    assert keep_unless_better({"a": 2})(_results(PARAMS, scores)) == 2


def test_the_threshold_is_in_standard_errors_of_the_paired_differences():
    # Differences 0.2, 0.4, 0.6: mean 0.4, standard error 0.2 / sqrt(3) * ...
    d = np.array([0.2, 0.4, 0.6])
    se = d.std(ddof=1) / np.sqrt(3)
    scores = [[0.0, 0.0, 0.0], list(d), [-1.0, -1.0, -1.0]]
    results = _results(PARAMS, scores)
    just_below = (d.mean() / se) * 0.99
    just_above = (d.mean() / se) * 1.01
    assert keep_unless_better({"a": 0}, n_standard_errors=just_below)(results) == 1
    assert keep_unless_better({"a": 0}, n_standard_errors=just_above)(results) == 0
    # Paired, not pooled: a large shift shared by every fold cancels.
    shared = [[10.0, 0.0, -10.0], list(np.array([10.0, 0.0, -10.0]) + 0.1), [0, 0, 0]]
    assert keep_unless_better({"a": 0})(_results(PARAMS, shared)) == 1


def test_failed_fits_never_count_as_better():
    scores = [[0.0, 0.0, 0.0], [np.nan, 5.0, 5.0], [-1.0, -1.0, -1.0]]
    assert keep_unless_better({"a": 0})(_results(PARAMS, scores)) == 0


@pytest.mark.parametrize(
    "reference, results, match",
    [
        ({"a": 5}, _results(PARAMS, np.zeros((3, 3))), "no candidate"),
        ({"b": 0}, _results(PARAMS, np.zeros((3, 3))), "no candidate"),
        (
            {"a": 0},
            _results([{"a": 0}, {"a": 0}], np.zeros((2, 3))),
            "2 candidates",
        ),
        ({"a": 0}, _results(PARAMS, np.zeros((3, 1))), "at least 2"),
        (
            {"a": 0},
            {"params": PARAMS, "mean_test_ll": np.zeros(3)},
            "one score",
        ),
    ],
)
def test_bad_searches_get_clear_errors(reference, results, match):
    with pytest.raises(ValueError, match=match):
        keep_unless_better(reference)(results)


@pytest.mark.parametrize("bad", [{}, None, [("a", 0)]])
def test_bad_reference_is_refused(bad):
    with pytest.raises(ValueError, match="reference must be"):
        keep_unless_better(bad)


@pytest.mark.parametrize("bad", [-1.0, np.nan, "1", True])
def test_bad_n_standard_errors_is_refused(bad):
    with pytest.raises(ValueError, match="n_standard_errors"):
        keep_unless_better({"a": 0}, n_standard_errors=bad)


def test_values_match_by_equality_but_bools_are_not_integers():
    params = [{"a": True}, {"a": 1}]
    assert keep_unless_better({"a": 1})(_results(params, np.zeros((2, 3)))) == 1
    params = [{"a": None}, {"a": (32, 32)}]
    results = _results(params, np.zeros((2, 3)))
    assert keep_unless_better({"a": (32, 32)})(results) == 1


class _NoisyScore(BaseEstimator):
    """A model whose validation score is its ``quality`` plus fold noise.

    The noise (standard deviation 1) depends on the candidate and on the
    validation rows, as a fitted model's score does on its fit and fold.
    """

    def __init__(self, quality=0.0):
        self.quality = quality

    def fit(self, X, y=None):
        self.fitted_ = True
        return self

    def score(self, X, y=None):
        seed = [int(round(1000 * self.quality)) % 997, int(X[:, 0].sum() * 1e6) % 2**31]
        return self.quality + np.random.default_rng(seed).normal()


def test_grid_search_keeps_the_reference_against_a_noise_lead():
    # A lead of 0.3 against fold noise of 1: the plain search takes it on
    # these folds, the rule keeps the reference; a lead of 5 is taken.
    X = np.random.RandomState(0).normal(size=(90, 2))
    cv = KFold(3, shuffle=True, random_state=0)
    grid = {"quality": [0.0, 0.3]}
    plain = GridSearchCV(_NoisyScore(), grid, cv=cv).fit(X)
    assert plain.best_params_ == {"quality": 0.3}
    kept = GridSearchCV(
        _NoisyScore(), grid, cv=cv, refit=keep_unless_better({"quality": 0.0})
    ).fit(X)
    assert kept.best_params_ == {"quality": 0.0}
    assert kept.best_estimator_.quality == 0.0
    grid = {"quality": [0.0, 0.3, 5.0]}
    found = GridSearchCV(
        _NoisyScore(), grid, cv=cv, refit=keep_unless_better({"quality": 0.0})
    ).fit(X)
    assert found.best_params_ == {"quality": 5.0}


def test_grid_search_over_arcsm_density_refits_the_chosen_candidate():
    X = np.random.RandomState(0).normal(size=(120, 2))
    search = GridSearchCV(
        ARCSMDensity(max_epochs=2, random_state=0),
        {"whiten": [None, "cholesky"]},
        cv=3,
        refit=keep_unless_better({"whiten": None}),
    ).fit(X)
    chosen = search.best_params_["whiten"]
    assert search.best_estimator_.whiten == chosen
    assert np.isfinite(search.best_estimator_.score(X))
