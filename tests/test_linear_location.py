"""The linear location term (``ARCSM(linear_skip=...)``, ``linear_location``)."""

import pickle

import numpy as np
import pytest
import torch

from sklearn_arcsm import ARCSMDensity
from sklearn_arcsm.knot_quadrature import KnotRule
from sklearn_arcsm.nn import ARCSM
from tests.conftest import saved_before

SIGMA = torch.tensor(0.2, dtype=torch.float64)


def _model(n_features=4, score_head="mlp", linear_skip=True, seed=1):
    """A small AR-CSM with random weights everywhere, the skip included."""
    torch.manual_seed(seed)
    bounds = torch.full((n_features,), 3.0)
    model = ARCSM(
        n_features,
        (12,),
        3,
        (8,),
        -bounds,
        bounds,
        score_head=score_head,
        n_knots=12,
        linear_skip=linear_skip,
    ).double()
    with torch.no_grad():
        model.affine.weight.normal_(0.0, 0.3)
        model.affine.bias.normal_(0.0, 0.3)
        if model.skip is not None:
            model.skip.weight.normal_(0.0, 0.7)
    return model


def test_the_skip_adds_its_linear_term_to_the_location_only():
    model = _model()
    x = torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        bias, location, log_scale = model.unpack(model.conditioner(x))
        weight = model.skip.weight.tril(-1).clone()
        model.skip.weight.zero_()
        bias0, location0, log_scale0 = model.unpack(model.conditioner(x))
    torch.testing.assert_close(location - location0, x @ weight.T)
    torch.testing.assert_close(bias, bias0)
    torch.testing.assert_close(log_scale, log_scale0)
    assert torch.all(weight.abs().sum(dim=1)[1:] > 0)  # a non-trivial skip


@pytest.mark.parametrize("score_head", ["mlp", "spline"])
def test_the_model_with_the_skip_is_autoregressive(score_head):
    # s_d and log p(x_d | x_<d) may not see x_>=d+1, and the location of
    # dimension d does see x_<d through the skip.
    model = _model(score_head=score_head)
    x = torch.randn(4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: model(v[None], SIGMA)[0], x)
    assert torch.all(jac.triu(diagonal=1) == 0)
    assert torch.all(jac.diagonal() != 0)
    conditional = torch.autograd.functional.jacobian(
        lambda v: model.conditional_log_prob(v[None], SIGMA, 64)[0], x
    )
    assert torch.all(conditional.triu(diagonal=1) == 0)
    below = torch.tril_indices(4, 4, offset=-1)
    assert torch.all(conditional[below[0], below[1]] != 0)
    # The skip's mask keeps the upper triangle out whatever its raw weights.
    with torch.no_grad():
        model.skip.weight.fill_(1.0)
    jac = torch.autograd.functional.jacobian(lambda v: model(v[None], SIGMA)[0], x)
    assert torch.all(jac.triu(diagonal=1) == 0)


def test_conditioner_at_includes_the_skip():
    # The samplers' one-dimension path must see the same location.
    model = _model(5)
    x = torch.randn(7, 5, dtype=torch.float64)
    full = model.conditioner(x)
    for d in range(5):
        torch.testing.assert_close(
            model.conditioner_at(x, d), full[:, d], rtol=1e-12, atol=1e-12
        )


def test_conditionals_with_the_skip_integrate_to_one():
    model = _model(2)
    t = torch.linspace(-60.0, 60.0, 12001, dtype=torch.float64)
    for prefix in ([0.0, 0.0], [2.5, 0.0]):
        x = torch.tensor([prefix], dtype=torch.float64).expand(len(t), -1).clone()
        x[:, 1] = t
        with torch.no_grad():
            log_p = model.conditional_log_prob(x, SIGMA, 256)[:, 1]
        mass = torch.trapezoid(log_p.exp(), t)
        assert abs(float(mass) - 1.0) < 1e-4, (prefix, float(mass))


def test_the_knot_rule_sees_the_skip():
    # The spline head's fast path reads the location off the context itself:
    # it must give what the generic path gives with a fine panel rule.
    model = _model(3, score_head="spline")
    x = torch.randn(6, 3, dtype=torch.float64)
    with torch.no_grad():
        fast = model.conditional_log_prob(x, SIGMA, KnotRule())
        reference = model.conditional_log_prob(x, SIGMA, 2048)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-6)


def test_linear_skip_selects_dimensions_and_old_modules_load_without_it():
    model = _model(4, linear_skip=torch.tensor([False, True, False, True]))
    assert torch.equal(model.skip.mask.sum(dim=1), torch.tensor([0.0, 1.0, 0.0, 3.0]))
    assert _model(4, linear_skip=False).skip is None
    assert _model(1).skip is None  # no earlier columns
    state = _model(3, linear_skip=False).__dict__.copy()
    state["_modules"] = {k: v for k, v in state["_modules"].items() if k != "skip"}
    old = ARCSM.__new__(ARCSM)
    old.__setstate__(state)
    assert old.skip is None
    old.conditioner(torch.zeros(2, 3, dtype=torch.float64))


