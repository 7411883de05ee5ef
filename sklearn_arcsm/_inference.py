"""The fitted side of the estimators: inference modules, log-densities, samplers.

``FittedModelMixin`` holds what a fitted AR-CSM does after ``fit``: the
cached inference copies of the module, chunked exact log-densities and their
gradients, sampling, and the restoration methods built on them (the torch
math is in :mod:`sklearn_arcsm.sampling` and
:mod:`sklearn_arcsm.restoration`). It reads the fitted attributes that
:class:`~sklearn_arcsm._base.BaseCSMEstimator` sets (``module_``,
``device_``, ``mean_``, ``scale_``, ``noise_levels_``, ``quadrature_``,
``objective_``).
"""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_arcsm import quadrature, restoration
from sklearn_arcsm.knot_quadrature import KnotRule
from sklearn_arcsm.nn import ARCSM
from sklearn_arcsm.sampling import (
    annealed_langevin_sample,
    autoregressive_fill,
    inverse_cdf_sample,
)

# Conditionals (rows x D) per inference chunk. The score head works through
# its own cache-sized blocks (ConditionalScoreHead.grid_scores), so the chunk
# only sets how many conditionals share each float64 step of the quadrature
# (energies, normalizers, convergence tests): small chunks pay torch's
# per-operation overhead once per handful of rows. Measured on 2,000 rows of
# the inference benchmark's fitted models (2 threads): at D = 16, 2,032
# conditionals per chunk took 1.67 s and 8,128 took 1.42 s; at D = 64, 1,984
# took 6.25 s and 8,128 took 4.59 s. (It was an element budget for the head's
# (rows, D, nodes, width) tensor when the head still built one.) At 1,025
# nodes, a chunk's float64 work tensors stay under about 70 MiB each.
QUADRATURE_BUDGET = 2**13
# Conditionals per chunk of the log-density's gradient: the backward pass
# keeps every refinement level of a chunk alive, the head's activations
# included (a few hundred MiB at most at this size), and per-call overhead
# dominates much smaller chunks.
GRADIENT_BUDGET = 2**12
# MALA's proposals follow the gradient of the density under this fixed rule
# (129 nodes: 6 times cheaper than the adaptive rule's gradient, within 2%
# of it on fitted digits); the acceptance step uses the fitted rule, so the
# chain targets the fitted density exactly whatever the proposal's error.
MALA_PROPOSAL_RULE = quadrature.chebyshev(16, 8)
# Initial MALA step, in standardized units squared; adapted per row.
MALA_INITIAL_STEP = 1e-2


def _is_integer_at_least(value, minimum: int) -> bool:
    """An integer (not a bool) of at least ``minimum``."""
    return (
        isinstance(value, Integral) and not isinstance(value, bool) and value >= minimum
    )


def check_inside(bounds, X: np.ndarray) -> None:
    """Refuse rows outside the open box of ``bounds``, naming the first bad entry."""
    if bounds is None:
        return
    low, high = bounds.low, bounds.high  # -inf / inf where a side is free
    bad = ~((X > low) & (X < high))
    if bad.any():
        row, col = (int(v[0]) for v in np.nonzero(bad))
        raise ValueError(
            f"X[{row}, {col}] = {float(X[row, col])!r} is not inside bounds "
            f"({low[col]}, {high[col]}) of column {col}: a bounded model "
            "gives zero density on and beyond the bounds. Widen the bounds, "
            "or dequantize values that sit on them (for pixels 0..255, add "
            "uniform noise in [0, 1) and use bounds=(0, 256))."
        )


def _mala_rows(log_density, grad, X, missing, chain, n_steps, generator):
    """``X`` with the rows marked by ``chain`` moved by MALA (in place).

    The masked entries of those rows take ``n_steps`` MALA steps on
    ``log_density`` (proposals along ``grad``, see
    :func:`sklearn_arcsm.restoration.mala`); the other rows are kept.
    """
    if chain.any():
        rows = torch.nonzero(chain).flatten()
        moved, _ = restoration.mala(
            log_density,
            X[rows],
            missing[rows],
            n_steps,
            grad=grad,
            step_size=MALA_INITIAL_STEP,
            generator=generator,
        )
        X[rows] = moved
    return X


