"""Score-matching objectives as pure torch functions.

Composite score matching (CSM, MATH.md sections 3 and 5) needs only the
conditional scores ``s_d`` and their derivatives ``ds_d / dx_d``. Feeding the
scalar inputs through a separate leaf tensor ``u`` makes one backward pass
return every diagonal derivative exactly, because ``s_d`` depends on ``u``
through ``u_d`` alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["composite_score_matching", "noise_conditional_csm"]


def composite_score_matching(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    u: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample CSM objective ``sum_d w_d [ s_d**2 / 2 + ds_d / du_d ]`` (Eq. 5).

    Parameters
    ----------
    score_fn : callable
        Maps ``u`` of shape ``(batch, D)`` to conditional scores of the same
        shape, where output ``d`` depends on ``u`` only through ``u[:, d]``
        (anything else, such as contexts, must be computed outside from a
        tensor other than ``u``).
    u : torch.Tensor of shape (batch, D)
        Scalar inputs; need not require grad (a differentiable copy is used).
    weights : torch.Tensor broadcastable to (batch, D), optional
        Per-term weights ``w_d`` (default 1).

    Returns
    -------
    objective : torch.Tensor of shape (batch,)
        Differentiable with respect to the parameters of ``score_fn``.
    """
    u = u.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = score_fn(u)
        (diag,) = torch.autograd.grad(scores.sum(), u, create_graph=True)
    terms = 0.5 * scores.square() + diag
    if weights is not None:
        terms = weights * terms
    return terms.sum(dim=-1)


def noise_conditional_csm(
    model: torch.nn.Module,
    x: torch.Tensor,
    noise_levels: torch.Tensor,
    generator: torch.Generator | None = None,
    final_level_probability: float = 0.5,
    weight_power: float = 0.0,
) -> torch.Tensor:
    """Multi-scale CSM training objective of a noise-conditional AR-CSM.

    Each sample is perturbed once with ``z ~ N(0, I)``. The context network
    sees ``x + sigma_L z`` (the smallest level); the scalar input of
    dimension ``d`` sees ``x_d + sigma_i z_d`` with a level ``sigma_i`` drawn
    per sample and dimension. At ``sigma_i = sigma_L`` the scalar and context
    inputs coincide, so those terms train the exact conditionals of
    ``x + sigma_L z``: the density the model represents.

    Parameters
    ----------
    model : torch.nn.Module
        Exposes ``conditioner(x) -> (batch, D, K)`` and
        ``conditional_scores(bias, u, sigma) -> (batch, D)`` (see
        :class:`sklearn_arcsm.nn.ARCSM`).
    x : torch.Tensor of shape (batch, D)
        Clean data (standardized units).
    noise_levels : torch.Tensor of shape (L,)
        Decreasing positive levels; the last is the model's final level.
    generator : torch.Generator, optional
        Source of every random draw (on ``x``'s device).
    final_level_probability : float, default=0.5
        Probability of drawing the smallest level; the other levels share
        the rest equally. (With one level it is always drawn.)
    weight_power : float, default=0.0
        Terms are weighted by ``(sigma_i / sigma_L) ** weight_power``. NCSN's
        ``sigma**2`` weighting (power 2) starves the final level of gradient;
        measured on two-moons and digits, equal weights (power 0) with half
        the draws on the final level gave the best held-out likelihood.

    Returns
    -------
    objective : torch.Tensor of shape (batch,)
    """
    n_levels = len(noise_levels)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    probs = torch.full((n_levels,), 1.0, device=x.device)
    if n_levels > 1:
        probs[:-1] = (1.0 - final_level_probability) / (n_levels - 1)
        probs[-1] = final_level_probability
    level = torch.multinomial(probs, x.numel(), replacement=True, generator=generator)
    levels = noise_levels.to(x.dtype)
    sigma = levels[level.view(x.shape)]
    bias = model.conditioner(x + levels[-1] * noise)
    u = x + sigma * noise

    def score_fn(v: torch.Tensor) -> torch.Tensor:
        return model.conditional_scores(bias, v, sigma)

    weights = None if weight_power == 0 else (sigma / levels[-1]).pow(weight_power)
    return composite_score_matching(score_fn, u, weights=weights)
