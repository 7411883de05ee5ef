"""Knot-aligned quadrature for the spline score head: exact energies, Z per knot.

With ``score_head="spline"`` a conditional score is a cubic spline on the
window (:class:`~sklearn_arcsm.nn.SplineScoreHead`): on knot interval ``j``,
at local position ``t`` in ``[0, 1]``, it is ``s(t) = sum_i c_{j+i} b_i(t)``
with the four cubic B-spline pieces ``b_i``. Its energy is therefore known
in closed form, a quartic on each interval::

    E(t) = E_j + h sum_i c_{j+i} beta_i(t),    beta_i(t) = int_0^t b_i

(``h`` the interval's width), and ``E_{j+1} - E_j = h (c_j + 11 c_{j+1} +
11 c_{j+2} + c_{j+3}) / 24``. Only ``Z = int exp(E)`` needs numerics: on
each interval ``exp(E)`` is an entire function, which Gauss-Legendre
integrates to machine precision with a handful of nodes, and the number of
nodes each conditional needs follows from a bound on ``|dE/dt|``. Compared
with the generic adaptive rule (:mod:`sklearn_arcsm.adaptive`), which cannot
see the knots and refines past the spline's jumps in the third derivative
(548 to 769 head evaluations per conditional), this needs no head
evaluation at a node at all: a node's energy is four multiply-adds from the
coefficients.

How many nodes: the B-splines are nonnegative and sum to one, so on every
interval ``|dE/dt| <= L = h max_k |c_k|`` (:meth:`KnotRule.slope_bounds`).
Each conditional gets the smallest ``m`` of :attr:`KnotRule.levels` whose
slope bound covers its ``L``: 4 nodes up to ``L = 0.5``, 8 up to 8, 16 up
to 32, 32 up to 128, 64 beyond (a density that changes by ``e**128`` within
one knot interval; the spline head's full zoom-out range lets fits reach
``L`` of 55, and 32 nodes erred by 3e-7 nats at ``L = 256`` and 1.5e-3 at
512, where 64 nodes stay within 2e-12 of 128). The bounds are calibrated
on the worst case, coefficients that alternate in sign or are independent
uniform draws (the spline then wiggles at the knot spacing, which fitted
models do not): the largest error of
``log Z`` against 64 nodes per interval, over 20,000 such conditionals each,
was 3e-7 nats for 4 nodes at ``L = 0.5``, 3e-8 for 8 nodes at ``L = 8`` and
2e-11 for 16 nodes at ``L = 32``; on a fitted 16-D model (``L`` up to 0.54)
4 nodes were within 2.3e-9 nats of 32 (``tests/test_knot_quadrature.py``
re-checks the worst case).

The tails beyond the window are the Gaussian tails of
:mod:`sklearn_arcsm.quadrature` (closed form). Sampling draws the knot
interval (or tail) with its exact mass (the Gauss-Legendre integrals of the
normalizer), then inverts, within that interval only, the CDF of the
log-linear interpolation of the exact energy on equal sub-cells (at least
:data:`~sklearn_arcsm.quadrature.SAMPLING_CELLS` across the window, as the
panel rules use): the CDF is exact at every knot, and a draw builds one
interval's sub-grid instead of the whole window's.

Every function takes the spline coefficients ``coef`` of shape ``(N, K)``
(``K`` = number of B-splines, from
:meth:`~sklearn_arcsm.nn.SplineScoreHead.coefficients`), already divided by
the noise level, so that they are scores in window coordinates, and the
windows ``lower, upper`` of shape ``(N,)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from sklearn_arcsm import quadrature

__all__ = ["KnotRule"]

# Nodes per knot interval, and the largest slope bound L (energy change per
# interval) each serves, from the worst-case calibration in the module
# docstring; the last level takes every steeper conditional.
_NODES = (4, 8, 16, 32, 64)
_MAX_SLOPE = (0.5, 8.0, 32.0, 128.0)
# Levels up to this many nodes (slope bounds up to 32) shift their node
# energies by the slope bound instead of the true maximum (see
# _node_exponentials).
_BOUNDED_SHIFT_NODES = 16


@dataclass(frozen=True)
class KnotRule:
    """Gauss-Legendre on every knot interval of a spline score head.

    The quadrature rule of a model with ``score_head="spline"`` and
    ``n_quadrature="auto"`` (see the module docstring). It has no
    parameters: the resolution follows from the spline's knots and, per
    conditional, from a bound on the energy's slope.
    """

    @property
    def levels(self) -> tuple[int, ...]:
        """Gauss-Legendre nodes per knot interval, coarsest first."""
        return _NODES

    def knot_energies(self, coef: torch.Tensor, lower, upper) -> torch.Tensor:
        """Energy at the knots, ``E(lower) = 0``: shape ``(N, K - 2)``."""
        h = _width(coef, lower, upper)
        steps = (
            coef[:, :-3] + 11.0 * (coef[:, 1:-2] + coef[:, 2:-1]) + coef[:, 3:]
        ) / 24.0
        energy = torch.cumsum(h[:, None] * steps, dim=-1)
        return torch.cat([torch.zeros_like(energy[:, :1]), energy], dim=-1)

    @staticmethod
    def slope_bounds(coef: torch.Tensor, lower, upper) -> torch.Tensor:
        """``max_j L_j``: a bound on ``|dE/dt|`` on every knot interval, ``(N,)``.

        The B-splines are nonnegative and sum to one, so on interval ``j``
        ``|s| <= max_i |c_{j+i}|``; the largest over all intervals is the
        largest ``|c_k|``, times the interval width.
        """
        h = _width(coef, lower, upper).detach()
        return h * coef.detach().abs().amax(dim=-1)

    def node_counts(self, coef: torch.Tensor, lower, upper) -> torch.Tensor:
        """Gauss-Legendre nodes per interval each conditional gets: ``(N,)``."""
        return _node_counts(self.slope_bounds(coef, lower, upper))

    def log_normalizer(
        self,
        coef: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
        tail_scale: float,
        energy: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``log Z = log int exp(E)`` over the real line: shape ``(N,)``.

        ``energy``: :meth:`knot_energies`, when already computed.
        Differentiable in ``coef``.
        """
        if energy is None:
            energy = self.knot_energies(coef, lower, upper)
        inside = self._by_level(_log_inside_mass, coef, energy, lower, upper)
        slopes = self.tail_slopes(coef)
        low, high = quadrature._log_tail_masses(energy, slopes, tail_scale)
        return torch.logsumexp(torch.stack([inside, low, high]), dim=0)

    def _by_level(self, function, coef, energy, lower, upper):
        """``function(coef, energy, h, m, slope)`` with each conditional's ``m`` nodes.

        Conditionals are grouped by their number of nodes per interval
        (:meth:`node_counts`); the results come back in the input's order.
        """
        h = _width(coef, lower, upper)
        slope = self.slope_bounds(coef, lower, upper)
        counts = _node_counts(slope)
        first = int(counts[0]) if len(counts) else _NODES[0]
        if bool((counts == first).all()):  # the common case: one level
            return function(coef, energy, h, first, slope)
        parts, order = [], []
        for m in torch.unique(counts).tolist():
            rows = torch.nonzero(counts == m).flatten()
            parts.append(function(coef[rows], energy[rows], h[rows], m, slope[rows]))
            order.append(rows)
        return torch.cat(parts)[torch.argsort(torch.cat(order))]

    def _segment_masses(self, coef, energy, slopes, lower, upper, tail_scale):
        """Normalized masses of (low tail, intervals..., high tail): ``(N, I + 2)``.

        Each interval's mass is its Gauss-Legendre integral, as in
        :meth:`log_normalizer`.
        """
        inner = self._by_level(_log_interval_masses, coef, energy, lower, upper)
        low, high = quadrature._log_tail_masses(energy, slopes, tail_scale)
        return torch.softmax(torch.cat([low[:, None], inner, high[:, None]], -1), -1)

    @staticmethod
    def tail_slopes(coef: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outward energy slopes at the window's edges.

        As :func:`sklearn_arcsm.quadrature.tail_slopes`, from the spline's
        values at the edges: ``(N,)`` each, both ``<= 0``.
        """
        s_lo = (coef[:, 0] + 4.0 * coef[:, 1] + coef[:, 2]) / 6.0
        s_hi = (coef[:, -3] + 4.0 * coef[:, -2] + coef[:, -1]) / 6.0
        return (-s_lo).clamp(max=0.0), s_hi.clamp(max=0.0)

    def energy_at(
        self,
        v: torch.Tensor,
        coef: torch.Tensor,
        energy: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
        tail_scale: float,
    ) -> torch.Tensor:
        """Exact energy at ``v`` of shape ``(N,)``, Gaussian tails outside.

        Differentiable in ``v`` (its derivative is the score) and in
        ``coef``. A non-finite ``v`` gives a non-finite energy.
        """
        h = _width(coef, lower, upper)
        n_intervals = coef.shape[-1] - 3
        position = ((v - lower) / h).clamp(0.0, float(n_intervals))
        cell = torch.nan_to_num(position.detach(), nan=0.0).floor()
        cell = cell.clamp(max=n_intervals - 1)
        t = position - cell
        index = cell.long()[:, None]
        c = coef.gather(-1, index + torch.arange(4, device=coef.device))
        inside = energy.gather(-1, index).squeeze(-1) + h * (c * _beta(t)).sum(-1)
        rho2 = tail_scale**2
        above = (v - upper).clamp(min=0.0)
        below = (lower - v).clamp(min=0.0)
        slope_lo, slope_hi = self.tail_slopes(coef)
        high = energy[:, -1] + slope_hi * above - above.square() / (2.0 * rho2)
        low = slope_lo * below - below.square() / (2.0 * rho2)
        return torch.where(v > upper, high, torch.where(v < lower, low, inside))

    def log_density(
        self,
        v: torch.Tensor,
        coef: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
        tail_scale: float,
    ) -> torch.Tensor:
        """Normalized ``log p(v)`` of each conditional: shape ``(N,)``."""
        energy = self.knot_energies(coef, lower, upper)
        log_z = self.log_normalizer(coef, lower, upper, tail_scale, energy)
        return self.energy_at(v, coef, energy, lower, upper, tail_scale) - log_z

    def inverse_cdf(
        self,
        uniform: torch.Tensor,
        coef: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
        tail_scale: float,
    ) -> torch.Tensor:
        """Draws ``v`` of shape ``(N,)`` at probabilities ``uniform`` ``(N,)``.

        In two stages. The knot interval (or tail) is drawn with its exact
        mass, the Gauss-Legendre integrals of :meth:`log_normalizer`; within
        the interval the draw inverts the log-linear interpolation of the
        exact energy on ``_sub_cells(I)`` equal cells (about
        :data:`~sklearn_arcsm.quadrature.SAMPLING_CELLS` across the window),
        and in the tails the exact truncated Gaussians. Only the drawn
        interval's sub-grid is built, not the whole window's.
        """
        return quadrature._two_stage_inverse_cdf(
            uniform, *self._two_stage(coef, lower, upper, tail_scale)
        )

    def cdf(
        self,
        v: torch.Tensor,
        coef: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
        tail_scale: float,
    ) -> torch.Tensor:
        """CDF at ``v`` of the density :meth:`inverse_cdf` draws from: ``(N,)``.

        Exact (up to the Gauss-Legendre error) at every knot.
        """
        return quadrature._two_stage_cdf(
            v, *self._two_stage(coef, lower, upper, tail_scale)
        )

    def _two_stage(self, coef, lower, upper, tail_scale):
        """Arguments 2 on of quadrature._two_stage_cdf and _two_stage_inverse_cdf."""
        energy = self.knot_energies(coef, lower, upper)
        slopes = self.tail_slopes(coef)
        masses = self._segment_masses(coef, energy, slopes, lower, upper, tail_scale)
        sub = _sub_cells(coef.shape[-1] - 3)

        def sub_energy(interval):
            return _sub_energies(coef, energy, lower, upper, interval, sub)

        return masses, sub_energy, sub, slopes, lower, upper, tail_scale


def _sub_cells(n_intervals: int) -> int:
    """Sampling cells per knot interval: SAMPLING_CELLS across the window at least."""
    return -(-quadrature.SAMPLING_CELLS // n_intervals)


def _sub_energies(coef, energy, lower, upper, interval, sub):
    """Exact energy at ``sub + 1`` even points of ``interval``: ``(N, sub + 1)``."""
    h = _width(coef, lower, upper)
    t = torch.arange(sub + 1, dtype=coef.dtype, device=coef.device) / sub
    c = coef.gather(-1, interval[:, None] + torch.arange(4, device=coef.device))
    start = energy.gather(-1, interval[:, None])
    return start + h[:, None] * (c @ _beta(t).T)


def _node_counts(slope: torch.Tensor) -> torch.Tensor:
    """Nodes per interval for slope bounds ``(N,)`` (see the module docstring)."""
    bounds = torch.tensor(_MAX_SLOPE, dtype=slope.dtype, device=slope.device)
    # NaN slopes (a diverged fit) take the last level and stay NaN.
    level = torch.searchsorted(bounds, torch.nan_to_num(slope, nan=math.inf))
    return torch.tensor(_NODES, device=slope.device)[level]


def _width(coef: torch.Tensor, lower, upper) -> torch.Tensor:
    """Knot interval width per conditional, ``(N,)``."""
    return (upper - lower) / (coef.shape[-1] - 3)


def _beta(t: torch.Tensor) -> torch.Tensor:
    """``int_0^t b_i`` for the four B-spline pieces: ``t.shape + (4,)``."""
    s = 1.0 - t
    t2 = t * t
    t3 = t2 * t
    t4 = t3 * t
    return torch.stack(
        [
            (1.0 - s.square().square()) / 24.0,
            (4.0 * t - 2.0 * t3 + 0.75 * t4) / 6.0,
            (t + 1.5 * t2 + t3 - 0.75 * t4) / 6.0,
            t4 / 24.0,
        ],
        dim=-1,
    )


@functools.lru_cache(maxsize=32)
def _gauss_legendre(m: int, dtype: torch.dtype, device: torch.device):
    """``beta`` at ``m`` Gauss-Legendre nodes of [0, 1] ``(4, m)``, weights ``(m,)``."""
    x, w = np.polynomial.legendre.leggauss(m)
    t = torch.as_tensor((x + 1.0) / 2.0, dtype=torch.float64)
    weights = torch.as_tensor(w / 2.0, dtype=dtype, device=device)
    return _beta(t).T.to(dtype=dtype, device=device), weights


def _interval_energies(coef, energy, h, beta):
    """Energy at points ``t`` of every knot interval: ``(n, len(t), intervals)``.

    ``beta`` is ``_beta(t).T`` (4, len(t)). Four multiply-adds of shifted
    coefficient slices per point, with the intervals on the last,
    contiguous axis. Measured on 8,192 conditionals of 96 knots at 4 points
    each (2 threads): 15 ms, against 35 ms for one matrix product with
    ``[1; beta]`` (an inner dimension of 5 is slow in BLAS), 56 ms with the
    points on the last axis and several times more for a batched product
    of the unfolded coefficients.
    """
    hc = (h[:, None] * coef)[:, None, :]
    n = coef.shape[-1] - 3
    beta = beta[:, :, None]
    out = torch.addcmul(energy[:, None, :n], hc[..., 0:n], beta[0])
    for i in range(1, 4):
        out = out.addcmul_(hc[..., i : i + n], beta[i])
    return out


def _node_exponentials(coef, energy, h, m, slope):
    """``exp(E - shift)`` at ``m`` nodes per interval ``(n, m, I)``, shift, weights.

    ``slope`` ``(n,)`` bounds the energy's change within any interval, so no
    node lies above ``max_j E_j + slope`` and the largest lies above
    ``max_j E_j - slope``: for the levels of ``slope <= 32`` that shift
    replaces logsumexp's max pass (exp cannot overflow, and the largest
    node keeps at least ``e**-64``). Steeper levels take the true maximum:
    there ``e**(-2 slope)`` can underflow float32 (below ``e**-103`` every
    node became zero and ``log Z`` infinite, which stopped training).
    """
    beta, weights = _gauss_legendre(m, coef.dtype, coef.device)
    if m > _BOUNDED_SHIFT_NODES:
        nodes = _interval_energies(coef, energy, h, beta)
        shift = nodes.detach().amax(dim=(-2, -1))
        nodes = nodes - shift[:, None, None]
    else:
        shift = energy.detach().amax(dim=-1) + slope
        nodes = _interval_energies(coef, energy - shift[:, None], h, beta)
    return nodes.exp_(), shift, weights


def _log_inside_mass(coef, energy, h, m, slope):
    """``log int_lower^upper exp(E)`` by ``m`` nodes per knot interval: ``(n,)``."""
    nodes, shift, weights = _node_exponentials(coef, energy, h, m, slope)
    mass = nodes.sum(dim=-1) @ weights  # (n,)
    return torch.log(mass) + shift + torch.log(h)


def _log_interval_masses(coef, energy, h, m, slope):
    """``log`` of every knot interval's integral of ``exp(E)``: ``(n, I)``."""
    nodes, shift, weights = _node_exponentials(coef, energy, h, m, slope)
    mass = (weights[:, None] * nodes).sum(dim=-2)  # (n, I)
    return torch.log(mass) + (shift + torch.log(h))[:, None]
