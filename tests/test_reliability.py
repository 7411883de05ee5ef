"""Hostile inputs, diverging and interrupted fits, persistence."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import LeaveOneOut, cross_val_score
from sklearn.utils.validation import check_is_fitted
from skorch.callbacks import Callback

from sklearn_arcsm import ARCSMDensity, quadrature
from sklearn_arcsm._base import (
    DIVERGENCE_LR_FACTOR,
    MAX_DIVERGENCE_RESTARTS,
    PERSISTENCE_FORMAT,
)
from sklearn_arcsm.callbacks import EstimatorCheckpoint
from tests.conftest import CHEAP_PARAMS

P = {**CHEAP_PARAMS, "random_state": 0}


class AtEpoch(Callback):
    """Do something at the end of the n-th epoch this callback sees."""

    def __init__(self, epoch):
        self.epoch = epoch
        self.seen_ = 0

    def on_epoch_end(self, net, **kwargs):
        self.seen_ += 1
        if self.seen_ == self.epoch:
            self.act(net)


class PoisonAt(Callback):
    """Simulate divergence: set a live weight to NaN after the first training
    step of the epoch following the n-th. (Live: the weights the optimizer
    steps. At an epoch's end the module holds the weight average, which the
    next epoch swaps out again; see ``ema_decay``.)"""

    def __init__(self, epoch):
        self.epoch = epoch
        self.seen_ = 0

    def on_epoch_begin(self, net, **kwargs):
        self.seen_ += 1

    def on_batch_end(self, net, training=False, **kwargs):
        if training and self.seen_ == self.epoch + 1:
            with torch.no_grad():
                self.weight(net).fill_(float("nan"))

    def weight(self, net):
        # A parameter of either score head (its per-dimension bias).
        return net.module_.head.dimension_bias


class PoisonContextAt(PoisonAt):
    """Simulate divergence inside the context network (issue 10, bug 1)."""

    def weight(self, net):
        return net.module_.context_net.layers[-1].bias


class PoisonFrom(PoisonAt):
    """Poison every epoch after the n-th, not only the next one."""

    def on_batch_end(self, net, training=False, **kwargs):
        if training and self.seen_ > self.epoch:
            with torch.no_grad():
                self.weight(net).fill_(float("nan"))


class SpoilAfterRestart(Callback):
    """From the second start of training on, set a weight to a bad finite value."""

    def __init__(self):
        self.starts_ = 0

    def on_train_begin(self, net, **kwargs):
        self.starts_ += 1

    def on_batch_end(self, net, training=False, **kwargs):
        if training and self.starts_ > 1:
            with torch.no_grad():
                net.module_.context_net.layers[-1].bias.fill_(5.0)


class _WeightRecorder(Callback):
    """Keeps copies of the module's weights in ``weights_``."""

    def __init__(self):
        self.weights_ = []

    def record(self, net):
        self.weights_.append(
            {k: v.detach().clone() for k, v in net.module_.state_dict().items()}
        )


class RecordTrainBegin(_WeightRecorder):
    """Keep a copy of the module's weights whenever training (re)starts."""

    def on_train_begin(self, net, **kwargs):
        self.record(net)


class RecordWeights(_WeightRecorder):
    """Keep a copy of the module's weights at the end of every epoch."""

    def on_epoch_end(self, net, **kwargs):
        self.record(net)


def used_callback(est, kind):
    """The copy of a callback that the fitted net actually ran."""
    return next(cb for _, cb in est.net_.callbacks_ if isinstance(cb, kind))


class InterruptAt(AtEpoch):
    """Simulate Ctrl-C."""

    def act(self, net):
        raise KeyboardInterrupt


# ----------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------
def test_constant_and_duplicated_columns_and_rows(moons):
    X = np.c_[moons, np.full(len(moons), 7.0)]
    X = np.r_[X, X[:50]]  # duplicated rows
    est = ARCSMDensity(**P).fit(X)
    assert est.scale_[2] == 1.0  # documented: constant columns keep unit scale
    assert np.all(np.isfinite(est.score_samples(X)))
    assert np.all(est.sample(20, random_state=0)[:, 2] - 7.0 < 3.0)


