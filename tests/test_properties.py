"""Property-based tests of the estimator API (hypothesis).

Random shapes, scales and parameter combinations; every example fits a tiny
model for one or two epochs, then checks invariants that must hold for any
fitted model, however badly trained.
"""

import contextlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sklearn_arcsm._inference as _inference
from sklearn_arcsm import ARCSMDensity
from tests.conftest import examples

N_EXAMPLES = examples(25)


@contextlib.contextmanager
def quadrature_budget(budget):
    """Temporarily shrink the per-chunk element budget of score_samples."""
    old = _inference.QUADRATURE_BUDGET
    _inference.QUADRATURE_BUDGET = budget
    try:
        yield
    finally:
        _inference.QUADRATURE_BUDGET = old


@st.composite
def problems(draw):
    n_samples = draw(st.integers(5, 60))
    n_features = draw(st.integers(1, 4))
    log_scale = draw(st.floats(-6, 6))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.RandomState(seed)
    kind = draw(st.sampled_from(["normal", "uniform", "discrete", "heavy"]))
    if kind == "normal":
        X = rng.normal(size=(n_samples, n_features))
    elif kind == "uniform":
        X = rng.uniform(-1, 1, size=(n_samples, n_features))
    elif kind == "discrete":
        X = rng.randint(0, 3, size=(n_samples, n_features)).astype(float)
    else:
        X = rng.standard_cauchy(size=(n_samples, n_features))
    X = X * 10.0**log_scale + rng.normal(size=n_features) * 10.0**log_scale
    n_levels = draw(st.integers(1, 3))
    params = dict(
        hidden_layer_sizes=(draw(st.integers(1, 8)),),
        context_size=draw(st.integers(1, 3)),
        head_layer_sizes=tuple(
            draw(st.lists(st.integers(1, 6), min_size=1, max_size=2))
        ),
        n_frequencies=draw(st.integers(0, 3)),
        score_head=draw(st.sampled_from(["mlp", "spline"])),
        n_knots=draw(st.integers(2, 12)),
        noise_levels=list(np.geomspace(1.0, draw(st.floats(0.02, 0.5)), n_levels))
        if n_levels > 1
        else draw(st.floats(0.02, 1.0)),
        # "auto": the knot rule (spline head) or the adaptive rule (MLP).
        n_quadrature=draw(st.one_of(st.just("auto"), st.integers(4, 24))),
        max_epochs=draw(st.integers(1, 2)),
        batch_size=draw(st.integers(1, 64)),
        early_stopping=draw(st.booleans()),
        random_state=seed,
    )
    return X, params


@settings(
    max_examples=N_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(problem=problems(), perm_seed=st.integers(0, 1000))
def test_fitted_models_keep_their_invariants(problem, perm_seed):
    X, params = problem
    est = ARCSMDensity(**params).fit(X)
    log_p = est.score_samples(X)
    assert log_p.shape == (len(X),)
    assert not np.any(np.isnan(log_p)), "NaN log-density"
    assert np.all(np.isfinite(log_p))
    assert est.score(X) == np.mean(log_p)

    order = np.random.RandomState(perm_seed).permutation(len(X))
    # The score head runs in float32 (the quadrature in float64): a row's
    # result may move by ~1e-9 with the batch it is in, far inside the 1e-7
    # of scikit-learn's batch-invariance checks.
    np.testing.assert_allclose(
        est.score_samples(X[order]), log_p[order], rtol=1e-8, atol=1e-8
    )

    # Far outside the data: finite, and no NaN.
    far = X[:3] + 1e3 * (np.abs(X).max() + 1.0)
    assert np.all(np.isfinite(est.score_samples(far)))

    samples = est.sample(7, random_state=perm_seed)
    assert samples.shape == (7, X.shape[1])
    assert np.all(np.isfinite(samples))


@settings(max_examples=examples(10), deadline=None)
@given(problem=problems(), budget=st.integers(1, 2000))
def test_score_samples_does_not_depend_on_chunking(problem, budget):
    X, params = problem
    est = ARCSMDensity(**params).fit(X)
    whole = est.score_samples(X)
    with quadrature_budget(budget):
        chunked = est.score_samples(X)
    np.testing.assert_allclose(chunked, whole, rtol=1e-8, atol=1e-8)
