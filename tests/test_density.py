"""ARCSMDensity end to end: normalization, the scikit-learn contract, inputs."""

import pickle

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_arcsm import ARCSMDensity
from tests.conftest import CHEAP_PARAMS

SMALL = dict(
    max_epochs=60,
    early_stopping=False,
    hidden_layer_sizes=(32,),
    head_layer_sizes=(16,),
    n_quadrature=16,
    batch_size=64,
    random_state=0,
)


@pytest.fixture(scope="module")
def fitted_moons():
    from sklearn.datasets import make_moons

    X, _ = make_moons(400, noise=0.1, random_state=0)
    return ARCSMDensity(**SMALL).fit(X), X


def test_fitted_2d_density_integrates_to_one(fitted_moons):
    est, X = fitted_moons
    lo, hi = X.min(0) - 3.0, X.max(0) + 3.0
    gx = np.linspace(lo[0], hi[0], 220)
    gy = np.linspace(lo[1], hi[1], 220)
    grid = np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2)
    mass = np.exp(est.score_samples(grid)).sum() * (gx[1] - gx[0]) * (gy[1] - gy[0])
    assert abs(mass - 1.0) < 0.01


def test_density_is_finite_far_outside_the_training_range(fitted_moons):
    est, X = fitted_moons
    far = np.array([[50.0, -50.0], [1e4, 0.0], [-3.0, 2.0]])
    log_p = est.score_samples(far)
    assert np.all(np.isfinite(log_p))
    assert np.all(log_p < est.score_samples(X[:1]))


def test_learns_better_than_a_single_gaussian(fitted_moons):
    from sklearn.datasets import make_moons
    from sklearn.mixture import GaussianMixture

    est, X = fitted_moons
    X_test, _ = make_moons(400, noise=0.1, random_state=1)
    gauss = GaussianMixture(1).fit(X)
    assert est.score(X_test) > gauss.score(X_test) + 0.15


def test_outputs_have_the_documented_types_and_shapes(fitted_moons):
    est, X = fitted_moons
    log_p = est.score_samples(X[:7])
    assert log_p.shape == (7,) and log_p.dtype == np.float64
    assert est.score(X[:7]) == pytest.approx(log_p.mean())
    samples = est.sample(5, random_state=0)
    assert samples.shape == (5, 2)
    assert est.sample().shape == (1, 2)
    assert est.sample(0).shape == (0, 2)
    assert len(est.loss_curve_) == est.n_iter_
    assert est.module_ is est.net_.module_


def test_samples_follow_the_density(fitted_moons):
    est, X = fitted_moons
    samples = est.sample(2000, random_state=0)
    # Samples sit where the model puts mass: their mean log-density matches
    # the model's expected log-density, estimated independently.
    assert abs(samples.mean(0) - X.mean(0)).max() < 0.15
    assert abs(samples.std(0) - X.std(0)).max() < 0.15


def _mmd(a, b, bandwidth):
    """Biased squared MMD with a Gaussian kernel of this bandwidth."""

    def k(x, y):
        d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * bandwidth**2))

    return k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()


def test_langevin_moves_its_start_to_the_model_distribution(fitted_moons):
    # Langevin starts every dimension at N(0, 1) in standardized units: a
    # Gaussian blob, far (MMD, Gaussian kernel of bandwidth 0.5 data units)
    # from exact inverse-CDF draws of the same model. With the default steps
    # it must end close to them (measured: 0.009, the level of two exact
    # draws against each other; the start is at 0.054, one step at 0.043).
    _, X = fitted_moons
    # Langevin walks through every noise level: only CSM trains them.
    est = ARCSMDensity(**{**SMALL, "objective": "csm+nll"}).fit(X)
    exact = est.sample(400, random_state=1)
    langevin = est.sample(400, random_state=0, method="langevin")
    start = est.mean_ + est.scale_ * np.random.RandomState(0).standard_normal((400, 2))
    assert langevin.shape == (400, 2) and np.all(np.isfinite(langevin))
    assert _mmd(langevin, exact, 0.5) < 0.3 * _mmd(start, exact, 0.5)


def test_langevin_recovers_a_gaussian():
    # Against the truth: a correlated Gaussian (covariance entries 1, 0.8).
    # Measured with the defaults: 0.96, 0.84, 1.09; the old defaults (20
    # steps of 0.1 sigma**2) gave 2.08, 0.69, 1.78.
    rng = np.random.RandomState(0)
    cov = np.array([[1.0, 0.8], [0.8, 1.0]])
    X = rng.multivariate_normal([1.0, -2.0], cov, size=2000)
    est = ARCSMDensity(**{**SMALL, "objective": "csm", "max_epochs": 40}).fit(X)
    langevin = est.sample(500, random_state=0, method="langevin")
    np.testing.assert_allclose(np.cov(langevin.T), cov, atol=0.2)
    np.testing.assert_allclose(langevin.mean(axis=0), [1.0, -2.0], atol=0.15)


