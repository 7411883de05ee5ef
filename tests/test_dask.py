"""Model selection on a Dask cluster, and scoring data chunk by chunk."""

import tracemalloc

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, cross_val_score

from sklearn_arcsm import ARCSMDensity
from tests.conftest import CHEAP_PARAMS

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


def test_grid_search_on_a_dask_cluster_gives_the_serial_scores(client, moons):
    # Every fit is seeded, so the two workers reproduce the serial fits; the
    # only difference allowed is float32 training arithmetic under other
    # thread counts (measured 7e-10 nats).
    est = ARCSMDensity(**{**CHEAP_PARAMS, "max_epochs": 3, "random_state": 0})
    grid = {"context_size": [2, 4], "lr": [1e-3, 3e-3]}
    serial = GridSearchCV(est, grid, cv=2).fit(moons)
    with joblib.parallel_backend("dask"):
        distributed_search = GridSearchCV(est, grid, cv=2, n_jobs=-1).fit(moons)
        scores = cross_val_score(est, moons, cv=3, n_jobs=-1)
    np.testing.assert_allclose(
        distributed_search.cv_results_["mean_test_score"],
        serial.cv_results_["mean_test_score"],
        rtol=1e-6,
    )
    assert distributed_search.best_params_ == serial.best_params_
    np.testing.assert_allclose(scores, cross_val_score(est, moons, cv=3), rtol=1e-6)
    # The refitted estimator came back from a worker: it scores here.
    assert np.all(np.isfinite(distributed_search.best_estimator_.score_samples(moons)))


@pytest.fixture
def fitted(moons):
    return ARCSMDensity(**{**CHEAP_PARAMS, "random_state": 0}).fit(moons)


def test_map_blocks_scores_a_chunked_array_like_score_samples(fitted, moons):
    X = np.tile(moons, (5, 1))
    chunked = da.from_array(X, chunks=(300, 2))
    log_p = chunked.map_blocks(fitted.score_samples, drop_axis=1, dtype=float)
    np.testing.assert_array_equal(log_p.compute(), fitted.score_samples(X))


def _peak_bytes_of_mean_log_likelihood(est, n_chunks, rows_per_chunk):
    # The rows are generated chunk by chunk and never held together.
    X = da.random.RandomState(0).normal(
        size=(n_chunks * rows_per_chunk, 2), chunks=(rows_per_chunk, 2)
    )
    total = X.map_blocks(est.score_samples, drop_axis=1, dtype=float).sum()
    tracemalloc.start()
    try:
        value = float(total.compute(scheduler="synchronous"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.isfinite(value)
    return peak


def test_scoring_chunk_by_chunk_keeps_memory_bounded(fitted):
    # 200,000 rows (3.2 MB of input) in chunks of 2,000: the traced peak
    # stays a fraction of the input (measured about 1 MB, mostly the task
    # graph), where materializing the rows would need all of it at once.
    _peak_bytes_of_mean_log_likelihood(fitted, 2, 100)  # first-call allocations
    n_chunks, rows = 100, 2000
    peak = _peak_bytes_of_mean_log_likelihood(fitted, n_chunks, rows)
    input_bytes = n_chunks * rows * 2 * 8
    assert peak < 0.5 * input_bytes, (peak, input_bytes)
