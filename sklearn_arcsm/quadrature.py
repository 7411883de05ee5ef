"""One-dimensional quadrature: from conditional scores to normalized densities.

Every conditional of an AR-CSM is a 1-D density ``exp(E(t)) / Z`` whose
log-derivative ``s = dE/dt`` is what the network outputs (MATH.md section 4).
The score is known at the nodes of a :class:`PanelRule` over a window
``[lo, hi]`` and continues outside the window as
``s(t) = min(s(hi), 0) - (t - hi) / rho**2`` (and symmetrically below; see
:func:`tail_slopes`), the tail construction of :class:`sklearn_arcsm.nn.ARCSM`.

One engine serves every use (``score_samples``, the likelihood objective,
the CDF and the samplers):

* The window is cut into ``n_panels`` equal panels, each carrying
  ``order + 1`` nodes (neighbouring panels share their end nodes), and the
  score is replaced on each panel by its interpolating polynomial.
* ``E`` anywhere inside the window is the exact integral of that piecewise
  polynomial from ``lo`` (so ``E(lo) = 0``); at the nodes this is a fixed
  matrix product per panel.
* ``Z`` inside the window is the same panel rule applied to ``exp(E)``
  (Clenshaw-Curtis weights on Chebyshev nodes, Simpson's on equispaced
  quadratic panels); the two tails are Gaussian integrals in closed form
  (via ``erfcx``).
* The CDF and its inverse use log-linear interpolation of ``E`` on a fine
  uniform sub-grid of the panels (no further score evaluations): the
  sampled density is piecewise exponential, sampled exactly.

Two node families are offered. :func:`simpson` (quadratic panels on
equispaced nodes: the cell, its midpoint and the next cell) converges as
``h**4``; :func:`chebyshev` (Chebyshev-Lobatto nodes of order 8 by default)
converges as ``h**(order + 1)`` or faster, which reaches the same error with
several times fewer score evaluations on the smooth conditionals of fitted
models (see the user guide's quadrature table).

All functions work on the last axis and broadcast over leading axes. Energies
are defined up to a constant; here ``E(lo) = 0``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.polynomial import chebyshev as cheb

__all__ = [
    "PanelRule",
    "as_rule",
    "cdf",
    "chebyshev",
    "cumulative_energy",
    "energy_at",
    "grid_points",
    "inverse_cdf",
    "log_density",
    "log_gaussian_tail",
    "log_normalizer",
    "simpson",
    "tail_slopes",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_SQRT_PI_OVER_2 = 0.5 * math.log(math.pi / 2.0)
# Cells of the uniform sub-grid on which the CDF and its inverse interpolate
# the energy log-linearly (at least this many over the window): the sampled
# density then differs from the quadrature density by at most about
# ``(width / 1024)**2 / 8 * |ds/dt|`` in log-density, with no further score
# evaluations (the sub-grid energies come from the panel polynomials).
SAMPLING_CELLS = 1024
# Equispaced interpolatory weights turn negative from order 8 on (Newton-Cotes),
# and then exp(E) can integrate to a negative number.
_MAX_UNIFORM_ORDER = 6


@dataclass(frozen=True)
class PanelRule:
    """Composite interpolatory rule over a window.

    Parameters
    ----------
    n_panels : int
        Number of equal panels over the window.
    order : int
        Polynomial degree per panel: each panel has ``order + 1`` nodes, the
        two ends shared with its neighbours, so the rule has
        ``n_panels * order + 1`` nodes.
    nodes : {"chebyshev", "uniform"}
        Chebyshev-Lobatto nodes (``-cos(pi j / order)`` mapped to the panel)
        or equispaced nodes (``order <= 6``).
    """

    n_panels: int
    order: int = 8
    nodes: str = "chebyshev"

    def __post_init__(self):
        if int(self.n_panels) != self.n_panels or self.n_panels < 1:
            raise ValueError(
                f"n_panels must be a positive integer; got {self.n_panels}."
            )
        if int(self.order) != self.order or self.order < 1:
            raise ValueError(f"order must be a positive integer; got {self.order}.")
        if self.nodes not in ("chebyshev", "uniform"):
            raise ValueError(
                f"nodes must be 'chebyshev' or 'uniform'; got {self.nodes!r}."
            )
        if self.nodes == "uniform" and self.order > _MAX_UNIFORM_ORDER:
            raise ValueError(
                f"uniform nodes of order {self.order} have negative weights; "
                f"use order <= {_MAX_UNIFORM_ORDER} or nodes='chebyshev'."
            )

    @property
    def n_points(self) -> int:
        """Score evaluations per conditional: ``n_panels * order + 1``."""
        return self.n_panels * self.order + 1

    def with_panels(self, n_panels: int) -> PanelRule:
        """The same panels and nodes, ``n_panels`` of them."""
        return PanelRule(n_panels, self.order, self.nodes)

    # ------------------------------------------------------------------
    # Nodes and the energy at them
    # ------------------------------------------------------------------
    def points(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """Nodes over ``[lower, upper]``: shape ``lower.shape + (n_points,)``."""
        unit = _matrices(self.order, self.nodes, lower.dtype, lower.device).nodes
        panel = torch.arange(self.n_panels, dtype=lower.dtype, device=lower.device)
        steps = ((panel[:, None] + unit[None, :-1]) / self.n_panels).reshape(-1)
        steps = torch.cat([steps, steps.new_ones(1)])
        return lower[..., None] + (upper - lower)[..., None] * steps

    def panels(self, values: torch.Tensor) -> torch.Tensor:
        """View of node values ``(..., n_points)`` as ``(..., n_panels, order + 1)``."""
        return values.unfold(-1, self.order + 1, self.order)

    def _panel_map(self, values: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """``matrix @ panel`` for every panel: ``(..., n_panels, matrix.shape[0])``.

        One 2-D matrix product on a contiguous copy: a batched product on the
        overlapping :meth:`panels` view copies each panel separately.
        """
        panels = self.panels(values).contiguous()
        flat = panels.reshape(-1, self.order + 1) @ matrix.T
        return flat.reshape(*panels.shape[:-1], matrix.shape[0])

    def _merge(self, per_panel: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`panels` for values that agree at shared ends."""
        inner = per_panel[..., :, :-1].flatten(-2)
        return torch.cat([inner, per_panel[..., -1, -1:]], dim=-1)

    def _panel_energy(self, scores, lower, upper):
        """Energy at every panel's nodes, ``(..., n_panels, order + 1)``."""
        mats = _matrices(self.order, self.nodes, scores.dtype, scores.device)
        h = ((upper - lower) / self.n_panels)[..., None, None]
        within = h * self._panel_map(scores, mats.integrate)
        totals = within[..., -1]
        starts = torch.cat(
            [torch.zeros_like(totals[..., :1]), torch.cumsum(totals, dim=-1)[..., :-1]],
            dim=-1,
        )
        return starts[..., None] + within

    def energy(
        self, scores: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
    ) -> torch.Tensor:
        """Antiderivative of the scores at the nodes, with ``E(lo) = 0``.

        Parameters
        ----------
        scores : torch.Tensor of shape (..., n_points)
            Scores at :meth:`points`.
        lower, upper : torch.Tensor of shape (...)
            The window.

        Returns
        -------
        energy : torch.Tensor of shape (..., n_points)
        """
        return self._merge(self._panel_energy(scores, lower, upper))

    # ------------------------------------------------------------------
    # Normalizer and log-density
    # ------------------------------------------------------------------
    def log_normalizer(
        self,
        energy: torch.Tensor,
        scores: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
        tail_scale: float,
    ) -> torch.Tensor:
        """``log Z = log int exp(E(t)) dt`` over the real line: shape ``(...)``."""
        mats = _matrices(self.order, self.nodes, energy.dtype, energy.device)
        h = (upper - lower) / self.n_panels
        inside = torch.logsumexp(
            (self.panels(energy) + mats.log_weights).flatten(-2), dim=-1
        ) + torch.log(h)
        low_tail, high_tail = _log_tail_masses(energy, tail_slopes(scores), tail_scale)
        return torch.logsumexp(torch.stack([inside, low_tail, high_tail]), dim=0)

    def energy_at(
        self,
        x: torch.Tensor,
        energy: torch.Tensor,
        scores: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
        tail_scale: float,
    ) -> torch.Tensor:
        """Energy ``E(x)`` at arbitrary points, consistent with :meth:`energy`.

        Inside the window: the integral of the panel's interpolating
        polynomial from the panel's left end. A non-finite ``x`` gives a
        non-finite energy (never an indexing error), so that a diverging fit
        is caught by the loss guards.

        Parameters
        ----------
        x : torch.Tensor of shape (...)
            Points, one per leading index.
        energy, scores : torch.Tensor of shape (..., n_points)
        lower, upper : torch.Tensor of shape (...)
        tail_scale : float

        Returns
        -------
        energy_x : torch.Tensor of shape (...)
        """
        mats = _matrices(self.order, self.nodes, scores.dtype, scores.device)
        h = (upper - lower) / self.n_panels
        position = ((x - lower) / h).clamp(0.0, float(self.n_panels))
        # NaN positions would become INT64_MIN indices: gather panel 0 for
        # them and let the NaN flow through `y` into the result.
        panel = torch.nan_to_num(position, nan=0.0).floor().clamp(max=self.n_panels - 1)
        y = 2.0 * (position - panel) - 1.0
        idx = panel.long()
        node_scores = self.panels(scores)
        gathered = node_scores.gather(
            -2, idx[..., None, None].expand(*idx.shape, 1, self.order + 1)
        ).squeeze(-2)
        weights = _chebyshev_basis(y, self.order + 2) @ mats.antiderivative
        e0 = energy.gather(-1, (idx * self.order)[..., None]).squeeze(-1)
        inside = e0 + h * (weights * gathered).sum(dim=-1)
        rho2 = tail_scale**2
        above = (x - upper).clamp(min=0.0)
        below = (lower - x).clamp(min=0.0)
        slope_lo, slope_hi = tail_slopes(scores)
        high = energy[..., -1] + slope_hi * above - above.square() / (2.0 * rho2)
        low = energy[..., 0] + slope_lo * below - below.square() / (2.0 * rho2)
        return torch.where(x > upper, high, torch.where(x < lower, low, inside))

    def log_density(
        self,
        x: torch.Tensor,
        scores: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
        tail_scale: float,
        energy: torch.Tensor | None = None,
        log_z: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normalized log-density at ``x`` of the 1-D density with these scores.

        Parameters
        ----------
        x : torch.Tensor of shape (...)
        scores : torch.Tensor of shape (..., n_points)
            Scores at :meth:`points` ``(lower, upper)``.
        lower, upper : torch.Tensor of shape (...)
        tail_scale : float
        energy, log_z : torch.Tensor, optional
            :meth:`energy` and :meth:`log_normalizer` of these scores, when
            already computed.

        Returns
        -------
        log_p : torch.Tensor of shape (...)
        """
        if energy is None:
            energy = self.energy(scores, lower, upper)
        if log_z is None:
            log_z = self.log_normalizer(energy, scores, lower, upper, tail_scale)
        return self.energy_at(x, energy, scores, lower, upper, tail_scale) - log_z

    # ------------------------------------------------------------------
    # CDF and inverse CDF (log-linear on a uniform sub-grid)
    # ------------------------------------------------------------------
    def sub_cells(self) -> int:
        """Uniform sub-cells per panel of the CDF's log-linear interpolation."""
        if self.nodes == "uniform":
            # The nodes already form a uniform grid: use them as they are.
            return self.order
        return max(self.order, -(-SAMPLING_CELLS // self.n_panels))

    def fine_energy(
        self, scores: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
    ) -> torch.Tensor:
        """Energy on ``n_panels * sub_cells() + 1`` equispaced points of the window.

        Values of the same piecewise polynomial antiderivative as
        :meth:`energy` (no further score evaluations).
        """
        if self.nodes == "uniform":
            return self.energy(scores, lower, upper)
        mats = _matrices(self.order, self.nodes, scores.dtype, scores.device)
        n_sub = self.sub_cells()
        y = torch.linspace(
            -1.0, 1.0, n_sub + 1, dtype=scores.dtype, device=scores.device
        )
        at_sub = _chebyshev_basis(y, self.order + 2) @ mats.antiderivative
        h = ((upper - lower) / self.n_panels)[..., None, None]
        panel_energy = self._panel_energy(scores, lower, upper)
        starts = panel_energy[..., :1]
        return self._merge(starts + h * self._panel_map(scores, at_sub))

    def cdf(
        self,
        x: torch.Tensor,
        scores: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
        tail_scale: float,
    ) -> torch.Tensor:
        """Cumulative distribution function at ``x`` (shapes as :meth:`log_density`).

        The piecewise-exponential density that :meth:`inverse_cdf` samples
        exactly.
        """
        if self.nodes == "uniform":
            energy = self.fine_energy(scores, lower, upper)
            slopes = tail_slopes(scores)
            return _loglinear_cdf(x, energy, *slopes, lower, upper, tail_scale)
        return _two_stage_cdf(x, *self._two_stage(scores, lower, upper, tail_scale))

    def inverse_cdf(
        self,
        uniform: torch.Tensor,
        scores: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
        tail_scale: float,
    ) -> torch.Tensor:
        """Map ``uniform`` draws in ``(0, 1)`` to exact draws of the 1-D density.

        Chebyshev panels: in two stages. The panel (or tail) is drawn with
        its quadrature mass, the terms of :meth:`log_normalizer`; within the
        panel, the draw inverts the log-linear interpolation of the energy
        on the :meth:`sub_cells` equal cells of that panel alone (the
        panel's interpolating antiderivative, no further score
        evaluations), and in the tails the exact truncated Gaussians. The
        CDF is thus the quadrature's at every panel end. Uniform nodes
        (Simpson) invert the log-linear interpolation of the energy at the
        nodes themselves, across the window. The difference from the
        density of :meth:`log_density` is of the order of the quadrature and
        sub-grid interpolation errors.

        Parameters
        ----------
        uniform : torch.Tensor of shape (...)
        scores : torch.Tensor of shape (..., n_points)
        lower, upper : torch.Tensor of shape (...)
        tail_scale : float

        Returns
        -------
        samples : torch.Tensor of shape (...)
        """
        if self.nodes == "uniform":
            energy = self.fine_energy(scores, lower, upper)
            slopes = tail_slopes(scores)
            return _loglinear_inverse_cdf(
                uniform, energy, *slopes, lower, upper, tail_scale
            )
        return _two_stage_inverse_cdf(
            uniform, *self._two_stage(scores, lower, upper, tail_scale)
        )

    def _two_stage(self, scores, lower, upper, tail_scale):
        """Arguments 2 on of ``_two_stage_cdf`` and ``_two_stage_inverse_cdf``."""
        energy = self.energy(scores, lower, upper)
        slopes = tail_slopes(scores)
        masses = self._segment_masses(energy, slopes, lower, upper, tail_scale)
        sub_energy = self._sub_energy_fn(scores, energy, lower, upper)
        return masses, sub_energy, self.sub_cells(), slopes, lower, upper, tail_scale

    def _segment_masses(self, energy, slopes, lower, upper, tail_scale):
        """Normalized masses of (low tail, panels..., high tail): ``(..., P + 2)``.

        Each panel's mass is its term of :meth:`log_normalizer`.
        """
        mats = _matrices(self.order, self.nodes, energy.dtype, energy.device)
        h = (upper - lower) / self.n_panels
        panels = torch.logsumexp(self.panels(energy) + mats.log_weights, dim=-1)
        low, high = _log_tail_masses(energy, slopes, tail_scale)
        log_masses = torch.cat(
            [low[..., None], panels + torch.log(h)[..., None], high[..., None]], dim=-1
        )
        return torch.softmax(log_masses, dim=-1)

    def _sub_energy_fn(self, scores, energy, lower, upper):
        """``panel (...) -> energy at sub_cells() + 1 even points of it (..., S + 1)``.

        From the panel's interpolating antiderivative, as :meth:`fine_energy`.
        """
        mats = _matrices(self.order, self.nodes, scores.dtype, scores.device)
        sub = self.sub_cells()
        y = torch.linspace(-1.0, 1.0, sub + 1, dtype=scores.dtype, device=scores.device)
        at_sub = _chebyshev_basis(y, self.order + 2) @ mats.antiderivative
        h = ((upper - lower) / self.n_panels)[..., None]
        nodes = torch.arange(self.order + 1, device=scores.device)

        def sub_energy(panel):
            index = panel[..., None] * self.order + nodes
            start = energy.gather(-1, index[..., :1])
            return start + h * (scores.gather(-1, index) @ at_sub.T)

        return sub_energy


def simpson(n_cells: int) -> PanelRule:
    """Composite Simpson: ``n_cells`` quadratic panels on equispaced nodes."""
    return PanelRule(n_cells, order=2, nodes="uniform")


def chebyshev(n_panels: int, order: int = 8) -> PanelRule:
    """``n_panels`` Chebyshev-Lobatto panels of ``order`` (Clenshaw-Curtis)."""
    return PanelRule(n_panels, order=order, nodes="chebyshev")


def as_rule(rule: PanelRule | int) -> PanelRule:
    """A :class:`PanelRule`; an integer means that many Simpson cells."""
    if isinstance(rule, PanelRule):
        return rule
    return simpson(int(rule))


# ----------------------------------------------------------------------
# Panel matrices
# ----------------------------------------------------------------------
@dataclass(frozen=True)
class _PanelMatrices:
    nodes: torch.Tensor  # (m + 1,) in [0, 1], ascending
    integrate: torch.Tensor  # (m + 1, m + 1): node values -> integral from 0 to node
    log_weights: torch.Tensor  # (m + 1,): log of the integral of each basis polynomial
    antiderivative: torch.Tensor  # (m + 2, m + 1): node values -> Chebyshev coefs


@functools.cache
def _numpy_matrices(order: int, nodes: str):
    """The panel matrices of a unit-width panel, in float64 numpy."""
    j = np.arange(order + 1)
    if nodes == "chebyshev":
        y = -np.cos(np.pi * j / order)
    else:
        y = -1.0 + 2.0 * j / order
    # values -> Chebyshev coefficients on [-1, 1] (well conditioned on these nodes)
    to_coef = np.linalg.inv(cheb.chebvander(y, order))
    # Integral from the panel's left end, in t = (y + 1) / 2: dt = dy / 2.
    integral = np.stack(
        [cheb.chebint(to_coef[:, k], lbnd=-1.0) for k in range(order + 1)], axis=1
    )
    antiderivative = 0.5 * integral  # (m + 2, m + 1)
    integrate = cheb.chebvander(y, order + 1) @ antiderivative
    weights = integrate[-1]
    if np.any(weights <= 0):
        raise ValueError(f"{nodes} panels of order {order} have non-positive weights.")
    return (y + 1.0) / 2.0, integrate, np.log(weights), antiderivative


@functools.lru_cache(maxsize=64)
def _matrices(order: int, nodes: str, dtype, device) -> _PanelMatrices:
    arrays = _numpy_matrices(order, nodes)
    return _PanelMatrices(
        *(torch.as_tensor(a, dtype=dtype, device=device) for a in arrays)
    )


def _chebyshev_basis(y: torch.Tensor, n_terms: int) -> torch.Tensor:
    """``T_0(y) .. T_{n-1}(y)``: shape ``y.shape + (n_terms,)``."""
    terms = [torch.ones_like(y), y]
    for _ in range(2, n_terms):
        terms.append(2.0 * y * terms[-1] - terms[-2])
    return torch.stack(terms[:n_terms], dim=-1)


# ----------------------------------------------------------------------
# Tails
# ----------------------------------------------------------------------
def tail_slopes(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Outward slopes of the energy at the two window edges, never increasing.

    Beyond ``hi`` the score is ``min(s(hi), 0) - (t - hi) / rho**2`` and
    below ``lo`` it is ``max(s(lo), 0) + (lo - t) / rho**2``: a score that
    points out of the window at its edge is cut to zero there, so the tails
    always decay from the edge and can never hold more mass than about
    ``rho * sqrt(pi / 2)`` times the edge density.

    Returns
    -------
    slope_lo, slope_hi : torch.Tensor of shape (...)
        ``dE/d(distance from the window)`` at each edge, both ``<= 0``.
    """
    return (-scores[..., 0]).clamp(max=0.0), scores[..., -1].clamp(max=0.0)


def log_gaussian_tail(slope: torch.Tensor, tail_scale: float) -> torch.Tensor:
    """``log int_0^inf exp(slope * t - t**2 / (2 rho**2)) dt``, stable for any slope."""
    z = -slope * tail_scale / math.sqrt(2.0)
    # erfc(z) exp(z**2) = erfcx(z): exact for z >= 0 (small tails) and the
    # plain form for z < 0, where erfc is in [1, 2] and z**2 carries the size.
    positive = torch.log(torch.special.erfcx(z.clamp(min=0.0)))
    negative = z.square() + torch.log(torch.erfc(z.clamp(max=0.0)))
    return (
        math.log(tail_scale)
        + _LOG_SQRT_PI_OVER_2
        + torch.where(z >= 0, positive, negative)
    )


def _log_tail_masses(energy, slopes, tail_scale):
    """Unnormalized log-masses of the tails below and above the window: ``(...)`` each.

    ``energy`` (..., n) runs from the window's lower edge to its upper edge;
    ``slopes`` are the outward slopes of :func:`tail_slopes`.
    """
    slope_lo, slope_hi = slopes
    low = energy[..., 0] + log_gaussian_tail(slope_lo, tail_scale)
    high = energy[..., -1] + log_gaussian_tail(slope_hi, tail_scale)
    return low, high


def _tail_survival(mu: torch.Tensor, distance: torch.Tensor, rho: float):
    """``P(T > distance)`` for the tail ``N(mu, rho**2)`` truncated to ``T >= 0``.

    In log space: for steep tails (``mu / rho`` below about -38) both
    ``ndtr`` values underflow to 0 and their plain ratio is NaN.
    """
    return torch.exp(
        torch.special.log_ndtr((mu - distance) / rho) - torch.special.log_ndtr(mu / rho)
    )


# ----------------------------------------------------------------------
# Log-linear CDF on a uniform grid of energies
# ----------------------------------------------------------------------
def _split_small(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of near-zero energy steps, and the steps with those replaced by 1.

    Log-linear cell formulas divide by the step; callers use ``safe`` in the
    general formula and the ``small`` limit where the step vanishes.
    """
    small = delta.abs() < 1e-6
    return small, torch.where(small, torch.ones_like(delta), delta)


def _log_cell_masses(energy: torch.Tensor, width: torch.Tensor | None) -> torch.Tensor:
    """Log-mass of each cell under log-linear interpolation of ``E``.

    ``width`` None: cells of unit width.
    """
    e0, e1 = energy[..., :-1], energy[..., 1:]
    delta = e1 - e0
    # log((exp(delta) - 1) / delta), stable for delta near 0 and of any sign:
    # it equals max(delta, 0) + log((1 - exp(-|delta|)) / |delta|), one
    # expm1 and one log per cell (sampling spends most of its arithmetic
    # here: a thousand or more cells per conditional).
    small, safe = _split_small(delta)
    size = safe.abs()
    log_ratio = safe.clamp(min=0.0) + torch.log(-torch.expm1(-size) / size)
    log_ratio = torch.where(small, delta / 2.0, log_ratio)
    if width is None:
        return e0 + log_ratio
    return e0 + log_ratio + torch.log(width)[..., None]


def _segment_masses(energy, slope_lo, slope_hi, lower, upper, tail_scale):
    """Normalized masses of (low tail, cells..., high tail): shape (..., N + 1)."""
    width = (upper - lower) / (energy.shape[-1] - 1)
    cells = _log_cell_masses(energy, width)
    low, high = _log_tail_masses(energy, (slope_lo, slope_hi), tail_scale)
    log_masses = torch.cat([low[..., None], cells, high[..., None]], dim=-1)
    return torch.softmax(log_masses, dim=-1)


def _partial_cell_fraction(delta: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """Fraction of a log-linear cell's mass left of ``frac`` in ``[0, 1]``."""
    small, safe = _split_small(delta)
    value = torch.expm1(safe * frac) / torch.expm1(safe)
    return torch.where(small, frac, value)


def _loglinear_cdf(x, energy, slope_lo, slope_hi, lower, upper, tail_scale):
    """CDF of the log-linear interpolation of ``energy`` (uniform points) + tails."""
    masses = _segment_masses(energy, slope_lo, slope_hi, lower, upper, tail_scale)
    n_points = energy.shape[-1]
    width = (upper - lower) / (n_points - 1)
    position = ((x - lower) / width).clamp(0.0, float(n_points - 1))
    inside = _loglinear_cells_cdf(position, energy, masses[..., 1:-1], masses[..., 0])
    return _with_tail_cdf(
        x, inside, masses, slope_lo, slope_hi, lower, upper, tail_scale
    )


def _loglinear_cells_cdf(position, energy, masses, start):
    """Mass left of ``position`` (in cells) of log-linear cells, plus ``start``.

    ``energy`` (..., N + 1) at the cells' ends, ``masses`` (..., N) their
    masses; ``position`` in ``[0, N]``.
    """
    n_cells = masses.shape[-1]
    cell = torch.nan_to_num(position, nan=0.0).floor().clamp(0, n_cells - 1)
    frac = position - cell
    idx = cell.long()[..., None]
    before = torch.cumsum(masses, dim=-1) - masses  # mass left of each cell
    e0 = energy.gather(-1, idx).squeeze(-1)
    e1 = energy.gather(-1, idx + 1).squeeze(-1)
    partial = _partial_cell_fraction(e1 - e0, frac)
    mass = masses.gather(-1, idx).squeeze(-1)
    return start + before.gather(-1, idx).squeeze(-1) + mass * partial


def _with_tail_cdf(x, inside, masses, slope_lo, slope_hi, lower, upper, tail_scale):
    """``inside`` within the window; the Gaussian tails' CDF beyond it.

    ``masses`` (..., S) are the normalized segment masses, low tail first and
    high tail last.
    """
    # Tails: the density is a truncated Gaussian with mean mu = slope * rho**2.
    rho = tail_scale
    above = (x - upper).clamp(min=0.0)
    high = 1.0 - masses[..., -1] * _tail_survival(slope_hi * rho**2, above, rho)
    below = (lower - x).clamp(min=0.0)
    low = masses[..., 0] * _tail_survival(slope_lo * rho**2, below, rho)
    return torch.where(x > upper, high, torch.where(x < lower, low, inside))


def _loglinear_inverse_cdf(
    uniform, energy, slope_lo, slope_hi, lower, upper, tail_scale
):
    """Inverse of :func:`_loglinear_cdf`, exact for that piecewise density."""
    masses = _segment_masses(energy, slope_lo, slope_hi, lower, upper, tail_scale)
    segment, within = _pick_segment(uniform, masses)
    n_points = energy.shape[-1]
    width = (upper - lower) / (n_points - 1)
    cell = (segment - 1).clamp(0, n_points - 2)
    inside = lower + width * (cell + _loglinear_cell_fraction(within, energy, cell))
    return _with_tail_draws(
        segment,
        within,
        inside,
        masses.shape[-1],
        slope_lo,
        slope_hi,
        lower,
        upper,
        tail_scale,
    )


def _pick_segment(uniform, masses):
    """The segment (..., ) where the cumulative ``masses`` pass ``uniform``.

    Returns the segment's index and the fraction of its mass left of
    ``uniform``, in ``[0, 1]``.
    """
    cumulative = torch.cumsum(masses, dim=-1)
    segment = torch.searchsorted(cumulative, uniform[..., None].contiguous()).clamp(
        max=masses.shape[-1] - 1
    )
    before = (cumulative.gather(-1, segment) - masses.gather(-1, segment)).squeeze(-1)
    mass = masses.gather(-1, segment).squeeze(-1)
    tiny = torch.finfo(mass.dtype).tiny
    within = ((uniform - before) / mass.clamp(min=tiny)).clamp(0.0, 1.0)
    return segment.squeeze(-1), within


def _loglinear_cell_fraction(within, energy, cell):
    """Where in log-linear ``cell`` the fraction ``within`` of its mass lies (0..1)."""
    e0 = energy.gather(-1, cell[..., None]).squeeze(-1)
    e1 = energy.gather(-1, cell[..., None] + 1).squeeze(-1)
    delta = e1 - e0
    small, safe = _split_small(delta)
    frac = torch.where(small, within, torch.log1p(within * torch.expm1(safe)) / safe)
    return frac.clamp(0.0, 1.0)


def _with_tail_draws(
    segment, within, inside, n_segments, slope_lo, slope_hi, lower, upper, tail_scale
):
    """``inside`` for window segments; draws from the Gaussian tails otherwise.

    Segment 0 is the low tail and ``n_segments - 1`` the high tail;
    ``within`` is the fraction of the segment's mass left of the draw.
    """
    rho = tail_scale
    log_tiny = math.log(torch.finfo(within.dtype).tiny)
    # Upper tail: t = mu - rho * ndtri(w * ndtr(mu / rho)), w = 1 - within,
    # with w * ndtr(mu / rho) in log space: ndtr loses its relative accuracy
    # below about -8 (2% off at -8, 0 below -8.3 in float64), and a steep
    # tail's draws then landed tens of widths beyond the window.
    mu_hi = slope_hi * rho**2
    log_w = torch.log1p(-within).clamp(min=log_tiny)
    z_hi = _ndtri_exp(log_w + torch.special.log_ndtr(mu_hi / rho))
    high = upper + (mu_hi - rho * z_hi).clamp(min=0.0)
    mu_lo = slope_lo * rho**2
    log_w = torch.log(within).clamp(min=log_tiny)
    z_lo = _ndtri_exp(log_w + torch.special.log_ndtr(mu_lo / rho))
    low = lower - (mu_lo - rho * z_lo).clamp(min=0.0)
    last = n_segments - 1
    return torch.where(segment == 0, low, torch.where(segment == last, high, inside))


def _ndtri_exp(log_p: torch.Tensor) -> torch.Tensor:
    """``ndtri(exp(log_p))``, also where ``exp(log_p)`` underflows.

    ``ndtri`` is accurate down to the smallest normal number; below it, the
    far-tail root of ``log_ndtr(z) = log_p`` is found by Newton's method
    from ``-sqrt(-2 log_p)`` (``log_ndtr`` is accurate there).
    """
    floor = math.log(torch.finfo(log_p.dtype).tiny) + 8.0
    direct = torch.special.ndtri(log_p.clamp(min=floor).exp())
    target = log_p.clamp(max=floor)
    z = -torch.sqrt(-2.0 * target)
    for _ in range(4):
        log_cdf = torch.special.log_ndtr(z)
        slope = torch.exp(-0.5 * z * z - _LOG_SQRT_2PI - log_cdf)  # d/dz log_ndtr
        z = z - (log_cdf - target) / slope
    return torch.where(log_p > floor, direct, z)


def _two_stage_inverse_cdf(
    uniform, masses, sub_energy, sub, slopes, lower, upper, tail_scale
):
    """Inverse CDF over equal pieces of the window, each with a log-linear sub-grid.

    ``masses`` (..., P + 2): normalized masses of (low tail, the ``P`` equal
    pieces of the window, high tail); ``sub_energy(piece)`` gives the energy
    at the ``sub + 1`` even points of each row's ``piece`` (..., sub + 1).
    A draw picks its segment by mass, then inverts the log-linear CDF of
    that piece alone (or the tail's Gaussian).
    """
    segment, within = _pick_segment(uniform, masses)
    n_pieces = masses.shape[-1] - 2
    piece = (segment - 1).clamp(0, n_pieces - 1)
    offset = _sub_grid_inverse(within, sub_energy(piece))
    inside = lower + (upper - lower) / n_pieces * (piece + offset / sub)
    return _with_tail_draws(
        segment, within, inside, n_pieces + 2, *slopes, lower, upper, tail_scale
    )


def _two_stage_cdf(x, masses, sub_energy, sub, slopes, lower, upper, tail_scale):
    """The CDF whose inverse is :func:`_two_stage_inverse_cdf` (same arguments)."""
    n_pieces = masses.shape[-1] - 2
    position = ((x - lower) / ((upper - lower) / n_pieces)).clamp(0.0, float(n_pieces))
    piece = torch.nan_to_num(position, nan=0.0).floor().clamp(max=n_pieces - 1).long()
    within = _sub_grid_cdf((position - piece) * sub, sub_energy(piece))
    before = torch.cumsum(masses, dim=-1) - masses
    index = piece[..., None] + 1  # segment 0 is the low tail
    inside = (
        before.gather(-1, index).squeeze(-1)
        + masses.gather(-1, index).squeeze(-1) * within
    )
    return _with_tail_cdf(x, inside, masses, *slopes, lower, upper, tail_scale)


def _sub_grid_inverse(within: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
    """Where the log-linear CDF over the cells of ``energy`` reaches ``within``.

    ``energy`` (..., S + 1) at the ends of ``S`` equal cells; returns the
    position in cells, in ``[0, S]``.
    """
    masses = torch.softmax(_log_cell_masses(energy, None), dim=-1)
    cell, fraction = _pick_segment(within, masses)
    return cell + _loglinear_cell_fraction(fraction, energy, cell)


def _sub_grid_cdf(position: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_sub_grid_inverse`: the CDF at ``position`` in ``[0, S]``."""
    masses = torch.softmax(_log_cell_masses(energy, None), dim=-1)
    return _loglinear_cells_cdf(position, energy, masses, 0.0)


# ----------------------------------------------------------------------
# Simpson functions (the rule of ``n_cells`` quadratic panels), kept as the
# functional API used by tests and older code.
# ----------------------------------------------------------------------
def _cells_of(scores: torch.Tensor) -> PanelRule:
    return simpson((scores.shape[-1] - 1) // 2)


def grid_points(lower: torch.Tensor, upper: torch.Tensor, n_cells: int) -> torch.Tensor:
    """Points ``lo, lo + h/2, ..., hi`` of :func:`simpson`: shape ``(..., 2n+1)``."""
    return simpson(n_cells).points(lower, upper)


def cumulative_energy(scores, lower, upper):
    """Simpson energies at :func:`grid_points` (see :meth:`PanelRule.energy`)."""
    return _cells_of(scores).energy(scores, lower, upper)


def log_normalizer(energy, scores, lower, upper, tail_scale):
    """Simpson ``log Z`` (see :meth:`PanelRule.log_normalizer`)."""
    return _cells_of(scores).log_normalizer(energy, scores, lower, upper, tail_scale)


def energy_at(x, energy, scores, lower, upper, tail_scale):
    """Simpson ``E(x)`` (see :meth:`PanelRule.energy_at`)."""
    return _cells_of(scores).energy_at(x, energy, scores, lower, upper, tail_scale)


def log_density(x, scores, lower, upper, tail_scale):
    """Simpson log-density (see :meth:`PanelRule.log_density`)."""
    return _cells_of(scores).log_density(x, scores, lower, upper, tail_scale)


def cdf(x, scores, lower, upper, tail_scale):
    """Simpson-grid CDF (see :meth:`PanelRule.cdf`)."""
    return _cells_of(scores).cdf(x, scores, lower, upper, tail_scale)


def inverse_cdf(uniform, scores, lower, upper, tail_scale):
    """Simpson-grid inverse CDF (see :meth:`PanelRule.inverse_cdf`)."""
    return _cells_of(scores).inverse_cdf(uniform, scores, lower, upper, tail_scale)
