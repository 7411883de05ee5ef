"""Tests of the score-matching objectives against closed forms and oracles.

For a Gaussian model and Gaussian data every objective has a known value.
The per-sample objectives of Gaussian models are quadratic in ``x``, so their
mean over a sample whose first two empirical moments equal the data's is the
expectation *exactly*: those tests need no Monte-Carlo tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sklearn_arcsm.nn import ARCSM, GaussianMADE
from sklearn_arcsm.objectives import (
    composite_score_matching,
    denoising_score_matching,
    entropy_surrogate,
    exact_score_matching,
    noise_conditional_csm,
    score_from_log_prob,
    sliced_score_matching,
)
from tests.conftest import examples

DTYPE = torch.float64


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_spd(dim: int, seed: int) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=generator(seed), dtype=DTYPE)
    return a @ a.T / dim + 0.5 * torch.eye(dim, dtype=DTYPE)


def exact_moment_sample(mean, cov, n, seed):
    """``n`` rows whose empirical mean is ``mean`` and (1/n) covariance ``cov``."""
    z = torch.randn(n, len(mean), generator=generator(seed), dtype=DTYPE)
    z = z - z.mean(dim=0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / n)).T
    return mean + z @ torch.linalg.cholesky(cov).T


def gaussian_score_fn(mu, precision):
    return lambda x: -(x - mu) @ precision


class GaussianProblem:
    """Gaussian data N(m, C) and a Gaussian model N(mu, P^-1)."""

    def __init__(self, dim: int, seed: int) -> None:
        g = generator(seed)
        self.dim = dim
        self.m = torch.randn(dim, generator=g, dtype=DTYPE)
        self.cov = random_spd(dim, seed + 1)
        self.mu = torch.randn(dim, generator=g, dtype=DTYPE)
        self.precision = random_spd(dim, seed + 2)

    def sm_closed_form(self, cov=None) -> float:
        """``J_SM = (tr(P^2 C) + |P (m - mu)|^2) / 2 - tr(P)``."""
        cov = self.cov if cov is None else cov
        p2 = self.precision @ self.precision
        shift = self.precision @ (self.m - self.mu)
        value = 0.5 * (torch.trace(p2 @ cov) + shift @ shift)
        return float(value - torch.trace(self.precision))


# ---------------------------------------------------------------------------
# Exact score matching
# ---------------------------------------------------------------------------
def test_exact_sm_gaussian_per_sample_and_expectation():
    prob = GaussianProblem(dim=5, seed=0)
    x = exact_moment_sample(prob.m, prob.cov, 500, seed=3)
    values = exact_score_matching(gaussian_score_fn(prob.mu, prob.precision), x)
    w = x - prob.mu
    per_sample = 0.5 * (w @ prob.precision).square().sum(-1) - torch.trace(
        prob.precision
    )
    torch.testing.assert_close(values, per_sample, rtol=1e-12, atol=1e-12)
    assert values.mean().item() == pytest.approx(prob.sm_closed_form(), rel=1e-10)


def test_exact_sm_is_fisher_divergence_plus_data_constant():
    """``L_SM = J_SM + tr(C^-1) / 2``; and J is minimal (and L zero) at the truth."""
    prob = GaussianProblem(dim=4, seed=1)
    cov_inv = torch.linalg.inv(prob.cov)
    diff = prob.precision - cov_inv
    shift = prob.precision @ (prob.m - prob.mu)
    fisher = 0.5 * (torch.trace(diff @ diff @ prob.cov) + shift @ shift)
    assert prob.sm_closed_form() + 0.5 * torch.trace(cov_inv).item() == pytest.approx(
        fisher.item(), rel=1e-10
    )
    x = exact_moment_sample(prob.m, prob.cov, 200, seed=4)
    at_truth = exact_score_matching(gaussian_score_fn(prob.m, cov_inv), x).mean()
    assert at_truth.item() == pytest.approx(-0.5 * torch.trace(cov_inv).item())
    assert at_truth.item() < prob.sm_closed_form()


def test_exact_sm_matches_hessian_oracle_on_nonlinear_energy():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
    ).to(DTYPE)

    def log_p(x):
        return net(x).squeeze(-1) - 0.5 * x.square().sum(-1)

    x = torch.randn(6, 4, generator=generator(1), dtype=DTYPE)
    values = exact_score_matching(score_from_log_prob(log_p), x)
    expected = []
    for row in x:
        # torch.autograd.functional, not torch.func: the latter warns about
        # torch.jit.script deprecation internally (torch 2.13).
        grad = torch.autograd.functional.jacobian(lambda r: log_p(r[None])[0], row)
        hess = torch.autograd.functional.hessian(lambda r: log_p(r[None])[0], row)
        expected.append(0.5 * grad.square().sum() + torch.trace(hess))
    torch.testing.assert_close(values, torch.stack(expected))
    # Differentiable with respect to the parameters (the last bias does not
    # enter the score).
    values.mean().backward()
    assert net[0].weight.grad is not None and net[2].weight.grad is not None


# ---------------------------------------------------------------------------
# Sliced score matching
# ---------------------------------------------------------------------------
def _projection_variance(a: torch.Tensor, projection: str) -> float:
    a = 0.5 * (a + a.T)
    total = torch.trace(a @ a)
    if projection == "rademacher":
        total = total - a.diagonal().square().sum()
    return 2.0 * total.item()


@pytest.mark.parametrize("projection", ["gaussian", "rademacher"])
@pytest.mark.parametrize("variance_reduction", [False, True])
def test_sliced_sm_unbiased_with_closed_form_variance(projection, variance_reduction):
    """Over projections at a fixed x: mean = exact SM, variance = 2 tr(A^2)."""
    prob = GaussianProblem(dim=5, seed=2)
    score_fn = gaussian_score_fn(prob.mu, prob.precision)
    x0 = torch.randn(1, 5, generator=generator(5), dtype=DTYPE)
    n_draws = 20000
    values = sliced_score_matching(
        score_fn,
        x0.expand(n_draws, 5),
        variance_reduction=variance_reduction,
        projection=projection,
        generator=generator(6),
    )
    exact = exact_score_matching(score_fn, x0).item()
    s = score_fn(x0)[0]
    a = -prob.precision
    if not variance_reduction:
        a = a + 0.5 * torch.outer(s, s)
    variance = _projection_variance(a, projection)
    stderr = math.sqrt(variance / n_draws)
    assert abs(values.mean().item() - exact) < 5 * stderr
    assert values.var().item() == pytest.approx(variance, rel=0.1)


def test_sliced_sm_variance_falls_as_one_over_projections():
    prob = GaussianProblem(dim=6, seed=3)
    score_fn = gaussian_score_fn(prob.mu, prob.precision)
    x = torch.randn(1, 6, generator=generator(7), dtype=DTYPE).expand(4000, 6)
    one = sliced_score_matching(score_fn, x, 1, generator=generator(8)).var()
    eight = sliced_score_matching(score_fn, x, 8, generator=generator(9)).var()
    assert (one / eight).item() == pytest.approx(8.0, rel=0.2)


@settings(max_examples=examples(15), deadline=None)
@given(dim=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_rademacher_vr_is_exact_for_diagonal_hessian(dim, seed):
    """``v^T H v = tr(H)`` when H is diagonal and ``v_i = +-1``."""
    g = generator(seed)
    a = torch.randn(dim, generator=g, dtype=DTYPE)
    b = torch.randn(dim, generator=g, dtype=DTYPE)

    def log_p(x):  # separable: diagonal Hessian
        return (a * torch.sin(x) - 0.5 * b.square() * x.square()).sum(-1)

    score_fn = score_from_log_prob(log_p)
    x = torch.randn(3, dim, generator=g, dtype=DTYPE)
    ssm = sliced_score_matching(
        score_fn, x, variance_reduction=True, projection="rademacher", generator=g
    )
    torch.testing.assert_close(ssm, exact_score_matching(score_fn, x))


def test_sliced_sm_differentiable_and_validates():
    torch.manual_seed(0)
    model = GaussianMADE(4, (8, 8)).to(DTYPE)
    x = torch.randn(8, 4, generator=generator(0), dtype=DTYPE)
    score_fn = score_from_log_prob(model.log_prob)
    sliced_score_matching(score_fn, x, 2, generator=generator(1)).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="n_projections"):
        sliced_score_matching(score_fn, x, 0)
    with pytest.raises(ValueError, match="projection"):
        sliced_score_matching(score_fn, x, projection="sphere")


# ---------------------------------------------------------------------------
# Denoising score matching
# ---------------------------------------------------------------------------
def test_dsm_per_sample_given_noise():
    prob = GaussianProblem(dim=4, seed=4)
    score_fn = gaussian_score_fn(prob.mu, prob.precision)
    x = torch.randn(10, 4, generator=generator(1), dtype=DTYPE)
    sigma = 0.3
    values = denoising_score_matching(score_fn, x, sigma, generator=generator(2))
    z = torch.randn(x.shape, generator=generator(2), dtype=DTYPE)
    expected = 0.5 * (score_fn(x + sigma * z) + z / sigma).square().sum(-1)
    torch.testing.assert_close(values, expected)


@pytest.mark.parametrize("sigma", [0.3, 1.0])
def test_dsm_expectation_is_sm_of_smoothed_data(sigma):
    """``E[DSM] = J_SM(data * N(0, sigma^2)) + D / (2 sigma^2)``."""
    prob = GaussianProblem(dim=4, seed=5)
    score_fn = gaussian_score_fn(prob.mu, prob.precision)
    x = exact_moment_sample(prob.m, prob.cov, 50000, seed=6)
    values = denoising_score_matching(score_fn, x, sigma, generator=generator(7))
    smoothed = prob.cov + sigma**2 * torch.eye(4, dtype=DTYPE)
    expected = prob.sm_closed_form(smoothed) + 4 / (2 * sigma**2)
    stderr = values.std().item() / math.sqrt(len(values))
    assert abs(values.mean().item() - expected) < 5 * stderr


def test_dsm_accepts_per_sample_sigma_and_validates():
    score_fn = gaussian_score_fn(torch.zeros(3, dtype=DTYPE), torch.eye(3, dtype=DTYPE))
    x = torch.randn(5, 3, generator=generator(0), dtype=DTYPE)
    sigma = torch.linspace(0.1, 1.0, 5, dtype=DTYPE)[:, None]
    assert denoising_score_matching(score_fn, x, sigma).shape == (5,)
    with pytest.raises(ValueError, match="sigma"):
        denoising_score_matching(score_fn, x, 0.0)


# ---------------------------------------------------------------------------
# Composite score matching
# ---------------------------------------------------------------------------
class LinearGaussianAR:
    """``x_d = mu_d + sum_{j<d} A_dj (x_j - mu_j) + sqrt(v_d) eps_d``."""

    def __init__(self, mu, a, v):
        self.mu, self.a, self.v = mu, torch.tril(a, diagonal=-1), v

    @classmethod
    def from_gaussian(cls, mean, cov):
        chol = torch.linalg.cholesky(cov)
        diag = chol.diagonal()
        a = torch.eye(len(mean), dtype=DTYPE) - diag[:, None] * torch.linalg.inv(chol)
        return cls(mean, a, diag.square())

    def score_fn(self, x):
        """Conditional scores as a function of the scalar inputs ``u``."""
        prediction = self.mu + (x - self.mu) @ self.a.T
        return lambda u: -(u - prediction) / self.v

    def closed_form(self, mean, cov):
        """``J_CSM = tr(V^-2 (I-A) M (I-A)^T) / 2 - sum 1 / v``, M = E[ww^T]."""
        shift = mean - self.mu
        second = cov + torch.outer(shift, shift)
        b = torch.eye(len(mean), dtype=DTYPE) - self.a
        r2 = (b @ second @ b.T).diagonal()
        return float((0.5 * r2 / self.v.square() - 1.0 / self.v).sum())


def test_csm_gaussian_closed_form_and_minimum_at_truth():
    prob = GaussianProblem(dim=5, seed=7)
    x = exact_moment_sample(prob.m, prob.cov, 300, seed=8)
    g = generator(9)
    model = LinearGaussianAR(
        torch.randn(5, generator=g, dtype=DTYPE),
        torch.randn(5, 5, generator=g, dtype=DTYPE),
        torch.rand(5, generator=g, dtype=DTYPE) + 0.5,
    )
    values = composite_score_matching(model.score_fn(x), x)
    assert values.mean().item() == pytest.approx(
        model.closed_form(prob.m, prob.cov), rel=1e-10
    )
    truth = LinearGaussianAR.from_gaussian(prob.m, prob.cov)
    at_truth = composite_score_matching(truth.score_fn(x), x).mean().item()
    # L_CSM = J_CSM + sum_d 1 / (2 c_d) >= 0, zero at the data's conditionals.
    assert at_truth == pytest.approx(-0.5 * (1.0 / truth.v).sum().item(), rel=1e-10)
    assert at_truth < values.mean().item()


def test_csm_gradient_vanishes_at_truth():
    prob = GaussianProblem(dim=4, seed=10)
    x = exact_moment_sample(prob.m, prob.cov, 200, seed=11)
    truth = LinearGaussianAR.from_gaussian(prob.m, prob.cov)
    params = [t.clone().requires_grad_(True) for t in (truth.mu, truth.a, truth.v)]
    model = LinearGaussianAR(*params)
    composite_score_matching(model.score_fn(x), x).mean().backward()
    for p in params:
        torch.testing.assert_close(p.grad, torch.zeros_like(p), atol=1e-10, rtol=0)


@settings(max_examples=examples(15), deadline=None)
@given(dim=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_csm_equals_exact_sm_for_factorized_models(dim, seed):
    """With independent dimensions, conditional scores are the joint score."""
    g = generator(seed)
    a = torch.randn(dim, generator=g, dtype=DTYPE)

    def log_p(x):
        return (a * torch.tanh(x) - 0.5 * x.square()).sum(-1)

    score_fn = score_from_log_prob(log_p)
    x = torch.randn(4, dim, generator=g, dtype=DTYPE)
    torch.testing.assert_close(
        composite_score_matching(score_fn, x), exact_score_matching(score_fn, x)
    )


def small_arcsm(n_features: int = 5) -> ARCSM:
    torch.manual_seed(0)
    model = ARCSM(
        n_features,
        hidden_sizes=(16, 16),
        context_size=3,
        head_sizes=(8, 8),
        lower=-2.0 * torch.ones(n_features),
        upper=2.0 * torch.ones(n_features),
        n_frequencies=2,
    ).to(DTYPE)
    with torch.no_grad():  # leave the near-zero initial output
        model.head.output_layer.weight.normal_(generator=generator(1))
    return model


def test_csm_matches_per_dimension_autograd_oracle_on_arcsm():
    """One backward through the scalar inputs = D backwards through the full model."""
    model = small_arcsm()
    sigma = torch.tensor(0.3, dtype=DTYPE)
    # Some entries fall outside the window, exercising the Gaussian tails.
    x = 1.5 * torch.randn(7, 5, generator=generator(2), dtype=DTYPE)

    fast = composite_score_matching(
        lambda u: model.conditional_scores(model.conditioner(x), u, sigma), x
    )
    fast_grads = torch.autograd.grad(fast.sum(), list(model.parameters()))

    leaf = x.clone().requires_grad_(True)
    scores = model(leaf, sigma)
    diag = torch.stack(
        [
            torch.autograd.grad(scores[:, d].sum(), leaf, create_graph=True)[0][:, d]
            for d in range(5)
        ],
        dim=1,
    )
    slow = (0.5 * scores.square() + diag).sum(-1)
    slow_grads = torch.autograd.grad(slow.sum(), list(model.parameters()))
    torch.testing.assert_close(fast, slow)
    for a, b in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_csm_weights_scale_terms():
    model = small_arcsm(3)
    sigma = torch.tensor(0.5, dtype=DTYPE)
    x = torch.randn(4, 3, generator=generator(3), dtype=DTYPE)

    def score_fn(u):
        return model.conditional_scores(model.conditioner(x), u, sigma)

    scale = torch.tensor([1.0, 2.0, 4.0], dtype=DTYPE)
    # In units y = scale * x the scores are s(y / scale) / scale and their
    # derivatives carry 1 / scale^2: weights 1 / scale^2 on standardized CSM.
    rescaled = composite_score_matching(
        lambda y: score_fn(y / scale) / scale, x * scale
    )
    weighted = composite_score_matching(score_fn, x, weights=1.0 / scale.square())
    torch.testing.assert_close(rescaled, weighted)


def test_noise_conditional_csm_single_level_is_csm_of_noisy_data():
    model = small_arcsm(4)
    x = torch.randn(6, 4, generator=generator(4), dtype=DTYPE)
    sigma = 0.2
    levels = torch.tensor([sigma], dtype=DTYPE)
    values = noise_conditional_csm(model, x, levels, generator(5))
    noisy = x + sigma * torch.randn(x.shape, generator=generator(5), dtype=DTYPE)
    bias = model.conditioner(noisy)
    expected = composite_score_matching(
        lambda u: model.conditional_scores(bias, u, torch.tensor(sigma, dtype=DTYPE)),
        noisy,
    )
    torch.testing.assert_close(values, expected)


# ---------------------------------------------------------------------------
# Entropy surrogate
# ---------------------------------------------------------------------------
def test_entropy_surrogate_gradient_is_minus_entropy_gradient():
    """Reparameterized Gaussian encoder ``z = mu + L eps``: ``grad H = diag(1/L)``."""
    dim = 3
    mu = torch.randn(dim, generator=generator(0), dtype=DTYPE).requires_grad_(True)
    raw = torch.randn(dim, dim, generator=generator(1), dtype=DTYPE)
    chol = (
        torch.tril(raw, -1) + torch.diag(raw.diagonal().abs() + 0.5)
    ).requires_grad_(True)
    eps = exact_moment_sample(
        torch.zeros(dim, dtype=DTYPE), torch.eye(dim, dtype=DTYPE), 100, seed=2
    )
    lower = torch.tril(chol)
    z = mu + eps @ lower.T
    # Exact conditional scores of N(mu, L L^T) in the sampling order.
    scores = -eps / lower.diagonal()
    surrogate = entropy_surrogate(z, scores)
    assert surrogate.shape == (100,)
    grad_mu, grad_chol = torch.autograd.grad(surrogate.mean(), [mu, chol])
    entropy = torch.log(lower.diagonal()).sum()
    (grad_entropy,) = torch.autograd.grad(entropy, chol)
    torch.testing.assert_close(grad_chol, -grad_entropy)
    torch.testing.assert_close(grad_mu, torch.zeros_like(mu), atol=1e-12, rtol=0)
