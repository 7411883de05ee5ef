"""Exponential moving average of a module's parameters (weight averaging).

Stochastic gradients leave the last iterate scattered around a minimum; an
average of recent iterates sits closer to it (Polyak and Juditsky, 1992). For
score models the exponential average is standard practice (Song and Ermon,
"Improved Techniques for Training Score-Based Generative Models", 2020), and
here it is what the estimators validate, early-stop on and keep.
"""

from __future__ import annotations

import torch

__all__ = ["ExponentialAverage"]


class ExponentialAverage:
    """Exponential moving average of a module's parameters, and a swap.

    After update ``t`` the average is ``a <- d_t a + (1 - d_t) w`` with
    ``d_t = min(decay, (1 + t) / (10 + t))``: the warm-up keeps the early
    average from being dominated by the initial weights.

    The object holds tensors only (the average, and the live weights while
    the average is swapped in), so it pickles and deep-copies with the
    training state it belongs to; each method takes the module it acts on.

    Parameters
    ----------
    module : torch.nn.Module
        The module whose floating-point parameters are averaged (its current
        weights start the average).
    decay : float in [0, 1)
        Per-update decay; about ``1 / (1 - decay)`` recent updates carry the
        average.
    """

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = _check_decay(decay)
        self.n_updates = 0
        self.average = [p.detach().clone() for p in _params(module)]
        # The live weights while the average is swapped in (None otherwise).
        self.stashed = None

    @property
    def swapped_in(self) -> bool:
        """Whether the module currently holds the average."""
        return self.stashed is not None

    def set_decay(self, decay: float) -> None:
        self.decay = _check_decay(decay)

    def to(self, device) -> ExponentialAverage:
        """Move the held tensors to ``device`` (in place); returns self."""
        self.average = [a.to(device) for a in self.average]
        if self.stashed is not None:
            self.stashed = [w.to(device) for w in self.stashed]
        return self

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """Fold the module's current (live) weights into the average."""
        if self.swapped_in:
            raise RuntimeError("update() needs the live weights; call use_live().")
        self.n_updates += 1
        t = self.n_updates
        weight = 1.0 - min(self.decay, (1.0 + t) / (10.0 + t))
        live = [p.detach() for p in _params(module)]
        torch._foreach_lerp_(self.average, live, weight)

    @torch.no_grad()
    def use_average(self, module: torch.nn.Module) -> None:
        """Put the average into the module (the live weights are kept aside)."""
        if self.swapped_in:
            return
        params = _params(module)
        self.stashed = [p.detach().clone() for p in params]
        for p, a in zip(params, self.average, strict=True):
            p.copy_(a)

    @torch.no_grad()
    def use_live(self, module: torch.nn.Module) -> None:
        """Put the live weights back into the module."""
        if not self.swapped_in:
            return
        for p, w in zip(_params(module), self.stashed, strict=True):
            p.copy_(w)
        self.stashed = None


def _params(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.dtype.is_floating_point]


def _check_decay(decay: float) -> float:
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1); got {decay}.")
    return float(decay)
