"""The likelihood objective: an unbiased estimate of the exact NLL of the data."""

import numpy as np
import pytest
import torch

from sklearn_arcsm import ARCSMDensity
from tests.conftest import CHEAP_PARAMS


@pytest.fixture(
    scope="module",
    params=[
        # The MLP head on a fixed panel rule (training: randomly shifted grids)
        {"score_head": "mlp", "n_quadrature": 64},
        # The default spline head, trained and scored on its exact knot rule
        {"n_quadrature": "auto"},
    ],
    ids=["mlp-shifted-grid", "spline-knot-rule"],
)
def fitted(request):
    X = np.random.RandomState(0).standard_normal((300, 3)) @ [
        [1.0, 0.5, 0.0],
        [0.0, 1.0, -0.3],
        [0.0, 0.0, 0.2],
    ]
    est = ARCSMDensity(**{**CHEAP_PARAMS, **request.param, "random_state": 0})
    return est.fit(X), X


def _exact_nll(est, Z):
    sigma = torch.tensor(est.noise_levels_[-1], dtype=Z.dtype)
    with torch.no_grad():
        return -est.module_.log_prob(Z, sigma, est.quadrature_)


def _float64_problem(est, X, rows):
    """The fitted module in float64, ``rows`` standardized rows and sigma_L."""
    Z = torch.as_tensor((X[:rows] - est.mean_) / est.scale_, dtype=torch.float64)
    sigma = torch.tensor(est.noise_levels_[-1], dtype=torch.float64)
    return est._inference_module(), Z, sigma


def test_default_objective_is_maximum_likelihood(fitted):
    est, _ = fitted
    assert est.objective_ == "nll"


def test_validation_nll_is_the_exact_nll_of_the_clean_data(fitted):
    # Up to 16 dimensions the held-out estimate covers every conditional on
    # the inference grid: it must equal -log p(x) of the data themselves
    # (no noise added), the quantity score_samples reports.
    est, X = fitted
    Z = torch.as_tensor((X[:50] - est.mean_) / est.scale_, dtype=torch.float32)
    est.module_.eval()
    with torch.enable_grad():
        value = est.net_.infer(Z).detach()
    np.testing.assert_allclose(value, _exact_nll(est, Z), rtol=1e-4, atol=1e-4)
    # ...and it is what score_samples reports, up to the Jacobian of the
    # standardization and float32 vs float64.
    reported = -(est.score_samples(X[:50]) + np.log(est.scale_).sum())
    np.testing.assert_allclose(value, reported, rtol=1e-3, atol=1e-3)


def test_training_nll_is_unbiased(fitted):
    # One random dimension per row on a randomly shifted grid: averaged over
    # many draws, D * (-log p(x_d | x_<d)) recovers -log p(x).
    est, X = fitted
    Z = torch.as_tensor((X[:4] - est.mean_) / est.scale_, dtype=torch.float32)
    repeats = Z.repeat(4000, 1)
    est.module_.train()
    try:
        with torch.no_grad():
            draws = est.net_.infer(repeats).view(4000, 4)
    finally:
        est.module_.eval()
    mean = draws.mean(0)
    se = draws.std(0) / np.sqrt(4000)
    exact = _exact_nll(est, Z)
    assert torch.all((mean - exact).abs() < 4 * se + 0.02), (mean, exact, se)


def test_langevin_needs_trained_noise_levels(fitted, moons):
    est, _ = fitted
    with pytest.raises(ValueError, match="inverse_cdf"):
        est.sample(3, random_state=0, method="langevin")
    csm = ARCSMDensity(**{**CHEAP_PARAMS, "objective": "csm+nll", "random_state": 0})
    samples = csm.fit(moons).sample(5, random_state=0, method="langevin", n_steps=3)
    assert samples.shape == (5, 2) and np.all(np.isfinite(samples))


def test_sampled_nll_over_every_dimension_is_exact(fitted):
    from sklearn_arcsm.objectives import sampled_negative_log_likelihood

    module, Z, sigma = _float64_problem(*fitted, rows=20)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        value = sampled_negative_log_likelihood(
            module, Z, sigma, 64, generator, n_dims=3, shifted=False
        )
        exact = -module.log_prob(Z, sigma, 64)
    torch.testing.assert_close(value, exact)


@pytest.mark.parametrize("n_dims", [1, 2])
def test_sampled_nll_is_unbiased_for_any_number_of_dimensions(fitted, n_dims):
    from sklearn_arcsm.objectives import sampled_negative_log_likelihood

    module, Z, sigma = _float64_problem(*fitted, rows=3)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        draws = sampled_negative_log_likelihood(
            module, Z.repeat(3000, 1), sigma, 64, generator, n_dims
        ).view(3000, 3)
        exact = -module.log_prob(Z, sigma, 64)
    se = draws.std(0) / np.sqrt(3000)
    assert torch.all((draws.mean(0) - exact).abs() < 4 * se + 1e-3), (draws, exact)