@pytest.mark.parametrize("magnitude", [1e-30, 1e30, 1e200])
def test_extreme_magnitudes_shift_the_log_density_by_the_jacobian(moons, magnitude):
    reference = ARCSMDensity(**P).fit(moons)
    est = ARCSMDensity(**P).fit(moons * magnitude)
    log_p = est.score_samples(moons * magnitude)
    assert np.all(np.isfinite(log_p))
    expected = reference.score_samples(moons) - 2 * np.log(magnitude)
    np.testing.assert_allclose(log_p, expected, rtol=1e-4, atol=1e-3)
    assert np.all(np.isfinite(est.sample(5, random_state=0)))


def test_dataframes_keep_and_check_feature_names(moons):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": moons[:, 0], "b": (moons[:, 1] * 10).astype(int)})
    est = ARCSMDensity(**P).fit(df)
    assert list(est.feature_names_in_) == ["a", "b"]
    assert est.score_samples(df).shape == (len(df),)
    with pytest.raises(ValueError, match="feature names"):
        est.score_samples(df.rename(columns={"a": "z"}))
    with pytest.warns(UserWarning, match="feature names"):
        est.score_samples(df.to_numpy())


def test_sparse_input_is_refused_clearly(moons):
    with pytest.raises(TypeError, match="[Ss]parse"):
        ARCSMDensity(**P).fit(sp.csr_matrix(moons))


def test_fewer_samples_than_batch_size_and_leave_one_out(moons):
    X = moons[:6]
    est = ARCSMDensity(**{**P, "batch_size": 1000}).fit(X)
    assert np.all(np.isfinite(est.score_samples(X)))
    scores = cross_val_score(ARCSMDensity(**P), X, cv=LeaveOneOut())
    assert scores.shape == (6,) and np.all(np.isfinite(scores))


def test_mixed_dtypes_are_converted(moons):
    X = np.empty((len(moons), 2), dtype=object)
    X[:, 0] = moons[:, 0]
    X[:, 1] = np.round(moons[:, 1] * 5).astype(int)
    log_p = ARCSMDensity(**P).fit(X).score_samples(X)
    assert log_p.dtype == np.float64 and np.all(np.isfinite(log_p))


# ----------------------------------------------------------------------------
# Divergence and failure atomicity
# ----------------------------------------------------------------------------
def test_divergence_without_early_stopping_raises_and_leaves_unfitted(moons):
    est = ARCSMDensity(**{**P, "early_stopping": False}).fit(moons)
    check_is_fitted(est)
    est.set_params(callbacks=[PoisonAt(1)])
    with pytest.raises(FloatingPointError, match="lr"):
        est.fit(moons)
    with pytest.raises(NotFittedError):
        est.score_samples(moons)


def test_divergence_restarts_from_the_best_weights_at_a_lower_lr(moons):
    callbacks = [RecordWeights(), RecordTrainBegin(), PoisonAt(4)]
    est = ARCSMDensity(**{**P, "max_epochs": 8, "lr": 1e-3, "callbacks": callbacks})
    with pytest.warns(ConvergenceWarning, match=r"epoch 5 \(lr 0.001\).*went on"):
        est.fit(moons)
    recorder = used_callback(est, RecordWeights)  # fit runs a copy
    starts = used_callback(est, RecordTrainBegin).weights_
    # The restart began from exactly the weights of the best validation
    # epoch among the four that finished before the poison...
    assert len(starts) == 2
    best = recorder.weights_[int(np.argmin(est.validation_loss_curve_[:4]))]
    for name, value in starts[1].items():
        torch.testing.assert_close(value, best[name], rtol=0, atol=0)
    # ...at a lower rate, for the three epochs that were left.
    assert est.net_.lr == pytest.approx(1e-3 * DIVERGENCE_LR_FACTOR)
    assert est.n_iter_ == 7 and len(est.validation_loss_curve_) == 7
    assert np.all(np.isfinite(est.validation_loss_curve_))
    assert all(torch.isfinite(p).all() for p in est.module_.parameters())
    assert np.all(np.isfinite(est.score_samples(moons)))


