"""
=====================================================
Model selection and scoring on a Dask cluster
=====================================================

:class:`~sklearn_arcsm.ARCSMDensity` is a regular scikit-learn estimator, so
:class:`~sklearn.model_selection.GridSearchCV` can spread its fits over a
`Dask <https://www.dask.org>`_ cluster through joblib's Dask backend, and a
fitted model scores a chunked :mod:`dask.array` block by block. This
example runs both on a two-worker ``LocalCluster`` (the same code runs on a
real cluster: pass its scheduler address to ``Client``).

Install the extra with ``pip install "sklearn_arcsm[dask]"``.
"""

# %%
# A grid search on the cluster
# ----------------------------
# Every fit is seeded by ``random_state``, so the workers reproduce the
# serial fits: the scores agree with a serial run up to float32 training
# arithmetic. Each worker gets one thread: torch's own thread pool would
# otherwise oversubscribe the cores.
import time

import dask.array as da
import joblib
import matplotlib.pyplot as plt
import numpy as np
from distributed import Client, LocalCluster
from sklearn.datasets import make_moons
from sklearn.model_selection import GridSearchCV

from sklearn_arcsm import ARCSMDensity

X, _ = make_moons(1000, noise=0.1, random_state=0)
estimator = ARCSMDensity(max_epochs=20, random_state=0)
grid = {"context_size": [4, 8], "head_layer_sizes": [(16,), (32, 32)]}

if __name__ == "__main__":  # worker processes re-import this file
    start = time.perf_counter()
    serial = GridSearchCV(estimator, grid, cv=3).fit(X)
    serial_s = time.perf_counter() - start

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        start = time.perf_counter()
        with joblib.parallel_backend("dask"):
            search = GridSearchCV(estimator, grid, cv=3, n_jobs=-1).fit(X)
        dask_s = time.perf_counter() - start

    difference = np.abs(
        search.cv_results_["mean_test_score"] - serial.cv_results_["mean_test_score"]
    ).max()
    print(f"serial: {serial_s:.1f} s, on the cluster: {dask_s:.1f} s")
    print(f"best parameters: {search.best_params_}")
    print(f"largest difference of mean test scores: {difference:.1e} nats")

    # %%
    # Scoring data chunk by chunk
    # ---------------------------
    # ``score_samples`` treats rows independently, so ``map_blocks`` over an
    # array chunked by rows gives the same log-densities as one call, while
    # only a few chunks are in memory at a time. Here the 100,000 rows are
    # generated lazily, chunk by chunk, and never held together.
    model = search.best_estimator_
    unit = da.random.RandomState(1).uniform(size=(100_000, 2), chunks=(5_000, 2))
    rows = unit * np.array([4.0, 2.5]) + np.array([-1.5, -1.0])  # the data's box
    log_p = rows.map_blocks(model.score_samples, drop_axis=1, dtype=float)
    mean_log_p = float(log_p.mean().compute())
    print(f"mean log-density of 100,000 uniform points: {mean_log_p:.3f}")

    # %%
    # The scores of the grid
    # ----------------------
    labels = [str(params) for params in search.cv_results_["params"]]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(labels, search.cv_results_["mean_test_score"])
    ax.set_xlabel("mean held-out log-likelihood (nats)")
    fig.tight_layout()
    plt.show()
