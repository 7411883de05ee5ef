"""Wall time of one training step: CSM on an AR-CSM against its MLE counterpart.

Three steps are timed on the same batch (``batch_size x D``, float32, CPU),
each one ``zero_grad`` + loss + ``backward`` + ``Adam.step``:

* ``csm``: ``noise_conditional_csm(arcsm, x, levels, generator).mean()``, the
  estimator's training objective (it differentiates the scores with respect
  to the scalar inputs, so its backward pass is a double backward);
* ``plain``: ``0.5 * arcsm(x, sigma).square().mean()``, one ordinary forward
  and backward pass of the same network, without the input derivative;
* ``mle``: ``-gaussian_made.log_prob(x).mean()``, a Gaussian-conditional MADE
  with the same hidden sizes trained by maximum likelihood;
* ``context``: ``0.5 * arcsm.conditioner(x).square().mean()``, the AR-CSM's
  context network alone (MADE plus the context-to-bias map), which splits the
  CSM step into its context-network and score-head shares;
* ``nll``: ``sampled_negative_log_likelihood(arcsm, x, sigma, 64).mean()``,
  the ``ARCSMDensity`` default objective as trained (a few random
  conditionals per row, one per 8 features and at most 4, by quadrature on a
  randomly shifted 64-cell grid).

Steps are timed round-robin (one of each per round) after a warm-up, and
the median per step is reported, so a change in machine load during the run
affects all of them alike. Timing runs single-threaded
(``torch.set_num_threads(1)``) for stable ratios.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence

import torch

from sklearn_arcsm._base import default_hidden_sizes, default_noise_levels
from sklearn_arcsm._skorch import TRAIN_LIKELIHOOD_CELLS, train_likelihood_dims
from sklearn_arcsm.nn import ARCSM, GaussianMADE
from sklearn_arcsm.objectives import (
    noise_conditional_csm,
    sampled_negative_log_likelihood,
)

__all__ = [
    "build_arcsm",
    "build_gaussian_made",
    "count_parameters",
    "run_design_benchmark",
    "run_step_benchmark",
    "single_thread",
    "time_round_robin",
    "torch_threads",
]

# Settings the estimator uses by default (sklearn_arcsm._base / ARCSMDensity).
DEFAULT_CONTEXT_SIZE = 8
DEFAULT_HEAD_SIZES = (32, 32)
DEFAULT_N_FREQUENCIES = 6
WINDOW = (-5.0, 5.0)


@contextlib.contextmanager
def torch_threads(n_threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n_threads)``, then restore."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def single_thread():
    """Run the block with ``torch.set_num_threads(1)``, then restore."""
    return torch_threads(1)


def count_parameters(module: torch.nn.Module) -> int:
    """Number of trainable scalars in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def build_arcsm(
    n_features: int,
    context_size: int = DEFAULT_CONTEXT_SIZE,
    head_sizes: Sequence[int] = DEFAULT_HEAD_SIZES,
    seed: int = 0,
) -> ARCSM:
    """An AR-CSM with the estimator's default hidden sizes for ``n_features``.

    Parameters
    ----------
    n_features : int
        Dimension ``D``.
    context_size : int, default=8
        Context width per dimension.
    head_sizes : sequence of int, default=(32, 32)
        Hidden widths of the score head.
    seed : int, default=0
        Seed of the weight initialization (the global RNG is restored).

    Returns
    -------
    module : ARCSM
        float32, with the window ``[-5, 5]`` in every dimension.
    """
    lower = torch.full((n_features,), WINDOW[0])
    upper = torch.full((n_features,), WINDOW[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ARCSM(
            n_features,
            default_hidden_sizes(n_features),
            context_size,
            tuple(head_sizes),
            lower,
            upper,
            n_frequencies=DEFAULT_N_FREQUENCIES,
        )


def build_gaussian_made(n_features: int, seed: int = 0) -> GaussianMADE:
    """A Gaussian-conditional MADE with the estimator's default hidden sizes."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GaussianMADE(n_features, default_hidden_sizes(n_features))


def _adam_step(
    module: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]
) -> Callable[[], None]:
    """A closure running ``zero_grad``, ``loss_fn().backward()`` and ``Adam.step``."""
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    return step


def csm_step(
    module: ARCSM, x: torch.Tensor, levels: torch.Tensor, generator: torch.Generator
) -> Callable[[], None]:
    """Training step on the noise-conditional CSM objective."""
    return _adam_step(
        module, lambda: noise_conditional_csm(module, x, levels, generator).mean()
    )


def plain_step(module: ARCSM, x: torch.Tensor, sigma: torch.Tensor):
    """Ordinary forward + backward of the AR-CSM: no derivative in the input."""
    return _adam_step(module, lambda: 0.5 * module(x, sigma).square().mean())


def context_step(module: ARCSM, x: torch.Tensor) -> Callable[[], None]:
    """Forward + backward of the context network and context-to-bias map only."""
    return _adam_step(module, lambda: 0.5 * module.conditioner(x).square().mean())


def nll_step(
    module: ARCSM, x: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator
) -> Callable[[], None]:
    """Training step on the likelihood objective, as ``ARCSMDensity`` trains it."""
    return _adam_step(
        module,
        lambda: sampled_negative_log_likelihood(
            module,
            x,
            sigma,
            TRAIN_LIKELIHOOD_CELLS,
            generator,
            n_dims=train_likelihood_dims(x.shape[1]),
        ).mean(),
    )


def mle_step(module: GaussianMADE, x: torch.Tensor) -> Callable[[], None]:
    """Maximum-likelihood training step of a Gaussian MADE."""
    return _adam_step(module, lambda: -module.log_prob(x).mean())


def time_round_robin(steps: dict, n_warmup: int, n_repeats: int) -> dict[str, float]:
    """Median seconds per call of each step, timed in interleaved rounds.

    Parameters
    ----------
    steps : dict of str to callable
        Zero-argument callables.
    n_warmup : int
        Untimed rounds first (allocator, autograd and Adam state warm-up).
    n_repeats : int
        Timed rounds; each round calls every step once, in order.

    Returns
    -------
    medians : dict of str to float
    """
    for _ in range(n_warmup):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for _ in range(n_repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _batch(n_features: int, batch_size: int, seed: int) -> torch.Tensor:
    """A standard-normal float32 batch (the estimator trains on standardized data)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, n_features, generator=generator)


def _levels() -> torch.Tensor:
    return torch.as_tensor(default_noise_levels(), dtype=torch.float32)


def measure_default_steps(
    n_features: int, batch_size: int, n_warmup: int, n_repeats: int, seed: int = 0
) -> dict:
    """Time the csm, plain and mle steps at the default sizes for one ``D``.

    Parameters
    ----------
    n_features : int
        Dimension ``D``.
    batch_size, n_warmup, n_repeats : int
        Batch rows, untimed rounds, timed rounds.
    seed : int, default=0
        Seeds weights, the batch and the CSM noise draws.

    Returns
    -------
    row : dict
        Times in milliseconds, parameter counts and the two ratios.
    """
    x = _batch(n_features, batch_size, seed)
    levels = _levels()
    arcsm = build_arcsm(n_features, seed=seed)
    made = build_gaussian_made(n_features, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    medians = time_round_robin(
        {
            "csm": csm_step(arcsm, x, levels, generator),
            "plain": plain_step(arcsm, x, levels[-1]),
            "mle": mle_step(made, x),
            "context": context_step(arcsm, x),
            "nll": nll_step(arcsm, x, levels[-1], generator),
        },
        n_warmup,
        n_repeats,
    )
    return {
        "n_features": n_features,
        "hidden_sizes": str(default_hidden_sizes(n_features)),
        "arcsm_parameters": count_parameters(arcsm),
        "context_net_parameters": count_parameters(arcsm.context_net),
        "head_parameters": count_parameters(arcsm.head),
        "gaussian_made_parameters": count_parameters(made),
        "csm_step_ms": 1e3 * medians["csm"],
        "plain_step_ms": 1e3 * medians["plain"],
        "mle_step_ms": 1e3 * medians["mle"],
        "context_step_ms": 1e3 * medians["context"],
        "csm_over_plain": medians["csm"] / medians["plain"],
        "csm_over_mle": medians["csm"] / medians["mle"],
        "context_over_mle": medians["context"] / medians["mle"],
        "nll_step_ms": 1e3 * medians["nll"],
        "nll_over_mle": medians["nll"] / medians["mle"],
    }


def run_step_benchmark(
    dims: Sequence[int],
    batch_size: int = 256,
    n_warmup: int = 3,
    n_repeats: int = 10,
    log=print,
) -> list:
    """Time the default-size steps at each ``D`` in ``dims``, single-threaded.

    Parameters
    ----------
    dims : sequence of int
        Dimensions to measure.
    batch_size : int, default=256
    n_warmup, n_repeats : int, default=3, 10
        Untimed and timed rounds.
    log : callable, default=print
        Receives one progress line per dimension.

    Returns
    -------
    rows : list of dict
    """
    rows = []
    with single_thread():
        for n_features in dims:
            row = measure_default_steps(n_features, batch_size, n_warmup, n_repeats)
            log(
                f"  D={n_features:4d}  csm {row['csm_step_ms']:8.1f} ms  "
                f"plain {row['plain_step_ms']:8.1f} ms  "
                f"mle {row['mle_step_ms']:8.1f} ms  "
                f"csm/plain {row['csm_over_plain']:.2f}  "
                f"csm/mle {row['csm_over_mle']:.2f}  "
                f"nll/mle {row['nll_over_mle']:.2f}"
            )
            rows.append(row)
    return rows


def measure_design_point(
    n_features: int,
    context_size: int,
    head_sizes: Sequence[int],
    batch_size: int,
    n_warmup: int,
    n_repeats: int,
    seed: int = 0,
) -> dict:
    """Time the CSM step of one design point, interleaved with the MLE step.

    Parameters
    ----------
    n_features : int
        Dimension ``D``.
    context_size : int
        Context width per dimension.
    head_sizes : sequence of int
        Hidden widths of the score head.
    batch_size, n_warmup, n_repeats : int
        Batch rows, untimed rounds, timed rounds.
    seed : int, default=0

    Returns
    -------
    row : dict
    """
    x = _batch(n_features, batch_size, seed)
    arcsm = build_arcsm(n_features, context_size, head_sizes, seed=seed)
    made = build_gaussian_made(n_features, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    medians = time_round_robin(
        {
            "csm": csm_step(arcsm, x, _levels(), generator),
            "mle": mle_step(made, x),
        },
        n_warmup,
        n_repeats,
    )
    return {
        "n_features": n_features,
        "context_size": context_size,
        "head_layer_sizes": str(tuple(head_sizes)),
        "is_default": (
            context_size == DEFAULT_CONTEXT_SIZE
            and tuple(head_sizes) == DEFAULT_HEAD_SIZES
        ),
        "arcsm_parameters": count_parameters(arcsm),
        "csm_step_ms": 1e3 * medians["csm"],
        "mle_step_ms": 1e3 * medians["mle"],
        "csm_over_mle": medians["csm"] / medians["mle"],
    }


def run_design_benchmark(
    n_features: int,
    context_sizes: Sequence[int],
    head_sizes_grid: Sequence[Sequence[int]],
    batch_size: int = 256,
    n_warmup: int = 2,
    n_repeats: int = 5,
    log=print,
) -> list:
    """Time the CSM step over a grid of context widths and head sizes.

    Parameters
    ----------
    n_features : int
        Dimension ``D``.
    context_sizes : sequence of int
    head_sizes_grid : sequence of sequence of int
    batch_size : int, default=256
    n_warmup, n_repeats : int, default=2, 5
    log : callable, default=print

    Returns
    -------
    rows : list of dict
        One row per (context size, head sizes).
    """
    rows = []
    with single_thread():
        for context_size in context_sizes:
            for head_sizes in head_sizes_grid:
                row = measure_design_point(
                    n_features,
                    context_size,
                    head_sizes,
                    batch_size,
                    n_warmup,
                    n_repeats,
                )
                log(
                    f"  context={context_size:2d} head={row['head_layer_sizes']:<9s}"
                    f" params {row['arcsm_parameters']:>9,d}  "
                    f"csm {row['csm_step_ms']:8.1f} ms  "
                    f"csm/mle {row['csm_over_mle']:.2f}"
                )
                rows.append(row)
    return rows
