"""Device check: CUDA against CPU at the same weights, and throughput per device.

Usage::

    python benchmarks/device_check.py          # D = 64 and 784, CPU and CUDA
    python benchmarks/device_check.py --quick --output-dir /tmp/dev  # CI smoke run

For each D it fits ``ARCSMDensity`` on the CPU for a few epochs (so that the
conditionals are not the flat ones of an untrained model, which would
flatter the adaptive quadrature) on a correlated non-Gaussian sample (a
random low-rank factor model through ``tanh``, plus noise), then:

* **agreement**: the same fitted weights, moved to every other device,
  score the same rows; the table gives the largest and the mean absolute
  difference of ``score_samples`` from the CPU's (nats per row). Inverse-CDF
  samples use each device's own random stream, so they are compared in
  distribution: the largest difference of per-feature sample means, in
  standard errors of that difference (``n_sample`` draws up to D = 64, fewer
  above, since each draw runs the context network once per dimension).
* **throughput** on each device: training steps per second (a fresh fit of
  ``epochs`` epochs with the same settings; skorch's duration of the last
  epoch, so set-up is excluded) and ``score_samples`` rows per second.

Without CUDA (and always with ``--quick``, where D is small) it runs on the
CPU alone, moving the weights from CPU to CPU, so that every code path of
the check stays exercised in CI.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from bench_report import (
    environment,
    markdown_table,
    standalone_arguments,
    write_standalone,
)
from threadpoolctl import threadpool_limits

from sklearn_arcsm import ARCSMDensity

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class DeviceConfig:
    dims: tuple = (64, 784)
    n_train: int = 2000
    epochs: int = 3
    score_rows_cpu: int = 200
    score_rows_gpu: int = 2000
    n_sample: int = 500
    batch_size: int = 256


FULL = DeviceConfig()
QUICK = DeviceConfig(
    dims=(4,),
    n_train=200,
    epochs=1,
    score_rows_cpu=50,
    score_rows_gpu=50,
    n_sample=50,
    batch_size=64,
)


def make_data(n_features: int, n_rows: int, seed: int = 0) -> np.ndarray:
    """Rows of ``tanh(F z) + 0.3 e`` with a fixed random ``F`` of rank 8."""
    rank = min(8, n_features)
    loadings = np.random.RandomState(123).standard_normal((n_features, rank))
    rng = np.random.RandomState(seed)
    z = rng.standard_normal((n_rows, rank))
    return np.tanh(z @ loadings.T / math.sqrt(rank)) + 0.3 * rng.standard_normal(
        (n_rows, n_features)
    )


def on_device(est: ARCSMDensity, device: str) -> ARCSMDensity:
    """A copy of a fitted estimator with its weights moved to ``device``."""
    moved = copy.deepcopy(est)
    moved.net_.device = device
    moved.net_.module_.to(device)
    moved.module_ = moved.net_.module_
    moved.device_ = device
    moved._build_inference_cache()
    return moved


def _estimator(config: DeviceConfig, device: str) -> ARCSMDensity:
    return ARCSMDensity(
        max_epochs=config.epochs,
        batch_size=config.batch_size,
        early_stopping=False,
        device=device,
        random_state=0,
    )


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput(config: DeviceConfig, X, X_score, device: str):
    """Training steps and scored rows per second of a fit on ``device``.

    Returns the row and the fitted estimator.
    """
    est = _estimator(config, device).fit(X)
    last = est.net_.history[-1]
    steps = sum(1 for b in last["batches"] if "train_loss" in b)
    est.score_samples(X_score[:2])  # first call builds the inference cache
    _synchronize(device)
    start = time.perf_counter()
    est.score_samples(X_score)
    _synchronize(device)
    score_s = time.perf_counter() - start
    row = dict(
        train_steps_per_s=steps / last["dur"],
        score_rows_per_s=len(X_score) / score_s,
        score_rows=len(X_score),
    )
    return row, est


def agreement(reference: ARCSMDensity, device: str, X_score, n_sample: int) -> dict:
    """``score_samples`` and sample means of the same weights on ``device``."""
    moved = on_device(reference, device)
    diff = np.abs(moved.score_samples(X_score) - reference.score_samples(X_score))
    a = reference.sample(n_sample, random_state=0)
    b = moved.sample(n_sample, random_state=1)
    se = np.sqrt((a.var(axis=0) + b.var(axis=0)) / n_sample)
    z = np.abs(a.mean(axis=0) - b.mean(axis=0)) / np.maximum(se, 1e-12)
    return dict(
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        sample_mean_max_z=float(z.max()),
    )


def run(config: DeviceConfig, log=print) -> tuple[list, list]:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    speed, agree = [], []
    for d in config.dims:
        X = make_data(d, config.n_train, seed=0)
        held_out = make_data(d, max(config.score_rows_cpu, config.score_rows_gpu), 1)
        reference = None  # the CPU fit
        for device in devices:
            rows = config.score_rows_gpu if device != "cpu" else config.score_rows_cpu
            row = dict(n_features=d, device=device)
            timing, est = throughput(config, X, held_out[:rows], device)
            reference = est if device == "cpu" else reference
            row.update(timing)
            speed.append(row)
            log(row)
            # CPU to CPU without CUDA: the path stays exercised.
            target = device if device != "cpu" or len(devices) == 1 else None
            if target is not None:
                row = dict(n_features=d, device=target)
                scored = held_out[: config.score_rows_cpu]
                # Inverse-CDF sampling runs the context network once per
                # dimension: fewer draws at high D keep the check short.
                n_sample = max(50, config.n_sample * 64 // d)
                row.update(agreement(reference, target, scored, n_sample))
                agree.append(row)
                log(row)
    return speed, agree


SPEED_COLUMNS = (
    ("n_features", "D", "{:d}"),
    ("device", "device", ""),
    ("train_steps_per_s", "train steps / s", "{:.1f}"),
    ("score_rows_per_s", "score_samples rows / s", "{:.1f}"),
    ("score_rows", "rows scored", "{:d}"),
)
AGREEMENT_COLUMNS = (
    ("n_features", "D", "{:d}"),
    ("device", "device (vs CPU)", ""),
    ("max_abs_diff", "max abs diff (nats/row)", "{:.2e}"),
    ("mean_abs_diff", "mean abs diff", "{:.2e}"),
    ("sample_mean_max_z", "sample means: max z", "{:.2f}"),
)


def main(argv=None) -> int:
    args, out = standalone_arguments(
        __doc__.splitlines()[0], "arcsm-device-", RESULTS_DIR, argv
    )
    config = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        env = environment()
        cuda = torch.cuda.is_available()
        env["cuda"] = torch.cuda.get_device_name() if cuda else None
        speed, agree = run(config)
    tables = (
        "## Throughput\n\n"
        + markdown_table(speed, SPEED_COLUMNS)
        + "\n\n## Agreement at the same weights\n\n"
        + markdown_table(agree, AGREEMENT_COLUMNS)
    )
    write_standalone(
        out,
        "device_check",
        "Device check",
        f"threads: {args.threads}; CUDA: {env['cuda']}; config: {asdict(config)}",
        tables,
        dict(environment=env, config=asdict(config), speed=speed, agreement=agree),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