def test_sample_rejects_bad_arguments(fitted_moons):
    est, _ = fitted_moons
    with pytest.raises(ValueError, match="non-negative integer"):
        est.sample(-1)
    with pytest.raises(ValueError, match="method must be"):
        est.sample(2, method="gibbs")
    csm = ARCSMDensity(**{**CHEAP_PARAMS, "objective": "csm", "random_state": 0})
    csm.fit(np.random.RandomState(0).standard_normal((50, 2)))
    with pytest.raises(ValueError, match="n_steps must be a positive integer"):
        csm.sample(2, method="langevin", n_steps=0)
    with pytest.raises(ValueError, match="step_size must be a positive"):
        csm.sample(2, method="langevin", step_size=-0.1)


def test_densities_are_reported_in_the_users_units(moons):
    # Standardization is internal, so an affine change of units changes the
    # log-density by exactly the log-Jacobian.
    a = ARCSMDensity(**{**CHEAP_PARAMS, "random_state": 0}).fit(moons)
    b = ARCSMDensity(**{**CHEAP_PARAMS, "random_state": 0}).fit(10.0 * moons + 3.0)
    expected = a.score_samples(moons[:20]) - 2 * np.log(10.0)
    np.testing.assert_allclose(
        b.score_samples(10.0 * moons[:20] + 3.0), expected, atol=1e-5
    )
    np.testing.assert_allclose(
        b.sample(10, random_state=1),
        10.0 * a.sample(10, random_state=1) + 3.0,
        atol=1e-4,
    )


def test_same_random_state_gives_identical_fits_and_samples(moons):
    a = ARCSMDensity(**{**CHEAP_PARAMS, "random_state": 3}).fit(moons)
    b = ARCSMDensity(**{**CHEAP_PARAMS, "random_state": 3}).fit(moons)
    np.testing.assert_array_equal(a.score_samples(moons), b.score_samples(moons))
    np.testing.assert_array_equal(
        a.sample(10, random_state=0), b.sample(10, random_state=0)
    )
    assert a.loss_curve_ == b.loss_curve_
    c = ARCSMDensity(**{**CHEAP_PARAMS, "random_state": 4}).fit(moons)
    assert not np.array_equal(a.score_samples(moons), c.score_samples(moons))


def test_fit_does_not_touch_the_global_rngs(moons):
    import torch

    torch.manual_seed(123)
    np.random.seed(123)
    ARCSMDensity(**{**CHEAP_PARAMS, "random_state": 0}).fit(moons)
    t, n = torch.rand(1), np.random.rand()
    torch.manual_seed(123)
    np.random.seed(123)
    assert torch.equal(t, torch.rand(1)) and n == np.random.rand()


def test_pickle_and_clone_round_trip(fitted_moons):
    est, X = fitted_moons
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(
        restored.score_samples(X[:50]), est.score_samples(X[:50])
    )
    np.testing.assert_array_equal(
        restored.sample(5, random_state=2), est.sample(5, random_state=2)
    )
    fresh = clone(est)
    assert fresh.get_params() == est.get_params()
    assert not hasattr(fresh, "module_")


def test_pipeline_and_grid_search(moons):
    pipe = Pipeline(
        [("scale", StandardScaler()), ("density", ARCSMDensity(**CHEAP_PARAMS))]
    )
    pipe.fit(moons)
    assert pipe.score_samples(moons[:5]).shape == (5,)
    search = GridSearchCV(
        ARCSMDensity(**{**CHEAP_PARAMS, "random_state": 0}),
        {"context_size": [1, 2]},
        cv=2,
    )
    search.fit(moons)
    # The search scores each fold by mean held-out log-likelihood: the same
    # numbers as a manual cross-validation of each candidate.
    from sklearn.model_selection import cross_val_score

    for i, size in enumerate([1, 2]):
        est = ARCSMDensity(**{**CHEAP_PARAMS, "random_state": 0, "context_size": size})
        manual = cross_val_score(est, moons, cv=2).mean()
        assert abs(search.cv_results_["mean_test_score"][i] - manual) < 1e-9
    best = int(np.argmax(search.cv_results_["mean_test_score"]))
    assert search.best_params_["context_size"] == [1, 2][best]


