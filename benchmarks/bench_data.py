"""Data sets of the density benchmark: three 2-D toys and dequantized digits.

Every draw is seeded, so two runs see identical train and test sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits, make_circles, make_moons
from sklearn.model_selection import train_test_split

__all__ = [
    "DensityDataset",
    "digits_dataset",
    "eight_gaussians",
    "load_benchmark_datasets",
    "toy_datasets",
]

# Two-moons and circles noise (in data units) and the ring's geometry.
MOONS_NOISE = 0.05
CIRCLES_NOISE = 0.05
CIRCLES_FACTOR = 0.5
RING_RADIUS = 2.0
RING_STD = 0.1
RING_MODES = 8
DIGITS_TEST_FRACTION = 0.25


@dataclass(frozen=True)
class DensityDataset:
    """A train/test split with a short description of how it was made.

    Parameters
    ----------
    name : str
        Short name used in the tables.
    X_train, X_test : ndarray of shape (n, D)
        Training and held-out samples, float64.
    description : str
        One line saying how the data were generated.
    """

    name: str
    X_train: np.ndarray
    X_test: np.ndarray
    description: str

    @property
    def n_features(self) -> int:
        """Dimension ``D`` of the data."""
        return self.X_train.shape[1]


def eight_gaussians(n_samples: int, random_state: int) -> np.ndarray:
    """Draw from an equal-weight mixture of 8 isotropic Gaussians on a ring.

    Parameters
    ----------
    n_samples : int
        Number of samples.
    random_state : int
        Seed of the draw.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
        Samples; the modes sit at radius ``RING_RADIUS`` with standard
        deviation ``RING_STD`` per coordinate.
    """
    rng = np.random.RandomState(random_state)
    mode = rng.randint(RING_MODES, size=n_samples)
    angle = 2.0 * np.pi * mode / RING_MODES
    centers = RING_RADIUS * np.column_stack([np.cos(angle), np.sin(angle)])
    return centers + RING_STD * rng.standard_normal((n_samples, 2))


def toy_datasets(n_train: int, n_test: int, random_state: int = 0) -> list:
    """The three 2-D toy sets, each drawn once and split into train and test.

    Parameters
    ----------
    n_train, n_test : int
        Sizes of the training and held-out sets.
    random_state : int, default=0
        Seed of every draw.

    Returns
    -------
    datasets : list of DensityDataset
    """
    n = n_train + n_test
    draws = {
        "moons": (
            make_moons(n, noise=MOONS_NOISE, random_state=random_state)[0],
            f"sklearn make_moons(noise={MOONS_NOISE})",
        ),
        "circles": (
            make_circles(
                n,
                noise=CIRCLES_NOISE,
                factor=CIRCLES_FACTOR,
                random_state=random_state,
            )[0],
            f"sklearn make_circles(noise={CIRCLES_NOISE}, factor={CIRCLES_FACTOR})",
        ),
        "8gaussians": (
            eight_gaussians(n, random_state),
            f"{RING_MODES} Gaussians on a ring, radius {RING_RADIUS}, std {RING_STD}",
        ),
    }
    return [
        DensityDataset(name, X[:n_train], X[n_train:], description)
        for name, (X, description) in draws.items()
    ]


def digits_dataset(
    random_state: int = 0, max_train: int | None = None, max_test: int | None = None
) -> DensityDataset:
    """Dequantized ``load_digits``: pixel values ``0..16`` plus ``U[0, 1)`` noise.

    Log-likelihoods are then densities on ``[0, 17)^64`` in pixel units, the
    standard way to compare continuous densities on integer data.

    Parameters
    ----------
    random_state : int, default=0
        Seeds the dequantization noise and the split.
    max_train, max_test : int, optional
        Keep only the first rows of each split (used by the quick mode).

    Returns
    -------
    dataset : DensityDataset
    """
    X = load_digits().data.astype(np.float64)
    X = X + np.random.RandomState(random_state).uniform(size=X.shape)
    X_train, X_test = train_test_split(
        X, test_size=DIGITS_TEST_FRACTION, random_state=random_state
    )
    return DensityDataset(
        "digits",
        X_train[:max_train],
        X_test[:max_test],
        "sklearn load_digits (8x8), pixels + U[0,1) noise (seed "
        f"{random_state}), {1 - DIGITS_TEST_FRACTION:.0%}/"
        f"{DIGITS_TEST_FRACTION:.0%} split",
    )


def load_benchmark_datasets(
    toy_n_train: int,
    toy_n_test: int,
    digits_max_train: int | None = None,
    digits_max_test: int | None = None,
    random_state: int = 0,
) -> list:
    """All data sets of the density benchmark, toys first.

    Parameters
    ----------
    toy_n_train, toy_n_test : int
        Split sizes of each toy set.
    digits_max_train, digits_max_test : int, optional
        Truncate the digits splits (quick mode).
    random_state : int, default=0
        Seed of every draw.

    Returns
    -------
    datasets : list of DensityDataset
    """
    return [
        *toy_datasets(toy_n_train, toy_n_test, random_state),
        digits_dataset(random_state, digits_max_train, digits_max_test),
    ]
