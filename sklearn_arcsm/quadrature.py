"""One-dimensional quadrature: from conditional scores to normalized densities.

Every conditional of an AR-CSM is a 1-D density ``exp(E(t)) / Z`` whose
log-derivative ``s = dE/dt`` is what the network outputs (MATH.md section 4).
Here the score is known on a window ``[lo, hi]`` through ``2n + 1`` equally
spaced points (``n`` cells, each with its midpoint) and continues outside the
window as ``s(t) = min(s(hi), 0) - (t - hi) / rho**2`` (and symmetrically
below; see :func:`tail_slopes`), the tail construction of
:class:`sklearn_arcsm.nn.ARCSM`.

Rules (chosen by measurement, see ``tests/test_quadrature.py`` and the docs):

* ``E`` at the points: per cell, Simpson's rule for the full cell and the
  integral of the quadratic interpolant for the half cell (error
  ``O(h^5 s'''')`` per cell).
* ``E(x)`` at an arbitrary point: the integral of the same quadratic
  interpolant from the cell's left node.
* ``Z`` inside the window: composite Simpson on the ``2n + 1`` points; the two
  tails in closed form (a Gaussian integral, via ``erfcx``).

All functions work on the last axis and broadcast over leading axes. Energies
are defined up to a constant; here ``E(lo) = 0``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "cumulative_energy",
    "energy_at",
    "grid_points",
    "log_gaussian_tail",
    "tail_slopes",
    "log_normalizer",
    "log_density",
    "cdf",
    "inverse_cdf",
]

_LOG_SQRT_PI_OVER_2 = 0.5 * math.log(math.pi / 2.0)


def grid_points(lower: torch.Tensor, upper: torch.Tensor, n_cells: int) -> torch.Tensor:
    """Points ``lo, lo + h/2, ..., hi``: shape ``lower.shape + (2n+1,)``."""
    steps = torch.linspace(
        0.0, 1.0, 2 * n_cells + 1, dtype=lower.dtype, device=lower.device
    )
    return lower[..., None] + (upper - lower)[..., None] * steps


def _cell_values(scores: torch.Tensor):
    return scores[..., 0:-1:2], scores[..., 1::2], scores[..., 2::2]


def cumulative_energy(
    scores: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
) -> torch.Tensor:
    """Antiderivative of the scores at the grid points, with ``E(lo) = 0``.

    Parameters
    ----------
    scores : torch.Tensor of shape (..., 2n+1)
        Scores at :func:`grid_points`.
    lower, upper : torch.Tensor of shape (...)
        The window.

    Returns
    -------
    energy : torch.Tensor of shape (..., 2n+1)
    """
    n_cells = (scores.shape[-1] - 1) // 2
    h = ((upper - lower) / n_cells)[..., None]
    s0, sm, s1 = _cell_values(scores)
    full = h / 6.0 * (s0 + 4.0 * sm + s1)
    half = h / 24.0 * (5.0 * s0 + 8.0 * sm - s1)
    nodes = torch.cat(
        [torch.zeros_like(full[..., :1]), torch.cumsum(full, dim=-1)], dim=-1
    )
    mids = nodes[..., :-1] + half
    energy = torch.empty_like(scores)
    energy[..., 0::2] = nodes
    energy[..., 1::2] = mids
    return energy


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


def log_normalizer(
    energy: torch.Tensor,
    scores: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    tail_scale: float,
) -> torch.Tensor:
    """``log Z = log int exp(E(t)) dt`` over the real line.

    Returns
    -------
    log_z : torch.Tensor of shape (...)
    """
    n_cells = (scores.shape[-1] - 1) // 2
    h = (upper - lower) / n_cells
    weights = torch.full(
        (2 * n_cells + 1,), 2.0, dtype=energy.dtype, device=energy.device
    )
    weights[1::2] = 4.0
    weights[0] = weights[-1] = 1.0
    inside = torch.logsumexp(energy + torch.log(weights), dim=-1) + torch.log(h / 6.0)
    slope_lo, slope_hi = tail_slopes(scores)
    low_tail = energy[..., 0] + log_gaussian_tail(slope_lo, tail_scale)
    high_tail = energy[..., -1] + log_gaussian_tail(slope_hi, tail_scale)
    return torch.logsumexp(torch.stack([inside, low_tail, high_tail]), dim=0)


def energy_at(
    x: torch.Tensor,
    energy: torch.Tensor,
    scores: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    tail_scale: float,
) -> torch.Tensor:
    """Energy ``E(x)`` at arbitrary points, consistent with :func:`cumulative_energy`.

    Parameters
    ----------
    x : torch.Tensor of shape (...)
        Points, one per leading index.
    energy, scores : torch.Tensor of shape (..., 2n+1)
    lower, upper : torch.Tensor of shape (...)
    tail_scale : float

    Returns
    -------
    energy_x : torch.Tensor of shape (...)
    """
    n_cells = (scores.shape[-1] - 1) // 2
    h = (upper - lower) / n_cells
    position = ((x - lower) / h).clamp(0.0, float(n_cells))
    cell = position.floor().clamp(max=n_cells - 1)
    delta = position - cell
    idx = (2 * cell).long()[..., None]
    s0 = scores.gather(-1, idx).squeeze(-1)
    sm = scores.gather(-1, idx + 1).squeeze(-1)
    s1 = scores.gather(-1, idx + 2).squeeze(-1)
    e0 = energy.gather(-1, idx).squeeze(-1)
    # Integral of the quadratic through (0, s0), (1/2, sm), (1, s1) from 0 to delta.
    inside = e0 + h * (
        s0 * delta
        + (-3.0 * s0 + 4.0 * sm - s1) * delta.square() / 2.0
        + (2.0 * s0 - 4.0 * sm + 2.0 * s1) * delta.pow(3) / 3.0
    )
    rho2 = tail_scale**2
    above = (x - upper).clamp(min=0.0)
    below = (lower - x).clamp(min=0.0)
    slope_lo, slope_hi = tail_slopes(scores)
    high = energy[..., -1] + slope_hi * above - above.square() / (2.0 * rho2)
    low = energy[..., 0] + slope_lo * below - below.square() / (2.0 * rho2)
    return torch.where(x > upper, high, torch.where(x < lower, low, inside))


def log_density(
    x: torch.Tensor,
    scores: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    tail_scale: float,
) -> torch.Tensor:
    """Normalized log-density at ``x`` of the 1-D density with these scores.

    Parameters
    ----------
    x : torch.Tensor of shape (...)
    scores : torch.Tensor of shape (..., 2n+1)
        Scores at :func:`grid_points` ``(lower, upper, n)``.
    lower, upper : torch.Tensor of shape (...)
    tail_scale : float

    Returns
    -------
    log_p : torch.Tensor of shape (...)
    """
    energy = cumulative_energy(scores, lower, upper)
    log_z = log_normalizer(energy, scores, lower, upper, tail_scale)
    return energy_at(x, energy, scores, lower, upper, tail_scale) - log_z


def _split_small(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of near-zero energy steps, and the steps with those replaced by 1.

    Log-linear cell formulas divide by the step; callers use ``safe`` in the
    general formula and the ``small`` limit where the step vanishes.
    """
    small = delta.abs() < 1e-6
    return small, torch.where(small, torch.ones_like(delta), delta)


