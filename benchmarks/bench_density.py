"""Held-out log-likelihood of ARCSMDensity against tuned classical baselines.

* ``ARCSMDensity``: default parameters, ``random_state`` fixed, no tuning.
* ``GaussianMixture``: number of components and covariance type chosen by
  mean log-likelihood on a validation split of the training set, then refit
  on the whole training set.
* ``KernelDensity``: Gaussian kernel, bandwidth chosen by ``GridSearchCV``
  (k-fold cross-validated log-likelihood) and refit on the whole training set.

All log-likelihoods are means over the test set, in nats per sample, in the
data's own units, so the three methods are directly comparable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from bench_data import DensityDataset
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neighbors import KernelDensity

from sklearn_arcsm import ARCSMDensity

__all__ = [
    "DensitySettings",
    "evaluate_arcsm",
    "evaluate_gmm",
    "evaluate_kde",
    "run_density_benchmark",
]


@dataclass(frozen=True)
class DensitySettings:
    """What the density benchmark fits and searches over.

    Parameters
    ----------
    arcsm_variants : sequence of dict
        One ``ARCSMDensity`` fit per entry, each dict overriding default
        parameters (``{}``: the defaults, the benchmark's subject; add e.g.
        ``{"noise_levels": ...}`` to compare a candidate default).
    gmm_components : sequence of int
        Candidate numbers of mixture components.
    gmm_covariance_types : sequence of str
        Candidate covariance types.
    gmm_validation_fraction : float
        Fraction of the training set used to choose the mixture.
    kde_bandwidths : sequence of float
        Candidate bandwidths (data units).
    kde_cv : int
        Number of cross-validation folds for the bandwidth.
    random_state : int
        Seed of every estimator and split.
    """

    arcsm_variants: Sequence[dict] = ({},)
    gmm_components: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)
    gmm_covariance_types: Sequence[str] = ("full", "diag")
    gmm_validation_fraction: float = 0.2
    kde_bandwidths: Sequence[float] = tuple(np.logspace(-2, 1.5, 36))
    kde_cv: int = 5
    random_state: int = 0


def _timed(fn, *args):
    """Call ``fn(*args)`` and return ``(result, seconds)``."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def _result_row(dataset, method, selected, estimator, fit_s, select_s, extra=None):
    """Score ``estimator`` on the test set and assemble one table row."""
    log_density, score_s = _timed(estimator.score_samples, dataset.X_test)
    row = {
        "dataset": dataset.name,
        "n_features": dataset.n_features,
        "n_train": len(dataset.X_train),
        "n_test": len(dataset.X_test),
        "method": method,
        "selected": selected,
        "test_log_likelihood": float(np.mean(log_density)),
        "test_log_likelihood_sem": float(
            np.std(log_density, ddof=1) / np.sqrt(len(log_density))
        ),
        "fit_time_s": fit_s,
        "select_time_s": select_s,
        "score_time_s": score_s,
    }
    row.update(extra or {})
    return row


def evaluate_arcsm(
    dataset: DensityDataset, settings: DensitySettings, params: dict
) -> dict:
    """Fit ``ARCSMDensity`` (defaults overridden by ``params``) and score it.

    Parameters
    ----------
    dataset : DensityDataset
    settings : DensitySettings
    params : dict
        Overrides of the default parameters (``random_state`` is fixed by
        ``settings``).

    Returns
    -------
    row : dict
        One row of the density table; ``n_iter`` is the number of epochs run.
    """
    estimator = ARCSMDensity(random_state=settings.random_state, **params)
    _, fit_s = _timed(estimator.fit, dataset.X_train)
    overrides = ", ".join(f"{k}={v}" for k, v in params.items())
    # Resolved training objective, where the estimator reports one.
    objective = getattr(estimator, "objective_", "")
    setting = (overrides or "defaults") + (
        f" (objective_={objective})" if objective else ""
    )
    return _result_row(
        dataset,
        "ARCSMDensity",
        setting,
        estimator,
        fit_s,
        0.0,
        {
            "n_iter": estimator.n_iter_,
            "objective": objective,
        },
    )


