"""CUDA end to end (skipped where torch has no CUDA device)."""

import numpy as np
import pytest
import torch

from sklearn_arcsm import ARCSMDensity, CSMScoreEstimator
from tests.conftest import CHEAP_PARAMS

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"
)


@pytest.mark.parametrize("objective", ["csm", "csm+nll"])
def test_density_fits_scores_and_samples_on_cuda(moons, objective):
    params = {**CHEAP_PARAMS, "objective": objective, "random_state": 0}
    est = ARCSMDensity(device="cuda", **params).fit(moons)
    assert est.device_ == "cuda"
    assert next(est.module_.parameters()).is_cuda
    log_p = est.score_samples(moons)
    assert log_p.dtype == np.float64 and np.all(np.isfinite(log_p))
    a = est.sample(50, random_state=0)
    np.testing.assert_array_equal(a, est.sample(50, random_state=0))
    again = ARCSMDensity(device="cuda", **params).fit(moons)
    np.testing.assert_array_equal(again.score_samples(moons), log_p)


def test_auto_device_picks_cuda(moons):
    est = ARCSMDensity(device="auto", **CHEAP_PARAMS).fit(moons)
    assert est.device_ == "cuda"


def test_score_estimator_torch_entry_on_cuda(moons):
    est = CSMScoreEstimator(device="cuda", **CHEAP_PARAMS).fit(moons)
    z = torch.as_tensor(moons[:8], device="cuda", requires_grad=True)
    scores = est.conditional_scores_torch(z)
    assert scores.is_cuda and scores.shape == (8, 2)
    np.testing.assert_allclose(
        scores.detach().cpu().numpy(), est.predict(moons[:8]), rtol=1e-4, atol=1e-4
    )


def _on_cpu(est):
    """A copy of a CUDA-fitted estimator moved to the CPU at the same weights."""
    import copy

    cpu = copy.deepcopy(est)
    cpu.net_.module_.to("cpu")
    cpu.net_.device = "cpu"
    cpu.module_ = cpu.net_.module_
    cpu.device_ = "cpu"
    cpu._build_inference_cache()
    return cpu


@pytest.mark.parametrize("objective", ["nll", "csm+nll"])
def test_cuda_and_cpu_agree_at_the_same_weights(moons, objective):
    params = {**CHEAP_PARAMS, "objective": objective, "random_state": 0}
    est = ARCSMDensity(device="cuda", **params).fit(moons)
    cpu = _on_cpu(est)
    np.testing.assert_allclose(
        est.score_samples(moons), cpu.score_samples(moons), rtol=1e-6, atol=1e-6
    )
    if objective != "nll":
        samples = est.sample(20, random_state=0, method="langevin", n_steps=5)
        assert np.all(np.isfinite(samples))


def test_cuda_partial_fit_warm_start_and_pickle_to_cpu(moons):
    import pickle

    est = CSMScoreEstimator(device="cuda", **CHEAP_PARAMS, random_state=0)
    est.partial_fit(moons)
    est.partial_fit(moons)
    assert est.n_iter_ == 2 and next(est.module_.parameters()).is_cuda
    density = ARCSMDensity(device="cuda", warm_start=True, **CHEAP_PARAMS).fit(moons)
    density.set_params(max_epochs=1).fit(moons)
    assert density.device_ == "cuda"
    loaded = pickle.loads(pickle.dumps(density))
    np.testing.assert_allclose(
        loaded.score_samples(moons[:10]), density.score_samples(moons[:10]), rtol=1e-6
    )
