"""Run the sklearn_arcsm benchmarks and write their results.

Usage::

    python benchmarks/run.py                  # full run, writes benchmarks/results/
    python benchmarks/run.py --quick --output-dir /tmp/bench   # smoke run, < 60 s
    python benchmarks/run.py --only steps     # one benchmark (density|steps|design)
    python benchmarks/run.py --threads 2      # let torch and BLAS use 2 threads

See ``benchmarks/README.md`` for what each benchmark measures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bench_data import load_benchmark_datasets
from bench_density import DensitySettings, run_density_benchmark
from bench_report import (
    DENSITY_COLUMNS,
    DESIGN_COLUMNS,
    STEP_COLUMNS,
    environment,
    load_average,
    markdown_table,
    write_results,
)
from bench_steps import run_design_benchmark, run_step_benchmark, torch_threads
from threadpoolctl import threadpool_limits

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BENCHMARKS = ("density", "steps", "design")


@dataclass(frozen=True)
class RunConfig:
    """Sizes of one benchmark run (full or quick).

    Parameters
    ----------
    toy_n_train, toy_n_test : int
        Split sizes of each 2-D toy set.
    digits_max_train, digits_max_test : int or None
        Truncation of the digits splits (None: the full 75/25 split).
    density : DensitySettings
        Estimators and search grids of the density benchmark.
    step_dims : tuple of int
        Dimensions of the default-size step timing.
    step_warmup, step_repeats : int
        Untimed and timed rounds of the step timing.
    design_dim : int
        Dimension of the design-point grid.
    design_context_sizes : tuple of int
    design_head_sizes : tuple of tuple of int
    design_warmup, design_repeats : int
    batch_size : int
        Batch rows of every timed step.
    """

    toy_n_train: int = 2000
    toy_n_test: int = 1000
    digits_max_train: int | None = None
    digits_max_test: int | None = None
    density: DensitySettings = field(default_factory=DensitySettings)
    step_dims: tuple = (64, 784)
    step_warmup: int = 3
    step_repeats: int = 10
    design_dim: int = 784
    design_context_sizes: tuple = (4, 8, 16)
    design_head_sizes: tuple = ((32,), (32, 32), (64, 64))
    design_warmup: int = 2
    design_repeats: int = 5
    batch_size: int = 256


FULL = RunConfig()
# Smoke mode: every code path, tiny sizes. Its numbers mean nothing.
QUICK = RunConfig(
    toy_n_train=200,
    toy_n_test=100,
    digits_max_train=200,
    digits_max_test=50,
    density=DensitySettings(
        arcsm_variants=({"max_epochs": 2, "n_quadrature": 16},),
        gmm_components=(1, 2),
        gmm_covariance_types=("diag",),
        kde_bandwidths=tuple(np.logspace(-1, 0.5, 4)),
        kde_cv=2,
    ),
    step_dims=(8, 64),
    step_warmup=1,
    step_repeats=2,
    design_dim=64,
    design_context_sizes=(4, 8),
    design_head_sizes=((32,),),
    design_warmup=1,
    design_repeats=2,
)

NOTES = {
    "density": (
        "Mean log-likelihood of the held-out set in nats per sample, in the "
        "data's own units (higher is better; ± is the standard error of the "
        "mean). ARCSMDensity: default parameters, random_state=0, no tuning. "
        "GaussianMixture: n_components and covariance_type chosen on a 20% "
        "validation split of the training set, then refit. KernelDensity: "
        "Gaussian kernel, bandwidth by 5-fold GridSearchCV. Digits: pixel "
        "values 0..16 plus U[0,1) noise (seed 0), 75/25 split (seed 0). "
        "Times: fit = final fit, selection = the whole search, score = "
        "score_samples on the test set, with torch and BLAS limited to "
        "torch_threads_density threads (see the header)."
    ),
    "steps": (
        "Median wall time of one training step (zero_grad + loss + backward + "
        "Adam.step), batch 256, float32, CPU, torch.set_num_threads(1), steps "
        "timed round-robin after a warm-up. CSM: noise_conditional_csm on an "
        "ARCSM with the estimator's defaults (hidden default_hidden_sizes(D), "
        "context_size=8, head (32, 32), 6 frequencies, window [-5, 5]). plain: "
        "0.5 * module(x, sigma).square().mean() on the same network (no input "
        "derivative). MLE: -log_prob(x).mean() of a GaussianMADE with the same "
        "hidden sizes. context: 0.5 * module.conditioner(x).square().mean(), the "
        "AR-CSM's context network alone (MADE + context-to-bias map), the "
        "share of the CSM step that is not the score head. NLL: the "
        "ARCSMDensity default objective as trained, "
        "sampled_negative_log_likelihood (min(4, ceil(D / 8)) random "
        "conditionals per row, 64-cell shifted grid) on the same AR-CSM. "
        "Targets: CSM / plain <= ~3, CSM / MLE <= 5 at D=784."
    ),
    "design": (
        "CSM step time of alternative design points, each timed round-robin "
        "with the Gaussian-MADE MLE step of the same hidden sizes (same "
        "protocol as above). Package defaults are not changed here."
    ),
}


def _parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke mode: tiny sizes, finishes in well under a minute",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where to write results (default: benchmarks/results for a full "
        "run, a new temporary folder for --quick)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and BLAS threads for the density fits (default 1: "
        "reproducible times on a shared machine; step timings always use 1)",
    )
    parser.add_argument(
        "--only",
        choices=BENCHMARKS,
        action="append",
        help="run only this benchmark (repeatable); default: all",
    )
    return parser.parse_args(argv)


def _output_dir(args: argparse.Namespace) -> Path:
    if args.output_dir is not None:
        return args.output_dir
    if args.quick:
        return Path(tempfile.mkdtemp(prefix="arcsm_bench_quick_"))
    return RESULTS_DIR


def _run_density(config: RunConfig) -> list:
    print("Density quality (held-out log-likelihood)", flush=True)
    datasets = load_benchmark_datasets(
        config.toy_n_train,
        config.toy_n_test,
        config.digits_max_train,
        config.digits_max_test,
    )
    return run_density_benchmark(datasets, config.density, log=_log)


def _run_steps(config: RunConfig) -> list:
    print("Training-step time (1 thread)", flush=True)
    return run_step_benchmark(
        config.step_dims,
        config.batch_size,
        config.step_warmup,
        config.step_repeats,
        log=_log,
    )


def _run_design(config: RunConfig) -> list:
    print(f"Design points at D={config.design_dim} (1 thread)", flush=True)
    return run_design_benchmark(
        config.design_dim,
        config.design_context_sizes,
        config.design_head_sizes,
        config.batch_size,
        config.design_warmup,
        config.design_repeats,
        log=_log,
    )


def _log(line: str) -> None:
    print(line, flush=True)


def _print_tables(results: dict) -> None:
    columns = {
        "density": DENSITY_COLUMNS,
        "steps": STEP_COLUMNS,
        "design": DESIGN_COLUMNS,
    }
    for key in BENCHMARKS:
        if results[key]:
            print(f"\n{key}\n" + markdown_table(results[key], columns[key]))


def main(argv=None) -> int:
    """Run the selected benchmarks, print the tables and write the results.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success.
    """
    args = _parse_args(argv)
    config = QUICK if args.quick else FULL
    selected = set(args.only or BENCHMARKS)
    runners = {"density": _run_density, "steps": _run_steps, "design": _run_design}
    with threadpool_limits(limits=args.threads), torch_threads(args.threads):
        env = environment()
        start = time.perf_counter()
        results = {
            key: runners[key](config) if key in selected else [] for key in BENCHMARKS
        }
    results.update(
        environment=env,
        quick=args.quick,
        wall_time_s=time.perf_counter() - start,
        load_average_end=load_average(),
        notes=NOTES,
    )
    _print_tables(results)
    paths = write_results(_output_dir(args), results)
    print(f"\nwall time {results['wall_time_s']:.0f} s; wrote:")
    for path in paths:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
