"""Conditional context network: MADE over ``z`` that also sees a condition ``x``.

An amortized AR-CSM of ``q(z | x)`` (the paper's section 6: the scores of a
VAE encoder for every ``x`` of a batch) needs contexts ``c_d(z_<d, x)``: strictly
autoregressive in ``z`` and free to depend on all of ``x``. The condition is
embedded once, ``e = embedding(x)``, and enters through two unmasked linear
maps: one added to the first hidden layer's pre-activation (so every hidden
unit can mix ``e`` with the ``z`` inputs its degree allows) and one added to
the output (so the first dimension, whose MADE context sees no ``z`` at all,
still depends on ``x``). Neither map touches ``z``, so the masks alone keep
the network autoregressive in ``z``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from sklearn_arcsm.nn.made import MADE
from sklearn_arcsm.nn.mlp import mlp

__all__ = ["ConditionalMADE", "default_embedding", "embedding_width"]


def default_embedding(n_conditions: int, width: int) -> nn.Module:
    """The default embedding of a condition: ``Linear(n_conditions, width) + ReLU``."""
    return mlp([n_conditions, width], last_activation=True)


class ConditionalMADE(MADE):
    """Context network ``(z, x) -> (c_1, ..., c_D)`` with ``c_d = c_d(z_<d, x)``.

    Parameters
    ----------
    n_features : int
        Number of modelled dimensions ``D`` (of ``z``).
    n_conditions : int
        Width of the condition ``x``.
    hidden_sizes : sequence of int
        Hidden widths of the MADE over ``z`` (at least one layer).
    context_size : int
        Context width ``H`` per dimension.
    embedding : nn.Module, optional
        Maps ``x`` of shape ``(batch, n_conditions)`` to ``(batch, E)``
        (a convolutional encoder of images, for instance). Its output width
        is read off one forward pass on zeros. Default:
        :func:`default_embedding` with ``E = hidden_sizes[0]``.

    Notes
    -----
    ``forward(z)`` without a condition raises: a conditional model has no
    marginal context.
    """

    def __init__(
        self,
        n_features: int,
        n_conditions: int,
        hidden_sizes: Sequence[int],
        context_size: int,
        embedding: nn.Module | None = None,
    ) -> None:
        hidden_sizes = tuple(int(h) for h in hidden_sizes)
        if len(hidden_sizes) == 0:
            raise ValueError("ConditionalMADE needs at least one hidden layer.")
        if n_conditions < 1:
            raise ValueError(f"n_conditions must be >= 1; got {n_conditions}.")
        super().__init__(n_features, hidden_sizes, context_size)
        self.n_conditions = n_conditions
        if embedding is None:
            embedding = default_embedding(n_conditions, hidden_sizes[0])
        self.embedding = embedding
        width = embedding_width(embedding, n_conditions)
        # D = 1 has no hidden layers (MADE keeps a constant context): the
        # condition then reaches the context through the output map only.
        self.condition_hidden = (
            nn.Linear(width, hidden_sizes[0], bias=False) if n_features > 1 else None
        )
        self.condition_out = nn.Linear(width, n_features * context_size, bias=False)

    def forward(
        self, x: torch.Tensor, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Contexts ``(batch, D, H)`` of ``x`` (batch, D) given ``condition``."""
        embedded = self._embed(condition, x)
        out = self.condition_out(embedded)
        if self.constant is not None:
            out = out + self.constant
        else:
            out = out + self.layers[-1](
                self._hidden(x, self.condition_hidden(embedded))
            )
        return out.view(x.shape[0], self.n_features, self.context_size)

    def context_at(
        self, x: torch.Tensor, d: int, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``forward(x, condition)[:, d]``, shape ``(batch, H)``, computing only d."""
        embedded = self._embed(condition, x)
        rows = slice(d * self.context_size, (d + 1) * self.context_size)
        out = F.linear(embedded, self.condition_out.weight[rows])
        if self.constant is not None:
            return out + self.constant
        last = self.layers[-1]
        return out + F.linear(
            self._hidden(x, self.condition_hidden(embedded)),
            last.weight[rows] * last.mask[rows],
            last.bias[rows],
        )

    def _embed(self, condition, x):
        if condition is None:
            raise ValueError(
                "this context network is conditional: pass the condition "
                f"(shape (batch, {self.n_conditions})) along with the input."
            )
        if condition.shape != (x.shape[0], self.n_conditions):
            raise ValueError(
                f"the condition must have shape ({x.shape[0]}, {self.n_conditions}) "
                f"for an input of shape {tuple(x.shape)}; got {tuple(condition.shape)}."
            )
        return self.embedding(condition.to(x.dtype))


def embedding_width(embedding: nn.Module, n_conditions: int) -> int:
    """The output width of ``embedding``, read off one forward pass on zeros."""
    param = next(embedding.parameters(), None)
    probe = torch.zeros(
        1,
        n_conditions,
        dtype=torch.float32 if param is None else param.dtype,
        device=None if param is None else param.device,
    )
    with torch.no_grad():
        out = embedding(probe)
    if out.ndim != 2 or out.shape[0] != 1:
        raise ValueError(
            "the embedding must map (batch, n_conditions) to (batch, width); on a "
            f"(1, {n_conditions}) input it returned shape {tuple(out.shape)}."
        )
    return int(out.shape[1])
