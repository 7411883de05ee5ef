"""Spline score head: each conditional score is a cubic spline of ``x_d``.

``s_d(w) = sum_k a_dk B_k(w) / sigma`` where ``B_k`` are the uniform cubic
B-splines on ``[-1, 1]`` (``w`` is the conditional's window mapped onto
``[-1, 1]``, so every dimension's window gets the same resolution) and the
coefficients ``a_dk = A_k c_d + b_dk + log(sigma) (A'_k c_d + b'_dk)`` are
linear in the context ``c_d``. Compared with :class:`ConditionalScoreHead`
(an MLP of Fourier features of ``x_d``), a score at a quadrature node costs
a dot product with the four B-splines that are nonzero there instead of a
forward pass through a hidden layer, and the energy (the score's integral)
is a closed-form quartic on every knot interval, which
:class:`~sklearn_arcsm.knot_quadrature.KnotRule` integrates without
evaluating the head at its nodes at all (:meth:`coefficients`; the generic
adaptive rule, which cannot see the knots, needs 548 to 769 head
evaluations per conditional here, since the spline's third derivative jumps
at the knots). The score is free-form between the
knots (any smooth 1-D log-density up to the knots' resolution), twice
continuously differentiable as composite score matching needs, and its
derivative in ``x_d`` is exact.

The interface is the part of the heads' that :class:`~sklearn_arcsm.nn.ARCSM`
uses for a window-relative head (``context_bias``, ``input_features``,
``grid_scores``, ``forward``); ``window_relative = True`` tells the module
to hand it window-relative points ``w`` instead of window coordinates, and
to call ``forward`` wherever autograd is on.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DEFAULT_N_KNOTS", "SplineScoreHead"]

# Knots of the spline head unless told otherwise (the estimators' n_knots
# default too): fewer knots give smoother conditionals, which the affine
# layer zooms to where the mass is; see
# benchmarks/quality/results/spline_knots/README.md for the sweep.
DEFAULT_N_KNOTS = 24


class SplineScoreHead(nn.Module):
    """Cubic-spline conditional score ``(context bias, w, sigma) -> s_d``.

    Parameters
    ----------
    n_features : int
        Number of dimensions ``D``; each gets learned coefficient offsets.
    context_size : int
        Width ``H`` of the context vectors fed in by the context network.
    n_knots : int, default=24
        Knots on ``[-1, 1]``, ends included (``n_knots - 1`` equal
        intervals); there are ``n_knots + 2`` B-splines, as in
        scikit-learn's ``SplineTransformer`` with ``degree=3``.
    """

    # ARCSM maps window points onto [-1, 1] before calling this head.
    window_relative = True

    def __init__(
        self, n_features: int, context_size: int, n_knots: int = DEFAULT_N_KNOTS
    ) -> None:
        super().__init__()
        if n_knots < 2:
            raise ValueError(f"a spline head needs n_knots >= 2; got {n_knots}.")
        self.n_knots = int(n_knots)
        self.n_basis = self.n_knots + 2
        width = 2 * self.n_basis  # coefficients at log(sigma) = 0, and slopes
        self.context_layer = nn.Linear(context_size, width, bias=False)
        self.dimension_bias = nn.Parameter(torch.zeros(n_features, width))
        with torch.no_grad():
            # Start near s = 0 (a flat density on the window), as the MLP
            # head does: training grows structure instead of undoing it.
            self.context_layer.weight.mul_(0.1)

    def context_bias(self, context: torch.Tensor, d: int | None = None) -> torch.Tensor:
        """Map contexts ``(batch, D, H)`` to coefficients ``(batch, D, 2 n_basis)``.

        With ``d``: the contexts ``(batch, H)`` of dimension ``d`` alone, to
        ``(batch, 2 n_basis)``.
        """
        offset = self.dimension_bias if d is None else self.dimension_bias[d]
        return self.context_layer(context) + offset

    def coefficients(self, bias: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The score's spline coefficients at noise level ``sigma``: ``(..., K)``.

        ``s(w) = sum_k coef_k B_k(w)``, with ``bias`` ``(..., 2 n_basis)``
        from :meth:`context_bias` (the two blocks folded at ``log sigma``
        and divided by ``sigma``); what :class:`~sklearn_arcsm.knot_quadrature.KnotRule`
        integrates in closed form.
        """
        sigma = torch.as_tensor(sigma, dtype=bias.dtype, device=bias.device)
        k = self.n_basis
        return torch.addcmul(bias[..., :k], bias[..., k:], torch.log(sigma)) / sigma

    def context_coefficients(
        self, context: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """``coefficients(context_bias(context), sigma)`` for contexts ``(..., D, H)``.

        The same coefficients ``(..., D, K)`` with ``sigma`` folded into the
        weights first (``(K, H)`` and ``(D, K)``, not the ``(..., D, 2K)``
        biases): half the matrix product, and no per-conditional fold. So
        ``sigma`` is one noise level (a scalar); for one per conditional use
        :meth:`coefficients`.
        """
        k = self.n_basis
        weight, offset = self.context_layer.weight, self.dimension_bias
        sigma = torch.as_tensor(sigma, dtype=weight.dtype, device=weight.device)
        log_sigma = torch.log(sigma)
        weight = torch.addcmul(weight[:k], weight[k:], log_sigma) / sigma
        offset = torch.addcmul(offset[:, :k], offset[:, k:], log_sigma) / sigma
        return torch.matmul(context, weight.T) + offset

    def _local(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The four nonzero B-splines at ``w`` and their indices, ``w.shape + (4,)``."""
        intervals = self.n_knots - 1
        t = (w.clamp(-1.0, 1.0) + 1.0) * (0.5 * intervals)
        # The last knot belongs to the last interval.
        cell = t.detach().floor().clamp(max=intervals - 1)
        f = t - cell
        g = 1.0 - f
        f2 = f * f
        f3 = f2 * f
        weights = torch.stack(
            [
                g * g * g / 6.0,
                (4.0 - 6.0 * f2 + 3.0 * f3) / 6.0,
                (1.0 + 3.0 * f + 3.0 * f2 - 3.0 * f3) / 6.0,
                f3 / 6.0,
            ],
            dim=-1,
        )
        index = cell.long()[..., None] + torch.arange(4, device=w.device)
        return weights, index

    def basis(self, w: torch.Tensor) -> torch.Tensor:
        """Cubic B-splines at ``w`` (clamped to ``[-1, 1]``): ``w.shape + (n_basis,)``.

        Differentiable in ``w`` (twice continuously); four entries per point
        are nonzero.
        """
        weights, index = self._local(w)
        out = w.new_zeros(w.shape + (self.n_basis,))
        return out.scatter(-1, index, weights)

    def input_features(self, w: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``[B(w), log(sigma) B(w)]``: shape ``w.shape + (2 n_basis,)``."""
        sigma = torch.as_tensor(sigma, dtype=w.dtype, device=w.device)
        phi = self.basis(w)
        log_sigma = torch.log(sigma).expand_as(w)[..., None]
        return torch.cat([phi, phi * log_sigma], dim=-1)

    @torch.no_grad()
    def grid_scores(
        self,
        features: torch.Tensor,
        grids: torch.Tensor,
        bias: torch.Tensor,
        sigma: torch.Tensor,
    ) -> torch.Tensor:
        """Scores of many conditionals on shared node grids, without autograd.

        One matrix product per grid: the conditionals of grid ``g`` times
        its B-splines (``sigma`` is one scalar here, so each conditional's
        two coefficient blocks fold into one first, by
        :meth:`coefficients`). Shapes as in :meth:`ConditionalScoreHead.grid_scores
        <sklearn_arcsm.nn.score_head.ConditionalScoreHead.grid_scores>`:
        ``features`` (n_grids, G, F) from :meth:`input_features`, ``grids``
        (n,), ``bias`` (n, F); returns (n, G).
        """
        n = grids.shape[0]
        out = features.new_empty(n, features.shape[1])
        if n == 0:
            return out
        # In float64: a float32 matrix product's last bit depends on how many
        # rows share the call (one row takes a matrix-vector kernel), and a
        # conditional's density must not depend on its batch. The products
        # are n x K x G multiply-adds, small beside the quadrature's work.
        coef = self.coefficients(bias.double(), sigma)
        phi = features[..., : self.n_basis].double()
        if phi.shape[0] == 1:
            out.copy_(coef @ phi[0].T)
        else:
            order = torch.argsort(grids, stable=True)
            unique, counts = torch.unique_consecutive(grids[order], return_counts=True)
            start = 0
            for g, count in zip(unique.tolist(), counts.tolist(), strict=True):
                rows = order[start : start + count]
                out[rows] = (coef[rows] @ phi[g].T).to(out.dtype)
                start += count
        return out

    def forward(
        self, bias: torch.Tensor, w: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """Scores at window-relative points ``w`` (see the module docstring).

        Parameters
        ----------
        bias : torch.Tensor of shape (..., 2 n_basis)
            Coefficients from :meth:`context_bias`, broadcastable against
            ``w[..., None]``.
        w : torch.Tensor of shape (...)
            Points of ``[-1, 1]`` (clamped).
        sigma : torch.Tensor broadcastable to ``w``
            Noise level of each point (positive).

        Returns
        -------
        scores : torch.Tensor of the broadcast shape of ``bias[..., 0]`` and ``w``
        """
        # Only the four B-splines that are nonzero at a point are gathered:
        # no (..., n_basis) tensor is built.
        sigma = torch.as_tensor(sigma, dtype=w.dtype, device=w.device)
        weights, index = self._local(w)
        shape = torch.broadcast_shapes(bias.shape[:-1], w.shape)
        k = self.n_basis
        coef = bias.expand(*shape, 2 * k)
        index = index.expand(*shape, 4)
        weights = weights.expand(*shape, 4)
        level = (torch.gather(coef[..., :k], -1, index) * weights).sum(-1)
        slope = (torch.gather(coef[..., k:], -1, index) * weights).sum(-1)
        return (level + torch.log(sigma) * slope) / sigma
