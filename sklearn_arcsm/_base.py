"""Shared estimator machinery: parameters, seeding, devices, the skorch net.

``ARCSMDensity`` and ``CSMScoreEstimator`` differ only in what they expose;
everything about building and training an AR-CSM lives here once.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import validate_data
from skorch.callbacks import ProgressBar
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from skorch.utils import noop

from sklearn_arcsm import quadrature
from sklearn_arcsm._distributed import (
    agree_across_processes,
    main_process_print,
    make_accelerator,
)
from sklearn_arcsm._early_stopping import NoiseAwareEarlyStopping
from sklearn_arcsm._inference import FittedModelMixin, check_inside
from sklearn_arcsm._skorch import (
    TRAIN_LIKELIHOOD_CELLS,
    AdaptiveLearningRate,
    CSMNet,
    FiniteLossGuard,
)
from sklearn_arcsm.adaptive import AdaptiveRule
from sklearn_arcsm.bounds import BoxBounds
from sklearn_arcsm.callbacks import EstimatorCheckpoint
from sklearn_arcsm.knot_quadrature import KnotRule
from sklearn_arcsm.nn import ARCSM
from sklearn_arcsm.nn.arcsm import LOG_SCALE_BOUND, MAX_LOG_SCALE
from sklearn_arcsm.nn.spline_head import DEFAULT_N_KNOTS

# Window margin and Gaussian tail width, in standardized units: the model's
# quadrature window is the training range widened by WINDOW_PAD on each side.
WINDOW_PAD = 0.5
TAIL_SCALE = 1.0
# Devices where Adam runs as one fused kernel over all parameters. The
# default per-parameter loop costs about 1.2 ms per step on this package's
# small networks (16 tensors, 23k weights, at D = 4), 5 to 7% of a training
# step on a small table; fused, 0.27 ms. Same update rule, rounded
# differently.
FUSED_ADAM_DEVICES = ("cpu", "cuda")
# lr="auto" is the estimator's _default_lr at batches of this many rows
# (where _lr_batch_scaled; see BaseCSMEstimator).
LR_REFERENCE_BATCH = 256
# learning_rate="adaptive": multiply the rate by this factor after this many
# epochs without an improvement of `tol`, down to ADAPTIVE_LR_MIN. Early
# stopping's patience (20) leaves room for three such steps.
ADAPTIVE_LR_FACTOR = 0.3
ADAPTIVE_LR_PATIENCE = 6
ADAPTIVE_LR_MIN = 1e-6
# After a non-finite loss (with early stopping, which keeps the best
# weights) training restarts from the best weights at this fraction of the
# learning rate, for the epochs that were left, at most this many times. A
# step that overflows once (a large gradient on an unlucky batch, early in a
# fit at lr 1e-2) would otherwise end the fit at its best epoch so far.
DIVERGENCE_LR_FACTOR = 0.3
MAX_DIVERGENCE_RESTARTS = 3
# Version of the pickled layout of fitted estimators. Bump it when fitted
# attributes or the module's state dict change meaning, and teach
# __setstate__ to migrate older formats; newer formats are refused clearly.
# Format 2 added the module's affine layer: format-1 modules load without it
# (ARCSM.__setstate__) and give the densities they gave when saved, while
# older versions of the package refuse format 2 instead of ignoring it.
# Format 3 added the fitted quadrature rule `quadrature_`; older fits load
# with the Simpson rule of their `n_quadrature` cells, as they were scored.
# Format 4 added `bounds_` (the box of a bounded model, see
# sklearn_arcsm.bounds); older fits load unbounded, as they were fitted.
# Format 5 added ARCSMDensity's `whitening_` (sklearn_arcsm.whitening);
# older fits load unwhitened, as they were fitted.
# Format 6 made batch_size="auto" the default and added the resolved
# `batch_size_`; older fits load with their integer batch_size as
# batch_size_ (older versions of the package could not continue a fit whose
# batch_size is "auto").
# Format 7 added ARCSMDensity's `marginal_` (sklearn_arcsm.marginal), on by
# default; older fits load without it, as they were fitted (older versions
# of the package would ignore it and give wrong densities).
# Format 8 added ARCSMDensity's linear location term (linear_location, the
# module's `skip`), on by default; older fits load without it.
PERSISTENCE_FORMAT = 8
# Tolerance of the adaptive rule (n_quadrature="auto"), in nats per
# conditional: the estimated error of the level a conditional is accepted at
# (see sklearn_arcsm.adaptive). Measured against a 2049-node float64
# reference: at most 6e-6 nats per row on a fitted digits model (64-D, 479
# nodes per conditional on average; the float32 head's floor) and 5e-7 on
# fitted two-moons (257 nodes). 1e-4 saved a fifth of the nodes on digits
# but let the row error grow to 3.4e-5.
QUADRATURE_TOL = 1e-5
# Order of the Chebyshev panels of a fixed rule (integer n_quadrature).
QUADRATURE_ORDER = 8
# batch_size="auto": at least this many optimizer steps per epoch, with
# batches of AUTO_BATCH_RANGE rows (see auto_batch_size).
MIN_STEPS_PER_EPOCH = 16
AUTO_BATCH_RANGE = (16, 256)


def _package_version() -> str:
    from sklearn_arcsm import __version__

    return __version__


def _mean_and_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations, safe for any finite magnitude.

    Columns are divided by their largest magnitude first, so that squares do
    not overflow for values near 1e200 nor underflow near 1e-200. A constant
    column keeps unit scale (as ``StandardScaler`` does).
    """
    magnitude = np.abs(X).max(axis=0)
    magnitude = np.where(magnitude > 0, magnitude, 1.0)
    scaled = X / magnitude
    mean = scaled.mean(axis=0) * magnitude
    scale = scaled.std(axis=0) * magnitude
    return mean, np.where(scale > 0, scale, 1.0)


