"""Early stopping that restores the latest epoch tied with the best."""

import numpy as np
import pytest
import torch
from skorch.callbacks import EarlyStopping
from skorch.history import History

from sklearn_arcsm import ARCSMDensity, CSMScoreEstimator
from sklearn_arcsm._early_stopping import NoiseAwareEarlyStopping
from tests.conftest import CHEAP_PARAMS


class _Net:
    """What the callback reads: a history, a module and a verbosity."""

    def __init__(self):
        self.history = History()
        self.module_ = torch.nn.Linear(1, 1, bias=False)
        self.verbose = 0


def _run(callback, means, *, sd=1.0, n_rows=100):
    """Epochs whose per-row validation losses have these means and sd.

    The module's weight is set to the epoch number, so the restored weight
    says which epoch was restored. Returns (restored epoch, epochs run).
    """
    net = _Net()
    callback.initialize()
    callback.on_train_begin(net)
    rng = np.random.default_rng(0)
    for epoch, mean in enumerate(means, start=1):
        net.history.new_epoch()
        net.history.record("epoch", epoch)
        with torch.no_grad():
            net.module_.weight.fill_(epoch)
        callback.on_epoch_begin(net)
        z = rng.standard_normal(n_rows)
        rows = torch.as_tensor(mean + sd * (z - z.mean()) / z.std(ddof=1))
        for part in rows.split(32):  # validation batches
            callback.on_batch_end(net, training=False, y_pred=part)
        callback.on_batch_end(net, training=True, y_pred=torch.full((5,), 1e9))
        net.history.record("valid_loss", float(rows.mean()))
        try:
            callback.on_epoch_end(net)
        except KeyboardInterrupt:
            break
    callback.on_train_end(net)
    return net.module_.weight.item(), len(net.history)


def _callback(**kwargs):
    options = dict(monitor="valid_loss", patience=4, threshold=0.0, sink=print)
    return NoiseAwareEarlyStopping(**{**options, **kwargs})


def test_the_standard_error_is_that_of_the_best_epochs_mean():
    # 100 rows of standard deviation 2: a standard error of 0.2, from the
    # validation batches only (the training batch's huge values are ignored).
    callback = _callback()
    _run(callback, [1.0, 0.5], sd=2.0)
    assert callback.best_loss_ == pytest.approx(0.5)
    assert callback.best_standard_error_ == pytest.approx(0.2)


def test_restores_the_latest_epoch_within_the_band():
    # Standard error 0.1. Best at epoch 2 (a lucky 0.0); epochs 3-6 lie
    # 0.04, 0.2, 0.09, 0.3 above it: epoch 5 is the latest within one
    # standard error. Stopping is skorch's: 4 epochs without improvement.
    means = [1.0, 0.0, 0.04, 0.2, 0.09, 0.3, -1.0]
    restored, run = _run(_callback(n_standard_errors=1.0), means)
    assert (restored, run) == (5, 6)
    # Half a standard error: epoch 3.
    assert _run(_callback(n_standard_errors=0.5), means)[0] == 3


def test_average_restores_the_mean_of_the_band_from_the_last_best():
    # Band of epoch 2 (standard error 0.1): epochs 2, 3, 5 -> weight 10 / 3.
    means = [1.0, 0.0, 0.04, 0.2, 0.09, 0.3, -1.0]
    callback = _callback(average=True)
    restored, _ = _run(callback, means)
    assert restored == pytest.approx(10 / 3)
    assert (callback.n_averaged_, callback.checkpoint_epoch_) == (3, 5)
    # A new best (epoch 4) restarts the average: epochs 4 and 5 only.
    means = [1.0, 0.0, 0.05, -0.5, -0.45, 0.5, 0.5, 0.5, 0.5]
    assert _run(_callback(average=True), means) == (pytest.approx(4.5), 8)
    # Also when the band's last epoch is the last one trained: 2, 3 and 6.
    means = [1.0, 0.0, 0.05, 0.3, 0.3, 0.02]
    assert _run(_callback(average=True), means) == (pytest.approx(11 / 3), 6)


def test_an_epoch_that_overfits_is_never_restored():
    # Validation loss rising steadily past the band: the best is kept.
    means = [1.0, 0.0, 0.15, 0.3, 0.45, 0.6]
    assert _run(_callback(), means) == (2, 6)


def test_zero_standard_errors_is_skorchs_load_best():
    means = [1.0, 0.0, 0.05, -0.01, 0.02, 0.0, 0.1, 0.2]
    ours = _run(_callback(n_standard_errors=0.0), means)
    skorch_rule = _run(EarlyStopping(patience=4, threshold=0.0, load_best=True), means)
    assert ours == skorch_rule == (4, 8)


def test_the_score_estimator_averages_the_epochs_tied_with_the_best():
    X = np.random.default_rng(0).standard_normal((600, 2))
    params = {**CHEAP_PARAMS, "max_epochs": 40, "n_iter_no_change": 8}
    est = CSMScoreEstimator(**params, random_state=0).fit(X)
    early = dict(est.net_.callbacks_)["early_stopping"]
    assert (early.n_standard_errors, early.average) == (1.0, True)
    best = early.best_epoch_
    kept = early.checkpoint_epoch_
    curve = est.validation_loss_curve_
    # 60 validation rows: a band wide enough that one of the 8 epochs after
    # the best falls in it (skorch's load_best would keep the best).
    assert kept > best
    assert curve[kept - 1] <= curve[best - 1] + early.best_standard_error_
    assert curve[kept - 1] > curve[best - 1]
    assert early.n_averaged_ > 1


def test_the_density_restores_the_average_of_its_tied_epochs(moons):
    params = {**CHEAP_PARAMS, "max_epochs": 30, "n_iter_no_change": 5}
    est = ARCSMDensity(**params, random_state=0).fit(moons)
    early = dict(est.net_.callbacks_)["early_stopping"]
    assert (early.n_standard_errors, early.average) == (1.0, True)
    assert early.n_averaged_ > 1
    # The fitted weights are the average, not the last epoch's.
    state = est.module_.state_dict()
    for name, value in early.best_model_weights_.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0)