@pytest.fixture(scope="module")
def linear_data():
    # x_2 is a linear function of x_1 plus a small noise: a conditional whose
    # location moves far across the window.
    rng = np.random.RandomState(0)
    x1 = rng.standard_normal(600)
    return np.column_stack([x1, 3.0 * x1 + 0.3 * rng.standard_normal(600)])


def test_auto_resolves_by_backbone_and_the_fit_learns_the_regression(linear_data):
    # At most 60 epochs (early stopping ends them at 53 and 31): in sample
    # the skip is ahead, -1.565 against -1.585 nats. With 30 epochs it was
    # behind (-1.589 against -1.586) since the fit keeps the average of the
    # epochs tied with the best (0.3.0); on 2,000 fresh rows the two are
    # within 0.004 (-1.655 against -1.652; before 0.3.0, at 30 epochs,
    # -1.669 against -1.680).
    fast = {"max_epochs": 60, "random_state": 0}
    est = ARCSMDensity(**fast).fit(linear_data)
    assert est.linear_location_ is True and est.module_.skip is not None
    # Standardized, the regression slope of z_2 on z_1 is about 0.995: the
    # skip takes a share of it within a few epochs.
    assert float(est.module_.skip.weight[1, 0].detach()) > 0.05
    off = ARCSMDensity(linear_location=False, **fast).fit(linear_data)
    assert off.linear_location_ is False and off.module_.skip is None
    assert est.score(linear_data) > off.score(linear_data)
    pixel = ARCSMDensity(backbone="pixelcnn", image_shape=(1, 2), max_epochs=1)
    assert pixel.fit(linear_data).linear_location_ is False
    forced = ARCSMDensity(
        backbone="pixelcnn", image_shape=(1, 2), max_epochs=1, linear_location=True
    ).fit(linear_data)
    assert forced.module_.skip is not None


def test_warm_start_with_another_setting_is_refused(linear_data):
    est = ARCSMDensity(max_epochs=1, random_state=0).fit(linear_data)
    est.set_params(warm_start=True, linear_location=False)
    with pytest.raises(ValueError, match="linear_location=False differs"):
        est.fit(linear_data)
    est.set_params(linear_location=True)  # "auto" and True agree for the MADE
    est.fit(linear_data)


def test_pickle_round_trip_and_format_7(linear_data):
    est = ARCSMDensity(max_epochs=2, random_state=0).fit(linear_data)
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(
        loaded.score_samples(linear_data[:5]), est.score_samples(linear_data[:5])
    )
    plain = ARCSMDensity(linear_location=False, max_epochs=2, random_state=0)
    plain.fit(linear_data)
    old = saved_before(plain, 7, "linear_location", "linear_location_")
    assert old.linear_location is False and old.linear_location_ is False
    np.testing.assert_array_equal(
        old.score_samples(linear_data[:5]), plain.score_samples(linear_data[:5])
    )


def test_bad_setting_is_refused(linear_data):
    with pytest.raises(ValueError, match="linear_location"):
        ARCSMDensity(linear_location="yes").fit(linear_data)


def _with_point_masses(n_spiky, n_features=4, seed=0):
    # Columns that are 0 (dequantized onto a box 0.01 wide) in 60% of the
    # rows and spread out otherwise: what marginal.spiky_columns flags.
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((600, n_features))
    X[:, 1:] += X[:, :1]
    blank = rng.rand(600, n_spiky) < 0.6
    X[:, :n_spiky] = np.where(
        blank, 0.01 * rng.rand(600, n_spiky), 3.0 + X[:, :n_spiky]
    )
    return X


def test_auto_is_off_where_many_columns_hold_a_point_mass():
    # Blank pixels are modes at a fixed place that a location moving with
    # the other columns smears (digits: -5.4 nats per image with the term).
    one_epoch = {"max_epochs": 1, "random_state": 0}
    mostly_blank = ARCSMDensity(**one_epoch).fit(_with_point_masses(2))
    assert mostly_blank.linear_location_ is False and mostly_blank.module_.skip is None
    one_in_four = ARCSMDensity(**one_epoch).fit(_with_point_masses(1))
    assert one_in_four.linear_location_ is True
    forced = ARCSMDensity(linear_location=True, **one_epoch)
    assert forced.fit(_with_point_masses(2)).module_.skip is not None
    # A warm start under "auto" continues whatever the fit resolved.
    mostly_blank.set_params(warm_start=True)
    assert mostly_blank.fit(_with_point_masses(2, seed=1)).linear_location_ is False
