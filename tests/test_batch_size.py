"""batch_size="auto": enough optimizer steps per epoch on small data."""

import pickle

import numpy as np
import pytest

from sklearn_arcsm import ARCSMDensity, CSMScoreEstimator
from sklearn_arcsm._base import AUTO_BATCH_RANGE, MIN_STEPS_PER_EPOCH, auto_batch_size
from tests.conftest import CHEAP_PARAMS

P = {key: value for key, value in CHEAP_PARAMS.items() if key != "batch_size"}


@pytest.mark.parametrize("n_processes", [1, 2, 3])
def test_auto_batch_size_gives_enough_steps_in_range(n_processes):
    low, high = AUTO_BATCH_RANGE
    for n_train in [1, 2, 15, 100, 255, 256, 299, 1000, 4095, 4096, 5000, 10**6]:
        size = auto_batch_size(n_train, n_processes)
        assert size % n_processes == 0
        assert low - n_processes < size <= high
        steps = -(-n_train // size)
        if low * MIN_STEPS_PER_EPOCH <= n_train < high * MIN_STEPS_PER_EPOCH:
            assert steps >= MIN_STEPS_PER_EPOCH, (n_train, size)
        if n_train >= high * MIN_STEPS_PER_EPOCH:
            assert size == high - high % n_processes
    assert auto_batch_size(10, 1) == low  # a tiny table: batches of 16 rows


@pytest.mark.parametrize("estimator", [ARCSMDensity, CSMScoreEstimator])
def test_auto_batch_size_is_resolved_for_the_training_split(estimator):
    X = np.random.RandomState(0).normal(size=(600, 2))
    est = estimator(**P, random_state=0).fit(X)
    assert est.batch_size == "auto"  # the parameter is left as given
    # 540 training rows after the 10% validation split: 33 rows a batch.
    assert est.batch_size_ == 540 // MIN_STEPS_PER_EPOCH == 33
    assert est.net_.batch_size == est.batch_size_
    # The net really trained on batches of that size.
    first_epoch = est.net_.history[0]["batches"]
    train_sizes = [
        b["train_batch_size"] for b in first_epoch if "train_batch_size" in b
    ]
    assert len(train_sizes) == -(-540 // 33) >= MIN_STEPS_PER_EPOCH
    assert max(train_sizes) == 33


def test_auto_batch_size_without_early_stopping_uses_every_row():
    X = np.random.RandomState(0).normal(size=(600, 2))
    est = ARCSMDensity(**P, early_stopping=False, random_state=0).fit(X)
    assert est.batch_size_ == 600 // MIN_STEPS_PER_EPOCH


def test_integer_batch_size_is_used_as_given(moons):
    est = ARCSMDensity(**P, batch_size=50, random_state=0).fit(moons)
    assert est.batch_size_ == est.net_.batch_size == 50


def test_warm_start_resolves_auto_for_the_new_data(moons):
    est = ARCSMDensity(**P, batch_size=7, warm_start=True, random_state=0).fit(moons)
    assert est.batch_size_ == 7
    X = np.random.RandomState(1).normal(size=(1000, 2))
    est.set_params(batch_size="auto", max_epochs=1).fit(X)
    assert est.batch_size_ == est.net_.batch_size == 900 // MIN_STEPS_PER_EPOCH


def test_bad_batch_size_is_refused(moons):
    with pytest.raises(ValueError, match="batch_size"):
        ARCSMDensity(batch_size="big").fit(moons)
    with pytest.raises(ValueError, match="batch_size"):
        ARCSMDensity(batch_size=0).fit(moons)


def test_format_5_fits_load_with_their_batch_size(moons):
    est = ARCSMDensity(**P, batch_size=40, random_state=0).fit(moons)
    state = pickle.loads(pickle.dumps(est)).__getstate__()
    del state["batch_size_"]  # format 5 had no resolved size
    state["_arcsm_format"] = 5
    old = ARCSMDensity()
    old.__setstate__(state)
    assert old.batch_size_ == 40
    np.testing.assert_array_equal(
        old.score_samples(moons[:10]), est.score_samples(moons[:10])
    )