def _to_model_space(elementwise_map, X: np.ndarray) -> np.ndarray:
    """``elementwise_map.forward`` of numpy rows, as float64 numpy.

    For the box's map (rows inside the box) and the marginal map alike.
    """
    return elementwise_map.forward(torch.as_tensor(X, dtype=torch.float64)).numpy()


def default_noise_levels() -> np.ndarray:
    """Geometric levels 1.0, 0.46, 0.22, 0.1, for standardized data.

    Measured on two-moons and digits (held-out log-likelihood after 100
    epochs): a smallest level of 0.1 beat 0.05 (sharper, under-trained
    conditionals) and 0.2 (over-smoothed) overall, and four levels starting at
    1.0 beat a single level on digits by 8 nats at the cost of 0.04 nats on
    moons.
    """
    return np.geomspace(1.0, 0.1, 4)


def clear_fitted_attributes(estimator) -> None:
    """Delete what ``check_is_fitted`` looks at: public attributes ending in "_".

    A fit that fails part way calls it so that the estimator does not look
    fitted with a mix of old and new state.
    """
    for name in list(vars(estimator)):
        if name.endswith("_") and not name.startswith("_"):
            delattr(estimator, name)


def auto_batch_size(n_train: int, n_processes: int = 1) -> int:
    """The mini-batch size of ``batch_size="auto"`` for ``n_train`` rows.

    ``n_train // 16`` clipped to 16..256 rows (a multiple of ``n_processes``,
    since a distributed batch is split evenly): at least 16 optimizer steps
    per epoch wherever the batches can stay 16 rows or more, and the fixed
    256 from 4,096 training rows up. Why steps per epoch: the weight average
    (``ema_decay=0.99``, about the last 100 steps) and the early-stopping
    patience (20 epochs) are counted in steps and epochs. With a fixed 256,
    a table of 300 training rows got 2 steps per epoch: 600 steps in 300
    epochs, and an average spanning 50 epochs. Measured (held-out
    log-likelihood, nats per row, 256 -> auto; ``benchmarks/quality``'s real
    data): weather -8.68 -> -8.35, diabetes -26.91 -> -25.88, breast_cancer
    35.99 -> 38.74.
    """
    low, high = AUTO_BATCH_RANGE
    size = min(high, max(low, n_train // MIN_STEPS_PER_EPOCH))
    return max(n_processes, size - size % n_processes)


def _best_validation_loss(rows) -> float:
    """Lowest finite ``valid_loss`` among skorch history ``rows`` (inf if none)."""
    losses = [row.get("valid_loss") for row in rows]
    finite = [v for v in losses if v is not None and math.isfinite(v)]
    return min(finite, default=math.inf)


def default_hidden_sizes(n_features: int, backbone: str = "made") -> tuple[int, ...]:
    """Default hidden sizes of the context network.

    MADE: two hidden layers of width ``clip(2 D, 128, 1024)``, wide enough to
    carry every autoregressive degree up to ``D = 512`` and MNIST's 784
    pixels, small enough to train on a CPU. Gated PixelCNN: four gated layers
    of 32 channels (with 5x5 kernels, a receptive field of 8 rows up and 8
    columns each side: all of a digits image).
    """
    if isinstance(backbone, str) and backbone == "pixelcnn":
        return (32, 32, 32, 32)
    width = int(min(1024, max(128, 2 * n_features)))
    return (width, width)


def image_shape_of(image_shape, n_features: int, needed_by: str) -> tuple[int, ...]:
    """``(channels, height, width)`` of rows of ``n_features`` pixels.

    ``image_shape`` is ``(height, width)``, ``(channels, height, width)`` or
    None (a square grayscale image). ``needed_by`` names the setting that
    needs an image, for the error message.
    """
    if image_shape is None:
        side = int(round(np.sqrt(n_features)))
        if side * side != n_features:
            raise ValueError(
                f"{needed_by} needs image_shape=(height, width) or "
                f"(channels, height, width): {n_features} features are not a "
                "square grayscale image."
            )
        return (1, side, side)
    shape = tuple(int(v) for v in image_shape)
    if len(shape) == 2:
        shape = (1,) + shape
    if len(shape) != 3 or min(shape) < 1 or int(np.prod(shape)) != n_features:
        raise ValueError(
            f"image_shape={image_shape!r} does not match {n_features} "
            "features: give (height, width) or (channels, height, width) of "
            "positive sizes whose product is n_features."
        )
    return shape


class BaseCSMEstimator(FittedModelMixin, BaseEstimator):
    """Base class of the AR-CSM estimators (private).

    Holds the constructor, parameter constraints, and the fit machinery that
    builds a private skorch :class:`~sklearn_arcsm._skorch.CSMNet` around an
    :class:`~sklearn_arcsm.nn.ARCSM` module.
    """

    # Objective on held-out data for early stopping; None: the training one.
    _validation_objective: str | None = None
    # What objective="auto" means for this estimator.
    _default_objective: str = "csm"
    # Weight averaging (ema_decay="auto"). Measured with ARCSMDensity's
    # defaults (benchmarks/quality): KL on banana 0.036 -> 0.029, rings
    # 0.067 -> 0.030, funnel 0.039 -> 0.022; held-out log-likelihood on
    # real data: breast_cancer 28.6 -> 35.9, diabetes -28.1 -> -26.9,
    # weather -8.80 -> -8.57, vowels 7.96 -> 8.14 nats per row. The last
    # iterate of Adam at a constant learning rate is a noisy point near the
    # minimum; the average of the last ~100 steps is closer to it.
    _default_ema_decay: float | None = 0.99
    # Early-stopping patience (n_iter_no_change="auto"), per estimator.
    _default_n_iter_no_change: int = 20
    # At the stop the fit keeps the average of the weights of the best
    # validation epoch and of every later epoch within this many standard
    # errors of it (NoiseAwareEarlyStopping; without averaging, the latest
    # of them; 0: the best epoch alone, skorch's load_best). The validation
    # loss's standard error can be as large as its moves from epoch to
    # epoch, so its lowest epoch is mostly the luckiest: CSMScoreEstimator on
    # 20,000 rows of a 2-D mixture (held-out CSM, standard error 0.12)
    # restored epoch 29, R^2 0.968 against the exact scores; the average of
    # the tied epochs up to 79 had 0.988 (benchmarks/results/scores.md).
    # ARCSMDensity (benchmarks/quality, seed 0): lower KL on six of seven
    # synthetic targets (Student t 0.103 -> 0.087, mixed_ica32 3.032 ->
    # 2.961), higher held-out log-likelihood on three of five real sets
    # (breast_cancer +0.71 nats per row), lower on vowels (-0.058) and
    # diabetes (-0.071, within noise).
    _checkpoint_standard_errors: float = 1.0
    _checkpoint_average: bool = True
    # lr="auto": this rate, times sqrt(batch_size / LR_REFERENCE_BATCH) where
    # _lr_batch_scaled (Adam's square-root scaling rule: the gradient noise
    # of a batch of B rows scales as 1 / sqrt(B)); learning_rate="auto":
    # this schedule. CSMScoreEstimator keeps Adam at 1e-3, constant: its
    # held-out CSM is too noisy from epoch to epoch to read a plateau from.
    _default_lr: float = 1e-3
    _lr_batch_scaled: bool = False
    _default_learning_rate: str = "constant"

    _parameter_constraints: dict = {
        "backbone": [StrOptions({"made", "pixelcnn"}), callable],
        "image_shape": [None, tuple, list],
        "bounds": [None, "array-like"],
        "hidden_layer_sizes": [StrOptions({"auto"}), "array-like"],
        "kernel_size": [Interval(Integral, 1, None, closed="left")],
        "context_size": [Interval(Integral, 1, None, closed="left")],
        "score_head": [StrOptions({"auto", "mlp", "spline"})],
        "head_layer_sizes": ["array-like"],
        "n_frequencies": [Interval(Integral, 0, None, closed="left")],
        "n_knots": [Interval(Integral, 2, None, closed="left")],
        "objective": [StrOptions({"auto", "csm", "nll", "csm+nll"})],
        "noise_levels": [None, "array-like", Interval(Real, 0, None, closed="neither")],
        "n_quadrature": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "lr": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "learning_rate": [StrOptions({"auto", "constant", "adaptive"})],
        "ema_decay": [
            None,
            StrOptions({"auto"}),
            Interval(Real, 0, 1, closed="left"),
        ],
        "device": [str],
        "distributed": [None, StrOptions({"accelerate"})],
        "mixed_precision": [None, StrOptions({"bf16"})],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "tol": [Interval(Real, 0, None, closed="left")],
        "callbacks": [None, list],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        backbone="made",
        image_shape=None,
        bounds=None,
        hidden_layer_sizes="auto",
        kernel_size=5,
        context_size=8,
        score_head="auto",
        head_layer_sizes=(32, 32),
        n_frequencies=6,
        n_knots=DEFAULT_N_KNOTS,
        objective="auto",
        noise_levels=None,
        n_quadrature="auto",
        max_epochs=300,
        batch_size="auto",
        lr="auto",
        learning_rate="auto",
        ema_decay="auto",
        device="cpu",
        distributed=None,
        mixed_precision=None,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change="auto",
        tol=1e-4,
        callbacks=None,
        verbose=0,
        warm_start=False,
        random_state=None,
    ):
        self.backbone = backbone
        self.image_shape = image_shape
        self.bounds = bounds
        self.hidden_layer_sizes = hidden_layer_sizes
        self.kernel_size = kernel_size
        self.context_size = context_size
        self.score_head = score_head
        self.head_layer_sizes = head_layer_sizes
        self.n_frequencies = n_frequencies
        self.n_knots = n_knots
        self.objective = objective
        self.noise_levels = noise_levels
        self.n_quadrature = n_quadrature
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.learning_rate = learning_rate
        self.ema_decay = ema_decay
        self.device = device
        self.distributed = distributed
        self.mixed_precision = mixed_precision
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.callbacks = callbacks
        self.verbose = verbose
        self.warm_start = warm_start
        self.random_state = random_state

    # ------------------------------------------------------------------
    # Resolution of parameters that need more than a type check
    # ------------------------------------------------------------------
    def _resolve_device(self) -> str:
        device = self.device
        if device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        try:
            parsed = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(
                f"device={device!r} is not a torch device; use 'cpu', 'cuda', "
                "'cuda:N' or 'auto'."
            ) from exc
        if parsed.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} but CUDA is not available in this torch build "
                f"({torch.__version__}); use device='cpu' or device='auto'."
            )
        if parsed.type == "cuda" and parsed.index is not None:
            count = torch.cuda.device_count()
            if parsed.index >= count:
                raise ValueError(
                    f"device={device!r} but this machine has {count} CUDA "
                    f"device(s), cuda:0 to cuda:{count - 1}."
                )
        return device

    def _resolved_score_head(self) -> str:
        """``score_head``, with "auto" resolved by the training objective.

        The spline head's noise conditioning is linear in ``log sigma``:
        enough where only the smallest level is trained (maximum
        likelihood), too rigid for the larger levels that the CSM
        objectives train and Langevin sampling walks through (a correlated
        Gaussian's Langevin samples: variances 1.56 with the spline head,
        0.96 with the MLP, ``tests/test_density.py``).
        """
        if self.score_head != "auto":
            return self.score_head
        return "spline" if self._resolved("objective") == "nll" else "mlp"

    def _resolve_quadrature(
        self, score_head: str
    ) -> quadrature.PanelRule | AdaptiveRule | KnotRule:
        if self.n_quadrature == "auto":
            if score_head == "spline":
                # Closed-form energies, Gauss-Legendre per knot interval.
                return KnotRule()
            return AdaptiveRule(tol=QUADRATURE_TOL)
        return quadrature.chebyshev(int(self.n_quadrature), QUADRATURE_ORDER)

    def _train_cells(self, rule) -> int | KnotRule:
        # A fixed rule of n Chebyshev panels of order 8 has as many nodes as
        # 4 n Simpson cells: the training term gets no more than that.
        if isinstance(rule, KnotRule):
            # The knot rule is exact and cheap: train on it too, with no
            # coarse grid for the likelihood to exploit.
            return rule
        if self.n_quadrature == "auto":
            return TRAIN_LIKELIHOOD_CELLS
        return min(TRAIN_LIKELIHOOD_CELLS, 4 * int(self.n_quadrature))

    def _max_log_scale(self, train_cells: int | KnotRule) -> float:
        """Upper bound of the affine layer's log-scale (see ``MAX_LOG_SCALE``).

        The bound keeps a zoomed-out conditional from hiding structure
        between the nodes of a quadrature that the training loss reads but
        that cannot resolve every head (the MLP head's grids). Score
        matching alone reads no quadrature, and the spline head's knot rule
        integrates any spline to its calibrated error, whatever the zoom
        (its nodes follow the spline's slope): both keep the full range.
        With it the spline head fits conditionals that widen with the
        context (Student t 0.121 -> 0.089 nats of KL, funnel 0.045 ->
        0.024; ``benchmarks/quality/results/spline_zoom/``). ``train_cells``
        is the training likelihood's rule, :meth:`_train_cells`.
        """
        reads_grids = "nll" in self._resolved("objective")
        if reads_grids and not isinstance(train_cells, KnotRule):
            return MAX_LOG_SCALE
        return LOG_SCALE_BOUND

    def _resolve_lr(self, batch_size: int) -> float:
        """Adam's initial learning rate for mini-batches of ``batch_size`` rows."""
        if self.lr != "auto":
            return float(self.lr)
        if not self._lr_batch_scaled:
            return self._default_lr
        return self._default_lr * math.sqrt(batch_size / LR_REFERENCE_BATCH)

    def _resolved(self, name: str):
        """Parameter ``name``, with "auto" replaced by ``_default_<name>``."""
        value = getattr(self, name)
        if isinstance(value, str) and value == "auto":
            return getattr(self, f"_default_{name}")
        return value

    def _resolve_image_shape(self, n_features: int) -> tuple[int, ...] | None:
        """``(channels, height, width)`` for the PixelCNN; None otherwise."""
        if not (isinstance(self.backbone, str) and self.backbone == "pixelcnn"):
            return None
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd; got {self.kernel_size}.")
        return image_shape_of(self.image_shape, n_features, "backbone='pixelcnn'")

    def _resolve_bounds(self, n_features: int) -> BoxBounds | None:
        """The ``bounds`` parameter as a :class:`BoxBounds` (None: no bounds)."""
        if self.bounds is None:
            return None
        try:
            values = np.asarray(self.bounds, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"bounds must be (low, high) numbers or arrays; got {self.bounds!r}."
            ) from exc
        if values.shape not in ((2,), (2, n_features)) or np.isnan(values).any():
            raise ValueError(
                "bounds must be (low, high), each a number or an array of shape "
                f"(n_features,) = ({n_features},), without NaN; got an array of "
                f"shape {values.shape}."
            )
        low, high = (np.broadcast_to(v, (n_features,)) for v in values)
        return BoxBounds(low, high)

    def _resolve_noise_levels(self) -> np.ndarray:
        if self.noise_levels is None:
            return default_noise_levels()
        levels = np.atleast_1d(np.asarray(self.noise_levels, dtype=np.float64))
        if levels.ndim != 1 or levels.size == 0:
            raise ValueError(
                f"noise_levels must be a positive number or a 1-D sequence of them; "
                f"got shape {levels.shape}."
            )
        if not np.all(np.isfinite(levels)) or np.any(levels <= 0):
            raise ValueError(f"noise_levels must be finite and > 0; got {levels}.")
        if np.any(np.diff(levels) >= 0):
            raise ValueError(
                "noise_levels must be strictly decreasing (largest first); "
                f"got {levels}."
            )
        return levels

    @staticmethod
    def _resolve_sizes(sizes, name: str) -> tuple[int, ...]:
        values = tuple(np.atleast_1d(np.asarray(sizes)).tolist())
        if len(values) == 0 or not all(
            isinstance(v, Integral) and not isinstance(v, bool) and v > 0
            for v in values
        ):
            raise ValueError(
                f"{name} must be a non-empty sequence of positive integers; "
                f"got {sizes!r}."
            )
        return values

    def _seeds(self) -> dict[str, int]:
        rng = check_random_state(self.random_state)
        names = ("init", "train", "valid", "shuffle", "split")
        return dict(
            zip(names, rng.randint(0, 2**31 - 1, size=len(names)).tolist(), strict=True)
        )

    # ------------------------------------------------------------------
    # Fit
    # ------------------------------------------------------------------
    def _fit(self, X, *, continuing=None, epochs=None, groups=None):
        """Validate, standardize and train; set fitted attributes only on success.

        A fresh fit that fails (bad input, divergence without a checkpoint to
        fall back on, any exception) leaves the estimator unfitted, even if
        it was fitted before. A continued fit trains a copy of the net, so on
        failure the previously fitted model stays as it was.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        continuing : bool, optional
            Continue training the fitted net instead of starting afresh;
            defaults to ``warm_start and fitted``.
        epochs : int, optional
            Epochs to run in this call (default ``max_epochs``).
        groups : array-like of shape (n_samples,), optional
            Group labels kept together by the early-stopping split
            (:meth:`_split_rows`).
        """
        if continuing is None:
            continuing = self.warm_start and hasattr(self, "net_")
        continuing = continuing and hasattr(self, "net_")
        try:
            return self._fit_unchecked(X, continuing, epochs, groups)
        except BaseException:
            if not continuing:
                self._clear_fitted_attributes()
            raise

    def _fit_unchecked(self, X, continuing, epochs, groups=None):
        X = validate_data(
            self, X, reset=not continuing, ensure_min_samples=2, dtype=np.float64
        )
        groups = self._check_groups(groups, len(X))
        # A continued fit stays where its net lives.
        device = self.device_ if continuing else self._resolve_device()
        levels = self._resolve_noise_levels()
        # A continued fit keeps the fitted head (a new objective may resolve
        # "auto" differently).
        score_head = self.score_head_ if continuing else self._resolved_score_head()
        # The rule validates during fit and scores after it.
        rule = self._resolve_quadrature(score_head)
        seeds = self._seeds()
        accelerator = None
        if self.distributed == "accelerate":
            accelerator = make_accelerator(device)
            device = str(accelerator.device)
            if torch.device(device).type == "cpu":
                device = "cpu"  # Accelerate says "cpu:<rank>"; CPU is one device
        train_rows, valid_rows = self._split_rows(len(X), seeds["split"], groups)
        batch_size = self._resolve_batch_size(len(train_rows), accelerator)
        if accelerator is not None:
            seeds = agree_across_processes(accelerator, seeds, X, batch_size, groups)
        bounds = self._resolve_bounds(X.shape[1])
        if continuing and bounds != self.bounds_:
            raise ValueError(
                f"bounds={self.bounds!r} differs from the fitted bounds_ "
                f"{self.bounds_!r}: a warm start continues the fitted model, whose "
                "density lives on its own bounds. Set warm_start=False to refit."
            )
        check_inside(bounds, X)
        Y = X if bounds is None else _to_model_space(bounds, X)
        if continuing:
            mean, scale = self.mean_, self.scale_
            net = copy.deepcopy(self.net_)  # train a candidate, commit on success
            # New noise levels or learning rate apply from here on (e.g. to
            # anneal by repeated warm-started fits).
            net.noise_levels = torch.as_tensor(levels, dtype=torch.float32)
            net.objective = self._resolved("objective")
            net.ema_decay = self._resolved("ema_decay")
            net.quadrature = rule
            net.train_cells = self._train_cells(rule)
            lr = self._resolve_lr(batch_size)
            if net.lr != lr:
                net.set_params(lr=lr)  # skorch updates the param groups
            net.set_params(batch_size=batch_size, verbose=self.verbose)
            net.module_.mixed_precision = self.mixed_precision
            net.callbacks = self._make_callbacks()
            net.initialize_callbacks()
        else:
            mean, scale = _mean_and_scale(Y)
        Z, extra_fitted = self._to_model_coordinates((Y - mean) / scale, continuing)
        Z = Z.astype(np.float32)
        if valid_rows is None:
            train, valid = Z, None
        else:
            train, valid = Z[train_rows], Z[valid_rows]
        if continuing:
            net.set_params(train_split=self._train_split(valid))
            if str(net.device) != device:
                # A distributed continuation on another process's device: the
                # optimizer's moments restart there.
                net.device = device
                net.module_.to(device)
                net.initialize_optimizer()
            net.accelerator = accelerator
        else:
            net = self._build_net(
                Z,
                levels,
                rule,
                device,
                seeds,
                valid,
                batch_size,
                accelerator,
                module_options=self._module_options(extra_fitted),
                score_head=score_head,
            )
        net.diverged_at_ = None
        fitted = dict(
            bounds_=bounds,
            mean_=mean,
            scale_=scale,
            noise_levels_=levels,
            device_=device,
            objective_=self._resolved("objective"),
            score_head_=score_head,
            quadrature_=rule,
            batch_size_=batch_size,
            **extra_fitted,
        )
        checkpoints = [
            cb for _, cb in net.callbacks_ if isinstance(cb, EstimatorCheckpoint)
        ]
        for cb in checkpoints:
            cb.snapshot_fn_ = functools.partial(self._snapshot, fitted=fitted)
        try:
            diverged, stopped = self._train(
                net, train, self.max_epochs if epochs is None else epochs
            )
        finally:
            # The fitted net is a single-process one (and pickles).
            net.accelerator = None
            for cb in checkpoints:
                cb.snapshot_fn_ = None
        self._check_finite_weights(net.module_)
        if diverged:
            self._warn_diverged(net, diverged, stopped)
        self._commit(net, fitted)
        return self

    @staticmethod
    def _train(net, train, epochs: int) -> tuple[list[tuple[int, float]], bool]:
        """Train ``net`` for ``epochs``, restarting after divergence.

        :class:`~sklearn_arcsm._skorch.FiniteLossGuard` ends training at a
        non-finite loss with the best weights restored; training then goes
        on from them for the epochs that were left, with the learning rate
        times ``DIVERGENCE_LR_FACTOR``, up to ``MAX_DIVERGENCE_RESTARTS``
        times (early stopping's patience restarts with it). The fit ends on
        the weights early stopping restored in the phase with the best
        validation epoch of all, not necessarily the last phase.
        Not in a distributed fit, whose processes would have to agree to
        restart.

        Returns
        -------
        diverged : list of (epoch, lr)
            Each divergence: the epoch and the learning rate it happened at.
        stopped : bool
            Whether training ended at the last divergence (no restart left).
        """
        diverged = []
        # (validation loss, weights) of the best epoch before the last
        # restart: early stopping forgets it when training restarts, and a
        # restart need not beat it.
        kept = None
        try:
            while True:
                start = len(net.history)
                net.partial_fit(train, epochs=epochs)
                if kept is not None or net.diverged_at_ is not None:
                    # Early stopping (or the guard) left this phase's best.
                    loss = _best_validation_loss(net.history[start:])
                    if kept is None or loss < kept[0]:
                        kept = (loss, copy.deepcopy(net.module_.state_dict()))
                    else:
                        net.module_.load_state_dict(kept[1])
                if net.diverged_at_ is None:
                    return diverged, False
                diverged.append((net.diverged_at_, net.lr))
                net.diverged_at_ = None
                epochs -= len(net.history) - start
                if (
                    epochs <= 0
                    or len(diverged) > MAX_DIVERGENCE_RESTARTS
                    or net.accelerator is not None
                ):
                    return diverged, True
                # If the restart diverges before an epoch ends, the guard
                # falls back to these.
                net.restart_weights_ = kept[1]
                # skorch updates the (restarted) optimizer's param groups.
                net.set_params(lr=net.lr * DIVERGENCE_LR_FACTOR)
        finally:
            net.__dict__.pop("restart_weights_", None)

    @staticmethod
    def _warn_diverged(net, diverged: list[tuple[int, float]], stopped: bool):
        """Say where training diverged and how it ended."""
        where = ", ".join(f"epoch {epoch} (lr {lr:.3g})" for epoch, lr in diverged)
        if stopped:
            how = (
                "the weights with the best validation loss were restored and "
                "training stopped there"
            )
        else:
            how = (
                "training went on from the weights with the best validation "
                f"loss at a lower learning rate (last: {net.lr:.3g})"
            )
        warnings.warn(
            f"training diverged (non-finite loss) at {where}; {how}. Lower `lr` "
            "or use larger `noise_levels` if this recurs.",
            ConvergenceWarning,
            stacklevel=4,
        )

    def _to_model_coordinates(self, S: np.ndarray, continuing: bool):
        """Standardized training rows ``S`` in the module's coordinates.

        Returns the rows and the fitted attributes of the map (none here:
        the module sees standardized data; ARCSMDensity may whiten it).
        """
        return S, {}

    def _module_options(self, fitted: dict) -> dict:
        """Estimator-specific keyword arguments of the ARCSM module (none here).

        ``fitted``: the attributes :meth:`_to_model_coordinates` resolved.
        """
        return {}

    def _commit(self, net, fitted: dict) -> None:
        """Set every fitted attribute from a trained net."""
        for name, value in fitted.items():
            setattr(self, name, value)
        self.hidden_layer_sizes_ = self._module_hidden_sizes(net)
        self.net_ = net
        self.module_ = net.module_
        self._build_inference_cache()
        epochs_done = [row for row in net.history if "train_loss" in row]
        self.loss_curve_ = [row["train_loss"] for row in epochs_done]
        self.validation_loss_curve_ = (
            [row["valid_loss"] for row in epochs_done if "valid_loss" in row]
            if self.early_stopping
            else None
        )
        self.n_iter_ = len(epochs_done)

    def _snapshot(self, net, *, fitted: dict):
        """A fitted copy of this estimator at the net's current state."""
        snapshot = clone(self)
        snapshot.n_features_in_ = self.n_features_in_
        if hasattr(self, "feature_names_in_"):
            snapshot.feature_names_in_ = self.feature_names_in_
        snapshot._commit(net, fitted)
        return snapshot

    def _clear_fitted_attributes(self) -> None:
        self.__dict__.pop("_inference_cache", None)
        clear_fitted_attributes(self)

    def _n_valid(self, n_rows: int) -> int:
        """Rows held out for early stopping (0 without it)."""
        if not self.early_stopping:
            return 0
        n_valid = int(round(self.validation_fraction * n_rows))
        return min(max(n_valid, 1), n_rows - 1)

    def _resolve_batch_size(self, n_train: int, accelerator=None) -> int:
        """``batch_size``, with "auto" resolved for ``n_train`` training rows."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        n_processes = 1 if accelerator is None else accelerator.num_processes
        return auto_batch_size(n_train, n_processes)

    def _check_groups(self, groups, n_rows: int) -> np.ndarray | None:
        """``groups`` as a 1-D array of ``n_rows`` labels (None stays None)."""
        if groups is None:
            return None
        groups = np.asarray(groups)
        if groups.ndim != 1 or len(groups) != n_rows:
            raise ValueError(
                "groups must hold one label per row of X, shape "
                f"({n_rows},); got shape {groups.shape}."
            )
        return groups

    def _split_rows(self, n_rows: int, seed: int, groups: np.ndarray | None = None):
        """Indices of the training and early-stopping rows (None: no early stopping).

        Without ``groups``, a random ``validation_fraction`` of the rows is
        held out. With ``groups``, a random ``validation_fraction`` of the
        groups is held out with all of their rows: rows that are not
        independent (noisy copies of one clean row, augmentations of one
        image, repeated measures of one subject) would otherwise sit on both
        sides, and the validation loss would reward memorizing them.
        """
        if not self.early_stopping:
            return np.arange(n_rows), None
        rng = np.random.RandomState(seed)
        if groups is None:
            n_valid = self._n_valid(n_rows)
            order = rng.permutation(n_rows)
            return order[n_valid:], order[:n_valid]
        labels, inverse = np.unique(groups, return_inverse=True)
        if len(labels) < 2:
            raise ValueError(
                "groups holds a single group, so early stopping has no group "
                "left to hold out; pass at least two groups, or groups=None, "
                "or set early_stopping=False."
            )
        held_out = rng.permutation(len(labels))[: self._n_valid(len(labels))]
        in_valid = np.isin(inverse, held_out)
        return np.flatnonzero(~in_valid), np.flatnonzero(in_valid)

    @staticmethod
    def _train_split(valid):
        return None if valid is None else predefined_split(Dataset(valid))

    def _build_net(
        self,
        Z,
        levels,
        rule,
        device,
        seeds,
        valid,
        batch_size,
        accelerator=None,
        module_options=None,
        *,
        score_head: str,
    ) -> CSMNet:
        n_features = Z.shape[1]
        train_cells = self._train_cells(rule)
        hidden = (
            default_hidden_sizes(n_features, self.backbone)
            if isinstance(self.hidden_layer_sizes, str)
            else self._resolve_sizes(self.hidden_layer_sizes, "hidden_layer_sizes")
        )
        head = self._resolve_sizes(self.head_layer_sizes, "head_layer_sizes")
        callbacks = self._make_callbacks()
        extra = {}
        if torch.device(device).type in FUSED_ADAM_DEVICES:
            extra["optimizer__fused"] = True
        if accelerator is not None and accelerator.num_processes > 1:
            extra["callbacks__print_log__sink"] = main_process_print
        net = CSMNet(
            ARCSM,
            module__n_features=n_features,
            module__hidden_sizes=hidden,
            module__context_size=self.context_size,
            module__head_sizes=head,
            module__lower=torch.as_tensor(Z.min(axis=0) - WINDOW_PAD),
            module__upper=torch.as_tensor(Z.max(axis=0) + WINDOW_PAD),
            module__tail_scale=TAIL_SCALE,
            module__n_frequencies=self.n_frequencies,
            module__score_head=score_head,
            module__n_knots=self.n_knots,
            module__backbone=self.backbone,
            module__image_shape=self._resolve_image_shape(n_features),
            module__kernel_size=self.kernel_size,
            module__mixed_precision=self.mixed_precision,
            module__max_log_scale=self._max_log_scale(train_cells),
            criterion=torch.nn.Module,
            optimizer=torch.optim.Adam,
            lr=self._resolve_lr(batch_size),
            max_epochs=self.max_epochs,
            batch_size=batch_size,
            train_split=self._train_split(valid),
            callbacks=callbacks,
            device=device,
            verbose=self.verbose,
            noise_levels=torch.as_tensor(levels, dtype=torch.float32),
            objective=self._resolved("objective"),
            valid_objective=self._validation_objective,
            quadrature=rule,
            train_cells=train_cells,
            train_seed=seeds["train"],
            valid_seed=seeds["valid"],
            shuffle_seed=seeds["shuffle"],
            accelerator=accelerator,
            ema_decay=self._resolved("ema_decay"),
            **{f"module__{k}": v for k, v in (module_options or {}).items()},
            **extra,
        )
        # Seed weight initialization without touching the caller's global
        # RNG state: fork it, seed the fork, initialize.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds["init"])
            net.initialize()
        return net

    def _make_callbacks(self) -> list:
        callbacks = [("finite_loss", FiniteLossGuard())]
        if self.early_stopping:
            callbacks.append(
                (
                    "early_stopping",
                    NoiseAwareEarlyStopping(
                        n_standard_errors=self._checkpoint_standard_errors,
                        average=self._checkpoint_average,
                        monitor="valid_loss",
                        patience=self._resolved("n_iter_no_change"),
                        threshold=self.tol,
                        threshold_mode="abs",
                        sink=print if self.verbose else noop,
                    ),
                )
            )
        if self._resolved("learning_rate") == "adaptive":
            callbacks.append(
                (
                    "adaptive_lr",
                    AdaptiveLearningRate(
                        monitor="valid_loss" if self.early_stopping else "train_loss",
                        factor=ADAPTIVE_LR_FACTOR,
                        patience=ADAPTIVE_LR_PATIENCE,
                        tol=self.tol,
                        min_lr=ADAPTIVE_LR_MIN,
                    ),
                )
            )
        if self.verbose and self.verbose >= 2:
            callbacks.append(("progress_bar", ProgressBar()))
        # Copies: skorch initializes callbacks in place, and a parameter the
        # user passed must not change.
        callbacks.extend(copy.deepcopy(self.callbacks or []))
        return callbacks

    @staticmethod
    def _module_hidden_sizes(net) -> tuple[int, ...]:
        # A user's own backbone need not say.
        return getattr(net.module_.context_net, "hidden_sizes", None)

    @staticmethod
    def _check_finite_weights(module: torch.nn.Module) -> None:
        for name, param in module.named_parameters():
            if not torch.isfinite(param).all():
                raise FloatingPointError(
                    f"parameter {name!r} is non-finite after training; lower `lr`."
                )

    def __getstate__(self):
        # A copy: scikit-learn returns the live __dict__ for non-sklearn classes.
        state = dict(super().__getstate__())
        state.pop("_inference_cache", None)  # rebuilt on load
        # module_ is net_.module_: skorch pickles it device-independently
        # (a CUDA module loads on a CPU-only machine); restored on load.
        if "net_" in state:
            state.pop("module_", None)
        if hasattr(self, "net_"):
            state["_arcsm_format"] = PERSISTENCE_FORMAT
        return state

    def __setstate__(self, state):
        state = dict(state)
        saved = state.pop("_arcsm_format", PERSISTENCE_FORMAT)
        if saved > PERSISTENCE_FORMAT:
            raise ValueError(
                f"this {type(self).__name__} was saved in persistence format "
                f"{saved} by a newer sklearn_arcsm; this version "
                f"({_package_version()}) reads formats up to {PERSISTENCE_FORMAT}. "
                "Upgrade sklearn_arcsm to load it, or refit."
            )
        # Estimators saved before kernel_size existed used no such parameter
        # (their PixelCNN, if any, is pickled with its module): the default.
        state.setdefault("kernel_size", 5)
        # Estimators saved before the spline head existed use the MLP head.
        state.setdefault("score_head", "mlp")
        state.setdefault("n_knots", 96)
        state.setdefault("bounds", None)
        if "net_" in state:
            # Fitted before these fitted attributes existed.
            state.setdefault("score_head_", state["score_head"])
            state.setdefault("bounds_", None)
            state.setdefault("batch_size_", state.get("batch_size"))
        if saved < 3 and "net_" in state:
            # Older fits were scored with the Simpson rule of n_quadrature
            # cells: keep scoring them exactly so.
            cells = state.get("n_quadrature")
            cells = cells if isinstance(cells, Integral) else 256  # the old default
            state["quadrature_"] = quadrature.simpson(int(cells))
        super().__setstate__(state)
        if "net_" in state:
            self.module_ = self.net_.module_
            device = str(self.device_)
            if device.startswith("cuda") and not torch.cuda.is_available():
                warnings.warn(
                    f"this {type(self).__name__} was fitted on {device!r}, but CUDA "
                    "is not available here: it was loaded on the CPU, where it "
                    "scores and samples (device_='cpu'). Set device='cpu' to "
                    "refit here.",
                    UserWarning,
                    stacklevel=2,
                )
                self.device_ = "cpu"
                self.net_.device = "cpu"
            self._build_inference_cache()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