def test_a_restart_that_never_improves_keeps_the_earlier_best(moons):
    # After the restart every step is spoiled (finite, but far worse): the
    # fit must end on the best weights from before the divergence, not on
    # the restarted phase's best.
    callbacks = [RecordWeights(), PoisonAt(3), SpoilAfterRestart()]
    params = {**P, "max_epochs": 7, "lr": 1e-3, "ema_decay": None}
    est = ARCSMDensity(**{**params, "callbacks": callbacks})
    with pytest.warns(ConvergenceWarning, match="went on"):
        est.fit(moons)
    curve = est.validation_loss_curve_
    assert len(curve) == 6 and min(curve[3:]) > min(curve[:3])
    recorder = used_callback(est, RecordWeights)
    best = recorder.weights_[int(np.argmin(curve[:3]))]
    for name, value in est.module_.state_dict().items():
        torch.testing.assert_close(value, best[name], rtol=0, atol=0)


def test_repeated_divergence_stops_at_the_best_weights(moons):
    # Every epoch from the second on diverges at its first step: each
    # restart fails before an epoch ends, and the fit keeps epoch 1.
    callbacks = [RecordWeights(), PoisonFrom(1)]
    est = ARCSMDensity(**{**P, "max_epochs": 12, "lr": 1e-3, "callbacks": callbacks})
    with pytest.warns(ConvergenceWarning, match="training stopped there"):
        est.fit(moons)
    recorder = used_callback(est, RecordWeights)
    assert est.n_iter_ == 1 and len(recorder.weights_) == 1
    for name, value in est.module_.state_dict().items():
        torch.testing.assert_close(value, recorder.weights_[0][name], rtol=0, atol=0)
    assert est.net_.lr == pytest.approx(
        1e-3 * DIVERGENCE_LR_FACTOR**MAX_DIVERGENCE_RESTARTS
    )
    assert np.all(np.isfinite(est.score_samples(moons)))


@pytest.mark.parametrize("early_stopping", [True, False])
def test_nan_in_the_context_network_under_the_likelihood_objective(
    moons, early_stopping
):
    # A NaN reaching the quadrature used to crash with an index error.
    est = ARCSMDensity(
        **{
            **P,
            "objective": "nll",
            "max_epochs": 5,
            "early_stopping": early_stopping,
            "callbacks": [PoisonContextAt(2)],
        }
    )
    if early_stopping:
        with pytest.warns(ConvergenceWarning, match="diverged"):
            est.fit(moons)
        assert np.all(np.isfinite(est.score_samples(moons)))
    else:
        with pytest.raises(FloatingPointError, match="'nll' training loss.*`lr`"):
            est.fit(moons)
        assert not hasattr(est, "module_")


def test_warm_start_after_a_recovered_divergence_trains_on(moons):
    # The warning says to lower lr and train further: that must work, so
    # the optimizer's non-finite moments may not survive the recovery. (The
    # last epoch diverges: no epochs are left to restart with.)
    est = ARCSMDensity(**{**P, "max_epochs": 4, "callbacks": [PoisonAt(3)]})
    with pytest.warns(ConvergenceWarning, match="stopped there"):
        est.fit(moons)
    best_before = min(est.validation_loss_curve_)
    n_before = est.n_iter_
    est.set_params(warm_start=True, callbacks=None, lr=3e-4, max_epochs=4)
    est.fit(moons)
    new = est.validation_loss_curve_[n_before:]
    assert len(new) == 4 and np.all(np.isfinite(new))
    assert min(new) < best_before


def test_failed_warm_start_keeps_the_previous_model(moons):
    est = ARCSMDensity(**{**P, "early_stopping": False, "warm_start": True})
    est.fit(moons)
    before = est.score_samples(moons[:20])
    est.set_params(callbacks=[PoisonAt(1)])
    with pytest.raises(FloatingPointError):
        est.fit(moons)
    np.testing.assert_array_equal(est.score_samples(moons[:20]), before)


def test_real_divergence_from_a_huge_learning_rate_is_reported(moons):
    # lr=1e8 diverges in the first epoch (checked: it never survives), and
    # without early stopping that must be an actionable error, unfitted.
    est = ARCSMDensity(**{**P, "lr": 1e8, "max_epochs": 20, "early_stopping": False})
    with pytest.raises(FloatingPointError, match="lr"):
        est.fit(moons)
    assert not hasattr(est, "module_")


