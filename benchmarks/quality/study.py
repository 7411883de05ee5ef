"""Mode-weight study: which objective learns the relative mass of separated modes?

Trains the package's torch module (``sklearn_arcsm.nn.ARCSM``, built as
``ARCSMDensity`` builds it) with our own loop, so objectives can be swapped:

* ``csm``: the paper's CSM at one small noise level (0.1, standardized).
* ``multiscale``: noise-conditional CSM, levels geomspace(1, 0.1, 4) (the
  package default).
* ``multiscale+nll``: the same plus an unbiased one-dimension estimate of the
  exact negative log-likelihood, ``-D log p(x_d | x_<d)`` for one random
  ``d`` per row, computed by quadrature on a randomly shifted grid (a fixed
  coarse grid could be exploited by spikes between its points).
* ``nll``: that likelihood term alone (maximum likelihood through the exact
  1-D normalizers).

On the rings target (``targets.rings``) ``log p(x) = log p(x_1) + log
p(x_2 | x_1)`` is split exactly (the true marginal by fine 1-D quadrature),
so the KL of the first coordinate's marginal and of the second coordinate's
multi-modal conditional are reported separately, at every epoch: the swing
of the conditional KL between epochs measures mode-weight drift. Each
epoch's held-out CSM and held-out log-likelihood (on a validation split) are
logged too, to compare early-stopping criteria.

Usage::

    python benchmarks/quality/study.py [--quick] [--epochs 60]
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

from run import results_dir  # noqa: E402
from targets import make_targets  # noqa: E402

from sklearn_arcsm import quadrature  # noqa: E402
from sklearn_arcsm.nn import ARCSM  # noqa: E402
from sklearn_arcsm.objectives import noise_conditional_csm  # noqa: E402

DEFAULT_LEVELS = tuple(np.geomspace(1.0, 0.1, 4))
VARIANTS = {
    "csm": {"levels": (0.1,), "csm": 1.0, "nll": 0.0},
    "multiscale": {"levels": DEFAULT_LEVELS, "csm": 1.0, "nll": 0.0},
    "multiscale+nll": {"levels": DEFAULT_LEVELS, "csm": 1.0, "nll": 1.0},
    "nll": {"levels": (0.1,), "csm": 0.0, "nll": 1.0},
}


def random_dimension_nll(model, x, sigma, n_cells, generator):
    """Unbiased estimate of ``-log p(x)``: ``-D log p(x_d | x_<d)``, random ``d``.

    The quadrature grid of each row is shifted by a random fraction of a
    cell and spans one extra cell, so it still covers the module's window;
    outside the window the module's score is exactly the Gaussian tail the
    quadrature assumes, so the shifted grid is as exact as the fixed one.
    """
    batch, dim = x.shape
    rows = torch.arange(batch)
    d = torch.randint(0, dim, (batch,), generator=generator)
    bias = model.conditioner(x)[rows, d]  # (B, K)
    lo, hi = model.lower[d], model.upper[d]
    h = (hi - lo) / n_cells
    shift = torch.rand(batch, generator=generator, dtype=x.dtype)
    a, b = lo - shift * h, hi + (1 - shift) * h
    grid = quadrature.grid_points(a, b, n_cells + 1)  # (B, 2n+3)
    scores = model.conditional_scores(
        bias[:, None, :], grid, sigma, lower=lo[:, None], upper=hi[:, None]
    )
    log_p = quadrature.log_density(x[rows, d], scores, a, b, model.tail_scale)
    return -dim * log_p


def build_module(Z, seed):
    torch.manual_seed(seed)
    D = Z.shape[1]
    width = int(min(1024, max(128, 2 * D)))
    Zt = torch.as_tensor(Z)
    return ARCSM(
        D,
        (width, width),
        8,
        (32, 32),
        lower=Zt.min(0).values - 1.0,
        upper=Zt.max(0).values + 1.0,
        tail_scale=1.0,
        n_frequencies=6,
        # The study predates the affine layer; random_dimension_nll above
        # assumes the window coordinates are the data's.
        affine=False,
    )


def train_variant(variant, Z_train, Z_valid, epochs, seed, on_epoch, n_cells_train=64):
    """Adam, lr 1e-3, batch 256; ``on_epoch(epoch, model, valid_csm)`` each epoch."""
    cfg = VARIANTS[variant]
    model = build_module(Z_train, seed)
    levels = torch.tensor(cfg["levels"], dtype=torch.float32)
    sigma = levels[-1]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed + 1)
    X = torch.as_tensor(Z_train, dtype=torch.float32)
    V = torch.as_tensor(Z_valid, dtype=torch.float32)
    train_s = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), 256):
            xb = X[order[i : i + 256]]
            loss = 0.0
            if cfg["csm"]:
                loss = (
                    loss
                    + cfg["csm"] * noise_conditional_csm(model, xb, levels, gen).mean()
                )
            if cfg["nll"]:
                nll = random_dimension_nll(model, xb, sigma, n_cells_train, gen)
                loss = loss + cfg["nll"] * nll.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_s += time.perf_counter() - t0
        model.eval()
        vgen = torch.Generator().manual_seed(12345)
        valid_csm = (
            noise_conditional_csm(model, V, torch.tensor([0.1]), vgen).mean().item()
        )  # held-out single-level CSM at the final level
        on_epoch(epoch, model, valid_csm)
    return model, train_s


def rings_marginal_x1(x1):
    """Exact marginal log-density of the first coordinate of the rings target."""
    target = make_targets(["rings"])[0]
    grid = np.linspace(-3.5, 3.5, 14001)
    step = grid[1] - grid[0]
    out = np.empty(len(x1))
    for i in range(0, len(x1), 100):
        xs = x1[i : i + 100]
        pts = np.stack(np.broadcast_arrays(xs[:, None], grid[None]), -1).reshape(-1, 2)
        lp = target.log_prob(pts).reshape(len(xs), -1)
        out[i : i + 100] = np.log(np.exp(lp).sum(1) * step)
    return out


def run(epochs, quick, out: Path, seed=0):
    torch.set_num_threads(1)
    target = make_targets(["rings"])[0]
    rng = np.random.default_rng(seed)
    n = 500 if quick else 5000
    X_train, X_test = target.sample(n, rng), target.sample(n, rng)
    X_test = X_test[: 200 if quick else 1000]
    mean, scale = X_train.mean(0), X_train.std(0)
    Z = (X_train - mean) / scale
    perm = np.random.default_rng(seed).permutation(len(Z))
    Z_valid, Z_train = Z[perm[: len(Z) // 10]], Z[perm[len(Z) // 10 :]]
    Zt = torch.as_tensor((X_test - mean) / scale, dtype=torch.float64)
    Zv = torch.as_tensor(Z_valid, dtype=torch.float64)
    log_det = np.log(scale).sum()
    log_p = target.log_prob(X_test)
    log_p1 = rings_marginal_x1(X_test[:, 0])
    log_p21 = log_p - log_p1
    records = []
    summary = {}
    for variant in VARIANTS:
        curve = []

        def on_epoch(epoch, model, valid_csm, curve=curve, variant=variant):
            m = model.double()
            with torch.no_grad():
                cond = m.conditional_log_prob(
                    Zt, torch.tensor(0.1, dtype=torch.float64), 256
                )
                valid_ll = m.log_prob(Zv, torch.tensor(0.1, dtype=torch.float64), 256)
            model.float()
            cond = cond.numpy() - np.log(scale)
            row = {
                "variant": variant,
                "epoch": epoch,
                "kl": float(np.mean(log_p - cond.sum(1))),
                "kl_x1": float(np.mean(log_p1 - cond[:, 0])),
                "kl_x2_given_x1": float(np.mean(log_p21 - cond[:, 1])),
                "valid_csm": valid_csm,
                "valid_loglik": float(valid_ll.mean()) - log_det,
            }
            curve.append(row)
            print(json.dumps(row), flush=True)

        _, train_s = train_variant(variant, Z_train, Z_valid, epochs, seed, on_epoch)
        records += curve
        last = curve[len(curve) // 2 :]  # second half of training
        cond_kl = np.array([r["kl_x2_given_x1"] for r in last])
        by_csm = min(curve, key=lambda r: r["valid_csm"])
        by_ll = max(curve, key=lambda r: r["valid_loglik"])
        summary[variant] = {
            "final_kl": curve[-1]["kl"],
            "final_kl_x1": curve[-1]["kl_x1"],
            "final_kl_x2_given_x1": curve[-1]["kl_x2_given_x1"],
            "cond_kl_2nd_half_min": float(cond_kl.min()),
            "cond_kl_2nd_half_max": float(cond_kl.max()),
            "cond_kl_2nd_half_mean_abs_epoch_change": float(
                np.abs(np.diff(cond_kl)).mean()
            )
            if len(cond_kl) > 1
            else 0.0,
            "kl_at_best_valid_csm": by_csm["kl"],
            "epoch_best_valid_csm": by_csm["epoch"],
            "kl_at_best_valid_loglik": by_ll["kl"],
            "epoch_best_valid_loglik": by_ll["epoch"],
            "train_s_per_epoch": train_s / epochs,
        }
        print(variant, json.dumps(summary[variant]), flush=True)
    _write(records, summary, out, epochs, len(X_test))


def _write(records, summary, out: Path, epochs, n_test):
    import pandas as pd

    pd.DataFrame(records).to_csv(out / "mode_weights_curves.csv", index=False)
    (out / "mode_weights.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "# Mode-weight study on the rings target",
        "",
        f"{epochs} epochs each, Adam 1e-3, batch 256, 4,500 train rows; KL on {n_test} "
        "fresh test rows (nats). `x1`: marginal of the first coordinate; "
        "`x2|x1`: the multi-modal conditional. Swing: min..max of the conditional "
        "KL over the second half of training, and its mean change per epoch.",
        "",
        "| variant | KL | KL x1 | KL x2\\|x1 | x2\\|x1 swing (2nd half) | mean "
        "epoch-to-epoch change | KL at best valid CSM (epoch) | KL at best valid "
        "loglik (epoch) | train s/epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v, s in summary.items():
        lines.append(
            f"| {v} | {s['final_kl']:.3f} | {s['final_kl_x1']:.3f} | "
            f"{s['final_kl_x2_given_x1']:.3f} | {s['cond_kl_2nd_half_min']:.3f}.."
            f"{s['cond_kl_2nd_half_max']:.3f} | "
            f"{s['cond_kl_2nd_half_mean_abs_epoch_change']:.3f} | "
            f"{s['kl_at_best_valid_csm']:.3f} ({s['epoch_best_valid_csm']}) | "
            f"{s['kl_at_best_valid_loglik']:.3f} ({s['epoch_best_valid_loglik']}) | "
            f"{s['train_s_per_epoch']:.2f} |"
        )
    (out / "mode_weights.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        df = pd.DataFrame(records)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for v, g in df.groupby("variant", sort=False):
            axes[0].plot(g["epoch"], g["kl_x2_given_x1"], label=v)
            axes[1].plot(g["epoch"], g["kl"], label=v)
        axes[0].set_title("KL of x2 | x1 (multi-modal conditional)")
        axes[1].set_title("KL(p || q), total")
        for ax in axes:
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "mode_weights.png", dpi=120)
        plt.close(fig)
    except Exception as exc:  # noqa: BLE001
        print("plot failed:", exc)


def main(argv=None):
    parser = argparse.ArgumentParser(description="mode-weight study")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args(argv)
    out = results_dir(args.output_dir, args.quick, prefix="arcsm-study-")
    run(2 if args.quick else args.epochs, args.quick, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
