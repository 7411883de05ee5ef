"""Marginal Gaussianization: an exact elementwise map for near-singular columns.

Real tables often hold columns whose values pile up in a sliver of their
range: a point mass dequantized into a narrow box (no rain on half of the
days, recorded as 0.0 and dequantized onto [0, 0.1] of a range of 55 mm), a
sensor floor, a pixel that is black in most images. In standardized units
such a column's density is a spike thousands of times higher than a
Gaussian's, with walls a smooth score network cannot draw at the scale of
the other values. An increasing bijection ``T_d`` of the real line, fitted
to the column's quantiles, maps it onto a near-Gaussian column::

    u_d = T_d(s_d),    T_d(q_k) = Phi^-1((k + 1/2) / K)   at the quantiles q_k,

a monotone cubic (Hermite, with Fritsch-Butland slopes) between the
quantiles and linear beyond them. The map is exact, so the density stays
normalized::

    log p_S(s) = log p_U(T(s)) + sum_d log T_d'(s_d),

and, being elementwise, it keeps every autoregressive property: the
conditional of ``s_d`` given ``s_<d`` is the image of the conditional of
``u_d`` given ``u_<d``, and scores transform by the 1-D chain rule
(:meth:`MarginalGaussianization.scores`), as for
:class:`~sklearn_arcsm.bounds.BoxBounds`.

Which columns (``method="auto"``): only the near-singular ones, those where
some ``1/K`` of the rows lie within a ``1/SPIKE_RATIO`` share of the width a
standard normal gives that share of its mass (the largest secant slope of
``T_d`` exceeds :data:`SPIKE_RATIO`; the intervals out to the minimum and
maximum are left out of the test). Gaussianizing smooth columns moves the
dependence into coordinates where it is harder to learn: with every column
mapped by a prototype of this map (held-out KL, default ARCSMDensity),
Neal's funnel went from 0.013 to 0.088, a Gaussian mixture from 0.072 to
0.200, a switching chain from 0.565 to 0.973, a multivariate Student t from
0.125 to 0.213. The spiky columns gain (default estimator, held out:
Seattle weather, whose precipitation column is mapped, -8.266 -> -7.832
nats per row; diabetes, one column mapped, -26.35 -> -25.41 over three
seeds). The largest ratios measured on smooth data are 10 to 12 (two
rings, image patches); dequantized point masses give 37 to 673.
``method="quantile"`` maps every column.

Pure numpy and torch, float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MarginalGaussianization", "SPIKE_RATIO", "n_knots_for", "spiky_columns"]

# A column is near-singular where T_d's steepest secant exceeds this many
# times the identity's slope (see the module docstring for the measurements
# that place it between smooth data, at most 12, and point masses, 37+).
SPIKE_RATIO = 25.0
# Knots per column: sqrt(n_samples), clipped. Few enough that every
# quantile interval holds sqrt(n) rows (the map is a smooth, coarse fit;
# the model learns what it leaves), enough to resolve a spike holding a
# few percent of the rows.
MIN_KNOTS, MAX_KNOTS = 10, 100
# End slopes at most this many times the end interval's secant: below the
# Fritsch-Carlson bound of 3, which keeps each cubic strictly increasing.
END_SLOPE_LIMIT = 2.9
# Bisection steps of the inverse on a cubic piece: 2**-52 of the piece, the
# resolution of float64 positions in [0, 1].
BISECTION_STEPS = 52


def n_knots_for(n_samples: int) -> int:
    """Quantile knots per column for ``n_samples`` training rows."""
    return int(np.clip(round(np.sqrt(n_samples)), MIN_KNOTS, MAX_KNOTS))


def _column_knots(column: np.ndarray, probabilities: np.ndarray, normal: np.ndarray):
    """Distinct quantiles of ``column`` and their target values, ``(k,), (k,)``.

    The first and last ``probabilities`` take the column's minimum and
    maximum.

    Tied quantiles (an exact point mass) become one knot at the mean of
    their targets: an atom cannot be spread by a bijection.
    """
    quantiles = np.quantile(column, probabilities)
    quantiles[0], quantiles[-1] = column.min(), column.max()
    knots, which = np.unique(quantiles, return_inverse=True)
    values = np.bincount(which, weights=normal) / np.bincount(which)
    return knots, values


def _is_spiky(column: np.ndarray, probabilities: np.ndarray, normal: np.ndarray):
    """Whether the steepest secant between the inner quantiles exceeds the ratio.

    The inner quantiles only: the intervals out to the minimum and the
    maximum are narrow by construction on a bounded column (a uniform
    column's first quantile lies ``1/(2K)`` of its range from the minimum,
    where the normal targets are ``Phi^-1(1/(2n))`` and ``Phi^-1(1/(2K))``).
    The identity's slope is 1 in standardized units.
    """
    quantiles = np.quantile(column, probabilities[1:-1])
    knots, which = np.unique(quantiles, return_inverse=True)
    if len(knots) < 2:
        return False
    values = np.bincount(which, weights=normal[1:-1]) / np.bincount(which)
    return bool(np.max(np.diff(values) / np.diff(knots)) > SPIKE_RATIO)


def _plotting_positions(n_samples: int, n_knots: int | None = None):
    """Probabilities of the knots and their standard-normal targets, ``(K + 2,)``.

    The ``K`` quantiles, and the sample's minimum and maximum at the
    plotting positions ``1/(2n)`` and ``1 - 1/(2n)`` (below ``1/(4K)``): the
    cubic then spans every training value, and the linear tails continue
    the outer intervals' secants, not the slope of a spike that would
    otherwise hold the outer quantiles (a pixel inked in 0.5% of the images
    has all of its quantiles in the blank box; continuing the box's slope
    sent its inked values to ``|u|`` in the thousands).
    """
    k = n_knots_for(n_samples) if n_knots is None else int(n_knots)
    edge = min(0.5 / n_samples, 0.25 / k)
    probabilities = np.concatenate([[edge], (np.arange(k) + 0.5) / k, [1 - edge]])
    normal = torch.special.ndtri(torch.as_tensor(probabilities)).numpy()
    return probabilities, normal


def spiky_columns(S: np.ndarray) -> np.ndarray:
    """Which columns of standardized rows ``S`` hold a point mass, ``(D,)`` bool.

    The test of ``marginal_transform="auto"``: the steepest secant of the
    quantile map between inner quantiles exceeds :data:`SPIKE_RATIO`.
    """
    S = np.asarray(S, dtype=np.float64)
    probabilities, normal = _plotting_positions(len(S))
    return np.array([_is_spiky(c, probabilities, normal) for c in S.T], dtype=bool)


def _slopes(knots: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Knot derivatives of a monotone cubic through increasing points, ``(k,)``.

    Interior: the Fritsch-Butland weighted harmonic mean of the adjacent
    secants (below 3 times each, so every piece increases strictly). Ends:
    the secant over the two outer intervals, capped at
    :data:`END_SLOPE_LIMIT` times the end interval's; the linear tails
    continue with these slopes, so the map is continuously differentiable.
    """
    h = np.diff(knots)
    secant = np.diff(values) / h
    if len(knots) == 2:
        return np.full(2, secant[0])
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    interior = (w1 + w2) / (w1 / secant[:-1] + w2 / secant[1:])
    first = (values[2] - values[0]) / (knots[2] - knots[0])
    last = (values[-1] - values[-3]) / (knots[-1] - knots[-3])
    first = min(first, END_SLOPE_LIMIT * secant[0])
    last = min(last, END_SLOPE_LIMIT * secant[-1])
    return np.concatenate([[first], interior, [last]])