def _select_gmm(X: np.ndarray, settings: DensitySettings) -> tuple[int, str]:
    """Choose ``(n_components, covariance_type)`` on a validation split of ``X``."""
    X_fit, X_val = train_test_split(
        X,
        test_size=settings.gmm_validation_fraction,
        random_state=settings.random_state,
    )
    best, best_score = None, -np.inf
    for covariance_type in settings.gmm_covariance_types:
        for n_components in settings.gmm_components:
            if n_components > len(X_fit):
                continue
            gmm = GaussianMixture(
                n_components,
                covariance_type=covariance_type,
                random_state=settings.random_state,
            ).fit(X_fit)
            score = gmm.score(X_val)
            if score > best_score:
                best, best_score = (n_components, covariance_type), score
    return best


def evaluate_gmm(dataset: DensityDataset, settings: DensitySettings) -> dict:
    """Select a ``GaussianMixture`` on a validation split, refit, and score it.

    Parameters
    ----------
    dataset : DensityDataset
    settings : DensitySettings

    Returns
    -------
    row : dict
        ``select_time_s`` covers the whole search; ``fit_time_s`` the refit.
    """
    (n_components, covariance_type), select_s = _timed(
        _select_gmm, dataset.X_train, settings
    )
    estimator = GaussianMixture(
        n_components,
        covariance_type=covariance_type,
        random_state=settings.random_state,
    )
    _, fit_s = _timed(estimator.fit, dataset.X_train)
    return _result_row(
        dataset,
        "GaussianMixture",
        f"n_components={n_components}, covariance_type={covariance_type}",
        estimator,
        fit_s,
        select_s,
    )


def evaluate_kde(dataset: DensityDataset, settings: DensitySettings) -> dict:
    """Choose a ``KernelDensity`` bandwidth by ``GridSearchCV`` and score it.

    Parameters
    ----------
    dataset : DensityDataset
    settings : DensitySettings

    Returns
    -------
    row : dict
        ``select_time_s`` covers the whole search; ``fit_time_s`` the refit.
    """
    search = GridSearchCV(
        KernelDensity(kernel="gaussian"),
        {"bandwidth": list(settings.kde_bandwidths)},
        cv=settings.kde_cv,
    )
    _, select_s = _timed(search.fit, dataset.X_train)
    bandwidth = search.best_params_["bandwidth"]
    at_edge = bandwidth in (
        min(settings.kde_bandwidths),
        max(settings.kde_bandwidths),
    )
    return _result_row(
        dataset,
        "KernelDensity",
        f"bandwidth={bandwidth:.4g}" + (" (grid edge)" if at_edge else ""),
        search.best_estimator_,
        search.refit_time_,
        select_s,
    )


def _evaluations(dataset: DensityDataset, settings: DensitySettings):
    """Yield the rows of one data set: every ARCSM variant, then the baselines."""
    for params in settings.arcsm_variants:
        yield evaluate_arcsm(dataset, settings, params)
    yield evaluate_gmm(dataset, settings)
    yield evaluate_kde(dataset, settings)


def run_density_benchmark(
    datasets: Sequence[DensityDataset], settings: DensitySettings, log=print
) -> list:
    """Evaluate every method on every data set.

    Parameters
    ----------
    datasets : sequence of DensityDataset
    settings : DensitySettings
    log : callable, default=print
        Receives one progress line per fitted method.

    Returns
    -------
    rows : list of dict
        One row per (data set, method).
    """
    rows = []
    for dataset in datasets:
        for row in _evaluations(dataset, settings):
            log(
                f"  {row['dataset']:>10s}  {row['method']:<15s} "
                f"test LL {row['test_log_likelihood']:9.3f}  "
                f"fit {row['fit_time_s']:7.1f}s  ({row['selected']})"
            )
            rows.append(row)
    return rows
