"""The plain multilayer perceptron the VAE parts and score models share."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["mlp"]


def mlp(
    sizes: Sequence[int], activation=nn.ReLU, last_activation: bool = False
) -> nn.Sequential:
    """Linear layers of widths ``sizes`` with an activation between each two.

    Parameters
    ----------
    sizes : sequence of int
        Widths from the input to the output (at least two).
    activation : type, default=nn.ReLU
        Module class put after every linear layer but the last.
    last_activation : bool, default=False
        Put one after the last linear layer too (a feature extractor).
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(activation())
    return nn.Sequential(*layers)
