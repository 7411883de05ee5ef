"""Adaptive quadrature: each conditional gets the resolution it needs.

The conditionals of a fitted AR-CSM differ a lot in how hard they are to
integrate: on scikit-learn's digits, 257 Chebyshev nodes integrate the median
conditional to 2e-7 nats, while the hardest (box-like pixels with steep
walls) still err by 0.08 nats at that resolution and need over a thousand
nodes. A fixed rule must be sized for the hardest conditional of any input;
:class:`AdaptiveRule` instead refines each conditional separately.

The levels are Chebyshev-Lobatto panel rules on the same panels whose order
doubles from level to level, so each level's nodes contain the previous
level's: refining a conditional costs only the new nodes. A conditional is
accepted at level ``k + 1`` once its normalized log-density ``E - log Z`` at
the nodes it shares with level ``k`` changed by at most ``tol``, or once the
error of level ``k + 1`` extrapolated from the last two changes
(``change_{k+1}**2 / change_k``, while changes shrink) is within ``tol``.
The decision uses the whole energy function on the window, never
the point being scored, so each conditional density is the quadrature
density of one fixed rule (a normalized density up to that rule's error),
and a row's result never depends on the other rows of its batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sklearn_arcsm.quadrature import PanelRule

__all__ = ["AdaptiveRule", "ScoreFn"]

# score_fn(index, points) -> scores: the scores of conditionals ``index``
# (a LongTensor of shape (n,)) at window points of shape (n, n_points).
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# finish(rule, index, scores, energy, log_z) -> results for conditionals
# ``index`` whose scores at ``rule``'s nodes are ``scores`` (n,
# rule.n_points), with the energy at those nodes (n, rule.n_points) and the
# log-normalizer (n,) that the convergence test already computed.
FinishFn = Callable[
    [PanelRule, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor
]


@dataclass(frozen=True)
class AdaptiveRule:
    """Nested Chebyshev panel rules, refined per conditional to a tolerance.

    Parameters
    ----------
    n_panels : int, default=16
        Panels over the window (the same at every level).
    orders : tuple of int, default=(4, 8, 16, 32, 64)
        Chebyshev-Lobatto order per panel at each level, each twice the
        previous (so that the nodes nest). With 16 panels the levels have
        65, 129, 257, 513 and 1025 nodes.
    tol : float, default=1e-6
        Largest estimated error (nats) of the log-density at the nodes at
        which a conditional is accepted (see the module docstring; the
        estimators use 1e-5).
    """

    n_panels: int = 16
    orders: tuple[int, ...] = (4, 8, 16, 32, 64)
    tol: float = 1e-6

    def __post_init__(self):
        orders = tuple(int(o) for o in self.orders)
        if len(orders) < 2 or any(
            b != 2 * a for a, b in zip(orders[:-1], orders[1:], strict=True)
        ):
            raise ValueError(
                f"orders must double from level to level (at least two); got {orders}."
            )
        if not self.tol > 0:
            raise ValueError(f"tol must be > 0; got {self.tol}.")
        object.__setattr__(self, "orders", orders)

    @property
    def levels(self) -> tuple[PanelRule, ...]:
        """The panel rule of each level, coarsest first."""
        return tuple(PanelRule(self.n_panels, o, "chebyshev") for o in self.orders)

    @property
    def finest(self) -> PanelRule:
        """The finest level (what a conditional that never converges gets)."""
        return self.levels[-1]

    def evaluate(
        self,
        score_fn: ScoreFn,
        lower: torch.Tensor,
        upper: torch.Tensor,
        tail_scale: float,
        finish: FinishFn,
        stats: dict | None = None,
    ) -> torch.Tensor:
        """Refine every conditional until it converges, then ``finish`` it.

        Parameters
        ----------
        score_fn : callable
            ``score_fn(index, points)`` returns the scores, shape ``(n,
            n_points)``, of conditionals ``index`` at ``points``.
        lower, upper : torch.Tensor of shape (N,)
            Window of each conditional.
        tail_scale : float
        finish : callable
            ``finish(rule, index, scores, energy, log_z)`` maps the accepted
            level's scores (float64) of conditionals ``index``, their energy
            at the nodes and their log-normalizer (as
            :meth:`~sklearn_arcsm.quadrature.PanelRule.energy` and
            :meth:`~sklearn_arcsm.quadrature.PanelRule.log_normalizer` give
            them), to their results, shape ``(n, ...)``.
        stats : dict, optional
            Filled with ``"evaluations"`` (score evaluations in total) and
            ``"accepted"`` (conditionals accepted per level).

        Returns
        -------
        results : torch.Tensor of shape (N, ...)
            ``finish``'s results, in the order of the conditionals.
        """
        levels = self.levels
        n_total = lower.shape[0]
        index = torch.arange(n_total, device=lower.device)
        lo, hi = lower, upper
        scores = score_fn(index, levels[0].points(lo, hi)).double()
        log_p = _node_log_density(levels[0], scores, lo, hi, tail_scale)[0]
        evaluations = scores.numel()
        accepted = [0] * len(levels)
        results = None
        previous = torch.full_like(log_p[:, 0], math.inf)  # change at level k - 1
        for k, rule in enumerate(levels[1:], start=1):
            points = rule.points(lo, hi)[..., 1::2]  # the nodes new at this level
            fresh = score_fn(index, points).double()
            evaluations += fresh.numel()
            finer = scores.new_empty(scores.shape[0], rule.n_points)
            finer[:, 0::2] = scores
            finer[:, 1::2] = fresh
            fine_log_p, energy, log_z = _node_log_density(
                rule, finer, lo, hi, tail_scale
            )
            change = _change(log_p, fine_log_p[:, 0::2])
            if k < len(levels) - 1:
                # NaN changes never pass: they reach the finest level.
                done = _converged(change, previous, self.tol)
            else:
                done = torch.ones(finer.shape[0], dtype=torch.bool, device=lo.device)
            accepted[k] = int(done.sum())
            if accepted[k]:
                out = finish(rule, index[done], finer[done], energy[done], log_z[done])
                if results is None:
                    results = out.new_empty((n_total, *out.shape[1:]))
                results[index[done]] = out
            if accepted[k] == len(done):
                break
            if accepted[k]:  # (when none is done, no copies)
                keep = ~done
                index, lo, hi = index[keep], lo[keep], hi[keep]
                finer, fine_log_p, change = finer[keep], fine_log_p[keep], change[keep]
            scores, log_p, previous = finer, fine_log_p, change
        if stats is not None:
            stats["evaluations"] = evaluations
            stats["accepted"] = accepted
        if results is None:  # no conditionals at all
            results = torch.zeros(0, dtype=torch.float64, device=lower.device)
        return results


def _node_log_density(rule, scores, lower, upper, tail_scale):
    """``E - log Z`` at the rule's nodes, with ``E`` and ``log Z`` themselves."""
    energy = rule.energy(scores, lower, upper)
    log_z = rule.log_normalizer(energy, scores, lower, upper, tail_scale)
    return energy - log_z[:, None], energy, log_z


def _converged(change, previous, tol):
    """Accept where the estimated error of the finer level is within ``tol``.

    Under geometric convergence the error of level ``k`` is about
    ``change_k * (change_k / change_{k-1})``: the change from level ``k - 1``
    times the rate at which changes shrink. The estimate is used only while
    the changes do shrink; a change within ``tol`` itself is always accepted
    (the finer level is then more accurate still, or at the float32 floor).
    """
    shrinking = (change < previous) & torch.isfinite(previous)  # needs two changes
    estimate = change * change / previous
    return (change <= tol) | (shrinking & (estimate <= tol))


def _change(coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    """Largest change of the log-density at the shared nodes, where it matters."""
    change = (fine - coarse).abs()
    return torch.where(fine < IGNORED_BELOW, torch.zeros_like(change), change).amax(-1)


# Nodes where the finer level's log-density (nats, window units) is below
# this do not count in the convergence test: the steep walls of a sharp
# conditional, where no data lie, would otherwise set the resolution alone.
IGNORED_BELOW = -25.0