def _hermite_value(t, h, y0, y1, m0, m1):
    """Cubic piece (ends ``y0, y1``, slopes ``m0, m1``, width ``h``) at ``t``."""
    t2 = t * t
    t3 = t2 * t
    return (
        (2 * t3 - 3 * t2 + 1) * y0
        + (t3 - 2 * t2 + t) * h * m0
        + (3 * t2 - 2 * t3) * y1
        + (t3 - t2) * h * m1
    )


def _hermite(t, h, y0, y1, m0, m1):
    """A cubic piece at ``t``: value, first and second derivative in ``s``."""
    t2 = t * t
    value = _hermite_value(t, h, y0, y1, m0, m1)
    first = (6 * t2 - 6 * t) * (y0 - y1) / h + (3 * t2 - 4 * t + 1) * m0
    first = first + (3 * t2 - 2 * t) * m1
    second = ((12 * t - 6) * (y0 - y1) / h + (6 * t - 4) * m0 + (6 * t - 2) * m1) / h
    return value, first, second


def _end(below: torch.Tensor, array: torch.Tensor) -> torch.Tensor:
    """Per entry, ``array``'s first column where ``below``, else its last."""
    return torch.where(below, array[:, :1], array[:, -1:])


@dataclass(frozen=True, eq=False)
class MarginalGaussianization:
    """Increasing bijections ``u_d = T_d(s_d)`` of the real line, one per column.

    Parameters
    ----------
    knots : ndarray of shape (D, K)
        Strictly increasing knot positions per column (columns with fewer
        distinct quantiles are padded along their right tail line, which
        leaves the map unchanged).
    values : ndarray of shape (D, K)
        ``T_d`` at the knots (strictly increasing).
    slopes : ndarray of shape (D, K)
        ``T_d'`` at the knots (positive).
    active : ndarray of bool, shape (D,)
        Columns that are mapped; the others pass through unchanged.
    method : {"auto", "quantile"}
        How the columns were chosen (see :meth:`fit`).
    """

    knots: np.ndarray
    values: np.ndarray
    slopes: np.ndarray
    active: np.ndarray
    method: str

    @classmethod
    def fit(
        cls, S: np.ndarray, method: str = "auto", n_knots: int | None = None
    ) -> MarginalGaussianization:
        """Fit the maps to standardized rows ``S`` of shape (n_samples, D).

        Parameters
        ----------
        S : ndarray of shape (n_samples, D)
        method : {"auto", "quantile"}
            ``"auto"``: map the near-singular columns only (steepest secant
            above :data:`SPIKE_RATIO`); ``"quantile"``: map every column with
            at least two distinct quantiles.
        n_knots : int, optional
            Quantiles per column; default :func:`n_knots_for`.
        """
        if method not in ("auto", "quantile"):
            raise ValueError(f"method must be 'auto' or 'quantile'; got {method!r}.")
        S = np.asarray(S, dtype=np.float64)
        probabilities, normal = _plotting_positions(len(S), n_knots)
        columns = []
        for column in S.T:
            knots, values = _column_knots(column, probabilities, normal)
            if len(knots) < 2:
                columns.append(None)  # a constant column (or one atom)
                continue
            if method == "quantile" or _is_spiky(column, probabilities, normal):
                columns.append((knots, values, _slopes(knots, values)))
            else:
                columns.append(None)
        return cls._pack(columns, method)

    @classmethod
    def _pack(cls, columns, method) -> MarginalGaussianization:
        """Stack per-column knots (None: pass through) into padded arrays."""
        width = max([2] + [len(c[0]) for c in columns if c is not None])
        D = len(columns)
        knots = np.tile(np.linspace(-1.0, 1.0, width), (D, 1))
        values, slopes = knots.copy(), np.ones((D, width))
        active = np.zeros(D, dtype=bool)
        for d, column in enumerate(columns):
            if column is None:
                continue
            x, y, m = column
            pad = np.arange(1, width - len(x) + 1, dtype=np.float64)
            knots[d] = np.concatenate([x, x[-1] + pad])
            values[d] = np.concatenate([y, y[-1] + m[-1] * pad])
            slopes[d] = np.concatenate([m, np.full(len(pad), m[-1])])
            active[d] = True
        return cls(knots, values, slopes, active, method)

    def _lookup(self, v: torch.Tensor, by: str):
        """The piece of each entry of ``v`` (n, D), located among ``by``.

        ``by`` is ``"knots"`` (``v`` holds positions ``s``) or ``"values"``
        (``v`` holds images ``u``). Returns ``v`` transposed to (D, n), the
        piece index (-1 below the first knot, ``K - 1`` above the last),
        the ends ``x0, x1, y0, y1`` and slopes ``m0, m1`` of the clamped
        piece, and the arrays ``knots, values, slopes``, all (D, ...).
        """
        arrays = [
            torch.as_tensor(a).to(v) for a in (self.knots, self.values, self.slopes)
        ]
        knots, values, slopes = arrays
        vt = v.T.contiguous()
        grid = knots if by == "knots" else values
        index = torch.searchsorted(grid, vt, right=True) - 1
        piece = index.clamp(0, knots.shape[1] - 2)
        ends = [a.gather(1, p) for a in arrays for p in (piece, piece + 1)]
        return vt, index, ends, arrays

    def _pieces(self, s: torch.Tensor):
        """Value, first and second derivative of ``T`` at rows ``s`` (n, D)."""
        st, index, ends, (knots, values, slopes) = self._lookup(s, "knots")
        x0, x1, y0, y1, m0, m1 = ends
        h = x1 - x0
        # Clamped so that the branches torch.where discards stay finite.
        t = ((st - x0) / h).clamp(0.0, 1.0)
        value, first, second = _hermite(t, h, y0, y1, m0, m1)
        # Linear tails beyond the first and last knots.
        below = index < 0
        outside = below | (index >= knots.shape[1] - 1)
        slope = _end(below, slopes)
        tail = _end(below, values) + slope * (st - _end(below, knots))
        value = torch.where(outside, tail, value)
        first = torch.where(outside, slope, first)
        second = torch.where(outside, 0.0, second)
        return value.T, first.T, second.T

    def _active(self, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.active, device=like.device)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """``u = T(s)`` of rows ``s`` (n, D)."""
        value, _, _ = self._pieces(s)
        return torch.where(self._active(s), value, s)

    def log_derivative(self, s: torch.Tensor) -> torch.Tensor:
        """``log T_d'(s_d)`` elementwise (0 on columns passed through), ``(n, D)``."""
        _, first, _ = self._pieces(s)
        return torch.where(self._active(s), torch.log(first), 0.0)

    def log_derivative_grad(self, s: torch.Tensor) -> torch.Tensor:
        """``d/ds_d log T_d'(s_d) = T_d'' / T_d'``, ``(n, D)``."""
        _, first, second = self._pieces(s)
        return torch.where(self._active(s), second / first, 0.0)

    def scores(self, s: torch.Tensor, scores_u: torch.Tensor) -> torch.Tensor:
        """Scores in ``s`` from scores in ``u``: ``s_u(T(s)) T'(s) + (log T')'(s)``.

        The 1-D chain rule, for conditional and joint scores alike (the map
        is elementwise).
        """
        _, first, second = self._pieces(s)
        mapped = scores_u * first + second / first
        return torch.where(self._active(s), mapped, scores_u)

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        """``s = T^-1(u)``: linear tails in closed form, cubic pieces by bisection.

        On a piece, ``T(s) = u`` is a cubic in the local position ``t`` that
        increases strictly on [0, 1] but can be nearly flat inside (a slope
        near the Fritsch-Carlson bound), where Newton's method crawls:
        bisection of its power form halves the bracket at every step, to
        2**-:data:`BISECTION_STEPS` of the piece.
        """
        ut, index, ends, (knots, values, slopes) = self._lookup(u, "values")
        x0, x1, y0, y1, m0, m1 = ends
        h = x1 - x0
        hm0, hm1 = h * m0, h * m1
        rise = y1 - y0
        # T(x0 + t h) - u = ((c3 t + c2) t + c1) t + c0
        c0, c1 = y0 - ut, hm0
        c2 = 3 * rise - 2 * hm0 - hm1
        c3 = hm0 + hm1 - 2 * rise
        low, width = torch.zeros_like(ut), 1.0
        for _ in range(BISECTION_STEPS):
            width = 0.5 * width
            mid = low + width
            f = ((c3 * mid + c2) * mid + c1) * mid + c0
            low = torch.where(f < 0, mid, low)
        t = low + 0.5 * width
        s = x0 + t * h
        below = index < 0
        outside = below | (index >= knots.shape[1] - 1)
        tail = _end(below, knots) + (ut - _end(below, values)) / _end(below, slopes)
        s = torch.where(outside, tail, s)
        return torch.where(self._active(u), s.T, u)
