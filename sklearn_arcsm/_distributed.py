"""Data-parallel training through Hugging Face Accelerate (estimator layer).

With ``distributed="accelerate"``, every process of a launch (``accelerate
launch`` or ``torchrun``) calls ``fit`` on the same data. Accelerate sets up
the process group and the device of each process and shards the training
batches: ``split_batches=True``, so that ``batch_size`` stays the global
batch and a model trains with the same hyperparameters whatever the number
of processes. After each backward pass the gradients are averaged across
processes (one all-reduce of a flat buffer, together with the batch loss),
which is the update torch's ``DistributedDataParallel`` makes.

Why not DDP's module wrapper (which skorch's ``AccelerateMixin`` applies):
DDP synchronizes gradients only for graphs built through its ``forward``,
and the CSM and likelihood objectives call several methods of the module
(the context network, the score head over quadrature nodes), not its
``forward``. Wrapped, the replicas would train unsynchronized without any
error. The explicit average keeps our own training step and objectives as
they are, and leaves the module unwrapped, so that the fitted estimator is
an ordinary single-process one.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = [
    "agree_across_processes",
    "average_gradients",
    "main_process_print",
    "make_accelerator",
]


def make_accelerator(device: str):
    """An ``accelerate.Accelerator`` for training on ``device``'s type.

    The device index, if any, comes from the process's local rank.
    """
    try:
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(
            "distributed='accelerate' needs Hugging Face Accelerate: "
            "pip install 'sklearn_arcsm[accelerate]'."
        ) from exc
    return Accelerator(
        cpu=torch.device(device).type == "cpu",
        # Our step does not autocast: say so rather than inherit a config's.
        mixed_precision="no",
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )


def agree_across_processes(
    accelerator, seeds: dict, X: np.ndarray, batch_size: int, groups=None
):
    """The main process's seeds, after checking that all processes can agree.

    Every process must fit the same rows (the validation split, the
    standardization and the window are computed in each); a mismatch raises
    instead of training replicas on different problems.
    """
    n = accelerator.num_processes
    if n == 1:
        return seeds
    from accelerate.utils import broadcast_object_list, gather_object

    if batch_size % n:
        raise ValueError(
            f"batch_size={batch_size} is the global batch, split across the {n} "
            f"processes: use a multiple of {n}."
        )
    digest = hashlib.sha256(np.ascontiguousarray(X).tobytes())
    if groups is not None:  # the split depends on them too
        digest.update(np.asarray(groups).astype(str).astype(bytes).tobytes())
    fingerprint = digest.hexdigest()
    fingerprints = gather_object([(X.shape, fingerprint)])
    if len(set(fingerprints)) > 1:
        raise ValueError(
            "distributed='accelerate': every process must call fit with the same "
            f"X (and groups); the {n} processes got different data "
            f"{fingerprints}. Load the same data in every process (Accelerate "
            "shards the batches)."
        )
    return broadcast_object_list([seeds])[0]


def average_gradients(accelerator, module: torch.nn.Module, loss: torch.Tensor):
    """Average the gradients of ``module`` and ``loss`` across processes.

    Returns the mean loss over processes, so that every process logs, checks
    and early-stops on the same values.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1)])
    flat = accelerator.reduce(flat, reduction="mean")
    offset = 0
    for p in params:
        size = p.numel()
        p.grad = flat[offset : offset + size].view_as(p).clone()
        offset += size
    return flat[-1]


def main_process_print(*args, **kwargs):
    """``print`` on the main process only (a picklable progress-log sink)."""
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        print(*args, **kwargs)