def test_training_uses_more_dimensions_in_high_dimension():
    from sklearn_arcsm._skorch import train_likelihood_dims

    assert [train_likelihood_dims(d) for d in (1, 8, 9, 16, 17, 32, 784)] == [
        1,
        1,
        2,
        2,
        3,
        4,
        4,
    ]


def test_check_grid_scores_the_same_conditionals(fitted):
    # On a resolved model both grids read the same log-density, so the check
    # changes nothing beyond discretization error: it must score the very
    # conditionals of the first grid (same rows, same dimensions).
    module, Z, sigma = _float64_problem(*fitted, rows=40)
    for n_dims in (1, 2):
        plain, checked = _without_and_with_check(module, Z, sigma, n_dims, seed=3)
        torch.testing.assert_close(checked, plain, rtol=0, atol=2e-3)
        assert torch.all(checked >= plain - 1e-12)  # the lower log-density


def _without_and_with_check(model, x, sigma, n_dims, seed):
    """The sampled NLL of ``x`` on the 64-cell training grid, then with its
    check grid, from the same random draws."""
    from sklearn_arcsm.objectives import (
        check_grid_cells,
        sampled_negative_log_likelihood,
    )

    with torch.no_grad():
        return tuple(
            sampled_negative_log_likelihood(
                model,
                x,
                sigma,
                64,
                torch.Generator().manual_seed(seed),
                n_dims,
                check_rule=check,
            )
            for check in (None, check_grid_cells(64))
        )


def _aliased_model(amplitude, omega):
    """A 2-D ARCSM whose every conditional has the energy
    ``-v**2 / 2 + amplitude * sin(omega * v)`` on the window [-4, 4]: a
    ripple of about three training-grid nodes per period."""
    from sklearn_arcsm.nn import ARCSM

    torch.manual_seed(0)
    model = ARCSM(
        n_features=2,
        hidden_sizes=(8,),
        context_size=2,
        head_sizes=(4,),
        lower=torch.full((2,), -4.0),
        upper=torch.full((2,), 4.0),
    ).double()

    def window_scores(bias, v, sigma, lower=None, upper=None):
        lower = model.lower if lower is None else lower
        upper = model.upper if upper is None else upper
        inside = torch.minimum(torch.maximum(v, lower), upper)
        ripple = amplitude * omega * torch.cos(omega * inside)
        return -inside + ripple - (v - inside) / model.tail_scale**2

    model.window_scores = window_scores
    return model


def test_check_grid_removes_the_gain_of_structure_finer_than_the_grid():
    # Structure below the grid's resolution makes one shifted grid's NLL
    # optimistic on average (a model can lower its training loss by
    # learning it); the lower log-density of two grids of incommensurate
    # spacings is not. Measured: truth 4.625, one grid 4.049, checked 4.585.
    from sklearn_arcsm.objectives import sampled_negative_log_likelihood

    model = _aliased_model(amplitude=2.0, omega=30.0)
    x = torch.tensor([[0.3, -0.7]], dtype=torch.float64).repeat(4000, 1)
    sigma = torch.tensor(0.01, dtype=torch.float64)
    with torch.no_grad():
        truth = sampled_negative_log_likelihood(
            model, x[:1], sigma, 40000, n_dims=2, shifted=False
        ).item()
    one_grid, checked = (
        nll.mean().item()
        for nll in _without_and_with_check(model, x, sigma, n_dims=2, seed=0)
    )
    assert one_grid < truth - 0.3  # the failure the check exists for
    assert checked > truth - 0.1, (truth, one_grid, checked)


def test_training_term_is_checked_by_a_second_grid(fitted):
    from sklearn_arcsm._skorch import TRAIN_LIKELIHOOD_CELLS
    from sklearn_arcsm.objectives import check_grid_cells

    est, _ = fitted
    assert check_grid_cells(TRAIN_LIKELIHOOD_CELLS) == 91
    calls = []
    module = est.module_
    original = module.dimension_log_prob

    def spy(*args, **kwargs):
        calls.append(args[3])
        return original(*args, **kwargs)

    module.dimension_log_prob = spy
    Z = torch.zeros(5, 3)
    module.train()
    try:
        with torch.no_grad():
            est.net_.infer(Z)
    finally:
        module.eval()
        del module.dimension_log_prob
    if est.score_head_ == "spline":
        # The knot rule is exact: one pass, no check grid to fool.
        assert calls == [est.net_.train_cells]
    else:
        assert calls == [est.net_.train_cells, check_grid_cells(est.net_.train_cells)]