def test_warm_start_continues_training(moons):
    est = ARCSMDensity(**{**CHEAP_PARAMS, "warm_start": True, "random_state": 0})
    est.fit(moons)
    first = est.module_.head.dimension_bias.detach().clone()
    est.fit(moons)
    assert est.n_iter_ == 2 * CHEAP_PARAMS["max_epochs"]
    assert not np.array_equal(first.numpy(), est.module_.head.dimension_bias.detach())


def test_early_stopping_restores_the_average_of_the_epochs_tied_with_the_best(moons):
    # Training runs to max_epochs (the patience is longer), so the recorder
    # (which runs after early stopping) sees every epoch, the last included.
    from sklearn_arcsm._early_stopping import NoiseAwareEarlyStopping
    from tests.test_reliability import RecordWeights, used_callback

    est = ARCSMDensity(
        **{
            **CHEAP_PARAMS,
            "max_epochs": 25,
            "n_iter_no_change": 100,
            "validation_fraction": 0.02,
            "random_state": 0,
            "callbacks": [RecordWeights()],
        }
    ).fit(moons)
    recorder = used_callback(est, RecordWeights)
    early = used_callback(est, NoiseAwareEarlyStopping)
    curve = np.asarray(est.validation_loss_curve_)
    assert len(curve) == est.n_iter_ == len(recorder.weights_)
    best = int(np.argmin(curve))
    assert early.best_standard_error_ > 0
    band = [
        e
        for e in range(best, len(curve))
        if curve[e] <= curve[best] + early.best_standard_error_
    ]
    # (A small validation set: a wide band, here 7 epochs.)
    assert len(band) == early.n_averaged_ >= 3
    for name, value in est.module_.state_dict().items():
        expected = np.mean([recorder.weights_[e][name].numpy() for e in band], axis=0)
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_extra_callbacks_are_used_and_not_mutated(moons):
    from skorch.callbacks import Callback

    class Count(Callback):
        def __init__(self):
            self.epochs = 0

        def on_epoch_end(self, net, **kwargs):
            self.epochs += 1

    cb = Count()
    est = ARCSMDensity(**{**CHEAP_PARAMS, "callbacks": [cb]}).fit(moons)
    assert cb.epochs == 0  # the user's object is copied, not trained in place
    used = dict(est.net_.callbacks_)
    assert any(isinstance(c, Count) and c.epochs == est.n_iter_ for c in used.values())


@pytest.mark.parametrize(
    "X, match",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]), "NaN"),
        (np.array([[0.0, np.inf], [1.0, 2.0], [3.0, 4.0]]), "infinity"),
        (np.array([1.0, 2.0, 3.0]), "2D array"),
        (np.zeros((0, 2)), "0 sample"),
        (np.array([["a", "b"], ["c", "d"]]), "[Ss]tring|could not convert"),
        (np.array([[1.0, 2.0]]), "minimum of 2"),
    ],
)
def test_bad_training_input_raises_a_clear_value_error(X, match):
    with pytest.raises(ValueError, match=match):
        ARCSMDensity(**CHEAP_PARAMS).fit(X)


def test_bad_scoring_input_raises_a_clear_value_error(fitted_moons):
    est, _ = fitted_moons
    with pytest.raises(ValueError, match="features"):
        est.score_samples(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        est.score_samples(np.array([[np.nan, 0.0]]))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"noise_levels": [0.1, 0.5]}, "strictly decreasing"),
        ({"noise_levels": [1.0, -0.1]}, "> 0"),
        ({"hidden_layer_sizes": (8, 0)}, "positive integers"),
        ({"head_layer_sizes": ()}, "positive integers"),
        ({"device": "tpu"}, "device"),
        ({"lr": -1.0}, "lr"),
        ({"backbone": "transformer"}, "backbone"),
    ],
)
def test_bad_parameters_raise_clear_errors(moons, params, match):
    with pytest.raises(ValueError, match=match):
        ARCSMDensity(**{**CHEAP_PARAMS, **params}).fit(moons)


def test_cuda_request_without_cuda_is_a_clear_error(moons):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        ARCSMDensity(**{**CHEAP_PARAMS, "device": "cuda"}).fit(moons)


def test_the_callers_array_is_never_modified(moons):
    X = np.asfortranarray(moons.copy())
    X.setflags(write=False)
    est = ARCSMDensity(**CHEAP_PARAMS).fit(X)
    est.score_samples(X)
    np.testing.assert_array_equal(X, moons)


