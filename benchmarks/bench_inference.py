"""Inference speed and quadrature accuracy: ARCSMDensity against a zuko NSF.

Usage::

    python benchmarks/bench_inference.py            # full run, writes results/
    python benchmarks/bench_inference.py --quick --output-dir /tmp/inf  # smoke run

For D in (2, 16, 64) it draws a correlated non-Gaussian sample (a random
rotation of ``z + 0.5 tanh(3 z)`` with ``z ~ N(0, I)``: bimodal-ish
marginals, dense correlations), fits the default ``ARCSMDensity`` (the
cubic-spline score head, scored, sampled and trained with its knot rule,
:mod:`sklearn_arcsm.knot_quadrature`) for a few epochs (a quadrature's cost
can depend on how sharp the fitted conditionals are, so an untrained model
would flatter it) and a zuko NSF (5 transforms, (128, 128) hidden
features, 8 bins), and times in the same process, with the same threads:

* ``score_samples`` on the test rows (NSF: ``log_prob``);
* ``sample`` by inverse CDF (NSF: ``sample``);
* one training epoch;

and the same three for ``ARCSMDensity(score_head="mlp")`` (the MLP score
head, the default of version 0.1, integrated by the adaptive rule; also
scored with Simpson's rule on 513 nodes, the default before that), plus
scoring and sampling for ``ARCSMEnsemble`` of four default models in four
variable orders (the "4-order ensemble" columns).

A second table gives, for the fitted D = 16 models, the log-density error of
each quadrature setting against a float64 reference (max and mean over test
rows, nats per row) and its scoring time: Chebyshev panels of order 16, 128
of them for the MLP head (2049 nodes) and two per knot interval for the
spline head (737 nodes at its default 24 knots; panels that straddle the
spline's knots would converge only algebraically).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from bench_report import (
    environment,
    markdown_table,
    standalone_arguments,
    write_standalone,
)
from threadpoolctl import threadpool_limits

from sklearn_arcsm import ARCSMDensity, ARCSMEnsemble, quadrature
from sklearn_arcsm._base import QUADRATURE_TOL
from sklearn_arcsm.adaptive import AdaptiveRule
from sklearn_arcsm.knot_quadrature import KnotRule

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class InferenceConfig:
    dims: tuple = (2, 16, 64)
    n_train: int = 5000
    n_test: int = 5000
    n_sample: int = 1000
    arcsm_epochs: int = 20
    nsf_epochs: int = 3
    error_rows: int = 200
    error_dim: int = 16


FULL = InferenceConfig()
QUICK = InferenceConfig(
    dims=(2, 4),
    n_train=300,
    n_test=200,
    n_sample=50,
    arcsm_epochs=2,
    nsf_epochs=1,
    error_rows=20,
    error_dim=4,
)


def make_data(n_features: int, n_rows: int, seed: int = 0) -> np.ndarray:
    """Correlated non-Gaussian rows: a rotation of ``z + 0.5 tanh(3 z)``."""
    rng = np.random.RandomState(seed)
    rotation, _ = np.linalg.qr(np.random.RandomState(123).randn(n_features, n_features))
    z = rng.standard_normal((n_rows, n_features))
    return (z + 0.5 * np.tanh(3.0 * z)) @ rotation.T


def _timed(fn, repeats: int = 1) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _fit_nsf(X: np.ndarray, epochs: int):
    import zuko

    torch.manual_seed(0)
    flow = zuko.flows.NSF(X.shape[1], transforms=5, hidden_features=(128, 128), bins=8)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    data = torch.as_tensor(X, dtype=torch.float32)
    epoch_times = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(data))
        for i in range(0, len(data), 256):
            loss = -flow().log_prob(data[order[i : i + 256]]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epoch_times.append(time.perf_counter() - start)
    return flow, float(np.median(epoch_times))


def _fit_arcsm(X: np.ndarray, epochs: int, score_head: str = "auto"):
    return ARCSMDensity(
        score_head=score_head, max_epochs=epochs, early_stopping=False, random_state=0
    ).fit(X)


def _fit_spline_ensemble(X: np.ndarray, epochs: int):
    """Four orderings of the default model (the user guide's accurate pick)."""
    member = ARCSMDensity(max_epochs=epochs, early_stopping=False, random_state=0)
    return ARCSMEnsemble(member, n_orderings=4, random_state=0).fit(X)


def _nodes_per_conditional(est, X_test: np.ndarray) -> float:
    """Nodes per conditional of the fitted rule.

    The adaptive rule: score evaluations (head passes). The knot rule of
    the spline head: Gauss-Legendre nodes (each four multiply-adds and an
    exp, no head evaluation).
    """
    module, head = est._inference_modules()
    Z = est._standardize(X_test[:500])
    sigma = torch.tensor(est.noise_levels_[-1], dtype=torch.float64)
    return _rule_nodes(module, Z, sigma, est.quadrature_, head)


def _rule_nodes(module, Z, sigma, rule, head) -> float:
    with torch.no_grad():
        if isinstance(rule, KnotRule):
            coef = module.spline_coefficients(module.conditioner(Z), sigma)
            coef = coef.flatten(0, 1)
            n = Z.shape[0]
            lower, upper = module.lower.repeat(n), module.upper.repeat(n)
            counts = rule.node_counts(coef, lower, upper).double()
            return float(counts.mean()) * (coef.shape[-1] - 3)
        if isinstance(rule, AdaptiveRule):
            stats = {}
            module.conditional_log_prob(Z, sigma, rule, head, stats)
            return stats["evaluations"] / Z.numel()
        return float(rule.n_points)


def _epoch_seconds(est) -> float:
    return float(np.median([row["dur"] for row in est.net_.history]))


def speed_rows(config: InferenceConfig, log=print) -> list[dict]:
    rows = []
    for dim in config.dims:
        X = make_data(dim, config.n_train, seed=0)
        X_test = make_data(dim, config.n_test, seed=1)
        est = _fit_arcsm(X, config.arcsm_epochs)
        mlp = _fit_arcsm(X, config.arcsm_epochs, "mlp")
        ensemble = _fit_spline_ensemble(X, config.arcsm_epochs)
        flow, nsf_epoch = _fit_nsf(X, config.nsf_epochs)
        test = torch.as_tensor(X_test, dtype=torch.float32)
        with torch.no_grad():
            nsf_score, _ = _timed(lambda f=flow, t=test: f().log_prob(t), repeats=3)
            nsf_sample, _ = _timed(lambda f=flow: f().sample((config.n_sample,)), 3)
        score, _ = _timed(lambda e=est, x=X_test: e.score_samples(x))
        sample, _ = _timed(lambda e=est: e.sample(config.n_sample, random_state=0))
        mlp_score, _ = _timed(lambda e=mlp, x=X_test: e.score_samples(x))
        mlp_sample, _ = _timed(lambda e=mlp: e.sample(config.n_sample, random_state=0))
        ensemble_score, _ = _timed(lambda e=ensemble, x=X_test: e.score_samples(x))
        ensemble_sample, _ = _timed(
            lambda e=ensemble: e.sample(config.n_sample, random_state=0)
        )
        adaptive = mlp.quadrature_
        mlp.quadrature_ = quadrature.simpson(256)  # the MLP's rule before that
        simpson_score, _ = _timed(lambda e=mlp, x=X_test: e.score_samples(x))
        mlp.quadrature_ = adaptive
        row = dict(
            D=dim,
            nsf_score_s=nsf_score,
            arcsm_score_s=score,
            score_ratio=score / nsf_score,
            nodes_per_conditional=_nodes_per_conditional(est, X_test),
            nsf_sample_s=nsf_sample,
            arcsm_sample_s=sample,
            sample_ratio=sample / nsf_sample,
            nsf_epoch_s=nsf_epoch,
            arcsm_epoch_s=_epoch_seconds(est),
            epoch_ratio=_epoch_seconds(est) / nsf_epoch,
            mlp_score_s=mlp_score,
            mlp_score_ratio=mlp_score / nsf_score,
            simpson513_score_s=simpson_score,
            mlp_nodes_per_conditional=_nodes_per_conditional(mlp, X_test),
            mlp_sample_s=mlp_sample,
            mlp_sample_ratio=mlp_sample / nsf_sample,
            mlp_epoch_s=_epoch_seconds(mlp),
            mlp_epoch_ratio=_epoch_seconds(mlp) / nsf_epoch,
            ensemble_score_s=ensemble_score,
            ensemble_score_ratio=ensemble_score / nsf_score,
            ensemble_sample_s=ensemble_sample,
            ensemble_sample_ratio=ensemble_sample / nsf_sample,
        )
        log(", ".join(f"{k}={v:.3g}" for k, v in row.items()))
        rows.append(row)
    return rows


def error_rows(config: InferenceConfig, log=print) -> list[dict]:
    dim = config.error_dim
    X = make_data(dim, config.n_train, seed=0)
    X_test = make_data(dim, config.error_rows, seed=1)
    adaptive = AdaptiveRule(tol=QUADRATURE_TOL)
    fixed = [(f"simpson {n} cells", quadrature.simpson(n)) for n in (64, 256)]
    fixed += [
        (f"chebyshev {n} panels", quadrature.chebyshev(n)) for n in (8, 16, 32, 64)
    ]
    rows = []
    for score_head, settings in (
        (
            "spline",
            [
                ("knot rule (default)", KnotRule()),
                ("adaptive, spline head", adaptive),
            ],
        ),
        ("mlp", [("adaptive, MLP head", adaptive)] + fixed),
    ):
        rows += _error_rows(
            _fit_arcsm(X, config.arcsm_epochs, score_head), X_test, settings, log
        )
    return rows


def _error_rows(est, X_test, settings, log) -> list[dict]:
    """Error of each ``(name, rule)`` against a fine float64 reference rule."""
    dim = X_test.shape[1]
    module, head = est._inference_modules()
    Z = est._standardize(X_test)
    sigma = torch.tensor(est.noise_levels_[-1], dtype=torch.float64)
    panels = 128
    if hasattr(module.head, "n_knots"):  # knot-aligned panels for a spline
        panels = 2 * (module.head.n_knots - 1)
    with torch.no_grad():
        reference = module.log_prob(Z, sigma, quadrature.chebyshev(panels, 16))
    rows = []
    for name, rule in settings:
        with torch.no_grad():
            seconds, log_p = _timed(
                lambda rule=rule: module.conditional_log_prob(Z, sigma, rule, head).sum(
                    -1
                )
            )
        error = (log_p - reference).abs()
        nodes = _rule_nodes(module, Z, sigma, rule, head)
        row = dict(
            D=dim,
            rule=name,
            nodes_per_conditional=nodes,
            max_error=float(error.max()),
            mean_error=float(error.mean()),
            seconds_per_1000_rows=seconds * 1000 / len(Z),
        )
        log(", ".join(f"{k}={v}" for k, v in row.items()))
        rows.append(row)
    return rows


SPEED_COLUMNS = [
    ("D", "D", "{}"),
    ("nsf_score_s", "NSF score s", "{:.3f}"),
    ("arcsm_score_s", "ARCSM score s", "{:.3f}"),
    ("score_ratio", "ratio", "{:.2f}x"),
    ("nodes_per_conditional", "nodes/cond", "{:.0f}"),
    ("nsf_sample_s", "NSF sample s", "{:.3f}"),
    ("arcsm_sample_s", "ARCSM sample s", "{:.3f}"),
    ("sample_ratio", "ratio", "{:.2f}x"),
    ("nsf_epoch_s", "NSF epoch s", "{:.2f}"),
    ("arcsm_epoch_s", "ARCSM epoch s", "{:.2f}"),
    ("epoch_ratio", "ratio", "{:.2f}x"),
]
MLP_COLUMNS = [
    ("D", "D", "{}"),
    ("mlp_score_s", "MLP score s", "{:.3f}"),
    ("mlp_score_ratio", "ratio to NSF", "{:.1f}x"),
    ("simpson513_score_s", "Simpson-513 score s", "{:.3f}"),
    ("mlp_nodes_per_conditional", "nodes/cond", "{:.0f}"),
    ("mlp_sample_s", "MLP sample s", "{:.3f}"),
    ("mlp_sample_ratio", "ratio to NSF", "{:.1f}x"),
    ("mlp_epoch_s", "MLP epoch s", "{:.2f}"),
    ("mlp_epoch_ratio", "ratio to NSF", "{:.2f}x"),
    ("ensemble_score_s", "4-order ensemble score s", "{:.3f}"),
    ("ensemble_score_ratio", "ratio to NSF", "{:.1f}x"),
    ("ensemble_sample_s", "4-order ensemble sample s", "{:.3f}"),
    ("ensemble_sample_ratio", "ratio to NSF", "{:.2f}x"),
]
ERROR_COLUMNS = [
    ("D", "D", "{}"),
    ("rule", "rule", "{}"),
    ("nodes_per_conditional", "nodes/cond", "{:.0f}"),
    ("max_error", "max error", "{:.1e}"),
    ("mean_error", "mean error", "{:.1e}"),
    ("seconds_per_1000_rows", "s / 1000 rows", "{:.3f}"),
]


def main(argv=None) -> int:
    args, out = standalone_arguments(
        __doc__.splitlines()[0], "arcsm-inference-", RESULTS_DIR, argv
    )
    config = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        env = environment()
        speed = speed_rows(config)
        errors = error_rows(config)
    tables = (
        "## Speed of the default (same process, same threads)\n\n"
        + markdown_table(speed, SPEED_COLUMNS)
        + '\n\n## The MLP score head (`score_head="mlp"`) and the 4-order'
        + " ensemble of default models, same run\n\n"
        + markdown_table(speed, MLP_COLUMNS)
        + "\n\n## Quadrature error against a fine float64 reference\n\n"
        + markdown_table(errors, ERROR_COLUMNS)
    )
    write_standalone(
        out,
        "inference",
        "Inference benchmark",
        f"threads: {args.threads}; config: {asdict(config)}",
        tables,
        dict(environment=env, config=asdict(config), speed=speed, errors=errors),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
