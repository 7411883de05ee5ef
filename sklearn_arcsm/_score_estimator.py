"""CSMScoreEstimator: conditional scores of a distribution known by its samples."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_arcsm import objectives
from sklearn_arcsm._base import BaseCSMEstimator
from sklearn_arcsm._docstrings import attributes_section, parameters_section

__all__ = ["CSMScoreEstimator"]

# Rows per forward pass at inference: bounds memory for large inputs.
INFERENCE_CHUNK = 4096


class CSMScoreEstimator(BaseCSMEstimator):
    """Conditional score estimator: an AR-CSM trained by composite score matching.

    Given samples of a distribution that can be sampled but not evaluated (an
    implicit model, a simulator, the encoder of a VAE), this estimator learns
    its autoregressive conditional scores
    ``s_d(x) = d/dx_d log p(x_d | x_<d)``, in the order of the columns of
    ``X``. The model is the same as :class:`~sklearn_arcsm.ARCSMDensity`'s (a
    MADE context network feeding a small conditional score network, trained
    by noise-conditional CSM); this class exposes its scores rather than its
    density.

    Data are standardized internally; scores and their derivatives are
    reported in the units of ``X``. The scores are those of the data smoothed
    by the smallest noise level (``noise_levels_[-1]`` in standardized
    units), evaluated with clean inputs.

    {parameters}
    {attributes}
    See Also
    --------
    ARCSMDensity : The same model, exposed as a normalized density.
    sklearn_arcsm.objectives : The objectives as torch functions.

    Notes
    -----
    :meth:`score` is the mean of minus the per-sample CSM objective. The CSM
    divergence between the data and the model equals the CSM objective plus a
    constant that depends on the data only (MATH.md section 3), so higher
    held-out scores mean better fits and the score can select models fitted
    to the same data (for instance with :class:`~sklearn.model_selection.
    GridSearchCV`, which needs no ``y``). Its value may be of either sign and
    is not comparable across datasets.

    The conditional scores follow the column order; they differ from the
    joint score ``grad log p(x)`` except for independent features.

    The estimator models one unconditional distribution: the one its
    training samples come from. For an amortized encoder ``q(z | x)``, samples
    pooled over many ``x`` give the scores of the aggregate ``q(z)``, not of
    each ``q(z | x)``; the paper's VAE experiment fits an AR-CSM conditioned
    on ``x``, which this estimator does not provide.

    References
    ----------
    C. Meng, L. Yu, Y. Song, J. Song, S. Ermon. "Autoregressive Score
    Matching." NeurIPS 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_arcsm import CSMScoreEstimator
    >>> X = np.random.RandomState(0).normal(size=(500, 3))
    >>> est = CSMScoreEstimator(max_epochs=5, random_state=0).fit(X)
    >>> est.predict(X[:4]).shape
    (4, 3)
    >>> est.score_samples(X[:4]).shape
    (4,)
    >>> est = est.partial_fit(X + 0.1)  # one more epoch on moved samples

    Inside a torch training loop (an implicit encoder, MATH.md section 10):
    keep the estimator fitted to detached encoder samples, then add the
    entropy surrogate to the encoder's loss.

    >>> import torch
    >>> z = torch.randn(8, 3, requires_grad=True)  # stands in for encoder output
    >>> est = est.partial_fit(z.detach().numpy())
    >>> scores = est.conditional_scores_torch(z)  # differentiable in z
    >>> scores.shape
    torch.Size([8, 3])
    >>> surrogate = est.entropy_surrogate(z).mean()  # its gradient: -grad H
    >>> surrogate.backward()
    >>> bool(torch.allclose(z.grad, scores.detach() / 8))
    True
    """

    # Held-out CSM moves by more from epoch to epoch than the held-out
    # likelihood that ARCSMDensity stops on: with patience 20, a 2-D
    # Gaussian mixture (5,000 rows, benchmarks/bench_scores.py) stopped at
    # epoch 30 with R^2 0.76 against its exact scores; patience 50 trained
    # 124 epochs to 0.94, and changed the Gaussian and the banana by < 0.001.
    _default_n_iter_no_change = 50

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, groups=None):
        """Fit the conditional scores by noise-conditional composite score matching.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples of the distribution (at least 2 rows).
        y : None
            Ignored.
        groups : array-like of shape (n_samples,), default=None
            Group label of each row. With early stopping, whole groups are
            held out for validation, so that rows that are not independent
            (copies or augmentations of one sample) never sit on both sides
            of the split; None holds out rows.

        Returns
        -------
        self : CSMScoreEstimator
        """
        return self._fit(X, groups=groups)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Train one epoch on ``X``, continuing from the current model.

        The first call initializes the model and fixes the standardization
        from ``X``; later calls continue training the same network and
        optimizer state on the new samples, so the estimator can track a
        distribution that moves between calls (an encoder during VAE
        training). Every call, the first included, runs one epoch, as
        :meth:`sklearn.neural_network.MLPRegressor.partial_fit` does; call
        :meth:`fit` first for a converged start.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            New samples (at least 2 rows).
        y : None
            Ignored.

        Returns
        -------
        self : CSMScoreEstimator
        """
        return self._fit(X, continuing=True, epochs=1)

    # ------------------------------------------------------------------
    # Inference (float64 copy of the module, in chunks of rows)
    # ------------------------------------------------------------------
    def _scores_and_csm(self, X, *, with_csm: bool):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        Z = self._standardized_tensor(X)
        X = torch.as_tensor(X, dtype=torch.float64, device=Z.device)
        module = self._inference_module().requires_grad_(False)
        sigma = torch.tensor(
            self.noise_levels_[-1], dtype=torch.float64, device=Z.device
        )
        scores, values = [], []
        for start in range(0, Z.shape[0], INFERENCE_CHUNK):
            rows = slice(start, start + INFERENCE_CHUNK)
            with torch.no_grad():
                bias = module.conditioner(Z[rows])

            def score_fn(x, bias=bias):
                # Conditional scores in the units of X as a function of x (the
                # contexts fixed): autograd then gives ds_d/dx_d in X's units.
                return self._data_scores(module, bias, x, sigma)

            if with_csm:
                csm = objectives.composite_score_matching(score_fn, X[rows])
                values.append(csm.detach())
            else:
                with torch.no_grad():
                    scores.append(score_fn(X[rows]))
        parts = values if with_csm else scores
        if not parts:
            shape = (0,) if with_csm else (0, self.n_features_in_)
            return np.zeros(shape)
        return torch.cat(parts).cpu().numpy()

    def predict(self, X):
        """Conditional scores ``s_d(x) = d/dx_d log p(x_d | x_<d)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples, n_features), float64
            In the units of ``X`` (per unit of ``x_d``).
        """
        return self._scores_and_csm(X, with_csm=False)

    def score_samples(self, X):
        """Minus the per-sample CSM objective, ``-sum_d [s_d**2 / 2 + ds_d/dx_d]``.

        Computed in the units of ``X``. Higher means a better fit; averaged
        over held-out samples it estimates minus the CSM divergence up to a
        data-dependent constant.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        score : ndarray of shape (n_samples,), float64
        """
        return -self._scores_and_csm(X, with_csm=True)

    def score(self, X, y=None):
        """Mean of :meth:`score_samples`: minus the CSM objective on ``X``.

        Valid for model selection between models fitted to the same data
        (see Notes of the class). The mean keeps folds of different sizes
        comparable.

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

    # ------------------------------------------------------------------
    # Torch-level entry for use inside a training loop
    # ------------------------------------------------------------------
    def conditional_scores_torch(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable conditional scores of a torch tensor, in the units of ``X``.

        Uses the trained module itself (float32, on ``device_``; no copy), so
        it always reflects the latest :meth:`fit` or :meth:`partial_fit`. The
        result is differentiable with respect to ``x``: ``x`` is standardized
        inside the graph. The graph also reaches the module's parameters;
        wrap the call in ``torch.no_grad()`` when only values are needed.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, n_features_in_)
            Points, on any device and floating dtype (moved and cast to the
            module's, and the result cast back).

        Returns
        -------
        scores : torch.Tensor of shape (batch, n_features_in_)
            Same dtype and device as ``x``.
        """
        check_is_fitted(self)
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            raise ValueError(
                "x must be a 2-D torch.Tensor of shape (batch, n_features); got "
                f"{type(x).__name__} with shape {getattr(x, 'shape', None)}."
            )
        if x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"x has {x.shape[1]} features, but {type(self).__name__} is "
                f"expecting {self.n_features_in_} features as input."
            )
        param = next(self.module_.parameters())
        dtype, device = param.dtype, param.device
        sigma = torch.tensor(self.noise_levels_[-1], dtype=dtype, device=device)
        scores = self._data_scores(
            self.module_, None, x.to(device=device, dtype=dtype), sigma
        )
        return scores.to(device=x.device, dtype=x.dtype)

    def _data_scores(self, module, bias, x, sigma) -> torch.Tensor:
        """Conditional scores in the units of ``X`` at rows ``x`` (a tensor).

        ``bias``: the contexts' head bias (``module.conditioner``), or None
        to compute it from ``x`` inside the graph. Differentiable in ``x``:
        ``x -> y`` (the map of a bounded model onto R), ``y -> z``
        (standardization), then the 1-D chain rule back, per column.
        """
        mean = torch.as_tensor(self.mean_).to(x)
        scale = torch.as_tensor(self.scale_).to(x)
        bounds = self.bounds_
        y = x if bounds is None else bounds.forward(x)
        z = (y - mean) / scale
        if bias is None:
            scores = module(z, sigma)
        else:
            scores = module.conditional_scores(bias, z, sigma)
        scores = scores / scale
        return scores if bounds is None else bounds.scores(x, scores)

    def entropy_surrogate(self, z: torch.Tensor) -> torch.Tensor:
        """Per-sample surrogate ``sum_d stopgrad(s_d(z)) z_d`` (MATH.md section 10).

        For an encoder that samples ``z`` autoregressively by
        reparameterization in the column order of the fitted data, the
        gradient of ``entropy_surrogate(z).mean()`` with respect to the
        encoder's parameters estimates ``-grad H(q)``: add it to a minimized
        loss in place of ``-H``. Fit the estimator to detached samples of the
        same distribution first (:meth:`partial_fit` each step keeps it
        current); see the class Notes for amortized encoders ``q(z | x)``.

        Parameters
        ----------
        z : torch.Tensor of shape (batch, n_features_in_)
            Encoder samples, attached to the encoder's graph.

        Returns
        -------
        surrogate : torch.Tensor of shape (batch,)
            Its value carries no meaning; only its gradient does.
        """
        with torch.no_grad():
            scores = self.conditional_scores_torch(z)
        return objectives.entropy_surrogate(z, scores)


