"""Public skorch callbacks for the AR-CSM estimators."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from skorch.callbacks import Callback

__all__ = ["EstimatorCheckpoint"]


class EstimatorCheckpoint(Callback):
    """Save the whole estimator, as fitted so far, every ``every`` epochs.

    Pass it in the estimator's ``callbacks``. The file holds a *fitted*
    estimator (weights, optimizer state, random-number streams, history), so
    a long fit can resume from disk after a crash::

        est = ARCSMDensity(max_epochs=100, random_state=0,
                           callbacks=[EstimatorCheckpoint("fit.pkl")])
        est.fit(X)                        # killed after epoch 40
        est = EstimatorCheckpoint.load("fit.pkl")
        est.set_params(warm_start=True, max_epochs=100 - est.n_iter_).fit(X)

    Without early stopping the resumed fit is identical to an uninterrupted
    one (same seed, same data). With early stopping, the patience counter
    restarts at the resume.

    Parameters
    ----------
    path : str or path-like
        File to write; replaced atomically each time.
    every : int, default=1
        Save every this many epochs.
    """

    def __init__(self, path, every: int = 1) -> None:
        self.path = path
        self.every = every
        # Bound by the estimator for the duration of a fit: net -> estimator.
        self.snapshot_fn_ = None

    def on_epoch_end(self, net, **kwargs):
        if self.snapshot_fn_ is None:
            raise RuntimeError(
                "EstimatorCheckpoint only works in the callbacks of an "
                "sklearn_arcsm estimator."
            )
        if len(net.history) % self.every:
            return
        path = Path(self.path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(self.snapshot_fn_(net), f)
        os.replace(tmp, path)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["snapshot_fn_"] = None  # a binding to a live fit never persists
        return state

    @staticmethod
    def load(path):
        """Load an estimator saved by this callback (a fitted estimator)."""
        with open(path, "rb") as f:
            return pickle.load(f)
