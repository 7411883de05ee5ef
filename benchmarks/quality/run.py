"""Density-quality benchmark: ARCSMDensity against GMM, KDE and flows.

Usage::

    python benchmarks/quality/run.py            # full suite (~1.5 h, 2 CPU cores)
    python benchmarks/quality/run.py --quick    # every code path, tiny sizes
    python benchmarks/quality/run.py --targets rings banana --methods arcsm gmm
    python benchmarks/quality/run.py --tune     # also GridSearchCV-tuned ARCSM

For each target (``targets.py``) it draws 5,000 training and 5,000 fresh test
rows, fits every method on the training rows, and reports
``KL(p || q) = mean over test rows of (log p - log q)`` in nats (0 is
perfect), fit time and score time. Results go to ``results/`` (or
``--output-dir``): ``quality.csv`` (one row per fit), ``quality.md`` (the
table) and ``quality_kl.png`` (KL per target).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
from targets import TARGETS, make_targets  # noqa: E402

HERE = Path(__file__).resolve().parent
METHODS = {
    "arcsm": lambda X, s, q: peers.fit_arcsm(X, s, q),
    # The CSM objectives, for comparison with the default (maximum likelihood).
    "arcsm_csm": lambda X, s, q: peers.fit_arcsm(X, s, q, objective="csm"),
    "arcsm_csm_nll": lambda X, s, q: peers.fit_arcsm(X, s, q, objective="csm+nll"),
    # Linear whitening in front of the model (ARCSMDensity's whiten).
    "arcsm_cholesky": lambda X, s, q: peers.fit_arcsm(X, s, q, whiten="cholesky"),
    "arcsm_pca": lambda X, s, q: peers.fit_arcsm(X, s, q, whiten="pca"),
    # Without the linear location term (ARCSMDensity's linear_location).
    "arcsm_no_linear": lambda X, s, q: peers.fit_arcsm(X, s, q, linear_location=False),
    # The score heads (ARCSMDensity's score_head): the cubic spline is the
    # default since 2026-12; the MLP of Fourier features was before.
    "arcsm_spline": lambda X, s, q: peers.fit_arcsm(X, s, q, score_head="spline"),
    "arcsm_mlp": lambda X, s, q: peers.fit_arcsm(X, s, q, score_head="mlp"),
    # Four orderings of it (ARCSMEnsemble): affordable with the fast head.
    "arcsm_spline_ensemble": lambda X, s, q: peers.fit_arcsm_ensemble(
        X, s, q, n_orderings=4, score_head="spline"
    ),
    "gmm": peers.fit_gmm,
    "kde": peers.fit_kde,
    "maf": lambda X, s, q: peers.fit_flow(X, s, "maf", q),
    "nsf": lambda X, s, q: peers.fit_flow(X, s, "nsf", q),
}
# A small user-side grid around the defaults (defaults included) over the two
# choices whose best value depends most on the data in these benchmarks: the
# linear whitening (up to +2 nats per row on correlated real tables, -24 on
# digits, worse on the switching chain and, for "pca", on the funnel) and
# the spline head's knots (24 is the default; 48 resolves sharper
# conditionals and overfits smooth ones). Each candidate costs three fits.
TUNE_GRID = {"whiten": [None, "cholesky", "pca"], "n_knots": [24, 48]}
QUICK_TUNE_GRID = {"max_epochs": [3], "whiten": [None, "cholesky"]}


def fit_tuned(X, seed, quick):
    """``arcsm_tuned``: ``GridSearchCV`` over ``TUNE_GRID`` (3 folds)."""
    grid = QUICK_TUNE_GRID if quick else TUNE_GRID
    return peers.fit_arcsm_tuned(X, seed, grid, quick)


METHODS["arcsm_tuned"] = fit_tuned


def evaluate(target, method, fit_fn, n_train, n_test, seed, quick):
    rng = np.random.default_rng(seed)
    X_train = target.sample(n_train, rng)
    X_test = target.sample(n_test, rng)
    log_p = target.log_prob(X_test)
    t0 = time.perf_counter()
    log_density, info = fit_fn(X_train, seed, quick)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    log_q = log_density(X_test)
    score_s = time.perf_counter() - t0
    diff = log_p - log_q
    return {
        "target": target.name,
        "dim": target.n_features,
        "method": method,
        "kl": float(np.mean(diff)),
        "kl_se": float(np.std(diff) / np.sqrt(len(diff))),
        "entropy": float(-np.mean(log_p)),
        "fit_s": fit_s,
        "score_s": score_s,
        "info": json.dumps(info),
    }


def write_table(rows, out: Path):
    import pandas as pd

    df = pd.DataFrame(rows)
    df.to_csv(out / "quality.csv", index=False)
    kl = df.pivot_table(index=["target", "dim"], columns="method", values="kl")
    first_seen = list(dict.fromkeys(zip(df["target"], df["dim"], strict=True)))
    kl = kl.reindex(first_seen)
    order = [
        m
        for m in (
            "arcsm",
            "arcsm_tuned",
            "arcsm_csm_nll",
            "arcsm_csm",
            "gmm",
            "kde",
            "maf",
            "nsf",
        )
        if m in kl
    ]
    order += [m for m in kl.columns if m not in order]
    kl = kl[order]
    lines = ["## KL(p || q) in nats on 5,000 fresh test rows (lower is better)", ""]
    lines.append("| target | D | " + " | ".join(order) + " | best peer |")
    lines.append("|---|---|" + "---|" * (len(order) + 1))
    for (name, dim), row in kl.iterrows():
        peer_cols = [m for m in order if not m.startswith("arcsm")]
        best = row[peer_cols].idxmin() if row[peer_cols].notna().any() else "-"
        cells = [f"{v:.3f}" if np.isfinite(v) else "-" for v in row.values]
        lines.append(f"| {name} | {dim} | " + " | ".join(cells) + f" | {best} |")
    lines += ["", "## Fit / score seconds", ""]
    lines.append("| target | method | fit s | score s | KL | +- se | tuning |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['method']} | {r['fit_s']:.1f} | {r['score_s']:.1f} "
            f"| {r['kl']:.3f} | {r['kl_se']:.3f} | {r['info']} |"
        )
    (out / "quality.md").write_text(_environment() + "\n".join(lines) + "\n")
    _plot(kl, out / "quality_kl.png")


def _plot(kl, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    names = [f"{t}\n(D={d})" for t, d in kl.index]
    width = 0.8 / len(kl.columns)
    for i, method in enumerate(kl.columns):
        vals = np.clip(kl[method].to_numpy(), 1e-3, None)
        ax.bar(np.arange(len(kl)) + i * width, vals, width, label=method)
    ax.set_xticks(np.arange(len(kl)) + 0.4 - width / 2, names)
    ax.set_yscale("log")
    ax.set_ylabel("KL(p || q), nats (log scale)")
    ax.legend(ncol=len(kl.columns), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def warm_up() -> None:
    """Pay the process's one-time import costs before any fit is timed.

    torch imports ``torch._dynamo`` (about 4 s on the 2-core machine) when
    the first optimizer is built; without this, whichever method the loop
    fits first is charged for it.
    """
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _environment() -> str:
    try:
        commit = subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True
        ).strip()
    except Exception:  # noqa: BLE001
        commit = "?"
    import sklearn

    return (
        f"# Density quality benchmark\n\ncommit {commit}, python "
        f"{platform.python_version()}, torch {torch.__version__}, scikit-learn "
        f"{sklearn.__version__}, {os.cpu_count()} CPUs, torch threads 1\n\n"
    )


def results_dir(output_dir, quick: bool, prefix: str) -> Path:
    """Where a run writes: ``output_dir``, else a new temporary folder in
    quick mode, else ``results/`` next to this file (created if needed)."""
    if output_dir:
        out = Path(output_dir)
    elif quick:
        out = Path(tempfile.mkdtemp(prefix=prefix))
    else:
        out = HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--targets", nargs="*", default=None, choices=list(TARGETS))
    parser.add_argument(
        "--methods",
        nargs="*",
        default=[m for m in METHODS if not m.startswith(("arcsm_csm", "arcsm_tuned"))],
    )
    parser.add_argument(
        "--tune", action="store_true", help="add GridSearchCV-tuned ARCSM"
    )
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--append",
        action="store_true",
        help="merge into the existing quality.csv (replacing same target/method)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warm_up()
    out = results_dir(args.output_dir, args.quick, prefix="arcsm-quality-")
    n_train = n_test = 500 if args.quick else 5000
    methods = dict((m, METHODS[m]) for m in args.methods)
    if args.tune:
        methods["arcsm_tuned"] = METHODS["arcsm_tuned"]
    rows = []
    previous = []
    if args.append and (out / "quality.csv").exists():
        import pandas as pd

        previous = pd.read_csv(out / "quality.csv").to_dict("records")
    for target in make_targets(args.targets):
        for name, fit_fn in methods.items():
            row = evaluate(target, name, fit_fn, n_train, n_test, args.seed, args.quick)
            rows.append(row)
            print(
                f"{row['target']:>12} {name:>11}  KL {row['kl']:8.3f}  "
                f"fit {row['fit_s']:6.1f}s  score {row['score_s']:6.1f}s  "
                f"{row['info']}",
                flush=True,
            )
            done = {(r["target"], r["method"]) for r in rows}
            kept = [r for r in previous if (r["target"], r["method"]) not in done]
            write_table(kept + rows, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
