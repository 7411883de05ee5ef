"""Conditional AR-CSM: contexts c_d(z_<d, x), and densities normalized per condition."""

import pytest
import torch
from torch import nn

from sklearn_arcsm.nn import ARCSM, ConditionalMADE, check_context_network


@pytest.mark.parametrize("n_features", [1, 2, 5])
def test_conditional_made_is_autoregressive_in_z_and_sees_the_whole_condition(
    n_features,
):
    torch.manual_seed(0)
    net = ConditionalMADE(n_features, 3, (16, 16), 4)
    z = torch.randn(4, n_features, requires_grad=True)
    x = torch.randn(4, 3, requires_grad=True)
    out = net(z, x)
    assert out.shape == (4, n_features, 4)
    for d in range(n_features):
        grad_z, grad_x = torch.autograd.grad(
            out[:, d].sum(), (z, x), retain_graph=True, allow_unused=True
        )
        grad_z = torch.zeros_like(z) if grad_z is None else grad_z  # D = 1
        seen = grad_z.abs().sum(dim=0) > 0
        # Exactly the earlier dimensions of z (no leak, no blind spot) ...
        assert seen.tolist() == [k < d for k in range(n_features)]
        # ... and every entry of the condition, the first dimension included.
        assert (grad_x.abs().sum(dim=0) > 0).all()
        torch.testing.assert_close(net.context_at(z, d, x), out[:, d])


def _conditional_model(n_features=1, seed=0):
    torch.manual_seed(seed)
    model = ARCSM(
        n_features,
        (16,),
        4,
        (16,),
        lower=torch.full((n_features,), -3.0),
        upper=torch.full((n_features,), 3.0),
        n_conditions=2,
    )
    with torch.no_grad():  # away from the identity, so the condition matters
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.double()


def test_conditional_density_is_normalized_for_every_condition():
    model = _conditional_model()
    sigma = torch.tensor(1.0, dtype=torch.float64)
    grid = torch.linspace(-40.0, 40.0, 40_001, dtype=torch.float64)[:, None]
    masses, densities = [], []
    for condition in ([0.0, 0.0], [2.0, -1.0], [-3.0, 0.5]):
        c = torch.tensor([condition], dtype=torch.float64).expand(len(grid), 2)
        with torch.no_grad():
            p = model.log_prob(grid, sigma, 256, condition=c).exp()
        masses.append(torch.trapezoid(p, grid[:, 0]).item())
        densities.append(p)
    assert masses == pytest.approx([1.0, 1.0, 1.0], abs=1e-4)
    # The conditions give different densities: the condition is used.
    assert (densities[0] - densities[1]).abs().max() > 1e-2


def test_conditional_model_asks_for_its_condition_and_an_unconditional_refuses_one():
    model = _conditional_model(n_features=3)
    z = torch.randn(5, 3, dtype=torch.float64)
    sigma = torch.tensor(1.0)
    with pytest.raises(ValueError, match="conditional.*pass condition="):
        model.log_prob(z, sigma, 32)
    with pytest.raises(ValueError, match=r"condition must have shape \(5, 2\)"):
        model.log_prob(z, sigma, 32, condition=torch.zeros(5, 3, dtype=torch.float64))
    plain = ARCSM(3, (8,), 2, (8,), -torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="unconditional"):
        plain(z.float(), sigma, condition=torch.zeros(5, 2))
    with pytest.raises(ValueError, match="conditional model.*backbone='made'"):
        ARCSM(
            4,
            (8,),
            2,
            (8,),
            -torch.ones(4),
            torch.ones(4),
            backbone="pixelcnn",
            image_shape=(2, 2),
            n_conditions=2,
        )


class _LeakyConditional(nn.Module):
    """Context of every dimension sees all of z: a leak the check must catch."""

    def __init__(self, n_features, context_size):
        super().__init__()
        self.shape = (n_features, context_size)
        self.linear = nn.Linear(n_features + 2, n_features * context_size)

    def forward(self, z, condition):
        out = self.linear(torch.cat([z, condition], dim=-1))
        return out.view(z.shape[0], *self.shape)


def test_custom_conditional_backbones_are_checked_with_a_condition():
    check_context_network(ConditionalMADE(4, 2, (8,), 3), 4, 3, n_conditions=2)
    with pytest.raises(ValueError, match="not autoregressive"):
        ARCSM(
            4,
            (8,),
            3,
            (8,),
            -torch.ones(4),
            torch.ones(4),
            backbone=_LeakyConditional(4, 3),
            n_conditions=2,
        )


def test_a_custom_embedding_is_used():
    embedding = nn.Sequential(nn.Linear(2, 5), nn.Tanh())
    model = ARCSM(
        3,
        (8,),
        2,
        (8,),
        -torch.ones(3),
        torch.ones(3),
        n_conditions=2,
        embedding=embedding,
    )
    assert model.context_net.embedding is embedding
    assert model.context_net.condition_out.in_features == 5
