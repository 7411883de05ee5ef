"""Gaussian-conditional MADE: the normalized autoregressive counterpart.

``p(x_d | x_<d) = N(mu_d(x_<d), exp(log_scale_d(x_<d))**2)``, trained by
maximum likelihood. It is the paper's MLE baseline, and, being an explicit
density, it gives exact joint scores and Hessians by autograd for the
comparison objectives (exact, sliced and denoising score matching).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from sklearn_arcsm.nn.made import MADE

__all__ = ["GaussianMADE"]


class GaussianMADE(nn.Module):
    """MADE with a Gaussian conditional per dimension.

    Parameters
    ----------
    n_features : int
        Number of dimensions ``D``.
    hidden_sizes : sequence of int
        Hidden widths of the MADE.
    """

    def __init__(self, n_features: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        self.n_features = n_features
        self.made = MADE(n_features, hidden_sizes, context_size=2)

    def conditional_parameters(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and log-scales, each of shape ``(batch, D)``."""
        out = self.made(x)
        return out[..., 0], out[..., 1]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density ``(batch,)``."""
        mean, log_scale = self.conditional_parameters(x)
        z = (x - mean) * torch.exp(-log_scale)
        return (-0.5 * z.square() - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density ``(batch,)`` (so that ``-module(x).mean()`` is the NLL)."""
        return self.log_prob(x)
