"""Private skorch net that trains an AR-CSM by noise-conditional CSM.

skorch's loop assumes ``criterion(module(X), y)``. CSM has no target and
differentiates with respect to the input, so a few documented hooks are
overridden (as skorch's own ``probabilistic.GPBase`` does for GP marginal
likelihoods); each override says why it exists.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback
from skorch.dataset import Dataset, unpack_data
from torch.utils.data import DataLoader

from sklearn_arcsm._distributed import average_gradients
from sklearn_arcsm.nn.averaging import ExponentialAverage
from sklearn_arcsm.objectives import (
    check_grid_cells,
    noise_conditional_csm,
    sampled_negative_log_likelihood,
)

__all__ = ["AdaptiveLearningRate", "CSMNet", "FiniteLossGuard"]

# Quadrature cells of the training likelihood term (randomly shifted grid).
TRAIN_LIKELIHOOD_CELLS = 64
# Dimensions per row of the training likelihood term: one per 8 features,
# at most 4. The estimate's variance grows with D (it is D times a one-
# dimension term); on the 32-D mixed_ica32 target 4 dimensions per row gave
# KL 3.64 against 3.80 with one, and D <= 8 keeps the single dimension.
TRAIN_LIKELIHOOD_DIMS_MAX = 4
TRAIN_LIKELIHOOD_FEATURES_PER_DIM = 8


def train_likelihood_dims(n_features: int) -> int:
    """Conditionals per row in the training likelihood term."""
    per_dim = TRAIN_LIKELIHOOD_FEATURES_PER_DIM
    return min(TRAIN_LIKELIHOOD_DIMS_MAX, -(-n_features // per_dim))


class FiniteLossGuard(Callback):
    """Stop training at the first non-finite batch loss.

    With early stopping and a best checkpoint, the best weights are restored,
    the optimizer restarts (its moments are non-finite) and training stops
    cleanly (``net.diverged_at_`` records the epoch, so the estimator can
    restart it at a lower rate and warn); otherwise an actionable error is
    raised.
    """

    def on_batch_end(self, net, batch=None, training=None, loss=None, **kwargs):
        if loss is None:
            return
        # The loss skorch's history just recorded (a float it synchronized
        # for anyway): checking the tensor would cost a second device sync
        # per batch.
        recorded = net.history[-1]["batches"][-1].get(
            "train_loss" if training else "valid_loss"
        )
        finite = (
            math.isfinite(recorded)
            if recorded is not None
            else bool(torch.isfinite(loss).all())
        )
        if finite:
            return
        epoch = len(net.history)
        early = dict(net.callbacks_).get("early_stopping")
        best = getattr(early, "best_model_weights_", None)
        if best is None:
            # A restart after an earlier divergence that diverged again
            # before its first epoch ended: the weights it started from.
            best = getattr(net, "restart_weights_", None)
        if best is not None:
            net.module_.load_state_dict(best)
            # The running average has folded in the diverged steps: a later
            # continued fit restarts averaging from the restored weights.
            net.weight_average_ = None
            # Adam's moments are non-finite by now: restart the optimizer, or
            # the warm start that the warning recommends diverges at once.
            net.initialize_optimizer()
            net.diverged_at_ = epoch
            # skorch treats KeyboardInterrupt as "stop training now".
            raise KeyboardInterrupt
        phase = "training" if training else "validation"
        objective = net.objective if training else net.valid_objective or net.objective
        raise FloatingPointError(
            f"the {objective!r} {phase} loss became non-finite at epoch {epoch}: "
            f"training diverged. Lower `lr` (now {net.lr}), or use larger "
            "`noise_levels` (the smallest level sets the sharpest score the "
            "model must fit)."
        )


class AdaptiveLearningRate(Callback):
    """Multiply Adam's learning rate by ``factor`` when ``monitor`` stalls.

    After ``patience`` epochs in a row without an improvement of at least
    ``tol`` on the best value so far, every parameter group's rate is
    multiplied by ``factor`` (never below ``min_lr``) and the count restarts
    (scikit-learn's ``MLPRegressor(learning_rate="adaptive")`` divides by 5
    after 2 such epochs; torch's ``ReduceLROnPlateau`` with an absolute
    threshold). A continued fit (warm start, ``partial_fit``, a resumed
    checkpoint) keeps the rate reached, which lives in the optimizer's
    state, and restarts the count, as early stopping restarts its patience.

    Parameters
    ----------
    monitor : str
        History key, lower is better ("valid_loss" or "train_loss").
    factor : float in (0, 1)
    patience : int
    tol : float
    min_lr : float
    """

    def __init__(self, monitor, factor, patience, tol, min_lr):
        self.monitor = monitor
        self.factor = factor
        self.patience = patience
        self.tol = tol
        self.min_lr = min_lr

    def initialize(self):
        self.best_ = math.inf
        self.stalled_ = 0
        return self

    def on_epoch_end(self, net, **kwargs):
        value = net.history[-1].get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        if value < self.best_ - self.tol:
            self.best_ = value
            self.stalled_ = 0
            return
        self.stalled_ += 1
        if self.stalled_ >= self.patience:
            self.stalled_ = 0
            for group in net.optimizer_.param_groups:
                group["lr"] = max(self.min_lr, group["lr"] * self.factor)


class CSMNet(NeuralNet):
    """NeuralNet whose loss is the noise-conditional CSM objective of its module.

    Parameters
    ----------
    *args, **kwargs
        Passed to :class:`skorch.NeuralNet`.
    noise_levels : torch.Tensor of shape (L,)
        Decreasing noise levels (standardized units).
    objective : {"csm", "nll", "csm+nll"}
        Noise-conditional CSM, the exact quadrature negative log-likelihood
        (a few random dimensions per sample), or their sum.
    valid_objective : {"csm", "nll", "csm+nll"} or None
        Objective on validation data (early stopping); None: ``objective``.
    quadrature : PanelRule or AdaptiveRule
        Quadrature rule of the validation likelihood (the estimator's
        ``quadrature_``).
    train_cells : int
        Simpson cells of the training likelihood term (on a randomly shifted
        grid).
    train_seed, valid_seed : int
        Seeds of the generators for training and validation noise draws.
    accelerator : accelerate.Accelerator or None
        Train data-parallel across the processes of a launch (see
        :mod:`sklearn_arcsm._distributed`): training batches are sharded and
        gradients averaged after each backward pass; validation runs on the
        whole validation set in every process, so that early stopping
        decides the same everywhere. Set to None after training.
    ema_decay : float in [0, 1) or None
        Keep an exponential moving average of the weights, updated after
        every optimizer step (:class:`sklearn_arcsm.nn.ExponentialAverage`,
        kept in ``weight_average_``). Validation, early stopping's best
        checkpoint and the fitted module use the average; training steps use
        the live weights, which a continued fit resumes. None: no averaging
        (the last or best iterate).
    """

    _generator_names = ("train_generator_", "valid_generator_", "shuffle_generator_")

    def __init__(
        self,
        *args,
        noise_levels,
        objective="csm",
        valid_objective=None,
        quadrature=None,
        train_cells=TRAIN_LIKELIHOOD_CELLS,
        train_seed=0,
        valid_seed=1,
        shuffle_seed=2,
        accelerator=None,
        ema_decay=None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.noise_levels = noise_levels
        self.objective = objective
        self.valid_objective = valid_objective
        self.quadrature = quadrature
        self.train_cells = train_cells
        self.train_seed = train_seed
        self.valid_seed = valid_seed
        self.shuffle_seed = shuffle_seed
        self.accelerator = accelerator
        self.ema_decay = ema_decay

    def initialize(self):
        super().initialize()
        device = torch.device(self.device)
        # Each process draws its own training noise for its own shard.
        rank = 0 if self.accelerator is None else self.accelerator.process_index
        self.train_generator_ = torch.Generator(device=device).manual_seed(
            self.train_seed + rank
        )
        self.valid_generator_ = torch.Generator(device=device).manual_seed(
            self.valid_seed
        )
        # DataLoader shuffling draws on the CPU whatever the device.
        self.shuffle_generator_ = torch.Generator().manual_seed(self.shuffle_seed)
        self.weight_average_ = None
        return self

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        # The average carries over between calls: a continued fit (warm
        # start, partial_fit, a resumed checkpoint) puts the live weights
        # back and goes on averaging, so that it trains exactly as one
        # longer fit would. Without averaging, a continued fit trains on
        # from the fitted (averaged) weights. (initialize() resets the
        # average with the module; nets pickled before averaging lack it.)
        average = getattr(self, "weight_average_", None)
        if self.ema_decay is None:
            self.weight_average_ = None
        elif average is None:
            self.weight_average_ = ExponentialAverage(self.module_, self.ema_decay)
        else:
            average.set_decay(self.ema_decay)
            average.to(next(self.module_.parameters()).device)
        return super().fit_loop(X, y, epochs=epochs, **fit_params)

    def train_step(self, batch, **fit_params):
        step = super().train_step(batch, **fit_params)
        if self.weight_average_ is not None:
            # After the optimizer step (and the cross-process gradient
            # average), so every process folds in the same weights.
            self.weight_average_.update(self.module_)
        return step

    def get_iterator(self, dataset, training=False):
        # Shuffle with the net's own seeded generator (skorch's default uses
        # the global RNG); a generator kept as a constructor argument would
        # not pickle.
        # DataLoader draws a base seed from its generator even without
        # shuffling, so validation gets a private one too: fit must not
        # advance the caller's global RNG.
        batch_size = len(dataset) if self.batch_size == -1 else self.batch_size
        generator = self.shuffle_generator_ if training else torch.Generator()
        rows = _in_memory_rows(dataset)
        device_type = torch.device(self.device).type
        if rows is not None and device_type == "cpu" and self.accelerator is None:
            # (A GPU keeps the DataLoader's page-locked, asynchronous copies.)
            return RowBatches(rows, batch_size, shuffle=training, generator=generator)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=training,
            generator=generator,
            # Page-locked batches copy to a GPU asynchronously (see infer).
            pin_memory=device_type == "cuda",
        )
        if training and self.accelerator is not None:
            # Same seed in every process: the same permutation, split into
            # one shard of each global batch per process.
            loader = self.accelerator.prepare_data_loader(loader)
        return loader

    def train_step_single(self, batch, **fit_params):
        # The stock step (infer, get_loss, backward); across processes, the
        # gradients and the loss are then averaged (see _distributed).
        step = super().train_step_single(batch, **fit_params)
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            loss = average_gradients(self.accelerator, self.module_, step["loss"])
            step["loss"] = loss
        return step

    def __getstate__(self):
        # torch.Generator does not pickle: store its device and state instead.
        state = super().__getstate__()
        for name in self._generator_names:
            if name in state:
                generator = state[name]
                state[name] = (str(generator.device), generator.get_state())
        average = state.get("weight_average_")
        if average is not None:
            # On the CPU, so that a model fitted on a GPU loads anywhere
            # (skorch maps the module the same way); fit_loop moves it back.
            state["weight_average_"] = copy.copy(average).to("cpu")
        return state

    def __setstate__(self, state):
        saved = {
            name: state.pop(name) for name in self._generator_names if name in state
        }
        super().__setstate__(state)
        seeds = dict(
            zip(
                self._generator_names,
                (self.train_seed, self.valid_seed, self.shuffle_seed),
                strict=True,
            )
        )
        for name, (device, rng_state) in saved.items():
            if device.startswith("cuda") and not torch.cuda.is_available():
                device = "cpu"  # skorch maps the weights to CPU the same way
            generator = torch.Generator(device=device)
            try:
                generator.set_state(rng_state)
            except RuntimeError:
                # A CUDA state cannot seed a CPU generator: restart this
                # generator's own stream.
                generator.manual_seed(seeds[name])
            setattr(self, name, generator)

    def infer(self, x, **fit_params):
        # Returns per-sample objective values instead of module outputs: the
        # "prediction" of a score model on a batch is its objective value.
        x = x.to(self.device, non_blocking=True)
        generator = (
            self.train_generator_ if self.module_.training else self.valid_generator_
        )
        levels = self.noise_levels.to(device=x.device, dtype=x.dtype)
        objective = self.objective
        if not self.module_.training and self.valid_objective is not None:
            objective = self.valid_objective
        value = 0.0
        if objective in ("csm", "csm+nll"):
            value = noise_conditional_csm(self.module_, x, levels, generator)
        if objective in ("nll", "csm+nll"):
            value = value + self._sampled_nll(x, levels[-1], generator)
        return value

    def _sampled_nll(self, x, sigma, generator):
        """Unbiased per-sample NLL of the clean ``x`` from a few dimensions each.

        The exact 1-D quadrature likelihood of the data themselves: unlike
        a Fisher divergence it sees the relative mass of separated modes
        (MATH.md section 11), and unlike CSM at ``sigma`` it does not fit
        the data smoothed by ``sigma`` (which cost 0.3 nats on a two-ring
        target whose rings are thinner than ``sigma``). ``sigma`` is only
        the score head's noise-level input. Training uses a few random
        dimensions per row (:func:`train_likelihood_dims`: one per 8
        features, at most 4) on a coarse grid (``TRAIN_LIKELIHOOD_CELLS``)
        randomly shifted per row, checked by a second shifted grid of
        another spacing (:func:`~sklearn_arcsm.objectives.check_grid_cells`)
        whose lower log-density counts: no fixed points to exploit, and no
        gain from structure finer than the grids. Validation uses the inference
        rule (``quadrature``, adaptive by default) and ``min(D, 16)``
        distinct dimensions per row: the exact NLL up to 16 dimensions, a
        low-variance estimate beyond.
        """
        training = self.module_.training
        check = None
        if training and isinstance(self.train_cells, int):
            # (A knot rule is exact: nothing to check.)
            check = check_grid_cells(self.train_cells)
        return sampled_negative_log_likelihood(
            self.module_,
            x,
            sigma,
            self.train_cells if training else self.quadrature,
            generator,
            n_dims=train_likelihood_dims(x.shape[1]) if training else 16,
            shifted=training,
            check_rule=check,
        )

    def get_loss(self, y_pred, y_true=None, X=None, training=False):
        # There is no target: the loss is the batch mean of the CSM values.
        return y_pred.mean()

    def validation_step(self, batch, **fit_params):
        # The stock step runs under no_grad, but CSM needs ds/dx; enable
        # grad for the input derivative (only then: the likelihood alone
        # runs faster without a graph) and detach what is returned.
        self._set_training(False)
        Xi, _ = unpack_data(batch)
        objective = self.valid_objective or self.objective
        with torch.set_grad_enabled("csm" in objective):
            y_pred = self.infer(Xi, **fit_params)
        return {"loss": y_pred.mean().detach(), "y_pred": y_pred.detach()}

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        # Re-seed validation noise every epoch, so the validation loss is a
        # deterministic function of the weights and early stopping compares
        # like with like.
        if not training and iterator is not None:
            self.valid_generator_.manual_seed(self.valid_seed)
        # (fit_loop has set weight_average_ before any epoch runs.)
        average = self.weight_average_
        if training and average is not None:
            average.use_live(self.module_)
        result = super().run_single_epoch(
            iterator, training, prefix, step_fn, **fit_params
        )
        if training and average is not None:
            # Validation and the epoch's callbacks (early stopping's
            # checkpoint) see the average.
            average.use_average(self.module_)
        return result


def _in_memory_rows(dataset) -> torch.Tensor | None:
    """The rows of a target-free skorch ``Dataset`` over an array, else None."""
    if type(dataset) is not Dataset or dataset.y is not None:
        return None
    X = dataset.X
    if isinstance(X, np.ndarray) and X.ndim == 2:
        return torch.from_numpy(X)
    if isinstance(X, torch.Tensor) and X.ndim == 2:
        return X
    return None


class RowBatches:
    """Mini-batches of an in-memory table, in a DataLoader's order.

    A DataLoader over a skorch ``Dataset`` fetches each row on its own and
    collates them: about 1.2 ms per batch of 60 rows, 5 to 7% of a training
    step on a small table, for a copy. Here a batch is one indexing of the
    table. The generator is drawn exactly as ``DataLoader(shuffle=True,
    generator=...)`` draws it (a base seed, then the permutation, then one
    more permutation when the sampler runs out), so the batches, and every
    fit, are the same as through the DataLoader. ``y`` is skorch's
    placeholder (one zero per row).

    Parameters
    ----------
    rows : torch.Tensor of shape (n, D)
    batch_size : int
    shuffle : bool
    generator : torch.Generator
        Advanced as a shuffling DataLoader advances it (a non-shuffling
        one draws its base seed only).
    """

    def __init__(self, rows, batch_size, shuffle, generator):
        self.rows = rows
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self):
        return math.ceil(len(self.rows) / self.batch_size)

    def __iter__(self):
        n = len(self.rows)
        # DataLoader's _BaseDataLoaderIter draws the base seed of its workers.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        order = None
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            index = slice(start, stop) if order is None else order[start:stop]
            yield self.rows[index], torch.zeros(stop - start, 1)
        if self.shuffle:
            # RandomSampler's trailing (empty) permutation, drawn when the
            # sampler is exhausted.
            torch.randperm(n, generator=self.generator)
