"""Real-data benchmark: held-out log-likelihood of ARCSMDensity and its peers.

Usage::

    python benchmarks/quality/run_real.py            # all data sets (~1 h, 2 CPU cores)
    python benchmarks/quality/run_real.py --quick    # every code path on 300 rows
    python benchmarks/quality/run_real.py --datasets weather vowels --methods arcsm gmm
    python benchmarks/quality/run_real.py --methods arcsm_ensemble   # 4 orderings

Every method (``peers.py``, the same as the synthetic suite's) is fitted on
the training rows of each data set (``realdata.py``, fixed splits) and scored
on its test rows. There is no true density here, so the table reports the
mean held-out log-likelihood in nats per row (higher is better) in the data's
units, with its standard error, and ARCSM's paired difference to the best
peer (mean over test rows of ``log q_arcsm - log q_best``, with the paired
standard error: the two share the test rows' variation). Results go to
``results/`` (or ``--output-dir``): ``real.csv`` and ``real.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
from realdata import REAL_DATASETS, load_real  # noqa: E402
from run import METHODS, _environment, results_dir, warm_up  # noqa: E402

PEERS = ("gmm", "kde", "maf", "nsf")


def _method(data, method):
    """The fit function of ``method`` on ``data`` (None: not applicable).

    ``arcsm_bounded`` is ARCSMDensity with the data set's declared support
    (``RealData.bounds``); data sets that declare none skip it.
    ``arcsm_ensemble`` (not run by default: four fits) is ARCSMEnsemble over
    four orderings of default members, given the declared support if any.
    """
    if method == "arcsm_ensemble":
        bounds = {} if data.bounds is None else {"bounds": data.bounds}
        return lambda X, s, q: peers.fit_arcsm_ensemble(X, s, q, **bounds)
    if method != "arcsm_bounded":
        return METHODS[method]
    if data.bounds is None:
        return None
    return lambda X, s, q: peers.fit_arcsm(X, s, q, bounds=data.bounds)


def evaluate(data, method, fit_fn, seed, quick):
    """Fit ``method`` on the training rows; per-row test log-likelihoods."""
    X_train, X_test = data.X_train, data.X_test
    if quick:
        X_train, X_test = X_train[:300], X_test[:200]
    t0 = time.perf_counter()
    log_density, info = fit_fn(X_train, seed, quick)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    log_q = np.asarray(log_density(X_test), dtype=np.float64)
    score_s = time.perf_counter() - t0
    row = {
        "dataset": data.name,
        "dim": data.n_features,
        "n_train": len(X_train),
        "n_test": len(X_test),
        "method": method,
        "loglik": float(np.mean(log_q)),
        "loglik_se": float(np.std(log_q) / np.sqrt(len(log_q))),
        "fit_s": fit_s,
        "score_s": score_s,
        "info": json.dumps(info),
    }
    return row, log_q


def paired(log_a, log_b):
    """Mean and standard error of the per-row difference ``log_a - log_b``."""
    diff = log_a - log_b
    return float(np.mean(diff)), float(np.std(diff) / np.sqrt(len(diff)))


def write_table(rows, per_row, out: Path):
    import pandas as pd

    df = pd.DataFrame(rows)
    df.to_csv(out / "real.csv", index=False)
    methods = [m for m in ("arcsm", "arcsm_bounded", *PEERS) if m in set(df["method"])]
    methods += [m for m in dict.fromkeys(df["method"]) if m not in methods]
    gap_methods = [m for m in methods if m.startswith("arcsm")]
    lines = [
        "## Held-out mean log-likelihood, nats per row (higher is better; +- "
        "standard error)",
        "",
        "| data set | D | train / test | "
        + " | ".join(methods)
        + " | best peer | "
        + " | ".join(f"{m} - best peer (paired se)" for m in gap_methods)
        + " |",
        "|---|---|---|" + "---|" * (len(methods) + 1 + len(gap_methods)),
    ]
    for name in dict.fromkeys(df["dataset"]):
        sub = df[df["dataset"] == name].set_index("method")
        first = sub.iloc[0]
        cells = [
            f"{sub.loc[m, 'loglik']:.3f} +- {sub.loc[m, 'loglik_se']:.3f}"
            if m in sub.index
            else "-"
            for m in methods
        ]
        peers_here = [m for m in PEERS if m in sub.index]
        best, gaps = "-", ["-"] * len(gap_methods)
        if peers_here:
            best = max(peers_here, key=lambda m: sub.loc[m, "loglik"])
            for i, m in enumerate(gap_methods):
                if (name, m) in per_row:
                    mean, se = paired(per_row[name, m], per_row[name, best])
                    gaps[i] = f"{mean:+.3f} ({se:.3f})"
        lines.append(
            f"| {name} | {first['dim']} | {first['n_train']} / {first['n_test']} | "
            + " | ".join(cells)
            + f" | {best} | "
            + " | ".join(gaps)
            + " |"
        )
    lines += ["", "## Fit / score seconds", ""]
    lines.append("| data set | method | fit s | score s | tuning |")
    lines.append("|---|---|---|---|---|")
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['fit_s']:.1f} | "
            f"{r['score_s']:.1f} | {r['info']} |"
        )
    sources = ["", "## Data", ""]
    for data in load_real(list(dict.fromkeys(df["dataset"]))):
        sources.append(f"- **{data.name}** ({data.source}): {data.preparation}.")
    text = _environment().replace("Density quality", "Real-data density")
    (out / "real.md").write_text(text + "\n".join(lines + sources) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--datasets", nargs="*", default=None, choices=list(REAL_DATASETS)
    )
    parser.add_argument(
        "--methods",
        nargs="*",
        default=["arcsm", "arcsm_bounded", "arcsm_cholesky", "arcsm_pca", *PEERS],
    )
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warm_up()
    out = results_dir(args.output_dir, args.quick, prefix="arcsm-real-")
    rows, per_row = [], {}
    for data in load_real(args.datasets):
        for method in args.methods:
            fit_fn = _method(data, method)
            if fit_fn is None:
                continue
            row, log_q = evaluate(data, method, fit_fn, args.seed, args.quick)
            rows.append(row)
            per_row[data.name, method] = log_q
            print(
                f"{data.name:>14} {method:>6}  loglik {row['loglik']:9.3f} "
                f"+- {row['loglik_se']:.3f}  fit {row['fit_s']:6.1f}s  "
                f"score {row['score_s']:5.1f}s  {row['info']}",
                flush=True,
            )
            write_table(rows, per_row, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