def test_a_cuda_model_loads_and_scores_on_a_cpu_only_machine(moons):
    # Issue 10, bug 3: made to look fitted on CUDA, then loaded here.
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    est = ARCSMDensity(**P).fit(moons)
    expected = est.score_samples(moons[:10])
    est.device_ = "cuda"
    est.net_.device = "cuda"
    blob = pickle.dumps(est)
    with pytest.warns(UserWarning, match="loaded on the CPU"):
        loaded = pickle.loads(blob)
    assert loaded.device_ == "cpu" and loaded.net_.device == "cpu"
    assert loaded.module_ is loaded.net_.module_
    np.testing.assert_array_equal(loaded.score_samples(moons[:10]), expected)
    assert loaded.sample(3, random_state=0).shape == (3, 2)


def test_warm_start_applies_new_batch_size_and_verbose(moons, capsys):
    est = ARCSMDensity(**{**P, "warm_start": True}).fit(moons)
    est.set_params(batch_size=7, verbose=1, max_epochs=1).fit(moons)
    assert est.net_.batch_size == 7
    assert "valid_loss" in capsys.readouterr().out  # skorch's epoch table


# ----------------------------------------------------------------------------
# Interruption, resumption, persistence
# ----------------------------------------------------------------------------
def test_keyboard_interrupt_leaves_a_fitted_model_that_can_continue(moons):
    est = ARCSMDensity(
        **{**P, "max_epochs": 5, "early_stopping": False, "callbacks": [InterruptAt(2)]}
    )
    est.fit(moons)
    assert est.n_iter_ == 2
    assert np.all(np.isfinite(est.score_samples(moons)))
    est.set_params(warm_start=True, callbacks=None, max_epochs=3).fit(moons)
    assert est.n_iter_ == 5


def test_checkpoint_resume_is_identical_to_an_uninterrupted_fit(moons, tmp_path):
    params = {**P, "max_epochs": 4, "early_stopping": False}
    full = ARCSMDensity(**params).fit(moons)

    path = tmp_path / "fit.pkl"
    cb = EstimatorCheckpoint(path)
    ARCSMDensity(**{**params, "callbacks": [cb, InterruptAt(2)]}).fit(moons)
    resumed = EstimatorCheckpoint.load(path)
    assert resumed.n_iter_ == 2
    resumed.set_params(warm_start=True, callbacks=None, max_epochs=2).fit(moons)
    assert resumed.n_iter_ == 4
    assert resumed.loss_curve_ == full.loss_curve_
    np.testing.assert_array_equal(
        resumed.score_samples(moons[:30]), full.score_samples(moons[:30])
    )


def test_checkpoint_callback_refuses_to_run_outside_an_estimator():
    from skorch import NeuralNet

    cb = EstimatorCheckpoint("unused.pkl")
    with pytest.raises(RuntimeError, match="sklearn_arcsm estimator"):
        cb.on_epoch_end(NeuralNet(torch.nn.Linear, criterion=torch.nn.MSELoss))


def test_joblib_round_trip_is_bit_for_bit(moons, tmp_path):
    joblib = pytest.importorskip("joblib")
    est = ARCSMDensity(**P).fit(moons)
    joblib.dump(est, tmp_path / "m.joblib")
    loaded = joblib.load(tmp_path / "m.joblib")
    np.testing.assert_array_equal(loaded.score_samples(moons), est.score_samples(moons))
    np.testing.assert_array_equal(
        loaded.sample(10, random_state=5), est.sample(10, random_state=5)
    )
    # The loaded model keeps training exactly like the original would.
    a = est.set_params(warm_start=True).fit(moons)
    b = loaded.set_params(warm_start=True).fit(moons)
    assert a.loss_curve_ == b.loss_curve_


def test_models_from_a_newer_format_fail_clearly(moons):
    est = ARCSMDensity(**P).fit(moons)
    state = est.__getstate__()
    assert state["_arcsm_format"] == PERSISTENCE_FORMAT
    state["_arcsm_format"] = PERSISTENCE_FORMAT + 1
    blob = pickle.dumps(est)
    fresh = pickle.loads(blob)
    with pytest.raises(ValueError, match="Upgrade sklearn_arcsm"):
        fresh.__setstate__(state)


