"""The training loop's plumbing: in-memory mini-batches and the optimizer."""

import numpy as np
import pytest
import torch
from skorch.dataset import Dataset
from torch.utils.data import DataLoader

from sklearn_arcsm import ARCSMDensity, _skorch
from sklearn_arcsm._skorch import RowBatches
from tests.conftest import CHEAP_PARAMS


@pytest.mark.parametrize("shuffle", [True, False])
def test_row_batches_follow_the_data_loader(shuffle):
    # Same batches, epoch after epoch, and the generator left in the same
    # state: fits through RowBatches are the fits through a DataLoader.
    X = np.random.RandomState(0).randn(103, 3).astype(np.float32)
    g_loader = torch.Generator().manual_seed(2)
    g_rows = torch.Generator().manual_seed(2)
    loader = DataLoader(Dataset(X), batch_size=16, shuffle=shuffle, generator=g_loader)
    rows = RowBatches(torch.from_numpy(X), 16, shuffle, g_rows)
    assert len(rows) == len(loader) == 7
    for _ in range(3):
        expected, got = list(loader), list(rows)
        assert len(got) == len(expected)
        for (xe, ye), (xg, yg) in zip(expected, got, strict=True):
            assert torch.equal(xe, xg)
            assert ye.shape == yg.shape
        assert torch.equal(g_loader.get_state(), g_rows.get_state())


def test_a_fit_through_row_batches_is_the_fit_through_a_data_loader(moons, monkeypatch):
    params = {**CHEAP_PARAMS, "max_epochs": 3, "batch_size": 64, "random_state": 0}
    fast = ARCSMDensity(**params).fit(moons)
    assert isinstance(
        fast.net_.get_iterator(Dataset(moons.astype(np.float32)), training=True),
        RowBatches,
    )
    monkeypatch.setattr(_skorch, "_in_memory_rows", lambda dataset: None)
    slow = ARCSMDensity(**params).fit(moons)
    assert isinstance(
        slow.net_.get_iterator(Dataset(moons.astype(np.float32)), training=True),
        DataLoader,
    )
    np.testing.assert_array_equal(fast.score_samples(moons), slow.score_samples(moons))


def test_adam_is_fused_on_cpu(moons):
    est = ARCSMDensity(**CHEAP_PARAMS, random_state=0).fit(moons)
    assert est.net_.optimizer_.param_groups[0]["fused"] is True
