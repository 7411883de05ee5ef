"""The training loop: in-memory mini-batches, the optimizer and its learning rate."""

import numpy as np
import pytest
import torch
from skorch.dataset import Dataset
from torch.utils.data import DataLoader

from sklearn_arcsm import ARCSMDensity, CSMScoreEstimator, _base, _skorch
from sklearn_arcsm._skorch import AdaptiveLearningRate, RowBatches
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


class _History(list):
    """The part of skorch's History the callback reads: ``history[-1]``."""


class _FakeNet:
    def __init__(self, lr):
        self.history = _History()
        self.optimizer_ = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)

    def end_epoch(self, callback, value):
        self.history.append({"valid_loss": value})
        callback.on_epoch_end(self)
        return self.optimizer_.param_groups[0]["lr"]


def test_adaptive_learning_rate_steps_down_after_patience_stalled_epochs():
    callback = AdaptiveLearningRate(
        monitor="valid_loss", factor=0.5, patience=3, tol=0.1, min_lr=0.2
    ).initialize()
    net = _FakeNet(lr=1.0)
    # Improvements by more than tol keep the rate; 0.95 is within tol of 1.0.
    losses = [5.0, 4.0, 1.0, 0.95, 0.99, 1.2, 0.5, 0.5, 0.5, float("nan"), 0.5]
    lrs = [net.end_epoch(callback, value) for value in losses]
    assert lrs == [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25]
    # Never below min_lr.
    for _ in range(6):
        lr = net.end_epoch(callback, 0.5)
    assert lr == 0.2


def test_auto_lr_scales_with_the_square_root_of_the_batch(moons):
    params = {**CHEAP_PARAMS, "max_epochs": 1, "random_state": 0}
    density = ARCSMDensity(**{**params, "batch_size": 64}).fit(moons)
    assert density.net_.lr == pytest.approx(1e-2 * np.sqrt(64 / 256))
    assert "adaptive_lr" in dict(density.net_.callbacks_)
    scores = CSMScoreEstimator(**{**params, "batch_size": 64}).fit(moons)
    assert scores.net_.lr == 1e-3
    assert "adaptive_lr" not in dict(scores.net_.callbacks_)
    given = ARCSMDensity(**params, lr=0.02, learning_rate="constant").fit(moons)
    assert given.net_.lr == 0.02
    assert "adaptive_lr" not in dict(given.net_.callbacks_)


@pytest.mark.parametrize("early_stopping", [True, False])
def test_adaptive_learning_rate_in_a_fit(moons, early_stopping):
    # A huge tol: no epoch after the first counts as an improvement, so the
    # rate steps down once after the patience, on the validation loss or,
    # without early stopping, on the training loss.
    patience = _base.ADAPTIVE_LR_PATIENCE
    params = {
        **CHEAP_PARAMS,
        "max_epochs": patience + 1,
        "tol": 1e9,
        "n_iter_no_change": 50,
        "lr": 0.004,
        "early_stopping": early_stopping,
        "random_state": 0,
    }
    est = ARCSMDensity(**params, learning_rate="adaptive").fit(moons)
    lr = est.net_.optimizer_.param_groups[0]["lr"]
    assert lr == pytest.approx(0.004 * _base.ADAPTIVE_LR_FACTOR)
    constant = ARCSMDensity(**params, learning_rate="constant").fit(moons)
    assert constant.net_.optimizer_.param_groups[0]["lr"] == 0.004
