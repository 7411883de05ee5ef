"""Prototype of the proposed objective, as an ``ARCSMDensity`` subclass.

``ARCSMDensityNLL`` trains by noise-conditional CSM **plus** an unbiased
one-dimension estimate of the exact negative log-likelihood
(:func:`random_dimension_nll`), and early-stops on that estimate on the
validation rows (held-out log-likelihood instead of held-out CSM). It is
the package's estimator with only the skorch net's ``infer`` changed, so
its numbers are what the proposed patch would give.
"""

from __future__ import annotations

from unittest import mock

import torch

from sklearn_arcsm import ARCSMDensity, _base, quadrature
from sklearn_arcsm._skorch import CSMNet

__all__ = ["ARCSMDensityNLL", "random_dimension_nll"]

NLL_WEIGHT = 1.0
NLL_CELLS = 64


def random_dimension_nll(model, x, sigma, n_cells, generator=None):
    """Unbiased estimate of ``-log p(x)``: ``-D log p(x_d | x_<d)``, random ``d``.

    The quadrature grid of each row is shifted by a random fraction of a
    cell and spans one extra cell, so it still covers the module's window;
    outside the window the module's score is exactly the Gaussian tail the
    quadrature assumes, so the shifted grid is as exact as the fixed one,
    and spikes between grid points cannot be exploited.
    """
    batch, dim = x.shape
    rows = torch.arange(batch, device=x.device)
    d = torch.randint(0, dim, (batch,), generator=generator, device=x.device)
    bias = model.conditioner(x)[rows, d]  # (B, K)
    lo, hi = model.lower[d].to(x.dtype), model.upper[d].to(x.dtype)
    h = (hi - lo) / n_cells
    shift = torch.rand(batch, generator=generator, dtype=x.dtype, device=x.device)
    a, b = lo - shift * h, hi + (1 - shift) * h
    grid = quadrature.grid_points(a, b, n_cells + 1)  # (B, 2n+3)
    scores = model.conditional_scores(
        bias[:, None, :], grid, sigma, lower=lo[:, None], upper=hi[:, None]
    )
    log_p = quadrature.log_density(x[rows, d], scores, a, b, model.tail_scale)
    return -dim * log_p


class NLLCSMNet(CSMNet):
    """CSMNet whose training loss adds the likelihood term.

    Validation returns the likelihood estimate alone (its draws re-seeded
    every epoch), so early stopping monitors held-out log-likelihood.
    """

    def infer(self, x, **fit_params):
        x = x.to(self.device)
        training = self.module_.training
        generator = self.train_generator_ if training else self.valid_generator_
        sigma = self.noise_levels[-1].to(device=x.device, dtype=x.dtype)
        nll = random_dimension_nll(self.module_, x, sigma, NLL_CELLS, generator)
        if not training:
            return nll
        return super().infer(x, **fit_params) + NLL_WEIGHT * nll


class ARCSMDensityNLL(ARCSMDensity):
    """ARCSMDensity trained by CSM + likelihood, early-stopped on likelihood."""

    def _build_net(self, *args, **kwargs):
        with mock.patch.object(_base, "CSMNet", NLLCSMNet):
            return super()._build_net(*args, **kwargs)