def test_format_1_models_load_without_the_affine_layer(moons):
    # Format 1 predates the affine layer: a module pickled then has no
    # "affine" entry and must load as the identity transform, unchanged.
    # (Nor the linear location term, which needs the affine layer.)
    est = ARCSMDensity(**P, linear_location=False).fit(moons)
    module = est.module_
    with torch.no_grad():
        module.affine.weight.zero_()
        module.affine.bias.zero_()
    # Format-1 (and 2) fits are scored with the Simpson rule they had.
    est.quadrature_ = quadrature.simpson(est.n_quadrature)
    expected = est.score_samples(moons[:20])
    del module._modules["affine"]  # what a format-1 module pickles
    old = pickle.loads(pickle.dumps(est))
    old.__setstate__({**old.__getstate__(), "_arcsm_format": 1})
    assert old.module_.affine is None
    np.testing.assert_allclose(old.score_samples(moons[:20]), expected, rtol=1e-12)


# ----------------------------------------------------------------------------
# Parameters that had no test of their own
# ----------------------------------------------------------------------------
def test_validation_fraction_sets_the_held_out_rows(moons):
    for fraction, expected in ((0.1, 40), (0.25, 100)):
        est = ARCSMDensity(**{**P, "max_epochs": 1, "validation_fraction": fraction})
        est.fit(moons)
        assert len(est.net_.train_split.keywords["valid_ds"]) == expected


def test_tol_decides_what_counts_as_an_improvement(moons):
    # With a tolerance larger than any epoch's gain, nothing improves after
    # the first epoch: training stops after 1 + n_iter_no_change epochs.
    params = {**P, "max_epochs": 30, "n_iter_no_change": 3}
    assert ARCSMDensity(**params, tol=1e6).fit(moons).n_iter_ == 4
    assert ARCSMDensity(**params, tol=0.0).fit(moons).n_iter_ > 4


def test_verbose_prints_the_epoch_table_and_a_progress_bar(moons, capsys):
    ARCSMDensity(**{**P, "verbose": 0}).fit(moons)
    assert capsys.readouterr().out == ""
    ARCSMDensity(**{**P, "verbose": 1}).fit(moons)
    out = capsys.readouterr().out
    assert "epoch" in out and "valid_loss" in out
    est = ARCSMDensity(**{**P, "verbose": 2}).fit(moons)
    assert "progress_bar" in dict(est.net_.callbacks_)


def test_checkpoint_every_n_epochs(moons, tmp_path):
    path = tmp_path / "fit.pkl"
    cb = EstimatorCheckpoint(path, every=2)
    params = {**P, "max_epochs": 5, "early_stopping": False}
    ARCSMDensity(**{**params, "callbacks": [cb, InterruptAt(3)]}).fit(moons)
    # Saved after epoch 2, not after epoch 3 (interrupted before the next).
    assert EstimatorCheckpoint.load(path).n_iter_ == 2


def test_device_auto_resolves_to_what_is_available(moons):
    est = ARCSMDensity(**{**P, "device": "auto"}).fit(moons)
    assert est.device_ == ("cuda" if torch.cuda.is_available() else "cpu")


def test_warm_start_applies_new_noise_levels_lr_and_objective(moons):
    est = ARCSMDensity(**{**P, "warm_start": True, "early_stopping": False}).fit(moons)
    est.set_params(noise_levels=[0.5, 0.2], lr=3e-4, objective="csm", max_epochs=1)
    est.fit(moons)
    assert est.objective_ == "csm" and est.net_.objective == "csm"
    np.testing.assert_allclose(est.noise_levels_, [0.5, 0.2])
    np.testing.assert_allclose(est.net_.noise_levels.numpy(), [0.5, 0.2])
    assert all(g["lr"] == 3e-4 for g in est.net_.optimizer_.param_groups)


def test_generators_that_cannot_be_restored_restart_their_own_streams(moons):
    # A CUDA generator state cannot seed a CPU generator: each generator then
    # restarts from its own seed (they all used to get the training seed).
    est = ARCSMDensity(**P).fit(moons)
    net = est.net_
    state = net.__getstate__()
    for name in net._generator_names:
        state[name] = ("cuda:0", torch.zeros(3, dtype=torch.uint8))  # unusable
    fresh = type(net).__new__(type(net))
    fresh.__setstate__(state)
    seeds = (net.train_seed, net.valid_seed, net.shuffle_seed)
    assert len(set(seeds)) == 3
    for name, seed in zip(net._generator_names, seeds, strict=True):
        assert getattr(fresh, name).initial_seed() == seed, name
