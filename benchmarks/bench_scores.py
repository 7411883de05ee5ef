"""Score-estimation benchmark: learned conditional scores against exact ones.

Usage::

    python benchmarks/bench_scores.py            # ~7 min on 2 CPU cores
    python benchmarks/bench_scores.py --quick    # every code path, tiny sizes

On targets whose smoothed conditional scores are known in closed form
(``score_oracles.py``: an 8-D correlated Gaussian, a 2-D Gaussian mixture and
the rotated banana), it fits ``CSMScoreEstimator`` (default parameters, at
two training-set sizes; at the stop, the default restores the average of the
epochs within one standard error of the lowest held-out CSM, and the same fit
is also reported restoring the latest of them, and the lowest, the rule of
0.2.0 and before) and reports the R^2
of its conditional scores against the exact scores of the data smoothed by
the model's smallest noise level, on 2,000 fresh rows: per dimension
``1 - mean((s_hat - s)^2) / var(s)``, its minimum over dimensions and its
mean. Writes ``results/scores.md`` and ``results/scores.json``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

import score_oracles  # noqa: E402
from bench_report import (  # noqa: E402
    environment,
    markdown_table,
    standalone_arguments,
    write_standalone,
)

from sklearn_arcsm import CSMScoreEstimator  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGETS = {
    "gaussian8": score_oracles.correlated_gaussian,
    "mixture2": score_oracles.gaussian_mixture,
    "banana": score_oracles.banana,
}
COLUMNS = (
    ("target", "target", ""),
    ("n_features", "D", "{:d}"),
    ("n_train", "train rows", "{:,d}"),
    ("restored", "restored epoch", ""),
    ("r2_min", "R^2 min over d", "{:.3f}"),
    ("r2_mean", "R^2 mean", "{:.3f}"),
    ("r2_per_dim", "R^2 per d", ""),
    ("epochs", "epochs", "{:d}"),
    ("restored_epoch", "last restored", "{:d}"),
    ("n_averaged", "epochs averaged", "{:d}"),
    ("best_epoch", "lowest held-out CSM", "{:d}"),
    ("fit_s", "fit s", "{:.0f}"),
)


def conditional_score_r2(est, target, Y):
    """Per-dimension R^2 of ``est.predict(Y)`` against the exact scores."""
    truth = target.conditional_scores(Y, est.noise_levels_[-1] * est.scale_)
    error = ((est.predict(Y) - truth) ** 2).mean(axis=0)
    return 1.0 - error / truth.var(axis=0)


class _Latest(CSMScoreEstimator):
    """Restores the latest epoch within one standard error of the lowest."""

    _checkpoint_average = False


class _Lowest(CSMScoreEstimator):
    """Restores the epoch of the lowest held-out CSM (skorch's load_best)."""

    _checkpoint_standard_errors = 0.0


RULES = {
    "average within 1 SE (default)": CSMScoreEstimator,
    "latest within 1 SE": _Latest,
    "lowest held-out CSM": _Lowest,
}


def run(quick: bool) -> list[dict]:
    sizes = (500,) if quick else (5000, 20000)
    extra = {"max_epochs": 3} if quick else {}
    rows = []
    for name, make in TARGETS.items():
        target = make()
        for n_train in sizes:
            rng = np.random.default_rng(0)
            X = target.sample(n_train, rng)
            Y = target.sample(200 if quick else 2000, rng)
            for label, estimator in RULES.items():
                t0 = time.perf_counter()
                est = estimator(random_state=0, **extra).fit(X)
                fit_s = time.perf_counter() - t0
                r2 = conditional_score_r2(est, target, Y)
                early = dict(est.net_.callbacks_)["early_stopping"]
                row = dict(
                    target=name,
                    n_features=target.n_features,
                    n_train=n_train,
                    restored=label,
                    r2_min=float(r2.min()),
                    r2_mean=float(r2.mean()),
                    r2_per_dim=" ".join(f"{v:.3f}" for v in r2),
                    epochs=int(est.n_iter_),
                    restored_epoch=int(early.checkpoint_epoch_),
                    n_averaged=int(early.n_averaged_),
                    best_epoch=int(early.best_epoch_),
                    fit_s=fit_s,
                )
                rows.append(row)
                print(
                    f"{name:>10} n={n_train:>6} {label:>28}  R2 min "
                    f"{row['r2_min']:.3f} mean {row['r2_mean']:.3f}  "
                    f"{row['epochs']} epochs {fit_s:.0f}s",
                    flush=True,
                )
    return rows


def main(argv=None) -> int:
    args, out = standalone_arguments(
        __doc__.splitlines()[0], "arcsm-scores-", RESULTS_DIR, argv
    )
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        env = environment()
        rows = run(args.quick)
    write_standalone(
        out,
        "scores",
        "Score-estimation accuracy",
        f"threads: {args.threads}; default CSMScoreEstimator(random_state=0); "
        "R^2 against the exact conditional scores of the data smoothed by "
        "noise_levels_[-1]",
        markdown_table(rows, COLUMNS),
        dict(environment=env, rows=rows),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
