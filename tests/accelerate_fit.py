"""One process of a two-process data-parallel fit (launched by test_accelerate).

Usage: ``torchrun --standalone --nproc_per_node 2 accelerate_fit.py OUT_DIR``.
Each process writes ``OUT_DIR/rank{r}.pkl``: its fitted estimator, its
scores of a fixed grid, the rows per training batch it saw, and the error
message of a fit on data that differs between processes.
"""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import torch

from sklearn_arcsm import ARCSMDensity


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    rng = np.random.RandomState(0)
    X = rng.standard_normal((400, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0, 0, 1]])
    params = dict(
        distributed="accelerate",
        hidden_layer_sizes=(16, 16),
        head_layer_sizes=(8, 8),
        max_epochs=3,
        batch_size=64,
    )
    mismatch = None
    try:
        ARCSMDensity(**params, random_state=0).fit(X + rank)
    except ValueError as exc:
        mismatch = str(exc)
    # A different random_state per process: the main process's seeds win.
    est = ARCSMDensity(**params, random_state=rank).fit(X)
    batches = est.net_.history[0]["batches"]
    rows = [b["train_batch_size"] for b in batches if "train_batch_size" in b]
    grid = np.linspace(-2, 2, 15)[:, None] * np.ones(3)
    result = dict(
        estimator=est, scores=est.score_samples(grid), rows=rows, mismatch=mismatch
    )
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
