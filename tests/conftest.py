"""Shared test configuration: cheap estimator settings and seeded RNGs."""

import os

import numpy as np
import pytest
import torch
from hypothesis import settings

# Hypothesis: derandomized under CI (the same examples every run, so that a
# red CI is reproducible); HYPOTHESIS_PROFILE=fuzz draws fresh examples, ten
# times as many, for deliberate fuzzing (slow: run it by hand).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", derandomize=False)
settings.register_profile("fuzz", derandomize=False)
PROFILE = os.environ.get(
    "HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev"
)
settings.load_profile(PROFILE)
FUZZ_FACTOR = 10 if PROFILE == "fuzz" else 1


def examples(n: int) -> int:
    """Hypothesis examples for a test: ``n``, or ten times more when fuzzing."""
    return n * FUZZ_FACTOR


# Tiny networks and few epochs: correctness, not accuracy, is tested here.
CHEAP_PARAMS = dict(
    max_epochs=2,
    hidden_layer_sizes=(8,),
    context_size=2,
    head_layer_sizes=(8,),
    n_quadrature=4,
    batch_size=32,
)


def saved_before(est, persistence_format, *names):
    """``est`` as a pickle of an older format would load: without ``names``.

    The attributes and parameters in ``names`` did not exist in that format;
    ``__setstate__`` must fill them in as the old fit behaved.
    """
    state = est.__getstate__()
    for name in names:
        state.pop(name)
    state["_arcsm_format"] = persistence_format
    old = type(est).__new__(type(est))
    old.__setstate__(state)
    return old


@pytest.fixture(autouse=True)
def _seed_everything():
    # Tests that rely on randomness pass explicit seeds; this only makes
    # accidental global-RNG use reproducible.
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def moons():
    from sklearn.datasets import make_moons

    X, _ = make_moons(400, noise=0.1, random_state=0)
    return X