def _log_cell_masses(energy: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Log-mass of each half-cell under log-linear interpolation of ``E``."""
    e0, e1 = energy[..., :-1], energy[..., 1:]
    delta = e1 - e0
    # log((exp(delta) - 1) / delta), stable for delta near 0 and of any sign.
    small, safe = _split_small(delta)
    log_ratio = torch.where(
        safe > 0,
        safe + torch.log(-torch.expm1(-safe)) - torch.log(safe.abs()),
        torch.log(-torch.expm1(safe)) - torch.log(safe.abs()),
    )
    log_ratio = torch.where(small, delta / 2.0, log_ratio)
    return e0 + log_ratio + torch.log(width)[..., None]


def _segment_log_masses(energy, scores, lower, upper, tail_scale):
    """Log-masses of (low tail, half-cells..., high tail): shape (..., 2n+2)."""
    n_cells = (scores.shape[-1] - 1) // 2
    width = (upper - lower) / (2 * n_cells)
    cells = _log_cell_masses(energy, width)
    slope_lo, slope_hi = tail_slopes(scores)
    low_tail = energy[..., :1] + log_gaussian_tail(slope_lo[..., None], tail_scale)
    high_tail = energy[..., -1:] + log_gaussian_tail(slope_hi[..., None], tail_scale)
    return torch.cat([low_tail, cells, high_tail], dim=-1)


def _segment_masses(scores, lower, upper, tail_scale):
    """Energies at the points and normalized masses of every segment."""
    energy = cumulative_energy(scores, lower, upper)
    log_m = _segment_log_masses(energy, scores, lower, upper, tail_scale)
    return energy, torch.softmax(log_m, dim=-1)


def cdf(
    x: torch.Tensor,
    scores: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    tail_scale: float,
) -> torch.Tensor:
    """Cumulative distribution function at ``x`` (same shapes as :func:`log_density`).

    Uses log-linear interpolation of the energy between grid points, the same
    piecewise density that :func:`inverse_cdf` samples from exactly.
    """
    energy, masses = _segment_masses(scores, lower, upper, tail_scale)
    n_points = scores.shape[-1]
    width = (upper - lower) / (n_points - 1)
    position = ((x - lower) / width).clamp(0.0, float(n_points - 1))
    cell = position.floor().clamp(max=n_points - 2)
    frac = position - cell
    idx = cell.long()[..., None]
    before = torch.cumsum(masses, dim=-1) - masses  # mass left of each segment
    e0 = energy.gather(-1, idx).squeeze(-1)
    e1 = energy.gather(-1, idx + 1).squeeze(-1)
    seg = idx + 1  # segment 0 is the low tail
    partial = _partial_cell_fraction(e1 - e0, frac)
    inside = (
        before.gather(-1, seg).squeeze(-1)
        + masses.gather(-1, seg).squeeze(-1) * partial
    )
    rho = tail_scale
    # Tails: the density is a truncated Gaussian with mean mu = slope * rho**2.
    slope_lo, slope_hi = tail_slopes(scores)
    mu_hi = slope_hi * rho**2
    above = (x - upper).clamp(min=0.0)
    surv_hi = torch.special.ndtr((mu_hi - above) / rho) / torch.special.ndtr(
        mu_hi / rho
    )
    high = 1.0 - masses[..., -1] * surv_hi
    mu_lo = slope_lo * rho**2
    below = (lower - x).clamp(min=0.0)
    low = (
        masses[..., 0]
        * torch.special.ndtr((mu_lo - below) / rho)
        / torch.special.ndtr(mu_lo / rho)
    )
    return torch.where(x > upper, high, torch.where(x < lower, low, inside))


def _partial_cell_fraction(delta: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """Fraction of a log-linear cell's mass left of ``frac`` in ``[0, 1]``."""
    small, safe = _split_small(delta)
    value = torch.expm1(safe * frac) / torch.expm1(safe)
    return torch.where(small, frac, value)


def inverse_cdf(
    uniform: torch.Tensor,
    scores: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    tail_scale: float,
) -> torch.Tensor:
    """Map ``uniform`` draws in ``(0, 1)`` to exact draws of the 1-D density.

    The density sampled is the log-linear interpolation of the energy on the
    grid plus the exact Gaussian tails; its difference from the quadrature
    density of :func:`log_density` is of the order of the grid error.

    Parameters
    ----------
    uniform : torch.Tensor of shape (...)
    scores : torch.Tensor of shape (..., 2n+1)
    lower, upper : torch.Tensor of shape (...)
    tail_scale : float

    Returns
    -------
    samples : torch.Tensor of shape (...)
    """
    energy, masses = _segment_masses(scores, lower, upper, tail_scale)
    cumulative = torch.cumsum(masses, dim=-1)
    segment = torch.searchsorted(cumulative, uniform[..., None].contiguous()).clamp(
        max=masses.shape[-1] - 1
    )
    before = (cumulative.gather(-1, segment) - masses.gather(-1, segment)).squeeze(-1)
    mass = masses.gather(-1, segment).squeeze(-1)
    segment = segment.squeeze(-1)
    within = ((uniform - before) / mass.clamp(min=torch.finfo(mass.dtype).tiny)).clamp(
        0.0, 1.0
    )

    n_points = scores.shape[-1]
    width = (upper - lower) / (n_points - 1)
    cell = (segment - 1).clamp(0, n_points - 2)
    e0 = energy.gather(-1, cell[..., None]).squeeze(-1)
    e1 = energy.gather(-1, cell[..., None] + 1).squeeze(-1)
    delta = e1 - e0
    small, safe = _split_small(delta)
    frac = torch.where(small, within, torch.log1p(within * torch.expm1(safe)) / safe)
    inside = lower + width * (cell + frac.clamp(0.0, 1.0))

    rho = tail_scale
    tiny = torch.finfo(uniform.dtype).tiny
    # Upper tail: t = mu - rho * ndtri(w * ndtr(mu / rho)), w = 1 - within.
    slope_lo, slope_hi = tail_slopes(scores)
    mu_hi = slope_hi * rho**2
    w_hi = ((1.0 - within) * torch.special.ndtr(mu_hi / rho)).clamp(min=tiny)
    high = upper + (mu_hi - rho * torch.special.ndtri(w_hi)).clamp(min=0.0)
    mu_lo = slope_lo * rho**2
    w_lo = (within * torch.special.ndtr(mu_lo / rho)).clamp(min=tiny)
    low = lower - (mu_lo - rho * torch.special.ndtri(w_lo)).clamp(min=0.0)
    last = masses.shape[-1] - 1
    return torch.where(segment == 0, low, torch.where(segment == last, high, inside))
