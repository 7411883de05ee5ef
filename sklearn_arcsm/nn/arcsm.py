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

With ``affine=True`` (the default) the score above lives in *window
coordinates* ``v = (x_d - m_d) / a_d``, where the location ``m_d`` and scale
``a_d`` are read off the context of dimension ``d`` (a MAF-style affine
layer in front of the free-form 1-D density): the density of ``x_d`` is
``p_v((x_d - m_d) / a_d) / a_d`` and its score ``s_v(v) / a_d``. The window,
the tails and the quadrature are unchanged in ``v``; what changes is that a
conditional much narrower than the data's range (the funnel's, at small
``v``) or far from the window's centre is moved and scaled to where the
quadrature grid resolves it. Both start at the identity (``m = 0, a = 1``).
With ``linear_skip`` the location also has a linear term in ``x_<d``, the
least-squares regression's form, learned directly instead of through the
context network's hidden units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from sklearn_arcsm import quadrature
from sklearn_arcsm.adaptive import AdaptiveRule
from sklearn_arcsm.knot_quadrature import KnotRule
from sklearn_arcsm.nn.conditional import ConditionalMADE
from sklearn_arcsm.nn.conv import GatedPixelCNN
from sklearn_arcsm.nn.made import MADE, MaskedLinear
from sklearn_arcsm.nn.score_head import ConditionalScoreHead
from sklearn_arcsm.nn.spline_head import DEFAULT_N_KNOTS, SplineScoreHead

__all__ = ["ARCSM", "check_context_network"]

