"""Weight averaging (``ema_decay``): the average's arithmetic and its use in fit."""

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from sklearn_arcsm import ARCSMDensity, CSMScoreEstimator
from sklearn_arcsm.nn.averaging import ExponentialAverage
from tests.conftest import CHEAP_PARAMS
from tests.test_reliability import used_callback


def _expected_average(snapshots, decay):
    """The documented recursion, written out: a_t = d_t a_{t-1} + (1 - d_t) w_t."""
    average = snapshots[0]
    for t, w in enumerate(snapshots[1:], start=1):
        d = min(decay, (1.0 + t) / (10.0 + t))
        average = {k: d * average[k] + (1.0 - d) * w[k] for k in average}
    return average


def test_average_follows_the_warm_up_recursion():
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)
    average = ExponentialAverage(module, decay=0.8)
    snapshots = [{k: v.clone() for k, v in module.state_dict().items()}]
    for _ in range(30):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p))
        snapshots.append({k: v.clone() for k, v in module.state_dict().items()})
        average.update(module)
    expected = _expected_average(snapshots, 0.8)
    live = {k: v.clone() for k, v in module.state_dict().items()}
    average.use_average(module)
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, expected[name])
    average.use_live(module)
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, live[name], rtol=0, atol=0)


def test_update_refuses_the_swapped_in_average_and_decay_is_checked():
    module = torch.nn.Linear(2, 2)
    average = ExponentialAverage(module, decay=0.5)
    average.use_average(module)
    average.use_average(module)  # idempotent: the live weights stay stashed once
    with pytest.raises(RuntimeError, match="live weights"):
        average.update(module)
    with pytest.raises(ValueError, match="decay"):
        ExponentialAverage(module, decay=1.0)


class RecordSteps(Callback):
    """The live weights after every training step, and the starting ones."""

    def on_train_begin(self, net, **kwargs):
        self.steps_ = [self._copy(net)]

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.steps_.append(self._copy(net))

    @staticmethod
    def _copy(net):
        return {k: v.detach().clone() for k, v in net.module_.named_parameters()}


@pytest.mark.parametrize("Estimator", [ARCSMDensity, CSMScoreEstimator])
def test_fitted_weights_are_the_average_of_the_training_iterates(Estimator, moons):
    params = {**CHEAP_PARAMS, "max_epochs": 3, "early_stopping": False}
    est = Estimator(
        **params, ema_decay=0.9, callbacks=[RecordSteps()], random_state=0
    ).fit(moons)
    steps = used_callback(est, RecordSteps).steps_
    assert len(steps) > 12  # several steps per epoch, three epochs
    expected = _expected_average(steps, 0.9)
    for name, value in est.module_.named_parameters():
        torch.testing.assert_close(value.detach(), expected[name])
    # And the average is not the last iterate: the test can tell them apart.
    last = steps[-1]
    assert any(
        not torch.allclose(value.detach(), last[name])
        for name, value in est.module_.named_parameters()
    )


def test_without_averaging_the_last_iterate_is_kept(moons):
    params = {**CHEAP_PARAMS, "max_epochs": 2, "early_stopping": False}
    est = ARCSMDensity(
        **params, ema_decay=None, callbacks=[RecordSteps()], random_state=0
    ).fit(moons)
    last = used_callback(est, RecordSteps).steps_[-1]
    for name, value in est.module_.named_parameters():
        torch.testing.assert_close(value.detach(), last[name], rtol=0, atol=0)


class RecordEpochs(RecordSteps):
    """Also the weights that each epoch's validation and callbacks see."""

    def on_train_begin(self, net, **kwargs):
        super().on_train_begin(net)
        self.epochs_ = []

    def on_epoch_end(self, net, **kwargs):
        self.epochs_.append((len(self.steps_), self._copy(net)))


def test_validation_and_early_stopping_see_the_average(moons):
    # What early stopping checkpoints at the end of an epoch (and validation
    # scored just before) is the average of the steps so far, not the live
    # weights; the fit ends on the best such average.
    est = ARCSMDensity(
        **{**CHEAP_PARAMS, "max_epochs": 6, "n_iter_no_change": 2},
        ema_decay=0.9,
        callbacks=[RecordEpochs()],
        random_state=0,
    ).fit(moons)
    recorder = used_callback(est, RecordEpochs)
    for n_steps, seen in recorder.epochs_:
        expected = _expected_average(recorder.steps_[:n_steps], 0.9)
        for name, value in seen.items():
            torch.testing.assert_close(value, expected[name])
    best = int(np.argmin(est.validation_loss_curve_))
    for name, value in est.module_.named_parameters():
        torch.testing.assert_close(value.detach(), recorder.epochs_[best][1][name])
