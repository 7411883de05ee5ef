"""Images: bits per dimension on digits, and sample quality (the paper's section 5.3).

Usage::

    python benchmarks/bench_images.py            # full run, writes results/
    python benchmarks/bench_images.py --quick --output-dir /tmp/img  # smoke run

Data: scikit-learn's 8x8 digits (pixel values 0..16), a fixed split of
1,300 training and 497 test images (``train_test_split(train_size=1300,
random_state=0)``), dequantized by adding ``U[0, 1)`` noise (seed 0).

**Bits per dimension.** For an integer pixel ``x`` and a density ``p`` of
the dequantized data ``x + u``, ``log P(x) >= E_u log p(x + u)`` (bins of
width 1), so ``-score_samples(x + u) / (D ln 2)``, averaged over the test
images, is an upper bound on the discrete negative log-likelihood in bits
per dimension, the field's convention; the standard error is over images.
Models: ARCSMDensity with the ``made`` and ``pixelcnn`` backbones, each
trained by ``"nll"`` and by ``"csm"`` (otherwise defaults), each also with
``bounds=(0, 17)`` (the dequantized pixels' box); GaussianMixture
and KernelDensity tuned by validation; zuko's MAF and NSF; a Gaussian MADE
(the paper's maximum-likelihood counterpart) and a MADE with a mixture of 5
logistics per conditional, both with the AR-CSM's default MADE widths (two
layers of 128) and trained by maximum likelihood with early stopping.

**Sample quality.** 300 samples per model, rounded down to integer pixels
and clipped to 0..16, are labelled by an RBF support-vector classifier
trained on the real training digits (test accuracy printed): the mean
top-class probability (how digit-like) and the spread of predicted labels
(entropy in bits; 3.32 is uniform over ten classes). The kernel two-sample
statistic is the unbiased MMD**2 between 300 samples and the 497 dequantized
test images, Gaussian kernel with bandwidth the median distance between
test images; the training images' MMD**2 to the test images is the floor.
The two samplers are compared on the CSM-trained models: exact inverse CDF
against the paper's annealed Langevin dynamics (200 steps per level, step
``0.5 sigma_i**2``), in seconds per sample and in MMD**2.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from bench_outliers import _fit_flow, _fit_gmm, _fit_kde
from bench_report import (
    environment,
    markdown_table,
    standalone_arguments,
    write_standalone,
)
from image_baselines import AutoregressiveMLE
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from sklearn_arcsm import ARCSMDensity

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LN2 = np.log(2.0)


@dataclass(frozen=True)
class ImageConfig:
    max_train: int | None = None
    max_test: int | None = None
    arcsm_epochs: int | None = None  # None: the estimator's default
    baseline_epochs: int = 300
    flow_epochs: int = 300
    n_samples: int = 300
    langevin_steps: int = 200
    gmm_components: tuple = (1, 2, 4, 8, 16, 32)
    kde_bandwidths: tuple = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


FULL = ImageConfig()
QUICK = ImageConfig(
    max_train=150,
    max_test=40,
    arcsm_epochs=2,
    baseline_epochs=2,
    flow_epochs=2,
    n_samples=20,
    langevin_steps=2,
    gmm_components=(1, 2),
    kde_bandwidths=(1.0, 2.0),
)
# Support of the dequantized pixels (values 0..16 plus U[0, 1) noise).
PIXEL_BOUNDS = (0.0, 17.0)
ARCSM_CONFIGS = {
    "arcsm_made_nll": dict(backbone="made", objective="nll"),
    "arcsm_made_csm": dict(backbone="made", objective="csm"),
    "arcsm_pixelcnn_nll": dict(backbone="pixelcnn", objective="nll"),
    "arcsm_pixelcnn_csm": dict(backbone="pixelcnn", objective="csm"),
}
# The same four, told the pixels' box (``bounds``, see sklearn_arcsm.bounds).
ARCSM_CONFIGS.update(
    {
        f"{name}_bounded": dict(params, bounds=PIXEL_BOUNDS)
        for name, params in list(ARCSM_CONFIGS.items())
    }
)


def load(config: ImageConfig, seed: int = 0):
    """Integer train/test digits, their labels and dequantized versions."""
    digits = load_digits()
    X = digits.data.astype(np.float64)
    train, test, y_train, y_test = train_test_split(
        X, digits.target, train_size=1300, random_state=0
    )
    train, y_train = train[: config.max_train], y_train[: config.max_train]
    test, y_test = test[: config.max_test], y_test[: config.max_test]
    rng = np.random.RandomState(seed)
    noise_train = rng.uniform(size=train.shape)
    noise_test = rng.uniform(size=test.shape)
    return (train, y_train), (test, y_test), train + noise_train, test + noise_test


def image_bits(log_density: np.ndarray, n_features: int) -> np.ndarray:
    """Bits per dimension of each image, ``-log p / (D ln 2)``."""
    return -log_density / (n_features * LN2)


def bits_per_dim(log_density: np.ndarray, n_features: int) -> tuple[float, float]:
    """Mean and standard error of :func:`image_bits` over images."""
    bpd = image_bits(log_density, n_features)
    return float(bpd.mean()), float(bpd.std(ddof=1) / np.sqrt(len(bpd)))


def fit_models(train_deq, config: ImageConfig, log=print) -> dict:
    """``name -> dict(score, sample, fit_s, info, model)``."""
    models = {}
    epochs = {} if config.arcsm_epochs is None else {"max_epochs": config.arcsm_epochs}

    def add(name, fit):
        start = time.perf_counter()
        entry = fit()
        entry["fit_s"] = time.perf_counter() - start
        models[name] = entry
        log(f"  fitted {name} in {entry['fit_s']:.0f} s {entry.get('info') or ''}")

    for name, params in ARCSM_CONFIGS.items():

        def arcsm(params=params):
            est = ARCSMDensity(random_state=0, **params, **epochs).fit(train_deq)
            return dict(
                score=est.score_samples,
                sample=lambda n, seed, est=est: est.sample(n, random_state=seed),
                model=est,
                info={"n_iter": est.n_iter_},
            )

        add(name, arcsm)
    for kind in ("gaussian", "logistic_mixture"):

        def mle(kind=kind):
            model = AutoregressiveMLE(
                kind, (128, 128), max_epochs=config.baseline_epochs
            ).fit(train_deq)
            return dict(
                score=model.score_samples,
                sample=lambda n, seed, m=model: m.sample(n, seed),
                info={"n_iter": model.n_iter_},
            )

        add(f"{kind}_made", mle)

    def gmm():
        score, info = _fit_gmm(train_deq, config.gmm_components)
        return dict(score=score, sample=None, info=info)

    def kde():
        score, info = _fit_kde(train_deq, config.kde_bandwidths)
        return dict(score=score, sample=None, info=info)

    add("gmm", gmm)
    add("kde", kde)
    for kind in ("maf", "nsf"):
        add(
            kind,
            lambda kind=kind: dict(
                score=_fit_flow(kind, train_deq, config.flow_epochs), sample=None
            ),
        )
    return models


def likelihood_rows(models: dict, test_deq: np.ndarray) -> list[dict]:
    rows = []
    for name, entry in models.items():
        start = time.perf_counter()
        mean, se = bits_per_dim(entry["score"](test_deq), test_deq.shape[1])
        rows.append(
            dict(
                method=name,
                bits_per_dim=mean,
                se=se,
                fit_s=entry["fit_s"],
                score_s=time.perf_counter() - start,
                info=json.dumps(entry.get("info")) if entry.get("info") else "",
            )
        )
    return rows


def _mmd2(A: np.ndarray, B: np.ndarray, bandwidth: float) -> float:
    """Unbiased MMD**2 with a Gaussian kernel of the given bandwidth."""

    def kernel(P, Q):
        sq = (P**2).sum(1)[:, None] + (Q**2).sum(1)[None] - 2 * P @ Q.T
        return np.exp(-np.maximum(sq, 0.0) / (2 * bandwidth**2))

    kaa, kbb, kab = kernel(A, A), kernel(B, B), kernel(A, B)
    n, m = len(A), len(B)
    return float(
        (kaa.sum() - np.trace(kaa)) / (n * (n - 1))
        + (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
        - 2 * kab.mean()
    )


def _median_distance(X: np.ndarray) -> float:
    sq = (X**2).sum(1)[:, None] + (X**2).sum(1)[None] - 2 * X @ X.T
    return float(np.sqrt(np.median(np.maximum(sq[np.triu_indices(len(X), 1)], 0.0))))


def sample_rows(models, train, test, train_deq, test_deq, config, log=print):
    """Classifier confidence, label spread and MMD**2 per model and sampler.

    ``train`` and ``test`` are ``(images, labels)`` pairs of integer digits.
    """
    classifier = SVC(gamma="scale", probability=True, random_state=0).fit(*train)
    accuracy = float(classifier.score(*test))
    log(f"  classifier test accuracy {accuracy:.3f}")
    bandwidth = _median_distance(test_deq)
    rows = [
        dict(
            method="training digits",
            sampler="",
            **_quality(classifier, train_deq[: config.n_samples], test_deq, bandwidth),
            s_per_sample=float("nan"),
        )
    ]
    samples = {}
    for name, entry in models.items():
        if entry.get("sample") is None:
            continue
        samplers = [("inverse_cdf", entry["sample"])]
        if "_csm" in name:
            est = entry["model"]
            samplers.append(
                (
                    "langevin",
                    lambda n, seed, est=est: est.sample(
                        n,
                        random_state=seed,
                        method="langevin",
                        n_steps=config.langevin_steps,
                    ),
                )
            )
        elif not name.startswith("arcsm"):
            samplers = [("ancestral", entry["sample"])]
        for sampler, draw in samplers:
            start = time.perf_counter()
            S = draw(config.n_samples, 0)
            seconds = (time.perf_counter() - start) / config.n_samples
            samples[(name, sampler)] = S
            row = dict(method=name, sampler=sampler)
            row.update(_quality(classifier, S, test_deq, bandwidth))
            row["s_per_sample"] = seconds
            rows.append(row)
            log(f"  sampled {name} ({sampler}): {seconds * 1e3:.1f} ms per sample")
    return rows, samples, dict(classifier_accuracy=accuracy, mmd_bandwidth=bandwidth)


def _quality(classifier, samples, test_deq, bandwidth) -> dict:
    pixels = np.clip(np.floor(samples), 0, 16)
    proba = classifier.predict_proba(pixels)
    counts = np.bincount(proba.argmax(1), minlength=10) / len(pixels)
    nonzero = counts[counts > 0]
    return dict(
        top_probability=float(proba.max(1).mean()),
        label_entropy_bits=float(-(nonzero * np.log2(nonzero)).sum()),
        mmd2=_mmd2(samples, test_deq, bandwidth),
        out_of_range=float(np.mean((samples < 0) | (samples > 17))),
    )


def plot(samples: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(samples)
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 1.2 * len(keys)))
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, keys, strict=True):
        S = np.clip(samples[key][:16], 0, 17).reshape(-1, 8, 8)
        ax.imshow(np.concatenate(list(S), axis=1), cmap="gray_r", vmin=0, vmax=17)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"{key[0]}\n{key[1]}", rotation=0, ha="right", va="center")
    fig.tight_layout()
    path = out / "image_samples.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


LIKELIHOOD_COLUMNS = (
    ("method", "method", ""),
    ("bits_per_dim", "bits/dim", "{:.3f}"),
    ("se", "se", "{:.3f}"),
    ("fit_s", "fit s", "{:.0f}"),
    ("score_s", "score s", "{:.2f}"),
    ("info", "selected", ""),
)
SAMPLE_COLUMNS = (
    ("method", "method", ""),
    ("sampler", "sampler", ""),
    ("top_probability", "top-class prob", "{:.3f}"),
    ("label_entropy_bits", "label entropy (bits)", "{:.2f}"),
    ("mmd2", "MMD^2", "{:.4f}"),
    ("out_of_range", "pixels out of range", "{:.3f}"),
    ("s_per_sample", "s / sample", "{:.4f}"),
)


def main(argv=None) -> int:
    args, out = standalone_arguments(
        __doc__.splitlines()[0], "arcsm-images-", RESULTS_DIR, argv
    )
    config = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        env = environment()
        train, test, train_deq, test_deq = load(config)
        print(f"train {train[0].shape}, test {test[0].shape}")
        models = fit_models(train_deq, config)
        likelihood = likelihood_rows(models, test_deq)
        quality, samples, extra = sample_rows(
            models, train, test, train_deq, test_deq, config
        )
        figure = plot(samples, out)
    tables = (
        "## Held-out bits per dimension (lower is better)\n\n"
        + markdown_table(likelihood, LIKELIHOOD_COLUMNS)
        + "\n\n## Sample quality\n\n"
        + f"classifier test accuracy {extra['classifier_accuracy']:.3f}; MMD "
        f"bandwidth {extra['mmd_bandwidth']:.2f} (median test distance)\n\n"
        + markdown_table(quality, SAMPLE_COLUMNS)
        + f"\n\n![samples]({figure.name})"
    )
    payload = dict(
        environment=env,
        config=asdict(config),
        likelihood=likelihood,
        quality=quality,
        **extra,
    )
    write_standalone(
        out,
        "images",
        "Images: digits",
        f"threads: {args.threads}; config: {asdict(config)}",
        tables,
        payload,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
