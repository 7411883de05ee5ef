"""fit(X, groups=...): the early-stopping split holds out whole groups."""

import numpy as np
import pytest

from sklearn_arcsm import ARCSMDensity, ARCSMEnsemble, CSMScoreEstimator
from sklearn_arcsm._base import BaseCSMEstimator
from tests.conftest import CHEAP_PARAMS


# ----------------------------------------------------------------------
def _spy_on_validation(monkeypatch):
    seen = []
    original = BaseCSMEstimator._train_split

    def spy(valid):
        seen.append(None if valid is None else len(valid))
        return original(valid)

    monkeypatch.setattr(BaseCSMEstimator, "_train_split", staticmethod(spy))
    return seen


@pytest.mark.parametrize("cls", [ARCSMDensity, CSMScoreEstimator])
def test_fit_holds_out_whole_groups(cls, monkeypatch):
    # One group of 60 rows and 40 groups of one row: 10% of the 41 groups is
    # 4 groups, so the held-out rows are 4 or 63 (the big group held out),
    # never the 10 rows that a split of the 100 rows would hold out.
    seen = _spy_on_validation(monkeypatch)
    X = np.random.RandomState(0).normal(size=(100, 2))
    groups = np.r_[np.zeros(60, dtype=int), np.arange(1, 41)]
    cls(random_state=0, **CHEAP_PARAMS).fit(X, groups=groups)
    cls(random_state=0, **CHEAP_PARAMS).fit(X)
    assert seen[0] in (4, 63), seen
    assert seen[1] == 10


def test_the_grouped_split_keeps_every_group_on_one_side():
    est = ARCSMDensity(validation_fraction=0.25)
    groups = np.repeat(np.arange(60), 5)
    train, valid = est._split_rows(300, 0, groups)
    train_groups = set(groups[train])
    valid_groups = set(groups[valid])
    assert not train_groups & valid_groups
    assert len(valid_groups) == 15 and len(train) + len(valid) == 300


def test_an_ensemble_passes_groups_to_its_members(monkeypatch):
    seen = _spy_on_validation(monkeypatch)
    X = np.random.RandomState(0).normal(size=(100, 2))
    groups = np.r_[np.zeros(60, dtype=int), np.arange(1, 41)]
    ARCSMEnsemble(ARCSMDensity(**CHEAP_PARAMS), n_orderings=2, random_state=0).fit(
        X, groups=groups
    )
    assert all(n in (4, 63) for n in seen) and len(seen) == 2, seen


@pytest.mark.parametrize(
    "groups, match",
    [(np.zeros(7), "one label per row"), (np.zeros(10), "single group")],
)
def test_bad_groups_are_clear_errors(groups, match):
    X = np.random.RandomState(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match=match):
        ARCSMDensity(**CHEAP_PARAMS).fit(X, groups=groups)


def test_the_automatic_batch_size_is_that_of_the_grouped_training_rows(monkeypatch):
    from sklearn_arcsm._base import auto_batch_size

    seen = _spy_on_validation(monkeypatch)
    X = np.random.RandomState(0).normal(size=(3000, 2))
    # one group of 2,000 rows and 1,000 single rows: holding out 100 groups
    # leaves 2,900 or 1,000 training rows, never the 2,700 of a row split
    groups = np.r_[np.zeros(2000, dtype=int), np.arange(1, 1001)]
    params = {**CHEAP_PARAMS, "batch_size": "auto", "max_epochs": 1}
    est = ARCSMDensity(random_state=0, **params).fit(X, groups=groups)
    n_train = 3000 - seen[0]
    assert est.batch_size_ == auto_batch_size(n_train)
