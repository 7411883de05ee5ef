"""Properties of the torch layer: exact autoregressive masks, gradients."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sklearn_arcsm.nn import (
    ARCSM,
    MADE,
    GatedPixelCNN,
    GaussianMADE,
    MaskedConv2d,
    PixelCNN,
    check_context_network,
    made_masks,
)
from sklearn_arcsm.nn.arcsm import LOG_SCALE_BOUND, _location_scale
from sklearn_arcsm.nn.score_head import ConditionalScoreHead
from tests.conftest import examples


def _jacobian(fn, x):
    return torch.autograd.functional.jacobian(fn, x)


@settings(max_examples=examples(15), deadline=None)
@given(
    n_features=st.integers(1, 7),
    hidden=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    context=st.integers(1, 3),
)
def test_made_context_depends_only_on_strict_past(n_features, hidden, context):
    torch.manual_seed(0)
    made = MADE(n_features, hidden, context).double()
    x = torch.randn(n_features, dtype=torch.float64)
    # jac[d, h, k] = d context[d, h] / d x[k]
    jac = _jacobian(lambda v: made(v[None])[0], x)
    for d in range(n_features):
        assert torch.all(jac[d, :, d:] == 0), f"context {d} sees x_{d} or later"


def test_made_wide_layers_connect_every_past_input():
    torch.manual_seed(0)
    n_features = 5
    made = MADE(n_features, (16, 16), 3).double()
    x = torch.randn(n_features, dtype=torch.float64)
    jac = _jacobian(lambda v: made(v[None])[0], x)
    for d in range(1, n_features):
        assert torch.all(jac[d, :, :d].abs().sum(dim=0) > 0)


def test_made_masks_output_block_structure():
    masks = made_masks(4, (6,), 2)
    assert [tuple(m.shape) for m in masks] == [(6, 4), (8, 6)]
    # The first dimension's context sees nothing.
    assert masks[-1][:2].sum() == 0


def test_made_masks_refuse_impossible_shapes():
    with pytest.raises(ValueError, match="n_features >= 2"):
        made_masks(1, (4,), 2)
    with pytest.raises(ValueError, match="at least one hidden layer"):
        made_masks(3, (), 2)


def test_made_one_feature_is_a_learned_constant():
    made = MADE(1, (8,), 3)
    out = made(torch.randn(5, 1))
    assert out.shape == (5, 1, 3)
    assert torch.all(out == out[0])


def _arcsm(n_features=4, dtype=torch.float64, affine_scale=0.0):
    """A small AR-CSM; ``affine_scale > 0`` randomizes its affine layer."""
    torch.manual_seed(1)
    lower = -3.0 * torch.ones(n_features)
    upper = 3.0 * torch.ones(n_features)
    model = ARCSM(n_features, (12,), 2, (8, 8), lower, upper).to(dtype)
    if affine_scale:
        with torch.no_grad():
            model.affine.weight.normal_(0.0, affine_scale)
            model.affine.bias.normal_(0.0, affine_scale)
    return model


def _conditional_log_prob_1d(model, x_prefix, d, points, sigma, n_cells=256):
    """``log p(x_d = t | x_<d)`` for each ``t`` in ``points``."""
    x = x_prefix.expand(len(points), -1).clone()
    x[:, d] = points
    with torch.no_grad():  # chunks bound the (rows, D, grid, K) activations
        parts = [
            model.conditional_log_prob(chunk, sigma, n_cells)[:, d]
            for chunk in x.split(2000)
        ]
    return torch.cat(parts)


@pytest.mark.parametrize("affine_scale", [0.0, 0.7])
def test_arcsm_conditionals_integrate_to_one(affine_scale):
    # Each 1-D conditional, location and scale included, is a normalized
    # density: integrate it on a fine grid far beyond the window and tails.
    model = _arcsm(2, affine_scale=affine_scale)
    sigma = torch.tensor(0.2, dtype=torch.float64)
    t = torch.linspace(-60.0, 60.0, 12001, dtype=torch.float64)
    for prefix in ([0.0, 0.0], [-2.0, 0.0]):
        x = torch.tensor([prefix], dtype=torch.float64)
        for d in range(2):
            log_p = _conditional_log_prob_1d(model, x, d, t, sigma)
            mass = torch.trapezoid(log_p.exp(), t)
            assert abs(float(mass) - 1.0) < 1e-4, (prefix, d, float(mass))


def test_arcsm_scores_are_the_derivative_of_the_log_density():
    # With a non-trivial affine layer, conditional_scores (what CSM trains)
    # and conditional_log_prob (what the likelihood and score_samples use)
    # describe the same density: d/dx_d log p(x_d | x_<d) = s_d(x).
    model = _arcsm(3, affine_scale=0.7)
    sigma = torch.tensor(0.2, dtype=torch.float64)
    x = torch.randn(
        6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    x.requires_grad_(True)
    log_p = model.conditional_log_prob(x, sigma, 2048)
    for d in range(3):
        (grad,) = torch.autograd.grad(log_p[:, d].sum(), x, retain_graph=True)
        torch.testing.assert_close(
            grad[:, d], model(x, sigma)[:, d], atol=2e-3, rtol=2e-3
        )


def test_arcsm_affine_layer_moves_and_scales_the_conditional():
    model = _arcsm(1, affine_scale=0.0)
    with torch.no_grad():
        model.affine.bias.copy_(torch.tensor([2.0, -1.0]))
    sigma = torch.tensor(0.2, dtype=torch.float64)
    t = torch.linspace(-3.0, 3.0, 13, dtype=torch.float64)
    x0 = torch.zeros(1, 1, dtype=torch.float64)
    with torch.no_grad():
        _, location, log_scale = model.unpack(model.conditioner(x0)[0, 0])
    assert float(location) == 2.0 and -1.0 < float(log_scale) < -0.98  # squashed
    moved = _conditional_log_prob_1d(
        model, x0, 0, location + torch.exp(log_scale) * t, sigma
    )
    with torch.no_grad():
        model.affine.bias.zero_()
    base = _conditional_log_prob_1d(model, x0, 0, t, sigma)
    torch.testing.assert_close(moved, base - log_scale)  # p(m + a v) = p_v(v) / a


def test_arcsm_affine_scale_is_bounded_above_by_max_log_scale():
    # Scales above e^MAX_LOG_SCALE would let the model squeeze a conditional
    # below the quadrature's resolution (see MAX_LOG_SCALE); below 1 the
    # range stays down to e^-LOG_SCALE_BOUND.
    model = _arcsm(1)
    x0 = torch.zeros(1, 1, dtype=torch.float64)
    for raw, low, high in [(50.0, 0.49, 0.5), (-50.0, -5.0, -4.99)]:
        with torch.no_grad():
            model.affine.bias.copy_(torch.tensor([0.0, raw]))
            _, _, log_scale = model.unpack(model.conditioner(x0)[0, 0])
        assert low <= float(log_scale) <= high
    # Smooth at 0: slope 1 from both sides.
    raw = torch.tensor([[0.0, -1e-4], [0.0, 1e-4]], dtype=torch.float64)
    _, log_scale = _location_scale(raw)
    torch.testing.assert_close(log_scale, raw[:, 1], rtol=1e-6, atol=0)
    # A module saved before the bound keeps the symmetric one it was fitted with.
    state = model.__dict__.copy()
    del state["max_log_scale"]
    old = ARCSM.__new__(ARCSM)
    old.__setstate__(state)
    assert old.max_log_scale == LOG_SCALE_BOUND


def test_arcsm_score_d_depends_on_x_up_to_d_only():
    model = _arcsm(affine_scale=0.7)
    sigma = torch.tensor(0.1, dtype=torch.float64)
    x = torch.randn(4, dtype=torch.float64)
    jac = _jacobian(lambda v: model(v[None], sigma)[0], x)
    for d in range(4):
        assert torch.all(jac[d, d + 1 :] == 0)
        assert jac[d, d] != 0


def test_arcsm_every_parameter_gets_a_gradient():
    from sklearn_arcsm.objectives import noise_conditional_csm

    model = _arcsm(dtype=torch.float32)
    x = torch.randn(16, 4)
    levels = torch.tensor([1.0, 0.1])
    loss = noise_conditional_csm(model, x, levels, torch.Generator().manual_seed(0))
    loss.mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.any(param.grad != 0), name


def test_arcsm_tails_decay_from_a_non_outward_edge_score():
    model = _arcsm()
    sigma = torch.tensor(0.1, dtype=torch.float64)
    bias = model.conditioner(torch.zeros(1, 4, dtype=torch.float64))

    def at(v):
        return model.conditional_scores(
            bias, torch.full((1, 4), v, dtype=torch.float64), sigma
        )

    rho2 = model.tail_scale**2
    torch.testing.assert_close(at(5.0), at(3.0).clamp(max=0) - 2.0 / rho2)
    torch.testing.assert_close(at(-4.0), at(-3.0).clamp(min=0) - 1.0 / rho2 * -1.0)


def test_quadrature_energy_derivative_is_the_module_score_everywhere():
    # The module's scores and the quadrature's energy describe one density:
    # dE/dx by finite differences equals conditional_scores, inside the
    # window and in both tails, whatever the sign of the edge scores.
    from sklearn_arcsm import quadrature as q

    model = _arcsm()
    with torch.no_grad():
        model.head.output_layer.bias.fill_(0.5)  # push scores outward at hi
    sigma = torch.tensor(0.1, dtype=torch.float64)
    x = torch.zeros(1, 4, dtype=torch.float64)
    bias = model.conditioner(x)
    grid_scores = model.grid_scores(bias, sigma, 512)[0, 0]
    lower, upper = model.lower[0].double(), model.upper[0].double()
    energy = q.cumulative_energy(grid_scores, lower, upper)
    points = torch.tensor([-5.0, -3.5, -1.0, 0.7, 2.5, 4.0, 6.0], dtype=torch.float64)
    eps = 1e-4

    def e(t):
        n = t.shape[0]
        return q.energy_at(
            t, energy.expand(n, -1), grid_scores.expand(n, -1), lower, upper, 1.0
        )

    numeric = (e(points + eps) - e(points - eps)) / (2 * eps)
    module = model.conditional_scores(bias[0, 0], points, sigma, lower, upper)
    torch.testing.assert_close(numeric, module, atol=1e-4, rtol=1e-4)


def test_arcsm_train_and_eval_modes_agree():
    model = _arcsm()
    sigma = torch.tensor(0.3, dtype=torch.float64)
    x = torch.randn(8, 4, dtype=torch.float64)
    model.train()
    a = model(x, sigma)
    model.eval()
    torch.testing.assert_close(a, model(x, sigma))


def test_arcsm_state_dict_round_trip():
    model = _arcsm()
    clone = _arcsm()
    torch.nn.init.normal_(clone.head.output_layer.weight)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(8, 4, dtype=torch.float64)
    sigma = torch.tensor(0.3, dtype=torch.float64)
    torch.testing.assert_close(model(x, sigma), clone(x, sigma))


def test_gaussian_made_log_prob_matches_independent_gaussians_at_init():
    torch.manual_seed(0)
    model = GaussianMADE(3, (8,)).double()
    # Zero the output layer: every conditional becomes N(bias_mean, exp(bias)).
    last = model.made.layers[-1]
    torch.nn.init.zeros_(last.weight)
    x = torch.randn(5, 3, dtype=torch.float64)
    mean = last.bias.view(3, 2)[:, 0]
    scale = torch.exp(last.bias.view(3, 2)[:, 1])
    expected = torch.distributions.Normal(mean, scale).log_prob(x).sum(-1)
    torch.testing.assert_close(model.log_prob(x), expected)


@settings(max_examples=examples(10), deadline=None)
@given(
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    channels=st.lists(st.integers(1, 6), min_size=1, max_size=3),
)
def test_pixelcnn_context_depends_only_on_earlier_pixels(height, width, channels):
    torch.manual_seed(0)
    net = PixelCNN((height, width), channels, 2).double()
    n = height * width
    x = torch.randn(n, dtype=torch.float64)
    jac = _jacobian(lambda v: net(v[None])[0], x)
    assert jac.shape == (n, 2, n)
    for d in range(n):
        assert torch.all(jac[d, :, d:] == 0), f"pixel {d} sees itself or later"


def test_pixelcnn_sees_its_neighbours():
    torch.manual_seed(0)
    net = PixelCNN((6, 6), (8, 8), 2).double()
    x = torch.randn(36, dtype=torch.float64)
    jac = _jacobian(lambda v: net(v[None])[0], x)
    d = 2 * 6 + 3  # row 2, column 3
    assert torch.all(jac[d, :, [d - 1, d - 6, d - 7, d - 5]].abs().sum(0) > 0)


def test_the_old_masked_stack_has_a_blind_spot():
    # Why the gated design replaced it: pixels up-right of d never reach d's
    # context, however deep the stack.
    torch.manual_seed(0)
    net = PixelCNN((6, 6), (8, 8, 8, 8), 2).double()
    jac = _jacobian(lambda v: net(v[None])[0], torch.randn(36, dtype=torch.float64))
    d = 3 * 6 + 1  # row 3, column 1
    up_right = 2 * 6 + 5  # row 2, column 5: earlier in raster order
    assert torch.all(jac[d, :, up_right] == 0)


GATED_SHAPES = [(1, 5, 7), (3, 4, 5), (2, 6, 3), (1, 1, 6), (4, 2, 2), (1, 7, 1)]


@pytest.mark.parametrize("shape", GATED_SHAPES, ids=str)
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_gated_pixelcnn_is_autoregressive_without_blind_spots(shape, kernel_size):
    # (a) The context of dimension d has exactly zero gradient with respect
    # to every dimension >= d; (b) every earlier dimension within the
    # receptive field reaches it. Dimensions are raster over pixels and,
    # within a pixel, channel by channel: d = (row * W + col) * C + channel.
    torch.manual_seed(0)
    n_colors, height, width = shape
    net = GatedPixelCNN(shape, 2 * n_colors, 3, kernel_size=kernel_size).double()
    n = n_colors * height * width
    jac = _jacobian(lambda v: net(v[None])[0], torch.randn(n, dtype=torch.float64))
    assert jac.shape == (n, 3, n)
    reach = net.n_layers * (kernel_size // 2)

    def position(d):
        pixel, channel = divmod(d, n_colors)
        return divmod(pixel, width) + (channel,)

    for d in range(n):
        assert torch.all(jac[d, :, d:] == 0), f"dimension {d} sees itself or later"
        row, col, _ = position(d)
        for k in range(d):
            k_row, k_col, _ = position(k)
            in_field = (
                row - k_row <= reach
                and abs(col - k_col) <= reach
                and (k_row < row or col - k_col <= reach)
            )
            if in_field:
                assert jac[d, :, k].abs().sum() > 0, f"dimension {d} is blind to {k}"


def test_gated_pixelcnn_refuses_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        GatedPixelCNN((4, 4), 8, 2, kernel_size=4)
    with pytest.raises(ValueError, match="multiple"):
        GatedPixelCNN((3, 4, 4), 8, 2)
    with pytest.raises(ValueError, match="image_shape"):
        GatedPixelCNN((4,), 8, 2)
    with pytest.raises(ValueError, match="n_layers"):
        GatedPixelCNN((4, 4), 8, 2, n_layers=0)


class _Leaky(torch.nn.Module):
    """A 'context network' whose context of d sees x_d: a leak."""

    def __init__(self, n_features, context_size):
        super().__init__()
        self.linear = torch.nn.Linear(1, context_size)

    def forward(self, x):
        return self.linear(x[..., None])


def test_context_network_check_catches_leaks_and_wrong_shapes():
    check_context_network(MADE(5, (16,), 3), 5, 3)  # a proper one passes
    check_context_network(GatedPixelCNN((2, 2, 3), 4, 3), 12, 3)
    with pytest.raises(ValueError, match="not autoregressive.*dimension 0 depends"):
        check_context_network(_Leaky(5, 3), 5, 3)
    with pytest.raises(ValueError, match=r"returned shape \(2, 5, 4\)"):
        check_context_network(MADE(5, (16,), 4), 5, 3)
    with pytest.raises(ValueError, match="torch.nn.Module"):
        check_context_network(lambda x: x, 5, 3)


def test_masked_conv_refuses_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        MaskedConv2d(1, 1, 4, "A")
    with pytest.raises(ValueError, match="mask_type"):
        MaskedConv2d(1, 1, 3, "C")


def test_dimension_log_prob_picks_entries_of_conditional_log_prob():
    model = _arcsm()
    x = torch.randn(6, 4, dtype=torch.float64)
    sigma = torch.tensor(0.2, dtype=torch.float64)
    dims = torch.tensor([0, 1, 2, 3, 3, 0])
    full = model.conditional_log_prob(x, sigma, 32)
    picked = model.dimension_log_prob(x, dims, sigma, 32)
    torch.testing.assert_close(picked, full[torch.arange(6), dims])


@pytest.mark.parametrize("rule", [32, "adaptive"])
def test_dimension_log_prob_scores_several_terms_per_row(rule):
    # ``rows`` lets one call score any (row, dimension) pairs, repeated rows
    # included, as the training and validation likelihood terms do.
    from sklearn_arcsm.adaptive import AdaptiveRule

    rule = AdaptiveRule() if rule == "adaptive" else rule
    model = _arcsm()
    x = torch.randn(3, 4, dtype=torch.float64)
    sigma = torch.tensor(0.2, dtype=torch.float64)
    rows = torch.tensor([2, 0, 1, 2, 0, 2, 1])
    dims = torch.tensor([0, 3, 1, 2, 0, 3, 1])
    full = model.conditional_log_prob(x, sigma, rule)
    picked = model.dimension_log_prob(x, dims, sigma, rule, rows=rows)
    torch.testing.assert_close(picked, full[rows, dims])


def test_shifted_grid_log_prob_agrees_with_the_inference_grid():
    model = _arcsm()
    x = torch.randn(5, 4, dtype=torch.float64)
    sigma = torch.tensor(0.3, dtype=torch.float64)
    dims = torch.tensor([0, 1, 2, 3, 1])
    fine = model.dimension_log_prob(x, dims, sigma, 512)
    for shift in (0.0, 0.37, 0.99):
        coarse = model.dimension_log_prob(
            x, dims, sigma, 64, shift=torch.full((5,), shift, dtype=torch.float64)
        )
        torch.testing.assert_close(coarse, fine, atol=1e-3, rtol=0)


@pytest.mark.parametrize("block_elements", [1, 3 * 9 * 16, 2**18])
def test_head_grid_scores_match_the_autograd_path(monkeypatch, block_elements):
    # The inference kernel (blocked, in place, through work buffers) must
    # compute what the differentiable forward pass computes, for every
    # conditional whatever block it falls in (including a partial last one)
    # and through hidden layers of different widths.
    from sklearn_arcsm.nn import score_head

    monkeypatch.setattr(score_head, "GRID_BLOCK_ELEMENTS", block_elements)
    torch.manual_seed(0)
    head = ConditionalScoreHead(3, 4, (16, 24, 8), n_frequencies=2).double()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_()
    n_grids, n_nodes, n = 3, 9, 11
    points = torch.randn(n_grids, n_nodes, dtype=torch.float64)
    grids = torch.randint(0, n_grids, (n,))
    bias = torch.randn(n, 16, dtype=torch.float64)
    sigma = torch.tensor(0.3, dtype=torch.float64)
    features = head.input_features(points, sigma)
    expected = head(bias[:, None, :], points[grids], sigma)
    got = head.grid_scores(features, grids, bias, sigma)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "n_features, backbone, affine",
    [(5, "made", True), (5, "made", False), (1, "made", True), (6, "pixelcnn", True)],
)
def test_conditioner_at_is_one_dimension_of_the_conditioner(
    n_features, backbone, affine
):
    # The samplers' one-dimension path (MADE: only that dimension's rows of
    # the output layer) must give exactly that dimension's conditioning.
    torch.manual_seed(0)
    bounds = torch.full((n_features,), 3.0)
    model = ARCSM(
        n_features,
        (4, 4) if backbone == "pixelcnn" else (16, 16),
        3,
        (8,),
        -bounds,
        bounds,
        backbone=backbone,
        image_shape=(2, 3) if backbone == "pixelcnn" else None,
        affine=affine,
    ).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    x = torch.randn(7, n_features, dtype=torch.float64)
    full = model.conditioner(x)
    for d in range(n_features):
        torch.testing.assert_close(
            model.conditioner_at(x, d), full[:, d], rtol=1e-12, atol=1e-12
        )