def test_single_feature_and_constant_column():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 1))
    est = ARCSMDensity(**CHEAP_PARAMS).fit(X)
    assert est.sample(3, random_state=0).shape == (3, 1)
    X2 = np.c_[X, np.full(200, 5.0)]
    log_p = ARCSMDensity(**CHEAP_PARAMS).fit(X2).score_samples(X2)
    assert np.all(np.isfinite(log_p))


def test_pixelcnn_backbone_fits_digits_end_to_end():
    from sklearn.datasets import load_digits

    X = load_digits().data[:150]
    params = {**CHEAP_PARAMS, "hidden_layer_sizes": (4, 4), "random_state": 0}
    est = ARCSMDensity(backbone="pixelcnn", **params).fit(X)
    assert est.hidden_layer_sizes_ == (4, 4)
    log_p = est.score_samples(X[:5])
    assert log_p.shape == (5,) and np.all(np.isfinite(log_p))
    assert est.sample(2, random_state=0).shape == (2, 64)
    with pytest.raises(ValueError, match="image_shape"):
        ARCSMDensity(backbone="pixelcnn", image_shape=(4, 4), **params).fit(X)
    with pytest.raises(ValueError, match="square"):
        ARCSMDensity(backbone="pixelcnn", **params).fit(X[:, :10])


def test_pixelcnn_takes_channels_and_checks_its_sizes():
    # A 3-channel 2 x 3 image: 18 features, ordered pixel by pixel.
    rng = np.random.RandomState(0)
    X = rng.normal(size=(120, 18))
    params = {**CHEAP_PARAMS, "hidden_layer_sizes": (6, 6), "random_state": 0}
    est = ARCSMDensity(backbone="pixelcnn", image_shape=(3, 2, 3), **params).fit(X)
    assert est.module_.context_net.image_shape == (3, 2, 3)
    assert np.all(np.isfinite(est.score_samples(X[:4])))
    with pytest.raises(ValueError, match="one channel count"):
        ARCSMDensity(
            backbone="pixelcnn",
            image_shape=(3, 2, 3),
            **{**params, "hidden_layer_sizes": (6, 12)},
        ).fit(X)
    with pytest.raises(ValueError, match="multiple"):
        ARCSMDensity(
            backbone="pixelcnn",
            image_shape=(3, 2, 3),
            **{**params, "hidden_layer_sizes": (4, 4)},
        ).fit(X)
    with pytest.raises(ValueError, match="odd"):
        ARCSMDensity(
            backbone="pixelcnn", image_shape=(3, 2, 3), kernel_size=4, **params
        ).fit(X)
    with pytest.raises(ValueError, match="product is n_features"):
        ARCSMDensity(backbone="pixelcnn", image_shape=(2, 2, 3), **params).fit(X)


class _OwnBackbone(torch.nn.Module):
    """A user's context network: a MADE behind a module of their own."""

    def __init__(self, n_features, context_size):
        super().__init__()
        from sklearn_arcsm.nn import MADE

        self.made = MADE(n_features, (16,), context_size)

    def forward(self, x):
        return self.made(x)


class _LeakyBackbone(torch.nn.Module):
    def __init__(self, n_features, context_size):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, n_features * context_size)
        self.context_size = context_size

    def forward(self, x):
        return self.linear(x).view(x.shape[0], x.shape[1], self.context_size)


def test_a_users_own_backbone_is_accepted_and_leaks_are_refused(moons):
    params = {**CHEAP_PARAMS, "random_state": 0}
    est = ARCSMDensity(backbone=_OwnBackbone, **params).fit(moons)
    assert isinstance(est.module_.context_net, _OwnBackbone)
    assert np.all(np.isfinite(est.score_samples(moons[:5])))
    clone(est).fit(moons)  # the class, not an instance, is the parameter
    leaky = ARCSMDensity(backbone=_LeakyBackbone, **params)
    with pytest.raises(ValueError, match="not autoregressive"):
        leaky.fit(moons)
    assert not hasattr(leaky, "module_")


@pytest.mark.parametrize("objective", ["nll", "csm+nll"])
def test_likelihood_objectives_train_a_proper_density(moons, objective):
    est = ARCSMDensity(**{**CHEAP_PARAMS, "objective": objective, "random_state": 0})
    est.fit(moons)
    assert np.all(np.isfinite(est.loss_curve_))
    assert np.all(np.isfinite(est.score_samples(moons)))


# ----------------------------------------------------------------------------
# Proper densities: every configuration integrates to one
# ----------------------------------------------------------------------------
def _mass_1d(est, lo, hi, n=20001):
    grid = np.linspace(lo, hi, n)[:, None]
    return trapezoid(np.exp(est.score_samples(grid)), grid[:, 0])


