"""Data-parallel training through Accelerate: two CPU processes (gloo)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("accelerate")

SCRIPT = Path(__file__).with_name("accelerate_fit.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("accelerate")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SCRIPT.parents[1]))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(SCRIPT),
        str(out),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = []
    for rank in (0, 1):
        with open(out / f"rank{rank}.pkl", "rb") as f:
            results.append(pickle.load(f))
    return results


def test_processes_end_with_identical_weights(ranks):
    # Each process trains on its own half of every batch: without the
    # gradient average the replicas would drift apart.
    first, second = (r["estimator"].module_.state_dict() for r in ranks)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    np.testing.assert_array_equal(ranks[0]["scores"], ranks[1]["scores"])


def test_batches_are_sharded_and_seeds_agree(ranks):
    # batch_size is the global batch: each process saw half of it.
    for r in ranks:
        assert set(r["rows"][:-1]) == {32}
    # The processes were given different random_state; the main one's won.
    assert ranks[0]["estimator"].loss_curve_ == ranks[1]["estimator"].loss_curve_


def test_processes_with_different_data_refuse_to_train(ranks):
    for r in ranks:
        assert r["mismatch"] is not None and "same X" in r["mismatch"]


def test_the_fitted_estimator_is_single_process_and_reloads(ranks):
    est = ranks[0]["estimator"]
    assert est.net_.accelerator is None
    assert est.device_ == "cpu"
    assert isinstance(est.module_, torch.nn.Module)
    assert type(est.module_).__name__ == "ARCSM"
    grid = np.linspace(-2, 2, 15)[:, None] * np.ones(3)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.score_samples(grid), ranks[0]["scores"])
    assert np.all(np.isfinite(ranks[0]["scores"]))
