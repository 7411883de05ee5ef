"""Real tabular data sets that ship offline with installable packages.

Each loader returns a :class:`RealData` with a fixed train/test split, so every
run and every method sees the same rows. Where values are recorded on a grid
(integers, one decimal, 8-bit pixels) they are *dequantized*: each value gets
independent uniform noise over its recording cell, drawn once with a fixed
seed, so that the data have a density and the reported log-likelihoods are
those of the dequantized data (for a cell of width ``r`` the discrete
log-probability is at least the density's ``log`` plus ``log r`` per entry, by
Jensen's inequality, the usual dequantization bound).

- weather: D = 4, 1,096 / 365 rows (train / test); vega_datasets'
  ``seattle-weather``; the 0.1 recording grid dequantized.
- diabetes: D = 10, 332 / 110; scikit-learn's ``load_diabetes(scaled=False)``;
  each column's recording grid dequantized.
- vowels: D = 12, 4,274 / 5,687; sktime's ``JapaneseVowels``, speech frames as
  rows, the data set's own split by utterance.
- breast_cancer: D = 30, 427 / 142; scikit-learn's ``load_breast_cancer``;
  each column's recording grid dequantized (widths 1e-4 and below).
- patches: D = 35, 4,500 / 1,500; scikit-image's photographs; 6x6 grey
  patches, 8-bit dequantized, patch mean removed, last pixel dropped.

Needs ``vega_datasets``, ``sktime`` and ``scikit-image`` (the benchmarks
extra); each is imported only by its own loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["REAL_DATASETS", "RealData", "dequantize", "load_real"]


@dataclass
class RealData:
    """A real data set with its fixed split (rows are float64)."""

    name: str
    source: str
    preparation: str
    X_train: np.ndarray = field(repr=False)
    X_test: np.ndarray = field(repr=False)
    # Known support (low, high), each of shape (D,), for ARCSMDensity's
    # ``bounds`` (the ``arcsm_bounded`` method): physically nonnegative
    # columns are bounded below by minus half their recording step (the
    # dequantization noise's reach below a recorded 0). None: not declared.
    bounds: tuple | None = field(default=None, repr=False)

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]


def recording_step(column, max_decimals=6):
    """The coarsest power-of-ten grid all values of ``column`` lie on.

    ``0.1`` for a column recorded to one decimal, ``1`` for integers. Grids
    coarser than 1 are not tried, so counts that happen to be multiples of
    ten stay on the unit grid. A column with more than ``max_decimals``
    decimals is continuous for our purposes and gets ``10**-max_decimals``.
    """
    for decimals in range(max_decimals + 1):
        step = 10.0**-decimals
        if np.allclose(column / step, np.round(column / step), rtol=0, atol=1e-6):
            return step
    return 10.0**-max_decimals


def dequantize(X, seed, steps=None):
    """Add ``U(-step/2, step/2)`` noise per column (``steps`` per column, or
    each column's :func:`recording_step`); returns a new array."""
    X = np.asarray(X, dtype=np.float64)
    if steps is None:
        steps = [recording_step(X[:, j]) for j in range(X.shape[1])]
    steps = np.broadcast_to(np.asarray(steps, dtype=np.float64), (X.shape[1],))
    rng = np.random.default_rng(seed)
    return X + (rng.random(X.shape) - 0.5) * steps


def nonnegative_bounds(X_raw, columns, steps=None):
    """``(low, high)``: ``-step / 2`` below the listed nonnegative columns.

    ``steps`` per column default to each column's :func:`recording_step`;
    the other columns (and every upper side) are unbounded.
    """
    D = X_raw.shape[1]
    if steps is None:
        steps = [recording_step(X_raw[:, j]) for j in range(D)]
    steps = np.broadcast_to(np.asarray(steps, dtype=np.float64), (D,))
    low = np.full(D, -np.inf)
    for j in columns:
        assert X_raw[:, j].min() >= 0, j
        low[j] = -steps[j] / 2
    return low, np.full(D, np.inf)


def _split(X, test_fraction, seed):
    """A fixed random split of the rows."""
    perm = np.random.default_rng(seed).permutation(len(X))
    n_test = int(round(test_fraction * len(X)))
    return X[perm[n_test:]], X[perm[:n_test]]


def weather() -> RealData:
    """Seattle daily weather 2012-2015: precipitation (mm; 57 % dry days),
    maximum and minimum temperature (deg C), wind (m/s), recorded to 0.1."""
    from vega_datasets import local_data

    df = local_data.seattle_weather()
    raw = df[["precipitation", "temp_max", "temp_min", "wind"]].to_numpy(float)
    X = dequantize(raw, seed=0, steps=0.1)
    return RealData(
        "weather",
        "vega_datasets seattle-weather",
        "0.1 grid dequantized; random 25 % test split; bounds: precipitation "
        "and wind >= -0.05",
        *_split(X, 0.25, seed=0),
        bounds=nonnegative_bounds(raw, [0, 3], steps=0.1),
    )


def diabetes() -> RealData:
    """Ten baseline variables of 442 diabetes patients (age, sex, BMI, blood
    pressure, six serum measurements) in their recorded units."""
    from sklearn.datasets import load_diabetes

    raw = load_diabetes(scaled=False).data
    X = dequantize(raw, seed=0)
    # Age, BMI, blood pressure and the serum measurements s1-s4 and s6 are
    # amounts (s5 is a log level: unbounded); sex is 1 or 2.
    low, high = nonnegative_bounds(raw, [0, 2, 3, 4, 5, 6, 7, 9])
    low[1], high[1] = 0.5, 2.5
    return RealData(
        "diabetes",
        "scikit-learn load_diabetes(scaled=False)",
        "per-column recording grid dequantized (age, sex, counts: width 1); "
        "random 25 % test split; bounds: sex in (0.5, 2.5), amounts >= minus "
        "half their step",
        *_split(X, 0.25, seed=0),
        bounds=(low, high),
    )


def breast_cancer() -> RealData:
    """Thirty cell-nucleus measurements of 569 breast masses (heavy right
    tails, strongly correlated)."""
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer().data
    X = dequantize(raw, seed=0)
    return RealData(
        "breast_cancer",
        "scikit-learn load_breast_cancer",
        "per-column recording grid dequantized (widths 1e-4 and below); "
        "random 25 % test split; bounds: every column (a size, shape or "
        "texture measure) >= minus half its step",
        *_split(X, 0.25, seed=0),
        bounds=nonnegative_bounds(raw, range(raw.shape[1])),
    )


def vowels() -> RealData:
    """Twelve LPC cepstrum coefficients per speech frame of nine speakers
    saying /ae/; every frame is a row, and the data set's own split into 270
    training and 370 test utterances keeps an utterance's frames together."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sktime.datasets import load_japanese_vowels

        train, _ = load_japanese_vowels(split="train", return_X_y=True)
        test, _ = load_japanese_vowels(split="test", return_X_y=True)

    def frames(df):
        rows = [np.column_stack([np.asarray(cell) for cell in r]) for r in df.values]
        return np.concatenate(rows).astype(np.float64)

    return RealData(
        "vowels",
        "sktime JapaneseVowels",
        "frames as rows (continuous); the data set's utterance split",
        frames(train),
        frames(test),
    )


PATCH_IMAGES = (
    "camera",
    "moon",
    "coins",
    "grass",
    "gravel",
    "brick",
    "clock",
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
)


def patches(size=6, n_rows=6000) -> RealData:
    """Grey ``size x size`` patches of scikit-image's photographs, as in the
    BSDS300 benchmark of the flow literature: 8-bit values dequantized to
    ``(v + U(0, 1)) / 256``, the patch mean removed, and the last pixel dropped
    (it is minus the sum of the others)."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.util import img_as_ubyte

    rng = np.random.default_rng(0)
    per_image = -(-n_rows // len(PATCH_IMAGES))
    rows = []
    for name in PATCH_IMAGES:
        image = getattr(skimage.data, name)()
        if image.ndim == 3:
            image = img_as_ubyte(rgb2gray(image))
        top = rng.integers(0, image.shape[0] - size + 1, per_image)
        left = rng.integers(0, image.shape[1] - size + 1, per_image)
        for i, j in zip(top, left, strict=True):
            rows.append(image[i : i + size, j : j + size].reshape(-1))
    X = np.asarray(rows, dtype=np.float64)[rng.permutation(len(rows))[:n_rows]]
    X = (X + rng.random(X.shape)) / 256.0
    X = (X - X.mean(axis=1, keepdims=True))[:, :-1]
    return RealData(
        "patches",
        f"scikit-image photographs ({', '.join(PATCH_IMAGES)})",
        f"{size}x{size} grey patches, 8-bit dequantized, mean removed, last "
        "pixel dropped; random 25 % test split",
        *_split(X, 0.25, seed=0),
    )


REAL_DATASETS = {
    "weather": weather,
    "diabetes": diabetes,
    "vowels": vowels,
    "breast_cancer": breast_cancer,
    "patches": patches,
}


def load_real(names=None) -> list[RealData]:
    """Load the named data sets (all by default), in table order."""
    names = list(REAL_DATASETS) if names is None else names
    return [REAL_DATASETS[n]() for n in names]
