"""Denoising and inpainting with an AR-CSM's exact density, as pure functions.

Both rest on the exact normalized log-density ``log p(x)`` of
:meth:`sklearn_arcsm.nn.ARCSM.log_prob` (MATH.md section 4), which is
differentiable in ``x``:

* its gradient, the *joint* score ``grad_x log p(x)``, has every partial
  derivative, not only the conditional scores ``d/dx_d log p(x_d | x_<d)``
  the network outputs (the gradient adds, for each ``k``, the dependence of
  the later conditionals on ``x_k`` through their contexts). Tweedie's
  formula ``E[x | y] = y + s**2 grad_y log p_s(y)`` needs the joint score of
  the noisy density ``p_s`` (MATH.md section 8);
* inpainting draws the missing entries of ``x`` from ``p(x_missing |
  x_observed)``. When every missing entry of a row comes after all of its
  observed entries in the model's order, that conditional is the product of
  the model's own conditionals and inverse-CDF draws are exact
  (:func:`sklearn_arcsm.sampling.autoregressive_fill`); otherwise an observed
  entry after a missing one carries information back, and :func:`mala`
  samples the conditional with Metropolis-adjusted Langevin moves whose
  acceptance uses the exact log-density.

Every random draw comes from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sklearn_arcsm import quadrature
from sklearn_arcsm.adaptive import AdaptiveRule
from sklearn_arcsm.knot_quadrature import KnotRule

__all__ = [
    "log_density_gradient",
    "mala",
    "missing_after_observed",
]

LogProbFn = Callable[[torch.Tensor], torch.Tensor]

# Step-size adaptation of MALA aims at this acceptance rate, optimal for
# Langevin proposals in high dimension (Roberts and Rosenthal, 1998).
TARGET_ACCEPTANCE = 0.574


def log_density_gradient(
    model: torch.nn.Module,
    x: torch.Tensor,
    sigma: torch.Tensor,
    rule: quadrature.PanelRule | AdaptiveRule | KnotRule | int,
    head: torch.nn.Module | None = None,
    condition: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-density and its gradient (the joint score) by autograd.

    Parameters
    ----------
    model : sklearn_arcsm.nn.ARCSM
    x : torch.Tensor of shape (batch, D)
        Points, in the model's standardized units; not modified.
    sigma : torch.Tensor
        Noise level of the density (the model's smallest).
    rule : PanelRule, AdaptiveRule, KnotRule or int
        Quadrature rule of the log-density (see ``ARCSM.log_prob``); the
        gradient is that of the density this rule computes.
    head : torch.nn.Module, optional
        Evaluates the scores (default: the model's own head).
    condition : torch.Tensor of shape (batch, n_conditions), optional
        For a conditional model: the gradient is that of ``log p(x |
        condition)`` in ``x`` (the condition is held fixed).

    Returns
    -------
    log_p : torch.Tensor of shape (batch,)
    grad : torch.Tensor of shape (batch, D)
        ``d log p / d x``. Row ``i`` depends on row ``i`` only.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        log_p = model.log_prob(x, sigma, rule, head=head, condition=condition)
        (grad,) = torch.autograd.grad(log_p.sum(), x)
    return log_p.detach(), grad


def missing_after_observed(missing: torch.Tensor) -> torch.Tensor:
    """Rows whose missing entries all come after their observed ones.

    For these rows ``p(x_missing | x_observed)`` is the product of the
    model's conditionals of the missing dimensions, so
    :func:`sklearn_arcsm.sampling.autoregressive_fill` draws from it exactly.

    Parameters
    ----------
    missing : torch.BoolTensor of shape (batch, D)

    Returns
    -------
    exact : torch.BoolTensor of shape (batch,)
        True also for rows with nothing missing or nothing observed.
    """
    n_features = missing.shape[1]
    position = torch.arange(n_features, device=missing.device)
    last_observed = torch.where(~missing, position, -1).amax(dim=1)
    first_missing = torch.where(missing, position, n_features).amin(dim=1)
    return last_observed < first_missing


def _autograd_gradient(log_prob: LogProbFn) -> LogProbFn:
    def grad(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(log_prob(x).sum(), x)
        return g

    return grad


def mala(
    log_prob: LogProbFn,
    x: torch.Tensor,
    movable: torch.Tensor,
    n_steps: int,
    *,
    grad: LogProbFn | None = None,
    step_size: float | torch.Tensor = 0.01,
    n_adapt: int | None = None,
    target_acceptance: float = TARGET_ACCEPTANCE,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """Metropolis-adjusted Langevin moves of the ``movable`` entries.

    Each step proposes ``y = x + h/2 g(x) + sqrt(h) z`` on the movable
    entries (``z`` standard normal, the others fixed) and accepts with
    probability ``min(1, p(y) q(x | y) / (p(x) q(y | x)))``, ``q`` the
    Gaussian proposal density. The chain leaves the distribution of the
    movable entries given the others, under ``exp(log_prob)``, invariant
    whatever ``g`` is: ``grad`` only has to point the proposals the right
    way (a cheaper approximation of the gradient is fine), while
    ``log_prob`` must be the target itself.

    Each row has its own step ``h``. During the first ``n_adapt`` steps it is
    adapted towards ``target_acceptance`` (a Robbins-Monro update of
    ``log h``); afterwards it is fixed, so the remaining steps are a
    time-homogeneous, exactly invariant kernel.

    Parameters
    ----------
    log_prob : callable
        Maps ``(n, D)`` to the unnormalized log-target ``(n,)``, row by row;
        called without autograd. Non-finite values are rejected.
    x : torch.Tensor of shape (n, D)
        Starting points; not modified.
    movable : torch.BoolTensor of shape (n, D)
    n_steps : int
        Number of steps, including the adaptation steps.
    grad : callable, optional
        Maps ``(n, D)`` to ``(n, D)``; default: the autograd gradient of
        ``log_prob``.
    step_size : float or torch.Tensor of shape (n,), default=0.01
        Initial ``h``.
    n_adapt : int, optional
        Adaptation steps; default ``n_steps // 2``.
    target_acceptance : float, default=0.574
    generator : torch.Generator, optional

    Returns
    -------
    x : torch.Tensor of shape (n, D)
        The final states.
    info : dict
        ``"step_size"``: the final ``h`` per row, ``(n,)``;
        ``"acceptance"``: the mean acceptance probability per row over the
        steps after adaptation, ``(n,)`` (NaN if every step adapted).
    """
    grad = _autograd_gradient(log_prob) if grad is None else grad
    n_adapt = n_steps // 2 if n_adapt is None else n_adapt
    mask = movable.to(x.dtype)
    x = x.detach().clone()
    log_h = torch.log(torch.as_tensor(step_size, dtype=x.dtype, device=x.device))
    log_h = log_h.expand(x.shape[0]).clone()
    with torch.no_grad():
        log_p = log_prob(x)
    g = grad(x) * mask
    acceptance_sum = torch.zeros_like(log_h)
    counted = 0
    for step in range(n_steps):
        h = torch.exp(log_h)[:, None]
        noise = torch.randn(
            x.shape, generator=generator, dtype=x.dtype, device=x.device
        )
        mean_forward = x + 0.5 * h * g
        proposal = mean_forward + torch.sqrt(h) * noise * mask
        with torch.no_grad():
            log_p_new = log_prob(proposal)
        g_new = grad(proposal) * mask
        mean_backward = proposal + 0.5 * h * g_new
        # log q(x | y) - log q(y | x), over the movable entries only.
        log_q_ratio = (
            -((x - mean_backward) * mask).square().sum(dim=1)
            + ((proposal - mean_forward) * mask).square().sum(dim=1)
        ) / (2.0 * h[:, 0])
        log_ratio = log_p_new - log_p + log_q_ratio
        log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio, -math.inf)
        accept_prob = torch.exp(log_ratio.clamp(max=0.0))
        uniform = torch.rand(
            x.shape[0], generator=generator, dtype=x.dtype, device=x.device
        )
        accept = uniform < accept_prob
        x = torch.where(accept[:, None], proposal, x)
        log_p = torch.where(accept, log_p_new, log_p)
        g = torch.where(accept[:, None], g_new, g)
        if step < n_adapt:
            log_h = log_h + (accept_prob - target_acceptance) / math.sqrt(step + 1.0)
        else:
            acceptance_sum += accept_prob
            counted += 1
    acceptance = (
        acceptance_sum / counted if counted else torch.full_like(log_h, math.nan)
    )
    return x, {"step_size": torch.exp(log_h), "acceptance": acceptance}
