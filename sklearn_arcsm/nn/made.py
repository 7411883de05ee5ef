"""Masked autoregressive context network (MADE without its density head).

The network maps ``x`` of shape ``(batch, D)`` to per-dimension context
vectors of shape ``(batch, D, H)`` such that ``context[:, d]`` depends on
``x[:, :d]`` only (strictly earlier dimensions, in the natural order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MADE", "MaskedLinear", "made_masks"]


class MaskedLinear(nn.Linear):
    """Linear layer whose weight is multiplied by a fixed binary mask.

    Parameters
    ----------
    mask : torch.Tensor of shape (out_features, in_features)
        Connectivity; ``mask[j, i] = 1`` lets input ``i`` reach output ``j``.
    bias : bool, default=True
        Whether the layer has a bias.
    """

    def __init__(self, mask: torch.Tensor, bias: bool = True) -> None:
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features, bias=bias)
        # A buffer (not a parameter): it moves with .to() and is saved in the
        # state dict, so a reloaded network keeps its exact connectivity.
        self.register_buffer("mask", mask.to(self.weight.dtype))
        with torch.no_grad():
            # Rescale the default init by the fan-in that survives the mask,
            # so that activations keep their scale in sparse layers.
            fan_in = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
            self.weight.mul_((in_features / fan_in).sqrt())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_masks(
    n_features: int, hidden_sizes: Sequence[int], context_size: int
) -> list[torch.Tensor]:
    """Build MADE masks for a strictly autoregressive context network.

    Input ``i`` has degree ``i + 1``; hidden units get degrees cycling over
    ``1 .. D - 1``; output block ``d`` (``context_size`` units for dimension
    ``d``) has degree ``d + 1`` and sees hidden units of degree ``<= d``.

    Parameters
    ----------
    n_features : int
        Number of input dimensions ``D`` (at least 2).
    hidden_sizes : sequence of int
        Widths of the hidden layers (at least one layer).
    context_size : int
        Context width ``H`` per dimension.

    Returns
    -------
    masks : list of torch.Tensor
        One ``(out, in)`` mask per layer, the last of shape ``(D * H, hidden)``.
    """
    if n_features < 2:
        raise ValueError("made_masks needs n_features >= 2; D = 1 has no inputs.")
    if len(hidden_sizes) == 0:
        raise ValueError("made_masks needs at least one hidden layer.")
    degrees = [torch.arange(1, n_features + 1)]
    for width in hidden_sizes:
        if width >= n_features - 1:
            degrees.append(torch.arange(width) % (n_features - 1) + 1)
        else:
            # Too few units for every degree: spread them evenly, so each
            # dimension still sees all but at most a few of its latest inputs.
            degrees.append(torch.arange(width) * (n_features - 1) // width + 1)
    masks = [
        (d_out[:, None] >= d_in[None, :]).float()
        for d_in, d_out in zip(degrees[:-1], degrees[1:], strict=True)
    ]
    out_degrees = torch.arange(1, n_features + 1).repeat_interleave(context_size)
    masks.append((out_degrees[:, None] > degrees[-1][None, :]).float())
    return masks


class MADE(nn.Module):
    """Autoregressive context network ``x -> (c_1, ..., c_D)``.

    Parameters
    ----------
    n_features : int
        Number of dimensions ``D``.
    hidden_sizes : sequence of int
        Hidden layer widths (ideally each at least ``D - 1``, so that every
        autoregressive degree is represented).
    context_size : int
        Width ``H`` of each per-dimension context vector.

    Notes
    -----
    For ``D = 1`` the single conditional has no past, so the context is a
    learned constant vector.
    """

    def __init__(
        self, n_features: int, hidden_sizes: Sequence[int], context_size: int
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.context_size = context_size
        self.hidden_sizes = tuple(hidden_sizes) if n_features > 1 else ()
        if n_features == 1:
            self.constant = nn.Parameter(torch.zeros(1, context_size))
            self.layers = nn.ModuleList()
            return
        self.constant = None
        masks = made_masks(n_features, hidden_sizes, context_size)
        self.layers = nn.ModuleList(MaskedLinear(m) for m in masks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Contexts ``(batch, D, H)`` for ``x`` of shape ``(batch, D)``."""
        if self.constant is not None:
            return self.constant.expand(x.shape[0], 1, self.context_size)
        out = self.layers[-1](self._hidden(x))
        return out.view(x.shape[0], self.n_features, self.context_size)

    def context_at(self, x: torch.Tensor, d: int) -> torch.Tensor:
        """``forward(x)[:, d]``, shape ``(batch, H)``, computing only what ``d`` needs.

        The output layer holds ``D * H`` of the network's rows; dimension by
        dimension samplers need ``H`` of them per pass (at D = 784 with 1024
        hidden units, a quarter of the pass's work instead of all of it).
        """
        if self.constant is not None:
            return self.constant.expand(x.shape[0], self.context_size)
        last = self.layers[-1]
        rows = slice(d * self.context_size, (d + 1) * self.context_size)
        return F.linear(
            self._hidden(x), last.weight[rows] * last.mask[rows], last.bias[rows]
        )

    def _hidden(
        self, x: torch.Tensor, first_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The activations of the last hidden layer.

        ``first_bias`` (batch, hidden_sizes[0]) is added to the first layer's
        pre-activation (how :class:`~sklearn_arcsm.nn.ConditionalMADE` feeds
        in its condition).
        """
        h = x
        for i, layer in enumerate(self.layers[:-1]):
            pre = layer(h)
            if i == 0 and first_bias is not None:
                pre = pre + first_bias
            h = F.relu(pre)
        return h