# The log-scale of the affine layer is squashed into [-B, B_up]: scales from
# e^-5 = 0.007 standardized units (Neal's funnel needs conditional widths
# down to 0.06; bounded so that a bad step cannot overflow exp) up to
# e^0.5 = 1.65. Scales above 1 only zoom out, which the window's own width
# (several standardized units beyond the data) makes unnecessary, and they
# open a way to fool the quadrature: the window coordinate of a conditional
# shrinks by the scale, and on 6x6 image patches (35-D) the default model
# learned, within 60 epochs at the learning rate of lr="auto", scales near
# e^4 and peaks narrower than the quadrature's nodes, which neither the
# training term's shifted grid nor the adaptive rule saw (held-out
# "log-likelihood" +85,510 nats per patch, against -2 to -13 per
# conditional by a 32,768-node reference rule). With B_up = 1.5 the same
# happened; with 0.5 it did not (91.3 nats per patch, early stopping at
# epoch 34). Modules saved before this bound keep B_up = B, and models
# trained by score matching alone (CSMScoreEstimator), which never evaluate
# the quadrature in training, use B_up = B: the bound cost them accuracy (R^2
# of a 2-D mixture's conditional scores 0.835 instead of above 0.85). So do
# spline-head models trained on the knot rule, which has no nodes to hide
# between (its node count follows the spline's slope): for them the zoom-out
# is needed, since their knots are spread over the window, and a conditional
# that widens with its context (Student t) otherwise has to change shape.
LOG_SCALE_BOUND = 5.0
MAX_LOG_SCALE = 0.5


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
    backbone : {"made", "pixelcnn"}, nn.Module or callable, default="made"
        Context network: a :class:`MADE` with ``hidden_sizes``; a
        :class:`GatedPixelCNN` with ``len(hidden_sizes)`` layers of
        ``hidden_sizes[0]`` channels (all equal; needs ``image_shape``); a
        module mapping ``(batch, D)`` to ``(batch, D, H)`` autoregressively;
        or a callable ``backbone(n_features, context_size)`` that builds one.
        Modules not built here are checked by :func:`check_context_network`.
    image_shape : tuple of int, optional
        ``(height, width)`` or ``(channels, height, width)`` for
        ``backbone="pixelcnn"``.
    kernel_size : int, default=5
        Convolution width of ``backbone="pixelcnn"``.
    affine : bool, default=True
        Read a location and a scale per conditional off the context and
        define the score-based density in the standardized coordinates they
        give (see the module docstring).
    mixed_precision : {None, "bf16"}, default=None
        ``"bf16"``: in training mode, run the context network under
        bfloat16 autocast (its matrix products in bfloat16, accumulated in
        float32) and hand its output to the score head in the input's
        dtype. The score head, its input derivative and the quadrature stay
        in float32 (training) or float64 (inference): they set the accuracy
        of scores and densities, and bfloat16's 8-bit mantissa would
        dominate their error. Evaluation mode ignores it.
    n_conditions : int, default=0
        Width of a condition ``c`` the model is conditional on, making it a
        model of ``p(x | c)`` (amortized over ``c``, as a VAE's encoder
        scores need): contexts ``c_d(x_<d, c)``. Every method that computes
        contexts then takes ``condition=`` of shape ``(batch, n_conditions)``.
        With ``backbone="made"`` the context network is a
        :class:`~sklearn_arcsm.nn.ConditionalMADE`; a custom backbone must
        take ``(x, condition)``. 0: unconditional.
    embedding : nn.Module, optional
        Embedding of the condition for the default conditional MADE (see
        :class:`~sklearn_arcsm.nn.ConditionalMADE`).
    score_head : {"mlp", "spline"}, default="mlp"
        ``"mlp"``: :class:`~sklearn_arcsm.nn.ConditionalScoreHead` with
        ``head_sizes`` and ``n_frequencies``; ``"spline"``:
        :class:`~sklearn_arcsm.nn.SplineScoreHead` with ``n_knots`` knots
        on each window (``head_sizes`` and ``n_frequencies`` unused).
    n_knots : int, default=24
        Knots of the spline head.
    max_log_scale : float, default=MAX_LOG_SCALE
        Upper bound of the affine layer's log-scale (the lower bound is
        ``-LOG_SCALE_BOUND``). Keep it low where training reads the
        likelihood through the quadrature (see ``MAX_LOG_SCALE``); training
        by score matching alone never evaluates the quadrature, and may use
        ``LOG_SCALE_BOUND``.
    linear_skip : bool or torch.Tensor of shape (D,), default=False
        Add a strictly lower-triangular linear map of the input to the
        affine layer's location, ``m_d = (affine(c_d))_0 + sum_{j<d} W_dj
        x_j`` (a direct path from ``x_<d`` to ``m_d`` beside the context
        network; zero at initialization). A boolean tensor gives it to the
        dimensions marked ``True`` only. Needs ``affine=True``; ignored for
        ``D = 1``.
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
        affine: bool = True,
        kernel_size: int = 5,
        mixed_precision: str | None = None,
        n_conditions: int = 0,
        embedding: nn.Module | None = None,
        score_head: str = "mlp",
        n_knots: int = DEFAULT_N_KNOTS,
        max_log_scale: float = MAX_LOG_SCALE,
        linear_skip: bool | torch.Tensor = False,
    ) -> None:
        super().__init__()
        if mixed_precision not in (None, "bf16"):
            raise ValueError(
                f"mixed_precision must be None or 'bf16'; got {mixed_precision!r}."
            )
        self.mixed_precision = mixed_precision
        self.n_features = n_features
        self.tail_scale = float(tail_scale)
        self.n_conditions = int(n_conditions)
        if self.n_conditions and isinstance(backbone, str) and backbone != "made":
            raise ValueError(
                "a conditional model (n_conditions > 0) takes backbone='made' or a "
                f"module that maps (x, condition) to contexts; got {backbone!r}."
            )
        if embedding is not None and not self.n_conditions:
            raise ValueError("an embedding needs n_conditions > 0.")
        if isinstance(backbone, str) and backbone == "made" and self.n_conditions:
            self.context_net = ConditionalMADE(
                n_features, self.n_conditions, hidden_sizes, context_size, embedding
            )
        elif isinstance(backbone, str) and backbone == "made":
            self.context_net = MADE(n_features, hidden_sizes, context_size)
        elif isinstance(backbone, str) and backbone == "pixelcnn":
            self.context_net = _gated_pixelcnn(
                n_features, hidden_sizes, context_size, image_shape, kernel_size
            )
        elif isinstance(backbone, nn.Module) or callable(backbone):
            net = backbone
            if not isinstance(backbone, nn.Module):
                net = backbone(n_features, context_size)
            check_context_network(net, n_features, context_size, self.n_conditions)
            self.context_net = net
        else:
            raise ValueError(
                "backbone must be 'made', 'pixelcnn', an nn.Module or a callable "
                f"that builds one; got {backbone!r}."
            )
        if score_head == "mlp":
            self.head = ConditionalScoreHead(
                n_features, context_size, head_sizes, n_frequencies
            )
        elif score_head == "spline":
            self.head = SplineScoreHead(n_features, context_size, n_knots)
        else:
            raise ValueError(
                f"score_head must be 'mlp' or 'spline'; got {score_head!r}."
            )
        self.register_buffer("lower", torch.as_tensor(lower, dtype=torch.float32))
        self.register_buffer("upper", torch.as_tensor(upper, dtype=torch.float32))
        self.affine = None
        self.max_log_scale = float(max_log_scale)
        if affine:
            context_size = self.head.context_layer.in_features
            self.affine = nn.Linear(context_size, 2)
            nn.init.zeros_(self.affine.weight)  # the identity at initialization
            nn.init.zeros_(self.affine.bias)
        self.skip = None
        rows = torch.as_tensor(linear_skip, dtype=torch.float32).expand(n_features)
        if affine and n_features > 1 and bool(rows.any()):
            # x_<d -> a linear term of the location m_d, strictly lower
            # triangular; zero at initialization (the identity, as above).
            mask = torch.ones(n_features, n_features).tril(-1) * rows[:, None]
            self.skip = MaskedLinear(mask, bias=False)
            nn.init.zeros_(self.skip.weight)

    def __setstate__(self, state):
        # Modules pickled before the affine layer existed behave as before.
        super().__setstate__(state)
        self._modules.setdefault("affine", None)
        self._modules.setdefault("skip", None)
        self.__dict__.setdefault("mixed_precision", None)
        self.__dict__.setdefault("n_conditions", 0)
        # Saved before the upper bound on the affine log-scale.
        self.__dict__.setdefault("max_log_scale", LOG_SCALE_BOUND)

    def conditioner(
        self, x: torch.Tensor, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Conditioning ``(batch, D, C)``: entry ``d`` sees ``x[:, :d]`` only.

        The first ``K`` channels are the score head's first-layer biases; with
        the affine layer, two more carry the location and raw log-scale.
        Split them with :meth:`unpack`. ``condition`` (batch, n_conditions):
        for a conditional model only, which then sees all of it.
        """
        return self._conditioning(self._context(x, self.context_net, condition), x=x)

    def conditioner_at(
        self, x: torch.Tensor, d: int, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``conditioner(x)[:, d]``: the conditioning ``(batch, C)`` of one dimension.

        Backbones with a ``context_at(x, d)`` method (:class:`MADE`) compute
        only that dimension's outputs; others run in full.
        """
        net = self.context_net
        at = getattr(net, "context_at", None)
        if at is not None and self.n_conditions:
            context = self._context(x, lambda v, c: at(v, d, c), condition)
        elif at is not None:
            context = self._context(x, lambda v: at(v, d))
        else:
            context = self._context(x, net, condition)[:, d]
        return self._conditioning(context, d, x)

    def _context(self, x, net, condition=None):
        """``net(x)`` or ``net(x, condition)``; under bf16 autocast when training so."""
        if self.n_conditions:
            if condition is None:
                raise ValueError(
                    "this model is conditional (n_conditions="
                    f"{self.n_conditions}): pass condition= of shape (batch, "
                    f"{self.n_conditions})."
                )
            args = (x, condition)
        elif condition is not None:
            raise ValueError(
                "this model is unconditional (n_conditions=0); it takes no condition."
            )
        else:
            args = (x,)
        if self.mixed_precision is None or not self.training:
            return net(*args)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            context = net(*args)
        return context.to(x.dtype)

    def _conditioning(self, context, d=None, x=None):
        # Head biases and, with the affine layer, location and raw log-scale
        # (of every dimension, or of dimension d alone).
        bias = self.head.context_bias(context, d)
        if self.affine is None:
            return bias
        return torch.cat([bias, self._affine_raw(context, d, x)], dim=-1)

    def _affine_raw(self, context, d=None, x=None):
        """The affine layer's raw ``(..., 2)``, plus the linear skip's location term."""
        raw = self.affine(context)
        if self.skip is None:
            return raw
        weight = self.skip.weight * self.skip.mask
        # (batch, D), or (batch,) for dimension d alone.
        linear = x.to(weight.dtype) @ (weight.T if d is None else weight[d])
        return torch.cat(
            [raw[..., :1] + linear[..., None].to(raw.dtype), raw[..., 1:]], -1
        )

    def unpack(
        self, conditioning: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Split a conditioning ``(..., C)`` into head biases, location, log-scale.

        Returns ``(bias, None, None)`` without the affine layer.
        """
        if self.affine is None:
            return conditioning, None, None
        width = conditioning.shape[-1] - 2
        location, log_scale = _location_scale(
            conditioning[..., width:], self.max_log_scale
        )
        return conditioning[..., :width], location, log_scale

    def to_window(
        self, conditioning: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Window coordinates ``v = (x - m) / a`` and ``log a`` (0.0 without affine).

        ``conditioning`` has shape ``(..., C)`` with ``...`` broadcastable
        against ``x``.
        """
        _, location, log_scale = self.unpack(conditioning)
        if location is None:
            return x, 0.0
        return _window_coordinates(x, location, log_scale), log_scale

    def from_window(self, conditioning: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_window`: ``x = m + a v``."""
        _, location, log_scale = self.unpack(conditioning)
        if location is None:
            return v
        return location + torch.exp(log_scale) * v

    def conditional_scores(
        self,
        conditioning: torch.Tensor,
        u: torch.Tensor,
        sigma: torch.Tensor,
        lower: torch.Tensor | None = None,
        upper: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores ``s_d(u) = d/du log p(u | x_<d)`` in standardized units.

        Parameters
        ----------
        conditioning : torch.Tensor of shape (..., C)
            From :meth:`conditioner`, broadcastable against ``u[..., None]``.
        u : torch.Tensor of shape (...)
            Scalar inputs (standardized units).
        sigma : torch.Tensor broadcastable to ``u``
            Noise level.
        lower, upper : torch.Tensor broadcastable to ``u``, optional
            The window (in window coordinates); defaults to the module's
            per-dimension window, which assumes ``u`` ends with the
            dimension axis.
        """
        bias, location, log_scale = self.unpack(conditioning)
        if location is None:
            return self.window_scores(bias, u, sigma, lower, upper)
        inverse_scale = torch.exp(-log_scale)  # d v / d u
        v = (u - location) * inverse_scale
        return self.window_scores(bias, v, sigma, lower, upper) * inverse_scale

    def window_scores(
        self,
        bias: torch.Tensor,
        v: torch.Tensor,
        sigma: torch.Tensor,
        lower: torch.Tensor | None = None,
        upper: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores in window coordinates, with the Gaussian tail continuation.

        ``bias`` is the head-bias part of a conditioning (:meth:`unpack`);
        ``lower`` and ``upper`` as in :meth:`conditional_scores`.
        """
        lower = self.lower if lower is None else lower
        upper = self.upper if upper is None else upper
        inside = torch.minimum(torch.maximum(v, lower), upper)
        scores = self.head(bias, self.head_points(inside, lower, upper), sigma)
        # Outside the window, an outward-pointing edge score is cut to zero
        # (quadrature.tail_slopes): the tails always decay from the edge.
        outward = torch.where(v > upper, scores.clamp(max=0.0), scores.clamp(min=0.0))
        scores = torch.where((v > upper) | (v < lower), outward, scores)
        return scores - (v - inside) / self.tail_scale**2

    def head_points(
        self, v: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
    ) -> torch.Tensor:
        """The head's input at window coordinates ``v`` (broadcast with the window).

        ``v`` itself for the MLP head; for a window-relative head (the spline
        head) the window ``[lower, upper]`` mapped onto ``[-1, 1]``, so that
        every dimension's window gets the same resolution.
        """
        if not getattr(self.head, "window_relative", False):
            return v
        return (2.0 * v - (lower + upper)) / (upper - lower)

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Conditional scores ``(batch, D)`` at ``x`` and noise level ``sigma``."""
        return self.conditional_scores(self.conditioner(x, condition), x, sigma)

    def grid(self, rule: quadrature.PanelRule | int) -> torch.Tensor:
        """Quadrature nodes ``(D, n_points)`` spanning each dimension's window.

        ``rule`` is a :class:`~sklearn_arcsm.quadrature.PanelRule`; an
        integer means that many Simpson cells.
        """
        return quadrature.as_rule(rule).points(self.lower, self.upper)

    def grid_scores(
        self,
        conditioning: torch.Tensor,
        sigma: torch.Tensor,
        rule: quadrature.PanelRule | int,
        head: nn.Module | None = None,
    ) -> torch.Tensor:
        """Window-coordinate scores at the nodes: ``(batch, D, n_points)``.

        ``conditioning`` is ``(batch, D, C)`` from :meth:`conditioner`. The
        head's input layer sees the grid without a batch axis, so its
        features are computed once and broadcast over the batch. ``head``
        (default: the module's own) evaluates the scores, in its own dtype.
        """
        bias = self.unpack(conditioning)[0]
        grid = self.grid(rule).to(bias.dtype)
        grid = self.head_points(grid, self.lower[:, None], self.upper[:, None])
        head = self.head if head is None else head
        if torch.is_grad_enabled():
            return _head_scores(head, bias[:, :, None, :], grid[None], sigma)
        dtype = head_dtype(head)
        sigma = torch.as_tensor(sigma).to(dtype)
        n_rows, n_features = bias.shape[:2]
        grids = torch.arange(n_features, device=bias.device).repeat(n_rows)
        if getattr(head, "window_relative", False):
            # The same points of [-1, 1] in every window: one feature grid.
            grid, grids = grid[:1], torch.zeros_like(grids)
        features = head.input_features(grid.to(dtype), sigma)  # (D or 1, G, K)
        scores = head.grid_scores(features, grids, bias.flatten(0, 1).to(dtype), sigma)
        return scores.view(n_rows, n_features, -1)

    def log_prob(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        rule: quadrature.PanelRule | AdaptiveRule | KnotRule | int,
        head: nn.Module | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Exact normalized log-density ``(batch,)`` up to quadrature error.

        ``log p(x) = sum_d [E_d(x_d) - log Z_d(x_<d)]`` (MATH.md section 4),
        with each 1-D integral done by ``rule``: a fixed
        :class:`~sklearn_arcsm.quadrature.PanelRule` (an integer: that many
        Simpson cells), an :class:`~sklearn_arcsm.adaptive.AdaptiveRule`
        that refines each conditional to its tolerance, or, for the spline
        head, a :class:`~sklearn_arcsm.knot_quadrature.KnotRule` (closed-form
        energies, Gauss-Legendre per knot interval). ``head`` (default:
        the module's own) evaluates the scores, for instance a float32 copy
        for fast inference (a knot rule reads the module's own coefficients,
        in the dtype of ``x``); the quadrature runs in the dtype of ``x``.
        A conditional model (``n_conditions > 0``) gives ``log p(x | condition)``.
        """
        return self.conditional_log_prob(x, sigma, rule, head, condition=condition).sum(
            dim=-1
        )

    def conditional_log_prob(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        rule: quadrature.PanelRule | AdaptiveRule | KnotRule | int,
        head: nn.Module | None = None,
        stats: dict | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-dimension terms ``log p(x_d | x_<d)``: shape ``(batch, D)``.

        ``stats`` (adaptive rules only) receives the refinement counts of
        :meth:`~sklearn_arcsm.adaptive.AdaptiveRule.evaluate`; ``condition``
        as in :meth:`log_prob`.
        """
        if isinstance(rule, KnotRule):
            return self._knot_conditional_log_prob(x, sigma, rule, condition)
        conditioning = self.conditioner(x, condition)
        v, log_scale = self.to_window(conditioning, x)
        lower, upper = self.lower.to(x.dtype), self.upper.to(x.dtype)
        if isinstance(rule, AdaptiveRule):
            n_rows, n_features = x.shape
            dims = torch.arange(n_features, device=x.device).repeat(n_rows)
            score_fn = self.score_function(
                conditioning.flatten(0, 1), sigma, head, dims=dims
            )
            v_flat, lo, hi = v.reshape(-1), lower[dims], upper[dims]

            def finish(level, index, scores, energy, log_z):
                return level.log_density(
                    v_flat[index],
                    scores,
                    lo[index],
                    hi[index],
                    self.tail_scale,
                    energy,
                    log_z,
                )

            log_p = rule.evaluate(score_fn, lo, hi, self.tail_scale, finish, stats)
            log_p = log_p.view(n_rows, n_features)
        else:
            rule = quadrature.as_rule(rule)
            scores = self.grid_scores(conditioning, sigma, rule, head)
            log_p = rule.log_density(
                v, scores.to(x.dtype), lower, upper, self.tail_scale
            )
        return log_p - log_scale  # Jacobian of v = (x - m) / a

    def _knot_conditional_log_prob(self, x, sigma, rule, condition):
        """:meth:`conditional_log_prob` under a knot rule, from the context.

        The spline's coefficients come straight from the context
        (:meth:`SplineScoreHead.context_coefficients
        <sklearn_arcsm.nn.SplineScoreHead.context_coefficients>`, the noise
        level folded into the weights) and the affine layer's outputs
        separately: no ``(batch, D, C)`` conditioning with both coefficient
        blocks is built, concatenated, split and folded. That bookkeeping
        took about a third of scoring time at ``D = 2``.
        """
        self._check_spline_head()
        context = self._context(x, self.context_net, condition)
        coef = self.head.context_coefficients(context, sigma)  # (batch, D, K)
        v, log_scale = x, 0.0
        if self.affine is not None:
            location, log_scale = _location_scale(
                self._affine_raw(context, x=x), self.max_log_scale
            )
            v = _window_coordinates(x, location, log_scale)
        n_rows, n_features = x.shape
        lower, upper = self.lower.to(x.dtype), self.upper.to(x.dtype)
        log_p = rule.log_density(
            v.reshape(-1),
            coef.flatten(0, 1),
            lower.repeat(n_rows),
            upper.repeat(n_rows),
            self.tail_scale,
        ).view(n_rows, n_features)
        return log_p - log_scale

    def _check_spline_head(self) -> None:
        if not (
            hasattr(self.head, "coefficients")
            and hasattr(self.head, "context_coefficients")
        ):
            raise ValueError(
                "the knot rule (KnotRule) integrates spline scores; this model's "
                "score head is not a spline (use score_head='spline', or an "
                "adaptive or panel rule)."
            )

    def spline_coefficients(
        self, conditioning: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """Spline coefficients ``(..., K)`` of the conditionals' window scores.

        Only for the spline head (what a
        :class:`~sklearn_arcsm.knot_quadrature.KnotRule` integrates); in the
        dtype of ``conditioning``.
        """
        self._check_spline_head()
        return self.head.coefficients(self.unpack(conditioning)[0], sigma)

    def score_function(
        self,
        conditioning: torch.Tensor,
        sigma: torch.Tensor,
        head: nn.Module | None = None,
        dims: torch.Tensor | None = None,
    ):
        """The ``score_fn(index, points)`` that an adaptive rule refines with.

        Parameters
        ----------
        conditioning : torch.Tensor of shape (N, C)
            One conditioning per conditional (from :meth:`conditioner`).
        sigma : torch.Tensor
        head : nn.Module, optional
            Evaluates the scores (default: the module's own); its dtype is
            the dtype of the evaluation.
        dims : torch.LongTensor of shape (N,), optional
            The dimension of each conditional, when conditionals of the same
            dimension are always asked for at the same points (the rules
            here place their nodes by the window, which depends on the
            dimension only). The head's input layer then runs once per
            dimension instead of once per conditional. Required by a
            window-relative head (``score_head="spline"``), which reads
            each conditional's window off it; without autograd such a head
            evaluates its features once per call, since the rules' nodes
            sit at the same relative points of every window.

        Returns
        -------
        score_fn : callable
            Maps ``index`` of shape ``(n,)`` and window points ``(n, G)`` to
            scores ``(n, G)`` in the head's dtype.
        """
        head = self.head if head is None else head
        dtype = head_dtype(head)
        bias = self.unpack(conditioning)[0].to(dtype)
        sigma = torch.as_tensor(sigma).to(dtype)

        relative = getattr(head, "window_relative", False)
        if dims is None and relative:
            raise ValueError("a window-relative score head needs dims.")

        def score_fn(index: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
            if relative:
                d = dims[index][:, None]
                lower, upper = self.lower[d].to(points), self.upper[d].to(points)
                if torch.is_grad_enabled():
                    w = self.head_points(points, lower, upper).to(dtype)
                    return head(bias[index][:, None, :], w, sigma)
                # Every window's nodes map onto the same points of [-1, 1]:
                # one feature grid serves all conditionals.
                first = self.head_points(points[:1], lower[:1], upper[:1])
                features = head.input_features(first.to(dtype), sigma)
                grids = torch.zeros_like(index)
            elif dims is None:
                points = points.to(dtype)
                features = head.input_features(points, sigma)
                grids = torch.arange(len(index), device=index.device)
            else:
                unique, grids = torch.unique(dims[index], return_inverse=True)
                first = torch.empty_like(unique).scatter_(
                    0, grids, torch.arange(len(index), device=index.device)
                )
                features = head.input_features(points[first].to(dtype), sigma)
            if not torch.is_grad_enabled():
                return head.grid_scores(features, grids, bias[index], sigma)
            return head.from_features(features[grids], bias[index][:, None, :], sigma)

        return score_fn

    def dimension_log_prob(
        self,
        x: torch.Tensor,
        dims: torch.Tensor,
        sigma: torch.Tensor,
        rule: quadrature.PanelRule | int,
        shift: torch.Tensor | None = None,
        conditioning: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``log p(x_d | x_<d)`` of row ``rows[i]`` at dimension ``d = dims[i]``.

        Differentiable in the parameters, so it can serve as a training
        objective: ``D * dimension_log_prob`` with ``d`` uniform is an
        unbiased estimate of ``log p(x)`` at ``1 / D`` of the quadrature cost.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, D)
        dims : torch.LongTensor of shape (m,)
            The dimension of each term (``m = batch`` without ``rows``).
        sigma : torch.Tensor
            Noise level of the density.
        rule : PanelRule, AdaptiveRule, KnotRule or int
            Quadrature rule over the window (an integer: that many Simpson
            cells); an adaptive rule evaluates in float64 and returns the
            dtype of ``x``; a knot rule (spline head only) is exact up to
            its Gauss-Legendre error and ignores ``shift``.
        shift : torch.Tensor of shape (m,), optional
            Fractions of a panel in ``[0, 1)``. Each row's grid then starts
            ``shift`` panels below the window and spans one extra panel, so a
            coarse training grid cannot be exploited by spikes between its
            points (beyond the window the score is exactly the tail the
            quadrature assumes, so the result stays exact up to grid error).
        conditioning : torch.Tensor of shape (batch, D, C), optional
            ``conditioner(x)``, when already computed (it does not depend on
            ``dims``, so several calls on the same ``x`` can share it).
        condition : torch.Tensor of shape (batch, n_conditions), optional
            For a conditional model, when ``conditioning`` is not given.
        rows : torch.LongTensor of shape (m,), optional
            The row of ``x`` each term scores; default ``arange(batch)``, one
            term per row. Several dimensions of the same rows in one call
            share the quadrature's operations: one pass over ``m``
            conditionals instead of one per dimension.

        Returns
        -------
        log_p : torch.Tensor of shape (m,)
        """
        if rows is None:
            rows = torch.arange(x.shape[0], device=x.device)
        if conditioning is None:
            conditioning = self.conditioner(x, condition)
        conditioning = conditioning[rows, dims]  # (m, C)
        bias = self.unpack(conditioning)[0][:, None, :]  # (batch, 1, K)
        v, log_scale = self.to_window(conditioning, x[rows, dims])
        lower = self.lower.to(x.dtype)[dims]
        upper = self.upper.to(x.dtype)[dims]
        if isinstance(rule, KnotRule):
            # Exact up to the Gauss-Legendre error: no grid to shift.
            coef = self.spline_coefficients(conditioning, sigma)
            return rule.log_density(v, coef, lower, upper, self.tail_scale) - log_scale
        if isinstance(rule, AdaptiveRule):
            if shift is not None:
                raise ValueError("an adaptive rule has no grid to shift.")
            score_fn = self.score_function(conditioning, sigma, dims=dims)
            lo, hi, v = lower.double(), upper.double(), v.double()

            def finish(level, idx, scores, energy, log_z):
                return level.log_density(
                    v[idx], scores, lo[idx], hi[idx], self.tail_scale, energy, log_z
                )

            log_p = rule.evaluate(score_fn, lo, hi, self.tail_scale, finish)
            return log_p.to(x.dtype) - log_scale
        rule = quadrature.as_rule(rule)
        if shift is None:
            start, stop = lower, upper
        else:
            width = (upper - lower) / rule.n_panels
            start, stop = lower - shift * width, upper + (1.0 - shift) * width
            rule = rule.with_panels(rule.n_panels + 1)
        grid = rule.points(start, stop)  # (batch, n_points)
        scores = self.window_scores(bias, grid, sigma, lower[:, None], upper[:, None])
        log_p = rule.log_density(v, scores, start, stop, self.tail_scale)
        return log_p - log_scale


def _location_scale(
    raw: torch.Tensor, upper: float = MAX_LOG_SCALE
) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine layer's raw outputs ``(..., 2)`` as location and bounded log-scale.

    ``tanh`` squashes below 0 into ``(-LOG_SCALE_BOUND, 0]`` and above it
    into ``[0, upper)``; both have slope 1 at 0, so the map is smooth there.
    """
    raw_log_scale = raw[..., 1]
    log_scale = torch.where(
        raw_log_scale < 0,
        LOG_SCALE_BOUND * torch.tanh(raw_log_scale / LOG_SCALE_BOUND),
        upper * torch.tanh(raw_log_scale / upper),
    )
    return raw[..., 0], log_scale


def _window_coordinates(x, location, log_scale):
    """``v = (x - m) / a`` with ``a = exp(log_scale)``."""
    return (x - location) * torch.exp(-log_scale)


def head_dtype(head: nn.Module) -> torch.dtype:
    """The dtype a score head evaluates in (that of its parameters)."""
    return head.dimension_bias.dtype


def _head_scores(head, bias, points, sigma):
    """The head at its input ``points`` (inside the window: no tail continuation)."""
    dtype = head_dtype(head)
    return head(bias.to(dtype), points.to(dtype), torch.as_tensor(sigma).to(dtype))


def _gated_pixelcnn(n_features, hidden_sizes, context_size, image_shape, kernel_size):
    sizes = tuple(int(c) for c in hidden_sizes)
    if image_shape is None or math.prod(image_shape) != n_features:
        raise ValueError(
            "backbone='pixelcnn' needs image_shape=(height, width) or (channels, "
            f"height, width) whose product is {n_features}; got {image_shape}."
        )
    if len(sizes) == 0 or len(set(sizes)) != 1:
        raise ValueError(
            "backbone='pixelcnn' takes one channel count for all of its gated "
            "layers (residual connections need equal widths): hidden sizes like "
            f"(32, 32, 32, 32); got {sizes}."
        )
    return GatedPixelCNN(
        image_shape,
        sizes[0],
        context_size,
        n_layers=len(sizes),
        kernel_size=kernel_size,
    )


def check_context_network(
    net: nn.Module,
    n_features: int,
    context_size: int,
    n_conditions: int = 0,
    n_probes: int = 16,
) -> None:
    """Check that a context network is autoregressive, cheaply.

    Runs ``net`` on two random rows and, for up to ``n_probes`` dimensions
    ``d`` (the first, the last and evenly spaced ones between), computes the
    gradient of ``context[:, d]`` with respect to the input: it must be
    exactly zero at every input ``>= d``. A leak found this way is certain; a
    network that leaks only at dimensions between the probes can pass.

    Parameters
    ----------
    net : nn.Module
        Maps ``(batch, n_features)`` to ``(batch, n_features, context_size)``.
    n_features, context_size : int
    n_conditions : int, default=0
        For a conditional network, which is called as ``net(x, condition)``
        with a random condition of this width.
    n_probes : int, default=16

    Raises
    ------
    ValueError
        If the output has the wrong shape or a context sees its own or a
        later dimension.
    """
    if not isinstance(net, nn.Module):
        raise ValueError(
            f"the backbone must build a torch.nn.Module; got {type(net).__name__}."
        )
    param = next(net.parameters(), None)
    dtype = torch.float32 if param is None else param.dtype
    device = None if param is None else param.device
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, n_features, generator=generator, dtype=dtype)
    x = x.to(device).requires_grad_(True)
    args = (x,)
    if n_conditions:
        condition = torch.randn(2, n_conditions, generator=generator, dtype=dtype)
        args = (x, condition.to(device))
    with torch.enable_grad():
        out = net(*args)
        expected = (2, n_features, context_size)
        if tuple(out.shape) != expected:
            raise ValueError(
                f"the backbone must map (batch, {n_features}) to (batch, "
                f"{n_features}, {context_size}); on a (2, {n_features}) input it "
                f"returned shape {tuple(out.shape)}."
            )
        probes = sorted(
            set(torch.linspace(0, n_features - 1, n_probes).round().long().tolist())
        )
        for d in probes:
            (grad,) = torch.autograd.grad(
                out[:, d].sum(), x, retain_graph=True, allow_unused=True
            )
            if grad is None:
                continue
            leaks = torch.nonzero(grad[:, d:].abs().sum(dim=0)).flatten()
            if len(leaks):
                raise ValueError(
                    f"the backbone is not autoregressive: the context of dimension "
                    f"{d} depends on input dimension {d + int(leaks[0])} (it may "
                    "depend on dimensions < d only). Check its masks, or the order "
                    "in which it flattens the input."
                )