class FittedModelMixin:
    """Inference on a fitted AR-CSM (mixed into the estimators' base)."""

    def _inference_modules(self) -> tuple[ARCSM, torch.nn.Module]:
        """The fitted module for inference: a float64 copy and a float32 head.

        The context network, the affine layer and all quadrature arithmetic
        run in float64, so that results do not depend on how rows are
        batched (scikit-learn checks this at 1e-7); the score head, which
        holds nearly all of the work, runs in float32 (row by row the same
        in any batch; 7e-6 nats per row at most on fitted digits models).
        Built when the model is committed or loaded, not pickled.
        """
        cache = getattr(self, "_inference_cache", None)
        if cache is None or cache[0] != self._module_key():
            # The module was replaced or changed in place since it was
            # committed: build afresh (inference must not change __dict__).
            cache = self._build_inference_cache(store=False)
        return cache[1], cache[2]

    def _module_key(self) -> tuple:
        # Every in-place change of a tensor bumps its version counter.
        return (id(self.module_),) + tuple(
            t._version for t in self.module_.state_dict(keep_vars=True).values()
        )

    def _build_inference_cache(self, store: bool = True):
        module = copy.deepcopy(self.module_).to(
            device=self.device_, dtype=torch.float64
        )
        module.eval().requires_grad_(False)
        head = copy.deepcopy(self.module_.head).to(
            device=self.device_, dtype=torch.float32
        )
        head.eval().requires_grad_(False)
        cache = (self._module_key(), module, head)
        if store:
            self._inference_cache = cache
        return cache

    def _inference_module(self) -> ARCSM:
        """A float64 copy of the trained module, in eval mode (cached)."""
        return self._inference_modules()[0]

    def _standardize(self, X) -> torch.Tensor:
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._standardized_tensor(X)

    def _standardized_tensor(self, X: np.ndarray) -> torch.Tensor:
        """Validated rows ``X`` in the module's coordinates, float64, on the device.

        Standardized units, mapped by the marginal map of a model fitted with
        one (``marginal_``, :mod:`sklearn_arcsm.marginal`), then whitened for
        a model fitted with ``whiten`` (``whitening_``,
        :mod:`sklearn_arcsm.whitening`).
        For a bounded model (``bounds_``), ``X`` must be inside the box; it
        is mapped onto the real line first (:mod:`sklearn_arcsm.bounds`).
        """
        return self._model_coordinates(self._standardized_rows(X))

    def _model_coordinates(self, S: torch.Tensor) -> torch.Tensor:
        """Standardized rows ``S`` mapped by ``marginal_``, then ``whitening_``."""
        marginal = self._marginal()
        if marginal is not None:
            S = marginal.forward(S)
        whitening = self._whitening()
        return S if whitening is None else whitening.forward(S)

    def _standardized_rows(self, X: np.ndarray) -> torch.Tensor:
        """Validated rows ``X`` standardized (after the map of ``bounds_``), float64."""
        bounds = self.bounds_
        check_inside(bounds, X)
        X = torch.as_tensor(X, dtype=torch.float64, device=self.device_)
        if bounds is not None:
            X = bounds.forward(X)
        mean = torch.as_tensor(self.mean_, dtype=torch.float64, device=self.device_)
        scale = torch.as_tensor(self.scale_, dtype=torch.float64, device=self.device_)
        return (X - mean) / scale

    def _whitening(self):
        """The fitted whitening map, or None (no whitening, or not offered)."""
        return getattr(self, "whitening_", None)

    def _marginal(self):
        """The fitted marginal map, or None (none fitted, or not offered)."""
        return getattr(self, "marginal_", None)

    def _inside(self, X: np.ndarray) -> np.ndarray:
        """Rows where the density is positive (all, for an unbounded model)."""
        if self.bounds_ is None:
            return np.ones(len(X), dtype=bool)
        return self.bounds_.inside(torch.as_tensor(X, dtype=torch.float64)).numpy()

    def _from_standardized(self, Z: torch.Tensor) -> np.ndarray:
        """Inverse of :meth:`_standardized_tensor`: rows in the units of ``X``."""
        Z = Z.to(torch.float64)
        whitening = self._whitening()
        if whitening is not None:
            Z = whitening.inverse_map(Z)
        marginal = self._marginal()
        if marginal is not None:
            Z = marginal.inverse(Z)
        Y = Z * torch.as_tensor(self.scale_).to(Z) + torch.as_tensor(self.mean_).to(Z)
        if self.bounds_ is not None:
            Y = self.bounds_.inverse(Y)
        return Y.cpu().numpy()

    def _log_jacobian(self, X: np.ndarray) -> np.ndarray:
        """``log |dz/dx|`` per row, from ``X`` to the module's coordinates, ``(n,)``.

        ``log p(x) = log p_Z(z) + log |dz/dx|``: minus the log-scales, plus
        the whitening's ``log |det W|`` if any, plus the marginal map's
        log-derivatives (``marginal_``, :mod:`sklearn_arcsm.marginal`) if
        any, plus, for a bounded model, the log-derivative of the map onto R.
        """
        log_det = np.full(len(X), -float(np.sum(np.log(self.scale_))))
        whitening = self._whitening()
        if whitening is not None:
            log_det += whitening.log_det
        marginal = self._marginal()
        if marginal is not None:
            S = self._standardized_rows(X)
            log_det += marginal.log_derivative(S).sum(dim=1).cpu().numpy()
        if self.bounds_ is not None:
            X = torch.as_tensor(X, dtype=torch.float64)
            log_det += self.bounds_.log_derivative(X).sum(dim=1).numpy()
        return log_det

    def _rows_per_chunk(self, budget: int | None = None) -> int:
        """Rows per chunk: ``budget`` conditionals (``QUADRATURE_BUDGET``)."""
        budget = QUADRATURE_BUDGET if budget is None else budget
        return max(1, budget // self.n_features_in_)

    def _log_density_standardized(self, Z: torch.Tensor) -> np.ndarray:
        """Per-sample log-density in standardized units, float64, chunked."""
        return self._log_density_tensor(Z).cpu().numpy()

    def _log_density_tensor(self, Z: torch.Tensor) -> torch.Tensor:
        """:meth:`_log_density_standardized` on ``Z``'s device, as a tensor."""
        module, head = self._inference_modules()
        sigma = self._final_sigma(Z)
        chunk = self._rows_per_chunk()
        with torch.no_grad():
            parts = [
                module.log_prob(Z[i : i + chunk], sigma, self.quadrature_, head=head)
                for i in range(0, Z.shape[0], chunk)
            ]
        return torch.cat(parts) if parts else Z.new_zeros(0)

    def _log_density_gradient_standardized(
        self, Z: torch.Tensor, rule=None
    ) -> torch.Tensor:
        """Gradient of the standardized log-density, ``(n, D)``, chunked.

        ``rule`` defaults to the fitted ``quadrature_``.
        """
        module, head = self._inference_modules()
        sigma = self._final_sigma(Z)
        rule = self.quadrature_ if rule is None else rule
        chunk = self._rows_per_chunk(GRADIENT_BUDGET)
        parts = [
            restoration.log_density_gradient(
                module, Z[i : i + chunk], sigma, rule, head
            )[1]
            for i in range(0, Z.shape[0], chunk)
        ]
        return torch.cat(parts) if parts else torch.zeros_like(Z)

    def _proposal_rule(self):
        """The rule MALA's proposals differentiate (see ``MALA_PROPOSAL_RULE``)."""
        if isinstance(self.quadrature_, KnotRule):
            return self.quadrature_  # exact and cheaper than any fixed grid
        return MALA_PROPOSAL_RULE

    def _final_sigma(self, Z: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.noise_levels_[-1], dtype=Z.dtype, device=Z.device)

    def _inpaint_standardized(
        self, Z, missing, *, method, n_steps, generator
    ) -> torch.Tensor:
        """Draws of the ``missing`` entries of ``Z`` given the others.

        Exact autoregressive draws for rows whose missing entries all come
        after their observed ones (unless ``method="mala"``); MALA on the
        exact log-density, started from those draws, for the other rows.
        """
        module, head = self._inference_modules()
        sigma = self._final_sigma(Z)
        filled = autoregressive_fill(
            module, Z, missing, sigma, self.quadrature_, generator, head
        )
        chain = missing.any(dim=1)
        if method == "auto":
            chain &= ~restoration.missing_after_observed(missing)

        def grad(z):
            return self._log_density_gradient_standardized(z, self._proposal_rule())

        return _mala_rows(
            self._log_density_tensor, grad, filled, missing, chain, n_steps, generator
        )

    def _inpaint_whitened(
        self, Z, missing, *, method, n_steps, generator
    ) -> torch.Tensor:
        """:meth:`_inpaint_standardized` for a whitened model (``whitening_``).

        The mask lives in standardized coordinates ``s = W^(-1) z``. Each
        row starts from the whitening Gaussian's conditional draw. With the
        triangular (Cholesky) map, a row whose masked entries all come after
        its observed ones keeps its observed prefix in ``z`` too, so it gets
        exact autoregressive draws (unless ``method="mala"``); every other
        row, and every row of a PCA-whitened model (which mixes all columns
        into every component), is sampled by MALA on the exact log-density
        in standardized coordinates.
        """
        whitening = self._whitening()
        S = whitening.conditional_draw(whitening.inverse_map(Z), missing, generator)
        chain = missing.any(dim=1)
        if method == "auto" and whitening.triangular:
            exact = chain & restoration.missing_after_observed(missing)
            if exact.any():
                module, head = self._inference_modules()
                filled = autoregressive_fill(
                    module,
                    whitening.forward(S[exact]),
                    missing[exact],
                    self._final_sigma(Z),
                    self.quadrature_,
                    generator,
                    head,
                )
                S[exact] = whitening.inverse_map(filled)
            chain &= ~exact

        def log_density(s):
            return self._log_density_tensor(whitening.forward(s))

        def grad(s):
            z = whitening.forward(s)
            return whitening.pullback(
                self._log_density_gradient_standardized(z, self._proposal_rule())
            )

        S = _mala_rows(log_density, grad, S, missing, chain, n_steps, generator)
        return whitening.forward(S)

    def sample(
        self,
        n_samples=1,
        random_state=None,
        *,
        method="inverse_cdf",
        n_steps=200,
        step_size=None,
    ):
        """Draw samples from the fitted model.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples.
        random_state : int, RandomState instance or None, default=None
            Seeds the draw.
        method : {"inverse_cdf", "langevin"}, default="inverse_cdf"
            ``"inverse_cdf"``: exact draws from each 1-D conditional by
            inverting its CDF on the quadrature grid. ``"langevin"``: the
            paper's annealed autoregressive Langevin dynamics; it needs
            every noise level trained, so a model fitted with
            ``objective="nll"`` (the ARCSMDensity default) refuses it.
        n_steps : int, default=200
            Langevin steps per noise level (``method="langevin"`` only).
        step_size : float, default=None
            Langevin step at the smallest level; None means
            ``0.5 * noise_levels_[-1] ** 2`` (see
            :func:`sklearn_arcsm.sampling.annealed_langevin_sample` for the
            measurement behind both defaults).

        Returns
        -------
        X : ndarray of shape (n_samples, `n_features_in_`)
            In the units of the training data.
        """
        check_is_fitted(self)
        if not _is_integer_at_least(n_samples, 0):
            raise ValueError(
                f"n_samples must be a non-negative integer; got {n_samples!r}."
            )
        if method not in ("inverse_cdf", "langevin"):
            raise ValueError(
                f"method must be 'inverse_cdf' or 'langevin'; got {method!r}."
            )
        if method == "langevin" and self.objective_ == "nll":
            raise ValueError(
                "method='langevin' anneals through the noise levels, which only "
                "CSM trains; this model was fitted with objective_='nll' (exact "
                "maximum likelihood, the ARCSMDensity default). Use "
                "method='inverse_cdf' (exact draws from the fitted density), or "
                "fit with objective='csm+nll' or 'csm' to sample by Langevin."
            )
        if method == "langevin":
            if not _is_integer_at_least(n_steps, 1):
                raise ValueError(
                    f"n_steps must be a positive integer; got {n_steps!r} "
                    "(0 steps would return the starting draws unchanged)."
                )
            if step_size is not None and not (
                isinstance(step_size, Real) and np.isfinite(step_size) and step_size > 0
            ):
                raise ValueError(
                    f"step_size must be a positive number or None; got {step_size!r}."
                )
        if n_samples == 0:
            return np.zeros((0, self.n_features_in_))
        seed = int(check_random_state(random_state).randint(0, 2**31 - 1))
        generator = torch.Generator(device=self.device_).manual_seed(seed)
        module, head = self._inference_modules()
        levels = torch.as_tensor(
            self.noise_levels_, dtype=torch.float64, device=self.device_
        )
        if method == "inverse_cdf":
            Z = inverse_cdf_sample(
                module, n_samples, levels[-1], self.quadrature_, generator, head
            )
        else:
            Z = annealed_langevin_sample(
                module,
                n_samples,
                levels,
                n_steps=n_steps,
                step_size=step_size,
                generator=generator,
            )
        return self._from_standardized(Z)
