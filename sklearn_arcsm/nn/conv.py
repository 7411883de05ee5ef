"""PixelCNN-style masked convolutional context network for images.

Pixels are ordered in raster order (row by row, left to right), as the
flattened images of ``X`` are. The first convolution uses a type-A mask (a
pixel sees only pixels strictly before it); later ones use type-B masks (a
pixel also sees its own position's features, which already summarize only
strictly earlier pixels). So ``context[:, d]`` depends on ``x[:, :d]`` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MaskedConv2d", "PixelCNN"]


class MaskedConv2d(nn.Conv2d):
    """2-D convolution whose kernel is masked to respect raster order.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
        Odd kernel size.
    mask_type : {"A", "B"}
        "A" excludes the centre pixel, "B" includes it.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str
    ) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd; got {kernel_size}.")
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B'; got {mask_type!r}.")
        super().__init__(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2
        )
        centre = kernel_size // 2
        mask = torch.zeros(kernel_size, kernel_size)
        mask[:centre] = 1.0  # rows above
        mask[centre, : centre + (mask_type == "B")] = 1.0  # left (and centre for B)
        self.register_buffer("mask", mask[None, None].expand_as(self.weight).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNN(nn.Module):
    """Masked convolutional context network ``(batch, H*W) -> (batch, H*W, C)``.

    Parameters
    ----------
    image_shape : tuple of int
        ``(height, width)`` of the images; ``D = height * width``.
    channels : sequence of int
        Hidden channel counts; one masked layer each (the first type A with
        a 7x7 kernel, the rest type B with 3x3 kernels).
    context_size : int
        Context width ``C`` per pixel (a final 1x1 convolution).
    """

    def __init__(
        self, image_shape: Sequence[int], channels: Sequence[int], context_size: int
    ) -> None:
        super().__init__()
        if len(channels) == 0:
            raise ValueError("PixelCNN needs at least one hidden layer.")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.n_features = self.image_shape[0] * self.image_shape[1]
        self.context_size = context_size
        self.hidden_sizes = tuple(channels)
        layers: list[nn.Module] = [MaskedConv2d(1, channels[0], 7, "A")]
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers.append(MaskedConv2d(c_in, c_out, 3, "B"))
        self.layers = nn.ModuleList(layers)
        # 1x1 convolutions see only their own position: a type-B mask.
        self.output = MaskedConv2d(channels[-1], context_size, 1, "B")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Contexts ``(batch, D, C)`` for flattened images ``x``: ``(batch, D)``."""
        h = x.reshape(x.shape[0], 1, *self.image_shape)
        for layer in self.layers:
            h = F.relu(layer(h))
        out = self.output(h)  # (batch, C, H, W)
        return out.flatten(2).transpose(1, 2)
