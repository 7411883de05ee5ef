"""The AR-CSM module: context network + conditional score head + tails.

The conditional score of dimension ``d`` (in standardized units) is::

    s_d(x) = f_d(x_d)                                   inside [lo_d, hi_d]
    s_d(x) = min(f_d(hi_d), 0) - (x_d - hi_d) / rho**2  above the window
    s_d(x) = max(f_d(lo_d), 0) + (lo_d - x_d) / rho**2  below the window

where ``f_d`` is the neural head. Outside the window the score decays
linearly with slope ``-1 / rho**2`` from a value that never points away from
the window, so ``exp(E_d)`` has Gaussian tails that hold at most about
``1.25 rho`` times the edge density, whatever the network outputs: every
parameter setting defines a proper, full-support density (MATH.md section 4),
whose tail mass has a closed form (see :mod:`sklearn_arcsm.quadrature`).
(Without the cut, an untrained positive score at the upper edge put up to 87%
of a digits pixel's mass far beyond the data.)
Unlike a bounded head (``B * tanh(g / B)``), this caps nothing inside the
window, so narrow modes can have scores as sharp as they need.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sklearn_arcsm import quadrature
from sklearn_arcsm.nn.conv import PixelCNN
from sklearn_arcsm.nn.made import MADE
from sklearn_arcsm.nn.score_head import ConditionalScoreHead

__all__ = ["ARCSM"]


class ARCSM(nn.Module):
    """Autoregressive conditional score model.

    Parameters
    ----------
    n_features : int
        Number of dimensions ``D``.
    hidden_sizes : sequence of int
        Hidden widths of the MADE context network.
    context_size : int
        Context width ``H`` per dimension.
    head_sizes : sequence of int
        Hidden widths of the shared conditional score head.
    lower, upper : torch.Tensor of shape (D,)
        Quadrature window per dimension (standardized units).
    tail_scale : float, default=1.0
        ``rho``: width of the Gaussian tails outside the window.
    n_frequencies : int, default=6
        Fourier frequencies of the head's scalar encoding.
    backbone : {"made", "pixelcnn"} or nn.Module, default="made"
        Context network: a :class:`MADE` with ``hidden_sizes``, a
        :class:`PixelCNN` with ``hidden_sizes`` as channel counts (needs
        ``image_shape``), or any module mapping ``(batch, D)`` to
        ``(batch, D, H)`` autoregressively.
    image_shape : tuple of int, optional
        ``(height, width)`` for ``backbone="pixelcnn"``.
    """

    def __init__(
        self,
        n_features: int,
        hidden_sizes: Sequence[int],
        context_size: int,
        head_sizes: Sequence[int],
        lower: torch.Tensor,
        upper: torch.Tensor,
        tail_scale: float = 1.0,
        n_frequencies: int = 6,
        backbone: str | nn.Module = "made",
        image_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.tail_scale = float(tail_scale)
        if backbone == "made":
            self.context_net = MADE(n_features, hidden_sizes, context_size)
        elif backbone == "pixelcnn":
            if image_shape is None or image_shape[0] * image_shape[1] != n_features:
                raise ValueError(
                    f"backbone='pixelcnn' needs image_shape=(height, width) with "
                    f"height * width == {n_features}; got {image_shape}."
                )
            self.context_net = PixelCNN(image_shape, hidden_sizes, context_size)
        elif isinstance(backbone, nn.Module):
            self.context_net = backbone
        else:
            raise ValueError(
                "backbone must be 'made', 'pixelcnn' or an nn.Module; "
                f"got {backbone!r}."
            )
        self.head = ConditionalScoreHead(
            n_features, context_size, head_sizes, n_frequencies
        )
        self.register_buffer("lower", torch.as_tensor(lower, dtype=torch.float32))
        self.register_buffer("upper", torch.as_tensor(upper, dtype=torch.float32))

    def conditioner(self, x: torch.Tensor) -> torch.Tensor:
        """First-layer head biases ``(batch, D, K)``; entry ``d`` sees ``x[:, :d]``."""
        return self.head.context_bias(self.context_net(x))

    def conditional_scores(
        self,
        bias: torch.Tensor,
        u: torch.Tensor,
        sigma: torch.Tensor,
        lower: torch.Tensor | None = None,
        upper: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores ``s_d(u)`` with the Gaussian tail continuation.

        Parameters
        ----------
        bias : torch.Tensor of shape (..., K)
            From :meth:`conditioner`, broadcastable against ``u[..., None]``.
        u : torch.Tensor of shape (...)
            Scalar inputs (standardized units).
        sigma : torch.Tensor broadcastable to ``u``
            Noise level.
        lower, upper : torch.Tensor broadcastable to ``u``, optional
            The window; defaults to the module's per-dimension window, which
            assumes ``u`` ends with the dimension axis.
        """
        lower = self.lower if lower is None else lower
        upper = self.upper if upper is None else upper
        inside = torch.minimum(torch.maximum(u, lower), upper)
        scores = self.head(bias, inside, sigma)
        # Outside the window, an outward-pointing edge score is cut to zero
        # (quadrature.tail_slopes): the tails always decay from the edge.
        outward = torch.where(u > upper, scores.clamp(max=0.0), scores.clamp(min=0.0))
        scores = torch.where((u > upper) | (u < lower), outward, scores)
        return scores - (u - inside) / self.tail_scale**2

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Conditional scores ``(batch, D)`` at ``x`` and noise level ``sigma``."""
        return self.conditional_scores(self.conditioner(x), x, sigma)

    def grid(self, n_cells: int) -> torch.Tensor:
        """Quadrature points ``(D, 2 n_cells + 1)`` spanning each dimension's window."""
        return quadrature.grid_points(self.lower, self.upper, n_cells)

    def grid_scores(
        self, bias: torch.Tensor, sigma: torch.Tensor, n_cells: int
    ) -> torch.Tensor:
        """Scores on the quadrature grid: ``(batch, D, 2 n_cells + 1)``.

        ``bias`` is ``(batch, D, K)`` from :meth:`conditioner`. The head's
        input layer sees the grid without a batch axis, so its features are
        computed once and broadcast over the batch.
        """
        grid = self.grid(n_cells).to(bias.dtype)
        return self.head(bias[:, :, None, :], grid[None], sigma)

    def log_prob(
        self, x: torch.Tensor, sigma: torch.Tensor, n_cells: int
    ) -> torch.Tensor:
        """Exact normalized log-density ``(batch,)`` up to quadrature error.

        ``log p(x) = sum_d [E_d(x_d) - log Z_d(x_<d)]`` (MATH.md section 4),
        with each 1-D integral done by :mod:`sklearn_arcsm.quadrature`.
        """
        return self.conditional_log_prob(x, sigma, n_cells).sum(dim=-1)

    def conditional_log_prob(
        self, x: torch.Tensor, sigma: torch.Tensor, n_cells: int
    ) -> torch.Tensor:
        """Per-dimension terms ``log p(x_d | x_<d)``: shape ``(batch, D)``."""
        scores = self.grid_scores(self.conditioner(x), sigma, n_cells)
        return quadrature.log_density(
            x, scores, self.lower.to(x.dtype), self.upper.to(x.dtype), self.tail_scale
        )

    def dimension_log_prob(
        self,
        x: torch.Tensor,
        dims: torch.Tensor,
        sigma: torch.Tensor,
        n_cells: int,
        shift: torch.Tensor | None = None,
        conditioning: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``log p(x_d | x_<d)`` for one dimension ``d = dims[i]`` per row.

        Differentiable in the parameters, so it can serve as a training
        objective: ``D * dimension_log_prob`` with ``d`` uniform is an
        unbiased estimate of ``log p(x)`` at ``1 / D`` of the quadrature cost.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, D)
        dims : torch.LongTensor of shape (batch,)
        sigma : torch.Tensor
            Noise level of the density.
        n_cells : int
            Quadrature cells over the window.
        shift : torch.Tensor of shape (batch,), optional
            Fractions of a cell in ``[0, 1)``. Each row's grid then starts
            ``shift`` cells below the window and spans one extra cell, so a
            coarse training grid cannot be exploited by spikes between its
            points (beyond the window the score is exactly the tail the
            quadrature assumes, so the result stays exact up to grid error).
        conditioning : torch.Tensor of shape (batch, D, K), optional
            ``conditioner(x)``, when already computed (it does not depend on
            ``dims``, so several calls on the same ``x`` can share it).

        Returns
        -------
        log_p : torch.Tensor of shape (batch,)
        """
        rows = torch.arange(x.shape[0], device=x.device)
        if conditioning is None:
            conditioning = self.conditioner(x)
        bias = conditioning[rows, dims][:, None, :]  # (batch, 1, K)
        lower = self.lower.to(x.dtype)[dims]
        upper = self.upper.to(x.dtype)[dims]
        if shift is None:
            start, stop, cells = lower, upper, n_cells
        else:
            width = (upper - lower) / n_cells
            start, stop = lower - shift * width, upper + (1.0 - shift) * width
            cells = n_cells + 1
        grid = quadrature.grid_points(start, stop, cells)  # (batch, 2 cells + 1)
        scores = self.conditional_scores(
            bias, grid, sigma, lower[:, None], upper[:, None]
        )
        return quadrature.log_density(
            x[rows, dims], scores, start, stop, self.tail_scale
        )