def _mass_2d(est, lo, hi, n=301):
    gx, gy = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    grid = np.stack(np.meshgrid(gx, gy, indexing="ij"), -1).reshape(-1, 2)
    density = np.exp(est.score_samples(grid)).reshape(n, n)
    return trapezoid(trapezoid(density, gy, axis=1), gx)


def _importance_mass(est, X, n=20000, widen=2.0):
    # E_q[p / q] over a Gaussian proposal wider than the data: 1 for a
    # normalized p (the proposal covers the tails, which are Gaussian too).
    rng = np.random.RandomState(0)
    mean, std = X.mean(0), widen * X.std(0) + 1e-3
    Z = rng.standard_normal((n, X.shape[1]))
    log_q = (-0.5 * Z**2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(1)
    weights = np.exp(est.score_samples(mean + std * Z) - log_q)
    return weights.mean(), weights.std() / np.sqrt(n)


def test_one_feature_density_integrates_to_one():
    X = np.random.RandomState(0).normal(2.0, 3.0, size=(200, 1))
    est = ARCSMDensity(**{**CHEAP_PARAMS, "random_state": 0}).fit(X)
    assert abs(_mass_1d(est, -40.0, 45.0) - 1.0) < 1e-3


def test_constant_column_density_integrates_to_one():
    # The constant column keeps unit scale; its learned conditional is a
    # narrow bump, still normalized (1e-2: the grid resolves it coarsely).
    rng = np.random.RandomState(0)
    X = np.c_[rng.normal(size=200), np.full(200, 5.0)]
    est = ARCSMDensity(**{**CHEAP_PARAMS, "random_state": 0}).fit(X)
    assert abs(_mass_2d(est, [-8.0, -3.0], [8.0, 13.0], n=801) - 1.0) < 1e-2


@pytest.mark.parametrize("objective", ["csm", "csm+nll"])
def test_score_matching_fits_are_normalized_densities(moons, objective):
    est = ARCSMDensity(**{**CHEAP_PARAMS, "objective": objective, "random_state": 0})
    est.fit(moons)
    lo, hi = moons.min(0) - 4.0, moons.max(0) + 4.0
    assert abs(_mass_2d(est, lo, hi) - 1.0) < 5e-3


def test_pixelcnn_density_is_normalized():
    # A 2 x 3 image (non-square): the PixelCNN density over R^6, checked by
    # importance sampling (to a few standard errors).
    rng = np.random.RandomState(0)
    X = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) * 0.5
    params = {**CHEAP_PARAMS, "hidden_layer_sizes": (4, 4), "random_state": 0}
    est = ARCSMDensity(backbone="pixelcnn", image_shape=(2, 3), **params).fit(X)
    mass, error = _importance_mass(est, X)
    assert abs(mass - 1.0) < max(4 * error, 0.02)
    assert error < 0.05


@pytest.mark.parametrize("mixed_precision", [None, "bf16"])
def test_mixed_precision_runs_only_the_context_network_in_bfloat16(
    moons, mixed_precision
):
    # bf16 autocast covers the context network in training mode; the score
    # head gets float32 inputs then, evaluation ignores it, and a fit with
    # it scores in float64 as usual.
    from sklearn_arcsm.nn import ARCSM
    from sklearn_arcsm.objectives import noise_conditional_csm

    bounds = torch.full((3,), 3.0)
    model = ARCSM(3, (16,), 2, (8,), -bounds, bounds, mixed_precision=mixed_precision)
    seen = {"context": set(), "head": set()}
    model.context_net.layers[0].register_forward_hook(
        lambda m, i, o: seen["context"].add(o.dtype)
    )
    model.head.context_layer.register_forward_hook(
        lambda m, i, o: seen["head"].add(i[0].dtype)
    )
    x = torch.randn(8, 3)
    loss = noise_conditional_csm(model.train(), x, torch.tensor([0.5, 0.1])).mean()
    loss.backward()
    assert seen["context"] == ({torch.bfloat16} if mixed_precision else {torch.float32})
    assert seen["head"] == {torch.float32}
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    seen["context"].clear()
    model.eval().conditioner(x)
    assert seen["context"] == {torch.float32}

    est = ARCSMDensity(
        **CHEAP_PARAMS, mixed_precision=mixed_precision, random_state=0
    ).fit(moons)
    assert est.module_.mixed_precision == mixed_precision
    assert np.all(np.isfinite(est.score_samples(moons)))
