"""The spline score head: its basis, its kernel, and the densities it defines."""

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sklearn_arcsm import ARCSMDensity, CSMScoreEstimator
from sklearn_arcsm.adaptive import AdaptiveRule
from sklearn_arcsm.knot_quadrature import KnotRule
from sklearn_arcsm.nn import ARCSM, ConditionalScoreHead, SplineScoreHead
from sklearn_arcsm.sampling import draw_dimension
from tests.conftest import examples


def _head(n_knots=9, n_features=3, context=2, seed=0):
    torch.manual_seed(seed)
    head = SplineScoreHead(n_features, context, n_knots).double()
    with torch.no_grad():
        head.dimension_bias.normal_()
        head.context_layer.weight.normal_()
    return head


@settings(max_examples=examples(20), deadline=None)
@given(n_knots=st.integers(2, 40), seed=st.integers(0, 2**16))
def test_basis_is_a_partition_of_unity_with_four_nonzeros(n_knots, seed):
    head = SplineScoreHead(1, 1, n_knots).double()
    w = torch.rand(
        257, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    w = torch.cat([2 * w - 1, torch.tensor([-1.0, 1.0], dtype=torch.float64)])
    phi = head.basis(w)
    assert phi.shape == (len(w), n_knots + 2)
    assert torch.all(phi >= 0)
    torch.testing.assert_close(phi.sum(-1), torch.ones_like(w))
    assert torch.all((phi > 0).sum(-1) <= 4)


def test_basis_reproduces_linear_functions():
    # Cubic B-splines reproduce polynomials up to degree 3: with Greville
    # coefficients (the knot averages) the spline is w itself.
    n_knots = 7
    head = SplineScoreHead(1, 1, n_knots).double()
    h = 2.0 / (n_knots - 1)
    greville = -1.0 + h * (torch.arange(n_knots + 2, dtype=torch.float64) - 1)
    w = torch.linspace(-1, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(head.basis(w) @ greville, w)


def test_basis_is_twice_continuously_differentiable_across_knots():
    head = _head(n_knots=5)
    coef = torch.randn(head.n_basis, dtype=torch.float64)

    def spline(w):
        return head.basis(w) @ coef

    for knot in (-0.5, 0.0, 0.5):
        values = []
        for side in (-1e-7, 1e-7):
            w = torch.tensor(knot + side, dtype=torch.float64, requires_grad=True)
            value = spline(w)
            (d1,) = torch.autograd.grad(value, w, create_graph=True)
            (d2,) = torch.autograd.grad(d1, w)
            values.append(torch.stack([value.detach(), d1.detach(), d2]))
        torch.testing.assert_close(values[0], values[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_grids", [1, 3])
def test_grid_scores_match_the_autograd_path(n_grids):
    head = _head(n_knots=11)
    sigma = torch.tensor(0.3, dtype=torch.float64)
    points = torch.rand(n_grids, 17, dtype=torch.float64) * 2 - 1
    features = head.input_features(points, sigma)
    generator = torch.Generator().manual_seed(3)
    grids = torch.randint(n_grids, (23,), generator=generator)
    bias = head.context_bias(torch.randn(23, 3, 2, dtype=torch.float64))[:, 0]
    fast = head.grid_scores(features, grids, bias, sigma)
    slow = head(bias[:, None, :], points[grids], sigma)
    torch.testing.assert_close(fast, slow)


@pytest.mark.parametrize("n_grids", [1, 3])
def test_grid_scores_of_a_conditional_do_not_depend_on_its_batch(n_grids):
    # The float32 inference copy of the head: each conditional scored alone
    # gets the same bits as in a batch of 200 (scikit-learn's batch checks;
    # a float32 matrix product's rounding depends on the row count).
    head = _head(n_knots=24).float()
    sigma = torch.tensor(0.1)
    points = torch.rand(n_grids, 129, generator=torch.Generator().manual_seed(1))
    features = head.input_features(points * 2 - 1, sigma)
    grids = torch.randint(n_grids, (200,), generator=torch.Generator().manual_seed(2))
    bias = head.context_bias(torch.randn(200, 3, 2))[:, 0]
    whole = head.grid_scores(features, grids, bias, sigma)
    for i in range(200):
        alone = head.grid_scores(features, grids[i : i + 1], bias[i : i + 1], sigma)
        assert torch.equal(alone[0], whole[i]), i


def test_scores_depend_on_sigma_through_the_log_sigma_coefficients():
    head = _head()
    bias = head.context_bias(torch.randn(4, 3, 2, dtype=torch.float64))
    w = torch.rand(4, 3, dtype=torch.float64)
    for sigma in (0.1, 1.0, 3.0):
        sigma = torch.tensor(sigma, dtype=torch.float64)
        phi = head.basis(w)
        k = head.n_basis
        expected = (phi * (bias[..., :k] + torch.log(sigma) * bias[..., k:])).sum(-1)
        torch.testing.assert_close(head(bias, w, sigma), expected / sigma)


def test_context_coefficients_fold_sigma_into_the_weights():
    # The knot rule's scoring path takes coefficients straight from the
    # contexts; they must be the head's coefficients of its context biases.
    head = _head()
    context = torch.randn(5, 3, 2, dtype=torch.float64)
    for sigma in (0.1, 1.0, 3.0):
        sigma = torch.tensor(sigma, dtype=torch.float64)
        expected = head.coefficients(head.context_bias(context), sigma)
        torch.testing.assert_close(head.context_coefficients(context, sigma), expected)


def _spline_arcsm(lower, upper, seed=1):
    torch.manual_seed(seed)
    n_features = len(lower)
    model = ARCSM(
        n_features,
        (12,),
        4,
        (8,),
        torch.as_tensor(lower, dtype=torch.float64),
        torch.as_tensor(upper, dtype=torch.float64),
        score_head="spline",
        n_knots=12,
    ).double()
    with torch.no_grad():
        model.head.context_layer.weight.normal_(0.0, 0.5)
        model.head.dimension_bias.normal_(0.0, 0.5)
        model.affine.weight.normal_(0.0, 0.3)
        model.affine.bias.normal_(0.0, 0.3)
    return model


def test_spline_model_is_autoregressive():
    model = _spline_arcsm([-3.0] * 4, [3.0] * 4)
    sigma = torch.tensor(0.2, dtype=torch.float64)
    x = torch.randn(4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: model(v[None], sigma)[0], x)
    assert torch.all(jac.triu(diagonal=1) == 0), "s_d sees a later x"
    # and each score moves with its own x_d (what CSM's derivative term needs)
    assert torch.all(jac.diagonal().abs() > 0)


def test_spline_conditionals_integrate_to_one():
    # Windows of different widths: each dimension's spline spans its own.
    model = _spline_arcsm([-2.0, -9.0], [2.5, 6.0])
    sigma = torch.tensor(0.2, dtype=torch.float64)
    t = torch.linspace(-40.0, 40.0, 16001, dtype=torch.float64)
    for prefix in ([0.0, 0.0], [1.5, 0.0]):
        x = torch.tensor([prefix], dtype=torch.float64).expand(len(t), -1).clone()
        for d in range(2):
            x[:, d] = t
            with torch.no_grad():
                log_p = model.conditional_log_prob(x, sigma, 256)[:, d]
            mass = torch.trapezoid(log_p.exp(), t)
            assert abs(float(mass) - 1.0) < 1e-4, (prefix, d, float(mass))
            x[:, d] = prefix[d]


def test_spline_scores_are_the_derivative_of_the_log_density():
    model = _spline_arcsm([-3.0, -5.0, -2.0], [3.0, 4.0, 2.0])
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


def test_inverse_cdf_samples_follow_each_dimensions_own_window():
    # Dimension 1's window is four times dimension 0's: its draws must use
    # its own window (a sampler that normalized by dimension 0's would
    # clamp them onto a quarter of the window and fail here). Given fixed
    # x_0, the probability integral transform of the draws of x_1 under
    # the density's own conditional CDF is uniform.
    from scipy import stats

    model = _spline_arcsm([-2.0, -8.0], [2.0, 8.0])
    sigma = torch.tensor(0.2, dtype=torch.float64)
    n = 3000
    x = torch.full((n, 2), 0.7, dtype=torch.float64)
    with torch.no_grad():
        conditioning = model.conditioner(x)[:, 1]
        uniform = torch.rand(
            n, dtype=torch.float64, generator=torch.Generator().manual_seed(5)
        )
        draws = draw_dimension(model, conditioning, 1, uniform, sigma, 256, None)
        t = torch.linspace(-40.0, 40.0, 16001, dtype=torch.float64)
        grid = torch.full((len(t), 2), 0.7, dtype=torch.float64)
        grid[:, 1] = t
        pdf = model.conditional_log_prob(grid, sigma, 256)[:, 1].exp()
    cdf = torch.cat([pdf.new_zeros(1), torch.cumulative_trapezoid(pdf, t)])
    pit = np.interp(draws.numpy(), t.numpy(), cdf.numpy())
    assert stats.kstest(pit, "uniform").pvalue > 1e-3


def test_estimator_with_the_spline_head_fits_scores_and_samples(moons):
    est = ARCSMDensity(score_head="spline", n_knots=32, max_epochs=3, random_state=0)
    est.fit(moons)
    assert est.module_.head.n_knots == 32
    log_p = est.score_samples(moons[:50])
    assert np.all(np.isfinite(log_p))
    samples = est.sample(20, random_state=0)
    assert samples.shape == (20, 2) and np.all(np.isfinite(samples))
    # the exact density is normalized: integrate it on a grid
    grid = np.linspace(-4, 5, 241)
    xx, yy = np.meshgrid(grid, grid)
    density = np.exp(est.score_samples(np.c_[xx.ravel(), yy.ravel()]))
    mass = np.trapezoid(np.trapezoid(density.reshape(xx.shape), grid), grid)
    assert abs(mass - 1.0) < 2e-2


def test_score_estimator_takes_the_spline_head(moons):
    est = CSMScoreEstimator(score_head="spline", max_epochs=2, random_state=0)
    scores = est.fit(moons).predict(moons[:10])
    assert scores.shape == (10, 2) and np.all(np.isfinite(scores))


def test_auto_head_is_the_spline_under_maximum_likelihood_only(moons):
    fit = dict(max_epochs=1, hidden_layer_sizes=(8,), random_state=0)
    cases = [
        (ARCSMDensity(**fit), "spline", KnotRule),
        (ARCSMDensity(objective="csm", **fit), "mlp", AdaptiveRule),
        (ARCSMDensity(objective="csm+nll", **fit), "mlp", AdaptiveRule),
        (ARCSMDensity(score_head="mlp", **fit), "mlp", AdaptiveRule),
        (CSMScoreEstimator(**fit), "mlp", AdaptiveRule),
        (CSMScoreEstimator(score_head="spline", **fit), "spline", KnotRule),
    ]
    heads = {"spline": SplineScoreHead, "mlp": ConditionalScoreHead}
    for est, head, rule in cases:
        est.fit(moons)
        assert est.get_params()["score_head"] == est.score_head  # as passed
        assert est.score_head_ == head, est
        assert isinstance(est.module_.head, heads[head]), est
        assert isinstance(est.quadrature_, rule), est


def test_a_warm_start_keeps_the_fitted_head(moons):
    # A new objective would resolve "auto" to the MLP; the continued fit
    # trains the fitted spline module on, with its knot rule.
    est = ARCSMDensity(max_epochs=1, warm_start=True, random_state=0).fit(moons)
    est.set_params(objective="csm").fit(moons)
    assert est.n_iter_ == 2
    assert est.score_head_ == "spline"
    assert isinstance(est.module_.head, SplineScoreHead)
    assert isinstance(est.quadrature_, KnotRule)
    assert np.all(np.isfinite(est.score_samples(moons[:5])))


def test_estimators_pickled_before_the_spline_head_load_with_the_mlp(moons):
    est = ARCSMDensity(score_head="mlp", max_epochs=1, random_state=0).fit(moons)
    state = est.__getstate__()
    del state["score_head"], state["score_head_"], state["n_knots"]
    old = ARCSMDensity.__new__(ARCSMDensity)
    old.__setstate__(state)
    assert old.get_params()["score_head"] == "mlp"
    assert old.score_head_ == "mlp"
    np.testing.assert_allclose(
        old.score_samples(moons[:5]), est.score_samples(moons[:5])
    )
    pickle.loads(pickle.dumps(old))


def test_adaptive_rule_gives_the_same_density_with_and_without_autograd():
    # Without autograd the spline head evaluates one shared feature grid;
    # with it, every conditional's own points (what gradients go through).
    from sklearn_arcsm.adaptive import AdaptiveRule

    model = _spline_arcsm([-2.0, -7.0, -3.0], [3.0, 5.0, 1.0])
    sigma = torch.tensor(0.2, dtype=torch.float64)
    x = torch.randn(
        5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4)
    )
    rule = AdaptiveRule(tol=1e-8)
    with torch.no_grad():
        fast = model.conditional_log_prob(x, sigma, rule)
    slow = model.conditional_log_prob(x.clone().requires_grad_(True), sigma, rule)
    torch.testing.assert_close(fast, slow.detach(), atol=1e-10, rtol=0)