CSMScoreEstimator.__doc__ = CSMScoreEstimator.__doc__.replace(
    "{parameters}",
    parameters_section(
        objective="""\
    objective : {"auto", "csm", "nll", "csm+nll"}, default="auto"
        Training objective. ``"csm"``: the paper's noise-conditional composite
        score matching, which needs nothing but samples. ``"nll"``: the exact
        negative log-likelihood of the data, through the 1-D quadrature of
        ``min(4, ceil(D / 8))`` random conditionals per sample (on a
        randomly shifted 64-cell grid, checked by a 91-cell one whose lower
        log-density counts: about 316 score-network evaluations per
        conditional). ``"csm+nll"``: their
        sum. ``"auto"``: ``"csm"``. Score matching cannot see the relative
        mass of separated modes; the likelihood term can.
""",
        noise_levels="""\
    noise_levels : None, float or array-like of float, default=None
        Decreasing noise levels (in standardized units) for noise-conditional
        training. ``None`` means 4 geometric levels from 1.0 to 0.1. Under
        ``"csm"`` the estimated scores are those of the data smoothed by the
        smallest level; the likelihood term fits the data themselves.
""",
        max_epochs="""\
    max_epochs : int, default=300
        Maximum number of passes over the training data in :meth:`fit`.
""",
        early_stopping="""\
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the data and stop when its
        training objective has not improved by ``tol`` for
        ``n_iter_no_change`` epochs. The fit keeps the average of the
        weights of the best epoch and of every later epoch whose held-out
        objective is within one standard error (over the held-out rows) of
        the best, not the best epoch alone: held-out CSM is too noisy for
        its lowest epoch to be the best trained (see the user guide's
        training section). After a non-finite training loss training
        restarts from the best weights at a lower learning rate (with a
        ``ConvergenceWarning``); without early stopping it raises
        ``FloatingPointError``. In :meth:`partial_fit` (one epoch per call)
        the held-out part only feeds ``validation_loss_curve_``.
""",
    ),
)
CSMScoreEstimator.__doc__ = CSMScoreEstimator.__doc__.replace(
    "{attributes}",
    attributes_section(
        validation_loss_curve_="""\
    validation_loss_curve_ : list of float or None
        Validation loss per epoch (None without early stopping).
""",
        n_iter_="""\
    n_iter_ : int
        Number of epochs run (in total, across partial fits and warm starts).
""",
        mean_="""\
    mean_, scale_ : ndarray of shape (`n_features_in_`,)
        Standardization, fixed by the first fit.
""",
    ),
)
