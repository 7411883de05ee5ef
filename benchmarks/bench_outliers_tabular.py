"""Novelty detection on real tables: one class of a data set against another.

Usage::

    python benchmarks/bench_outliers_tabular.py            # full run, writes results/
    python benchmarks/bench_outliers_tabular.py --quick --output-dir /tmp/ood

The tabular companion of ``bench_outliers.py``: it asks whether
``ARCSMOutlierDetector``'s two statistics, the log-density and the
likelihood ratio to independent marginals (``statistic="log_ratio"``), hold
up beyond images. Each data set is one of scikit-learn's bundled real tables
with a class that plays the outliers:

* ``breast_cancer`` (30 features, ``log1p``-transformed: every feature is a
  positive, right-skewed measurement): benign tumours are the inliers,
  malignant ones the outliers;
* ``wine`` (13 features): cultivars 0 and 1 against cultivar 2;
* ``iris`` (4 features): setosa and versicolor against virginica.

70% of the inliers train every method; the AUROC tells the remaining 30%
from all outliers, by a low inlier score. Three random splits (seeds 0, 1,
2); the table gives the mean AUROC over the splits and its standard error.
Methods: ``arcsm`` (``ARCSMDensity(random_state=seed)``'s log-density),
``arcsm_log_ratio`` (the same fitted model, minus the log-density of
:class:`sklearn_arcsm.background.HistogramMarginals` of the training rows:
what ``ARCSMOutlierDetector(statistic="log_ratio")`` computes),
``gmm`` (GaussianMixture, components 1 to 4 and covariance type by
validation likelihood), ``kde`` (KernelDensity on standardized features,
bandwidth by 3-fold cross-validation), ``iforest`` (IsolationForest),
``ocsvm`` and ``lof`` (scikit-learn's OneClassSVM and
LocalOutlierFactor(novelty=True) on standardized features, default
settings).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from bench_outliers import RESULTS_DIR, _fit_gmm, _fit_kde, log_ratio_scorer
from bench_report import (
    environment,
    markdown_table,
    standalone_arguments,
    write_standalone,
)
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import LocalOutlierFactor
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM
from threadpoolctl import threadpool_limits

from sklearn_arcsm import ARCSMDensity

METHODS = ("arcsm", "arcsm_log_ratio", "gmm", "kde", "iforest", "ocsvm", "lof")


@dataclass(frozen=True)
class TabularConfig:
    seeds: tuple = (0, 1, 2)
    arcsm_epochs: int | None = None  # None: the estimator's default
    datasets: tuple = ("breast_cancer", "wine", "iris")


FULL = TabularConfig()
QUICK = TabularConfig(seeds=(0,), arcsm_epochs=2, datasets=("iris",))


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(inliers, outliers)`` of one data set."""
    if name == "breast_cancer":
        X, y = load_breast_cancer(return_X_y=True)
        X = np.log1p(X)
        return X[y == 1], X[y == 0]  # 1 is benign
    X, y = (load_wine if name == "wine" else load_iris)(return_X_y=True)
    return X[y < 2], X[y == 2]


def fit_methods(train, seed, config) -> dict:
    """``name -> inlier score function`` (higher = more typical)."""
    epochs = {} if config.arcsm_epochs is None else {"max_epochs": config.arcsm_epochs}
    density = ARCSMDensity(random_state=seed, **epochs).fit(train)
    scaler = StandardScaler().fit(train)

    def scaled(model):
        model.fit(scaler.transform(train))
        return lambda A: model.decision_function(scaler.transform(A))

    kde_score, _ = _fit_kde(scaler.transform(train), (0.25, 0.5, 1.0, 2.0))
    return {
        "arcsm": density.score_samples,
        "arcsm_log_ratio": log_ratio_scorer(density, train),
        "gmm": _fit_gmm(train, (1, 2, 3, 4))[0],
        "kde": lambda A: kde_score(scaler.transform(A)),
        "iforest": IsolationForest(random_state=seed).fit(train).score_samples,
        "ocsvm": scaled(OneClassSVM()),
        "lof": scaled(LocalOutlierFactor(novelty=True)),
    }


def run(config: TabularConfig, log=print) -> list[dict]:
    rows = []
    for name in config.datasets:
        inliers, outliers = load(name)
        aurocs = {method: [] for method in METHODS}
        start = time.perf_counter()
        for seed in config.seeds:
            train, test = train_test_split(inliers, test_size=0.3, random_state=seed)
            labels = np.r_[np.zeros(len(test)), np.ones(len(outliers))]
            for method, score in fit_methods(train, seed, config).items():
                values = -np.r_[score(test), score(outliers)]
                aurocs[method].append(float(roc_auc_score(labels, values)))
        log(f"  {name}: {time.perf_counter() - start:.0f} s")
        for method, values in aurocs.items():
            n = len(values)
            se = float(np.std(values, ddof=1) / np.sqrt(n)) if n > 1 else np.nan
            rows.append(
                dict(
                    dataset=name,
                    n_features=inliers.shape[1],
                    n_train=len(train),
                    n_outliers=len(outliers),
                    method=method,
                    auroc=float(np.mean(values)),
                    se=se,
                    per_split=" ".join(f"{v:.3f}" for v in values),
                )
            )
    return rows


COLUMNS = (
    ("dataset", "data", ""),
    ("n_features", "D", "{:d}"),
    ("n_train", "train rows", "{:d}"),
    ("n_outliers", "outliers", "{:d}"),
    ("method", "method", ""),
    ("auroc", "AUROC", "{:.3f}"),
    ("se", "± s.e.", "{:.3f}"),
    ("per_split", "per split", ""),
)


def main(argv=None) -> int:
    args, out = standalone_arguments(
        __doc__.splitlines()[0], "arcsm-ood-tabular-", RESULTS_DIR, argv
    )
    config = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        env = environment()
        rows = run(config)
    write_standalone(
        out,
        "outliers_tabular",
        "Novelty detection on real tables (AUROC; higher is better)",
        f"threads: {args.threads}; config: {asdict(config)}",
        markdown_table(rows, COLUMNS),
        dict(environment=env, config=asdict(config), rows=rows),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
