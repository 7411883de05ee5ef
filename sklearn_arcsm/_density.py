"""ARCSMDensity: density estimation with an autoregressive conditional score model."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import DensityMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_arcsm._base import BaseCSMEstimator, _to_model_space
from sklearn_arcsm._docstrings import attributes_section, parameters_section
from sklearn_arcsm._inference import _is_integer_at_least
from sklearn_arcsm.marginal import MarginalGaussianization, spiky_columns
from sklearn_arcsm.nn.spline_head import DEFAULT_N_KNOTS
from sklearn_arcsm.whitening import Whitening

__all__ = ["ARCSMDensity"]

# linear_location="auto" turns the linear location term off where more than
# this share of the columns hold a point mass (marginal.spiky_columns):
# dequantized digits have 25 to 52 of 64 such pixels (39% or more) and lose
# 5.4 nats per image with the term; the real tables of the quality
# benchmark have at most one in four (weather's precipitation) and gain or
# tie with it.
POINT_MASS_SHARE = 0.25


def check_noise_std(noise_std, n_features: int) -> np.ndarray:
    """``noise_std`` (a number, or one per feature) as an array of ``n_features``.

    Raises a ValueError that says what is wrong: a shape other than ``()`` or
    ``(n_features,)``, or a value that is not positive and finite.
    """
    std = np.asarray(noise_std, dtype=np.float64)
    if std.ndim > 1 or (std.ndim == 1 and std.shape != (n_features,)):
        raise ValueError(
            "noise_std must be a number or an array of shape (n_features,) = "
            f"({n_features},); got shape {std.shape}."
        )
    if not (np.all(np.isfinite(std)) and np.all(std > 0)):
        raise ValueError(f"noise_std must be positive and finite; got {noise_std!r}.")
    return np.broadcast_to(std, (n_features,)).copy()


class ARCSMDensity(DensityMixin, BaseCSMEstimator):
    """Density estimator: an autoregressive conditional score model (AR-CSM).

    The model is a MADE context network feeding a small conditional score
    network shared by all dimensions. It is parameterized by scores, yet
    every fitted model is an exact, normalized density: each conditional is
    a 1-D density whose normalizer is computed by quadrature, so
    ``score_samples`` returns true log-densities and ``sample`` draws exact
    samples by inverse CDF. By default it is trained by maximum likelihood
    through that quadrature; the paper's composite score matching (CSM) is
    ``objective="csm"``.

    Data are standardized internally; densities and samples are reported in
    the units of ``X``. Data with a known box (pixels, proportions,
    positive amounts) can declare it with ``bounds``: the model then lives
    on the box, through an exact change of variables.

    {parameters}
    {attributes}
    See Also
    --------
    sklearn.neighbors.KernelDensity : Kernel density estimation.
    sklearn.mixture.GaussianMixture : Gaussian mixture density.

    References
    ----------
    C. Meng, L. Yu, Y. Song, J. Song, S. Ermon. "Autoregressive Score
    Matching." NeurIPS 2020.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from sklearn_arcsm import ARCSMDensity
    >>> X, _ = make_moons(500, noise=0.1, random_state=0)
    >>> est = ARCSMDensity(max_epochs=5, random_state=0).fit(X)
    >>> est.score_samples(X[:3]).shape
    (3,)
    >>> est.sample(4, random_state=0).shape
    (4, 2)
    """

    # Early stopping watches what this estimator is judged by: held-out
    # log-likelihood (an unbiased one-dimension-per-row quadrature estimate
    # with fixed draws), not the held-out CSM loss, whose noise stopped
    # two-moons fits 0.24 nats short.
    _validation_objective = "nll"
    # Maximum likelihood through the exact quadrature density. Measured on
    # the quality suite (KL to the truth, nats; benchmarks/quality): rings
    # 0.067 against 0.276 for CSM + likelihood and 0.391 for pure CSM (CSM
    # fits the data smoothed by the smallest noise level).
    _default_objective = "nll"
    # lr="auto" and learning_rate="auto": Adam at 1e-2 * sqrt(batch / 256),
    # multiplied by 0.3 after each 6 epochs without held-out improvement.
    # Measured against the former constant 1e-3 (benchmarks/quality, same
    # seeds; held-out log-likelihood or KL): weather -8.336 -> -8.270 in 104
    # epochs instead of 288; breast_cancer 38.49 -> 38.56 in 108 instead of
    # 143; diabetes a tie over three seeds (-26.52 -> -26.57, seed spread
    # 0.5); KL on mixture 0.138 -> 0.072, funnel 0.022 -> 0.013, rings
    # 0.030 -> 0.026 (the 5,000-row targets train at batch 256, lr 1e-2).
    # digits -97.44 -> -96.82 in 113 epochs instead of 215. Lost: vowels
    # 8.156 -> 7.976 and Student t KL 0.105 -> 0.125 (both stopped early
    # after noisy plateaus). A constant 1e-2 at every batch size lost 2.5
    # nats on breast_cancer (batches of 24 rows): hence the square root.
    _default_lr = 1e-2
    _lr_batch_scaled = True
    _default_learning_rate = "adaptive"

    _parameter_constraints: dict = {
        **BaseCSMEstimator._parameter_constraints,
        "whiten": [None, StrOptions({"pca", "cholesky"})],
        "marginal_transform": [None, StrOptions({"auto", "quantile"})],
        "linear_location": [StrOptions({"auto"}), "boolean"],
    }

    def __init__(
        self,
        *,
        backbone="made",
        image_shape=None,
        bounds=None,
        marginal_transform="auto",
        whiten=None,
        linear_location="auto",
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
        tol=0.0001,
        callbacks=None,
        verbose=0,
        warm_start=False,
        random_state=None,
    ):
        super().__init__(
            backbone=backbone,
            image_shape=image_shape,
            bounds=bounds,
            hidden_layer_sizes=hidden_layer_sizes,
            kernel_size=kernel_size,
            context_size=context_size,
            score_head=score_head,
            head_layer_sizes=head_layer_sizes,
            n_frequencies=n_frequencies,
            n_knots=n_knots,
            objective=objective,
            noise_levels=noise_levels,
            n_quadrature=n_quadrature,
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr=lr,
            learning_rate=learning_rate,
            ema_decay=ema_decay,
            device=device,
            distributed=distributed,
            mixed_precision=mixed_precision,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            tol=tol,
            callbacks=callbacks,
            verbose=verbose,
            warm_start=warm_start,
            random_state=random_state,
        )
        self.marginal_transform = marginal_transform
        self.linear_location = linear_location
        self.whiten = whiten

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, groups=None):
        """Fit the model (by maximum likelihood unless ``objective`` says otherwise).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (at least 2 rows).
        y : None
            Ignored.
        groups : array-like of shape (n_samples,), default=None
            Group label of each row. With early stopping, whole groups are
            held out for validation, so that rows that are not independent
            (noisy copies of one clean row, augmentations of one image) never
            sit on both sides of the split; None holds out rows.

        Returns
        -------
        self : ARCSMDensity
        """
        return self._fit(X, groups=groups)

    def _to_model_coordinates(self, S, continuing):
        """Standardized rows ``S``, mapped by ``marginal_transform``, then whitened."""
        if continuing:
            self._check_same_maps()
            marginal, whitening = self.marginal_, self.whitening_
        else:
            if self.whiten == "pca" and self.backbone == "pixelcnn":
                raise ValueError(
                    "whiten='pca' mixes and reorders the pixels, while "
                    "backbone='pixelcnn' needs them on their grid; use "
                    "whiten='cholesky' (it keeps the raster order) or None with "
                    "the PixelCNN, or backbone='made'."
                )
            marginal = None
            if self.marginal_transform is not None:
                marginal = MarginalGaussianization.fit(S, self.marginal_transform)
                if not marginal.active.any():
                    marginal = None  # nothing to map: skip the identity
        U = S if marginal is None else _to_model_space(marginal, S)
        if not continuing:
            whitening = None if self.whiten is None else Whitening.fit(U, self.whiten)
        Z = U if whitening is None else U @ whitening.matrix.T
        return Z, {
            "marginal_": marginal,
            "whitening_": whitening,
            "linear_location_": (
                self.linear_location_
                if continuing
                else self._resolved_linear_location(S)
            ),
        }

    def _resolved_linear_location(self, S) -> bool:
        """``linear_location`` resolved on the standardized training rows ``S``.

        "auto": on for the MADE, whose conditionals it gives a direct linear
        path, unless more than POINT_MASS_SHARE of the columns hold a point
        mass (images with blank backgrounds): a mode at a fixed place, which
        a location that moves with the other columns smears. Off for image
        backbones, whose contexts are local.
        """
        if self.linear_location != "auto":
            return bool(self.linear_location)
        if not (isinstance(self.backbone, str) and self.backbone == "made"):
            return False
        return bool(spiky_columns(S).mean() <= POINT_MASS_SHARE)

    def _module_options(self, fitted: dict) -> dict:
        return {"linear_skip": fitted["linear_location_"]}

    def _check_same_maps(self):
        """A warm start continues in the fitted model's own coordinates."""
        whitening = self.whitening_
        fitted_with = None if whitening is None else whitening.method
        if fitted_with != self.whiten:
            raise ValueError(
                f"whiten={self.whiten!r} differs from the fitted model's "
                f"({fitted_with!r}, in whitening_): a warm start continues the "
                "fitted model in its own coordinates. Set warm_start=False to "
                "refit."
            )
        if self.linear_location not in ("auto", self.linear_location_):
            raise ValueError(
                f"linear_location={self.linear_location!r} differs from the fitted "
                f"model's ({self.linear_location_!r}, in linear_location_): a warm "
                "start continues the fitted network, whose layers are fixed. Set "
                "warm_start=False to refit."
            )
        marginal = self.marginal_
        # (Under "auto" a fit may have mapped no column, which any setting
        # continues.)
        if marginal is not None and marginal.method != self.marginal_transform:
            raise ValueError(
                f"marginal_transform={self.marginal_transform!r} differs from the "
                f"fitted model's ({marginal.method!r}, in marginal_): a warm start "
                "continues the fitted model in its own coordinates. Set "
                "warm_start=False to refit."
            )

    def __setstate__(self, state):
        state = dict(state)
        state.setdefault("whiten", None)  # saved before whitening existed
        # Saved before the marginal map or the linear location term existed:
        # fitted without them.
        state.setdefault("marginal_transform", None)
        state.setdefault("linear_location", False)
        if "net_" in state:
            state.setdefault("whitening_", None)
            state.setdefault("marginal_", None)
            state.setdefault("linear_location_", False)
        super().__setstate__(state)

    def score_samples(self, X):
        """Exact log-density of each sample, in the units of ``X``.

        Each conditional's normalizer is a 1-D integral computed by the
        fitted quadrature rule ``quadrature_`` (adaptive by default, see
        ``n_quadrature``) plus closed-form tails; memory is bounded by
        processing rows in chunks.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_density : ndarray of shape (n_samples,), float64
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        log_density = np.full(len(X), -np.inf)
        inside = self._inside(X)  # a bounded model is zero outside its box
        X = X[inside]
        Z = self._standardized_tensor(X)
        log_density[inside] = self._log_density_standardized(Z) + self._log_jacobian(X)
        return log_density

    def score(self, X, y=None):
        """Mean log-likelihood of ``X``.

        The mean (not the sum, as ``KernelDensity`` returns) keeps scores of
        cross-validation folds of different sizes comparable, as
        ``GaussianMixture.score`` does.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        score : float
        """
        return float(np.mean(self.score_samples(X)))

    def log_density_gradient(self, X):
        """Gradient of the log-density (the joint score) at each sample.

        ``grad_x log p(x)`` with all partial derivatives: the conditional
        scores ``d/dx_d log p(x_d | x_<d)`` plus, for each ``x_k``, its effect
        on the later conditionals through their contexts. Exact up to the
        quadrature error of ``score_samples``, by automatic differentiation
        through it.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        gradient : ndarray of shape (n_samples, n_features), float64
            In the units of ``X`` (per unit of each feature).
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._log_density_gradient_of(X)

    def _log_density_gradient_of(self, X: np.ndarray) -> np.ndarray:
        """:meth:`log_density_gradient` of validated rows ``X``."""
        S = self._standardized_rows(X)
        grad = self._log_density_gradient_standardized(self._model_coordinates(S))
        if self.whitening_ is not None:
            grad = self.whitening_.pullback(grad)
        return self._scores_in_data_units(grad, S, X)

    def _scores_in_data_units(self, scores, S, X: np.ndarray) -> np.ndarray:
        """Scores in the marginal map's coordinates, pulled back to ``X``'s units.

        Every map from ``X`` to those coordinates (the box's map onto R, the
        standardization, the marginal map) is elementwise, so joint and
        conditional scores alike transform by the 1-D chain rule per column.
        ``S`` holds the standardized rows of the validated ``X``.
        """
        if self.marginal_ is not None:
            scores = self.marginal_.scores(S, scores)
        scores = scores / torch.as_tensor(self.scale_).to(scores)
        if self.bounds_ is not None:
            scores = self.bounds_.scores(torch.as_tensor(X).to(scores), scores)
        return scores.cpu().numpy()

    def conditional_scores(self, X):
        """Conditional scores ``d/dx_d log p(x_d | x_<d)`` at each sample.

        Entry ``d`` is the derivative of the ``d``-th 1-D conditional in its
        own variable, the earlier entries held fixed: what the network
        outputs, without the later conditionals' dependence on ``x_d`` that
        :meth:`log_density_gradient` adds (the two agree on the last
        feature). Costs one pass of the network, no quadrature.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples, n_features), float64
            In the units of ``X`` (per unit of each feature).

        Raises
        ------
        ValueError
            For a model fitted with ``whiten``: its conditionals are those of
            the whitened coordinates, each a mixture of the features.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        if self.whitening_ is not None:
            raise ValueError(
                f"conditional_scores is not defined for a model fitted with "
                f"whiten={self.whiten!r}: its conditionals are those of the "
                "whitened coordinates, not of the features. Fit with whiten=None, "
                "or use log_density_gradient."
            )
        S = self._standardized_rows(X)
        Z = self._model_coordinates(S)
        module, _ = self._inference_modules()
        sigma = self._final_sigma(Z)
        chunk = self._rows_per_chunk()
        with torch.no_grad():
            parts = [
                module(Z[i : i + chunk], sigma) for i in range(0, Z.shape[0], chunk)
            ]
        scores = torch.cat(parts) if parts else torch.zeros_like(Z)
        return self._scores_in_data_units(scores, S, X)

    def denoise(self, X, noise_std):
        """Denoise samples corrupted by Gaussian noise (Tweedie's formula).

        Returns ``X + noise_std**2 * grad log p(X)``, the posterior mean
        ``E[x | X]`` when ``X = x + noise_std * z`` with ``z`` standard normal
        **and this model is the density of the noisy data**. Fit it on noisy
        data: on the noisy observations themselves (empirical Bayes, no clean
        data needed), or on clean data with noise of the same
        ``noise_std`` added (several noisy copies of each clean row help).
        A model of the clean density gives a biased result.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Noisy samples.
        noise_std : float or array-like of shape (n_features,)
            Standard deviation of the noise, in the units of ``X`` (one per
            feature, or one for all).

        Returns
        -------
        X_denoised : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        std = check_noise_std(noise_std, self.n_features_in_)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X + std**2 * self._log_density_gradient_of(X)

    def inpaint(self, X, mask=None, *, method="auto", n_steps=100, random_state=None):
        """Draw the masked entries of each sample given the others.

        Each row's masked entries are replaced by a draw from the model's
        conditional ``p(x_masked | x_observed)``; the observed entries are
        returned unchanged.

        * Where every masked entry of a row comes after all of its observed
          entries in the column order (the lower half of a raster image, a
          suffix of the columns), the conditional is the product of the
          model's own 1-D conditionals, and the draws are exact, by inverse
          CDF, one entry at a time.
        * Otherwise the row is sampled by Metropolis-adjusted Langevin
          (MALA) on the exact log-density of ``score_samples``, started from
          the autoregressive draws above (which ignore the observed entries
          after each masked one). ``n_steps`` steps: during the first half
          each row's step is adapted towards an acceptance rate of 0.574,
          then fixed. The chain leaves the conditional invariant; its draws
          are exact in the limit of many steps.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples; the masked entries' values are ignored and may be NaN.
        mask : array-like of bool, shape (n_samples, n_features), default=None
            True where an entry is to be drawn. None means ``np.isnan(X)``.
        method : {"auto", "mala"}, default="auto"
            ``"auto"``: exact draws where they exist, MALA elsewhere.
            ``"mala"``: MALA for every row with masked entries.
        n_steps : int, default=100
            MALA steps per row (adaptation included).
        random_state : int, RandomState instance or None, default=None
            Seeds the draws.

        Returns
        -------
        X_inpainted : ndarray of shape (n_samples, n_features)
            A copy of ``X`` with the masked entries drawn. For a point
            estimate, average several draws (the posterior mean minimizes
            the expected squared error).
        """
        check_is_fitted(self)
        if method not in ("auto", "mala"):
            raise ValueError(f"method must be 'auto' or 'mala'; got {method!r}.")
        if not _is_integer_at_least(n_steps, 1):
            raise ValueError(
                f"n_steps must be a positive integer; got {n_steps!r} (0 steps "
                "would return the starting draws, which are not draws of the "
                "conditional)."
            )
        X = validate_data(
            self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan"
        )
        missing = self._check_mask(X, mask)
        seed = int(check_random_state(random_state).randint(0, 2**31 - 1))
        generator = torch.Generator(device=self.device_).manual_seed(seed)
        # Missing entries (maybe NaN) start at the mean: 0 in standardized units.
        start = self._from_standardized(torch.zeros(1, self.n_features_in_))
        Z = self._standardized_tensor(np.where(missing, start, X))
        missing_t = torch.as_tensor(missing, device=self.device_)
        inpaint = (
            self._inpaint_standardized
            if self.whitening_ is None
            else self._inpaint_whitened
        )
        Z = inpaint(Z, missing_t, method=method, n_steps=n_steps, generator=generator)
        return np.where(missing, self._from_standardized(Z), X)

    def _check_mask(self, X, mask) -> np.ndarray:
        if mask is None:
            missing = np.isnan(X)
        else:
            missing = np.asarray(mask)
            if missing.dtype != bool:
                raise ValueError(
                    f"mask must be an array of booleans; got dtype {missing.dtype}. "
                    "Use mask.astype(bool) if it holds 0/1."
                )
            if missing.shape != X.shape:
                raise ValueError(
                    f"mask must have the shape of X, {X.shape}; got {missing.shape}."
                )
        observed = X[~missing]
        if not np.all(np.isfinite(observed)):
            raise ValueError(
                "X has NaN or infinite values at entries the mask does not mark: "
                "mark every unknown entry in mask (or pass mask=None to mark the "
                "NaNs)."
            )
        return missing


ARCSMDensity.__doc__ = ARCSMDensity.__doc__.replace(
    "{parameters}",
    parameters_section(
        marginal_transform="""\
    marginal_transform : {"auto", "quantile"} or None, default="auto"
        An exact elementwise map of the standardized columns before the
        model (:mod:`sklearn_arcsm.marginal`): a monotone cubic through the
        column's ``sqrt(n_samples)`` quantiles (10 to 100) onto the standard
        normal's, linear beyond them; the density picks up the map's
        log-derivatives. ``"auto"`` maps only the near-singular columns, those
        with a share of the rows in a sliver of the range (a dequantized point
        mass, such as zero rainfall): where some quantile interval is more
        than 25 times narrower than a standard normal's (measured on held-out
        data: Seattle weather -8.266 -> -7.832 nats per row, diabetes -26.35
        -> -25.41 over three seeds; smooth columns, as in every synthetic
        target of the quality benchmark, are left alone). ``"quantile"``
        maps every column, which loses where the dependence is easier to
        learn in the original coordinates (funnel KL 0.013 -> 0.088,
        switching 0.565 -> 0.973, measured with a prototype of the map).
        None: no map. See the user guide's "Marginal map".
""",
        linear_location="""\
    linear_location : "auto" or bool, default="auto"
        Give each conditional's location a linear term in the earlier
        columns, ``m_d = m_d(c_d) + sum_{j<d} W_dj z_j``: a learned, strictly
        lower-triangular ``W`` (zero at the start) beside the context
        network, so that the least-squares regression of ``z_d`` on
        ``z_<d``, which real tables are full of, is one linear layer away
        instead of being assembled from hidden units. The density stays
        exact and normalized (it is a location in the affine layer).
        ``"auto"``: True with ``backbone="made"``, unless more than a
        quarter of the columns hold a point mass (the test of
        ``marginal_transform="auto"``; images with blank backgrounds, where
        it is False); False with the PixelCNN and custom backbones (local
        contexts). The resolved value is ``linear_location_``. Measured against False
        (held-out log-likelihood, one seed): breast cancer +3.4 nats per
        row, image patches +4.8, diabetes +0.2, the quality suite's
        mixed_ica32 -0.52 nats of KL, switching -0.06, other synthetic
        targets within 0.02, the vowels -0.15; forced on, it costs 5.4 nats
        per image on dequantized digits (39% point-mass pixels, so "auto"
        turns it off), whose blank pixels are a mode at a fixed place that
        a moving location smears. See the user guide's "Linear location".
""",
        whiten="""\
    whiten : {None, "cholesky", "pca"}, default=None
        Linear whitening of the standardized data before the model (exact:
        the density picks up ``log |det W|``; :mod:`sklearn_arcsm.whitening`).
        ``"cholesky"``: ``z_d`` is the residual of the least-squares
        regression of ``x_d`` on ``x_<d``, scaled to unit variance; the
        columns keep their order, so the autoregressive structure is kept.
        ``"pca"``: principal components, largest variance first; it also
        rotates, and reorders the variables. Both remove the correlations
        the model would otherwise have to learn, which helps on continuous,
        correlated data (measured: breast cancer +3.3 and +2.1 nats per
        row, image patches +3.1 and +3.7), and both hurt where columns carry
        structure at fixed positions, which mixing smears: dequantized
        pixels on their integer grid (digits: -24 and -27 nats per image),
        conditionals that switch between regimes (the quality suite's
        switching chain), and, for ``"pca"``, a scale variable that the
        reorder puts last
        (Neal's funnel: KL 0.02 to 0.18). Choose by validation likelihood
        (``GridSearchCV``); see the user guide's "Whitening". Not with
        ``backbone="pixelcnn"`` for ``"pca"`` (it needs the pixel grid).
""",
        objective="""\
    objective : {"auto", "csm", "nll", "csm+nll"}, default="auto"
        Training objective. ``"nll"``: maximum likelihood, through the exact
        1-D quadrature of ``min(4, ceil(D / 8))`` random conditionals per
        sample (an estimate of ``-log p(x)`` on a randomly shifted 64-cell
        grid, checked by a 91-cell one whose lower log-density counts, so
        that structure finer than the grids cannot lower the loss: about
        316 score-network evaluations per conditional, against 131 for one grid).
        ``"csm"``: the paper's noise-conditional composite score matching,
        which fits the data smoothed by the smallest noise level and cannot
        see the relative mass of separated modes. ``"csm+nll"``: their sum. ``"auto"``:
        ``"nll"``, the most accurate in the quality benchmark (two rings:
        KL 0.067 nats, against 0.276 for ``"csm+nll"`` and 0.391 for
        ``"csm"``; banana: 0.036, 0.091, 0.208). Only the CSM objectives
        train the larger noise levels that ``sample(method="langevin")``
        walks through.
""",
        noise_levels="""\
    noise_levels : None, float or array-like of float, default=None
        Decreasing noise levels (in standardized units) of noise-conditional
        CSM. ``None`` means 4 geometric levels from 1.0 to 0.1. Under
        ``"csm"`` the fitted density is the data density smoothed by the
        smallest level; under ``"nll"`` only the smallest level is used, as
        the score network's noise input and output scale.
""",
        max_epochs="""\
    max_epochs : int, default=300
        Maximum number of passes over the training data.
""",
        early_stopping="""\
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the data and stop when its
        negative log-likelihood has not improved by ``tol`` for
        ``n_iter_no_change`` epochs. The fit keeps the average of the weights
        of the best epoch and of every later epoch whose held-out negative
        log-likelihood is within one standard error (over the held-out rows)
        of the best: epochs the held-out rows cannot tell apart (see the
        user guide's training section). After a non-finite training loss
        training restarts from the best weights at a lower learning rate
        (with a ``ConvergenceWarning``); without early stopping it raises
        ``FloatingPointError``.
""",
    ),
)
ARCSMDensity.__doc__ = ARCSMDensity.__doc__.replace(
    "{attributes}",
    attributes_section(
        validation_loss_curve_="""\
    validation_loss_curve_ : list of float or None
        Validation negative log-likelihood per epoch, in nats per sample in
        the module's units: standardized, mapped by ``marginal_`` and
        whitened by ``whitening_`` if any (None without early stopping).
""",
        n_iter_="""\
    n_iter_ : int
        Number of epochs run (in total, across warm starts).
""",
        mean_="""\
    mean_, scale_ : ndarray of shape (`n_features_in_`,)
        Standardization.
""",
        whitening_="""\
    whitening_ : sklearn_arcsm.whitening.Whitening or None
        The whitening map from ``whiten`` (None for none): the module models
        ``z = W u`` of the rows ``u`` (standardized, then mapped by
        ``marginal_``).
""",
        linear_location_="""\
    linear_location_ : bool
        Whether the module has the linear location term (``linear_location``
        resolved; its weights are ``module_.skip``).
""",
        marginal_="""\
    marginal_ : sklearn_arcsm.marginal.MarginalGaussianization or None
        The marginal map from ``marginal_transform`` (its ``active`` columns
        are mapped); None where it maps no column.
""",
    ),
)
