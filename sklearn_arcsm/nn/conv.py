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

__all__ = ["GatedPixelCNN", "MaskedConv2d", "PixelCNN"]


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


def _groups(n_channels: int, n_groups: int, halves: int = 1) -> torch.Tensor:
    """Channel group of each of ``halves * n_channels`` channels.

    ``n_channels`` split into ``n_groups`` equal blocks; with ``halves=2``
    the two halves of a gated pre-activation are grouped alike.
    """
    return (torch.arange(halves * n_channels) % n_channels) * n_groups // n_channels


class _CausalConv(nn.Conv2d):
    """A convolution padded so that its bottom-right tap is the current pixel.

    ``kind="vertical"``: a ``(kh, kw)`` kernel over the rows ``i - kh + 1 ..
    i`` and the columns ``j - kw // 2 .. j + kw // 2`` (its output sees the
    current row, so the stack shifts it down a row before the horizontal
    stack uses it). ``kind="horizontal"``: a ``(1, kw)`` kernel over the
    columns ``j - kw + 1 .. j`` of the current row; at the current pixel an
    output channel of group ``g`` sees the input channels of groups ``< g``
    (``strict=True``: PixelCNN's type A) or ``<= g`` (type B), so that within
    a pixel channel ``c`` depends on channels ``< c`` only.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int],
        kind: str,
        in_groups: torch.Tensor | None = None,
        out_groups: torch.Tensor | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel)
        kh, kw = kernel
        if kind == "vertical":
            self.pad = (kw // 2, kw // 2, kh - 1, 0)
        else:
            self.pad = (kw - 1, 0, kh - 1, 0)
        mask = torch.ones_like(self.weight)
        if kind == "horizontal":
            allowed = (
                in_groups[None] < out_groups[:, None]
                if strict
                else in_groups[None] <= out_groups[:, None]
            )
            mask[:, :, -1, -1] = allowed.to(mask.dtype)
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.pad), self.weight * self.mask, self.bias)


def _gate(h: torch.Tensor) -> torch.Tensor:
    """Gated activation ``tanh(a) * sigmoid(b)`` over the two channel halves."""
    a, b = h.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def _shift_down(h: torch.Tensor) -> torch.Tensor:
    """Row ``i`` of the result is row ``i - 1`` of ``h`` (zeros on top)."""
    return F.pad(h, (0, 0, 1, 0))[:, :, :-1]


class GatedPixelCNN(nn.Module):
    """Gated PixelCNN context network ``(batch, D) -> (batch, D, context_size)``.

    The design of van den Oord et al. (2016): a *vertical* stack that sees
    the rows above the current pixel and a *horizontal* stack that sees the
    pixels to its left in the current row, combined at every layer, with
    gated activations and residual connections in the horizontal stack.
    Unlike a stack of masked convolutions, it has no blind spot: every
    earlier pixel within the receptive field (``n_layers * (kernel_size //
    2)`` rows up, as many columns left and right) reaches the context.

    Ordering: raster over pixels (row by row, left to right) and, within a
    pixel, channel by channel: the columns of ``X`` are images of shape
    ``(height, width, channels)`` flattened (for ``(n, C, H, W)`` arrays,
    ``images.transpose(0, 2, 3, 1).reshape(n, -1)``), and the context of
    dimension ``d`` depends on ``x[:, :d]`` only.

    Parameters
    ----------
    image_shape : tuple of int
        ``(height, width)`` or ``(channels, height, width)``.
    channels : int
        Feature channels of each stack (a multiple of the image's channels:
        each image channel owns an equal block).
    context_size : int
        Context width per dimension.
    n_layers : int, default=4
        Gated layers of both stacks.
    kernel_size : int, default=5
        Odd width of the convolutions (the vertical ones cover
        ``kernel_size // 2 + 1`` rows).
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        channels: int,
        context_size: int,
        n_layers: int = 4,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        shape = tuple(int(s) for s in image_shape)
        if len(shape) == 2:
            shape = (1,) + shape
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(
                "image_shape must be (height, width) or (channels, height, width) "
                f"of positive sizes; got {tuple(image_shape)}."
            )
        if kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(
                f"kernel_size must be a positive odd integer; got {kernel_size}."
            )
        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1; got {n_layers}.")
        n_colors = shape[0]
        if channels < n_colors or channels % n_colors:
            raise ValueError(
                f"channels must be a positive multiple of the image's {n_colors} "
                f"channels; got {channels}."
            )
        self.image_shape = shape
        self.n_features = shape[0] * shape[1] * shape[2]
        self.context_size = context_size
        self.channels = channels
        self.n_layers = n_layers
        self.kernel_size = kernel_size
        half = kernel_size // 2
        colors = torch.arange(n_colors)
        feature = _groups(channels, n_colors)
        gated = _groups(channels, n_colors, halves=2)
        self.vertical = nn.ModuleList()
        self.horizontal = nn.ModuleList()
        self.links = nn.ModuleList()
        self.residuals = nn.ModuleList()
        for layer in range(n_layers):
            c_in, in_groups = (n_colors, colors) if layer == 0 else (channels, feature)
            self.vertical.append(
                _CausalConv(c_in, 2 * channels, (half + 1, kernel_size), "vertical")
            )
            self.horizontal.append(
                _CausalConv(
                    c_in,
                    2 * channels,
                    (1, half + 1),
                    "horizontal",
                    in_groups,
                    gated,
                    strict=layer == 0,
                )
            )
            # The vertical stack, shifted down a row, holds only rows above:
            # it may feed every channel of the horizontal stack.
            self.links.append(nn.Conv2d(channels, 2 * channels, 1))
            if layer > 0:
                self.residuals.append(
                    _CausalConv(
                        channels, channels, (1, 1), "horizontal", feature, feature
                    )
                )
        out_groups = torch.arange(n_colors).repeat_interleave(context_size)
        self.output = _CausalConv(
            channels, n_colors * context_size, (1, 1), "horizontal", feature, out_groups
        )

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """Channels per gated layer, as the estimators report them."""
        return (self.channels,) * self.n_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Contexts ``(batch, D, context_size)`` for flattened images ``(batch, D)``."""
        n_colors, height, width = self.image_shape
        image = x.reshape(x.shape[0], height, width, n_colors).permute(0, 3, 1, 2)
        v = h = image
        for layer in range(self.n_layers):
            v = _gate(self.vertical[layer](v))
            update = _gate(
                self.horizontal[layer](h) + self.links[layer](_shift_down(v))
            )
            h = update if layer == 0 else h + self.residuals[layer - 1](update)
        out = self.output(h)  # (batch, colors * context, H, W)
        out = out.reshape(x.shape[0], n_colors, self.context_size, height, width)
        return out.permute(0, 3, 4, 1, 2).reshape(x.shape[0], -1, self.context_size)
