"""Section 5.1 of "Autoregressive Score Matching", reproduced on a CPU.

Three studies on multivariate Gaussians, comparing composite score matching
(CSM) with exact score matching (SM), sliced score matching (SSM, plain and
variance-reduced) and denoising score matching (DSM):

1. **Step cost vs dimension.** CPU time and peak memory of one training step
   (objective, backward, Adam update) for D in {16, 64, 256, 784, 1024}
   (plus 2048 without SM). Every method trains a Gaussian-conditional MADE
   with 3 hidden layers of width 256 on batches of 64 (its joint score,
   available by autograd, is what SM/SSM/DSM need; CSM uses its conditional
   scores), and CSM also trains the package's AR-CSM (the same MADE as
   context network plus the default conditional score head). A
   maximum-likelihood step of the Gaussian MADE is the reference.
2. **Variance of the objective estimate** at fixed parameters (a Gaussian
   MADE fitted by maximum likelihood), over mini-batches and over the random
   projections / noise alone.
3. **Convergence** on a correlated 256-dimensional Gaussian: a linear
   autoregressive Gaussian model (a full-covariance Gaussian) trained by each
   objective from fresh samples; the exact KL divergence between the truth
   and the fitted Gaussian is recorded against iterations.

Run ``python benchmarks/score_matching_scaling.py`` (about 4 CPU minutes: 8
minutes of wall time on a loaded 2-core machine) or ``--quick`` (about 30 CPU
seconds; smaller dimensions, files prefixed ``scaling_quick_``); ``--replot``
rewrites the report and plots from the saved JSON. Outputs go to
``benchmarks/results/``: ``scaling_report.md`` (every table and the headline
numbers), one CSV per study, a JSON of everything, and PNG plots.

Measurement:

* torch runs on one thread (``torch.set_num_threads(1)``) and times are
  **CPU seconds of this process** (``time.process_time``), medians over steps:
  on a machine shared with other jobs, wall-clock time mostly measures the
  others. Wall times are recorded too.
* Peak memory is the peak of bytes held by torch's CPU allocator during one
  step (objective, backward, Adam update; gradients are set to None just
  before), above the level at the step's start. It is read from
  ``torch.profiler``'s allocation events (``profile_memory=True``), so it is
  exact at the allocator level and independent of malloc's caching, unlike the
  process's resident size. A calibration row checks that a 64 MiB tensor
  reads as 64 MiB. The profiler slows steps down, so memory is measured in a
  separate pass, in a child process that runs while parts 2 and 3 (whose
  results do not depend on timing) run in the parent.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import gc
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sklearn_arcsm.nn import ARCSM, GaussianMADE
from sklearn_arcsm.objectives import (
    composite_score_matching,
    denoising_score_matching,
    exact_score_matching,
    noise_conditional_csm,
    score_from_log_prob,
    sliced_score_matching,
)

RESULTS = Path(__file__).resolve().parent / "results"
HIDDEN = 256  # width of each of the 3 hidden layers
# Exact SM holds one double-backward graph per dimension until the update:
# at D = 1024 a batch of 128 peaks near 13 GB. Batch 64 keeps the step study
# within a shared 23 GB machine (time and memory are linear in the batch).
STEP_BATCH = 64
BATCH = 128  # variance and convergence studies
LR = 1e-3
DSM_SIGMA_STEP = 0.1
NOISE_LEVELS = torch.tensor(np.geomspace(1.0, 0.1, 4), dtype=torch.float32)

FULL = dict(
    dims=[16, 64, 256, 784, 1024, 2048],
    sm_max_dim=1024,
    timed_steps=5,
    variance_dims=[64, 784],
    variance_repeats=30,
    variance_sm_max_dim=64,
    variance_fit_steps=200,
    conv_dim=256,
    conv_iters=2000,
    conv_every=100,
)
QUICK = dict(
    dims=[16, 64, 256],
    sm_max_dim=256,
    timed_steps=3,
    variance_dims=[32],
    variance_repeats=10,
    variance_sm_max_dim=32,
    variance_fit_steps=50,
    conv_dim=32,
    conv_iters=300,
    conv_every=50,
)


# ---------------------------------------------------------------------------
# Part 1: cost of one training step
# ---------------------------------------------------------------------------
STEP_METHODS = [
    "MLE",
    "CSM (AR-CSM)",
    "CSM (Gaussian MADE)",
    "SSM (M=1)",
    "SSM-VR (M=1)",
    f"DSM (sigma={DSM_SIGMA_STEP})",
    "SM (exact)",
]


class StepBench:
    """The models of one dimension and a training step for each method."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.dim = dim
        self.x = torch.randn(STEP_BATCH, dim)
        self.made = GaussianMADE(dim, (HIDDEN,) * 3)
        self.arcsm = ARCSM(
            dim,
            hidden_sizes=(HIDDEN,) * 3,
            context_size=8,
            head_sizes=(32, 32),
            lower=-4.0 * torch.ones(dim),
            upper=4.0 * torch.ones(dim),
        )
        self.optimizers = {
            "made": torch.optim.Adam(self.made.parameters(), LR),
            "arcsm": torch.optim.Adam(self.arcsm.parameters(), LR),
        }
        self.generator = torch.Generator().manual_seed(seed)
        score_fn = score_from_log_prob(self.made.log_prob)
        self.losses: dict[str, tuple[str, Callable[[], torch.Tensor]]] = {
            "MLE": ("made", lambda: -self.made.log_prob(self.x)),
            "CSM (AR-CSM)": (
                "arcsm",
                lambda: noise_conditional_csm(
                    self.arcsm, self.x, NOISE_LEVELS, self.generator
                ),
            ),
            "CSM (Gaussian MADE)": (
                "made",
                lambda: composite_score_matching(
                    made_conditional_scores(self.made, self.x), self.x
                ),
            ),
            "SSM (M=1)": (
                "made",
                lambda: sliced_score_matching(
                    score_fn, self.x, generator=self.generator
                ),
            ),
            "SSM-VR (M=1)": (
                "made",
                lambda: sliced_score_matching(
                    score_fn, self.x, variance_reduction=True, generator=self.generator
                ),
            ),
            f"DSM (sigma={DSM_SIGMA_STEP})": (
                "made",
                lambda: denoising_score_matching(
                    score_fn, self.x, DSM_SIGMA_STEP, generator=self.generator
                ),
            ),
            "SM (exact)": ("made", lambda: exact_score_matching(score_fn, self.x)),
        }

    def n_parameters(self, method: str) -> int:
        model = self.arcsm if self.losses[method][0] == "arcsm" else self.made
        return sum(p.numel() for p in model.parameters())

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def step(self, method: str, zero_grad: bool = True) -> None:
        which, loss_fn = self.losses[method]
        if zero_grad:
            self.zero_grad()
        loss_fn().mean().backward()
        self.optimizers[which].step()

    def warm_up(self) -> None:
        """Create both optimizers' state and touch every code path once."""
        self.step("MLE")
        self.step("CSM (AR-CSM)")


def made_conditional_scores(
    made: GaussianMADE, x: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Conditional scores of a Gaussian MADE as a function of the scalar inputs.

    ``s_d(u) = -(u_d - mean_d(x_<d)) / scale_d(x_<d)**2``: the context comes
    from ``x``, so ``s_d`` depends on ``u`` through ``u_d`` only.
    """
    mean, log_scale = made.conditional_parameters(x)
    precision = torch.exp(-2.0 * log_scale)
    return lambda u: -(u - mean) * precision


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the kernel (glibc).

    After an exact-SM step glibc keeps the freed gigabytes resident; without
    this, later parts run next to them.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def methods_for(dim: int, sm_max_dim: int) -> list[str]:
    return [m for m in STEP_METHODS if m != "SM (exact)" or dim <= sm_max_dim]


def time_steps(dims: list[int], sm_max_dim: int, n_steps: int, log) -> list[dict]:
    rows = []
    for dim in dims:
        bench = StepBench(dim)
        bench.warm_up()
        for method in methods_for(dim, sm_max_dim):
            # Exact SM costs seconds per step at large D: one timed step,
            # after the warm-up of the shared model and optimizer.
            steps = 1 if (method == "SM (exact)" and dim >= 256) else n_steps
            if steps > 1:
                bench.step(method)
            cpu, wall = [], []
            for _ in range(steps):
                c0, w0 = time.process_time(), time.perf_counter()
                bench.step(method)
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - w0)
            rows.append(
                dict(
                    dim=dim,
                    method=method,
                    n_parameters=bench.n_parameters(method),
                    n_steps=steps,
                    cpu_ms=1e3 * statistics.median(cpu),
                    wall_ms=1e3 * statistics.median(wall),
                )
            )
            log(f"  time D={dim:5d} {method:22s} {rows[-1]['cpu_ms']:10.1f} ms")
            release_memory()
    return rows


def allocated_peak_mib(fn: Callable[[], object]) -> float:
    """Peak MiB held by torch's CPU allocator during ``fn``, above the start level.

    Replays the allocation and free events recorded by ``torch.profiler``;
    frees of blocks allocated before ``fn`` (which the profiler cannot size)
    are not credited, so release such blocks before calling.
    """
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    ]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak / 2**20


def memory_worker(config: dict) -> dict:
    """Run in the child process: peak memory of one step per (D, method)."""
    torch.set_num_threads(1)

    def calibration():
        return float(torch.ones(64 * 2**20 // 4).sum())

    out = {"calibration_64mib": allocated_peak_mib(calibration), "rows": []}
    for dim in config["dims"]:
        bench = StepBench(dim)
        bench.warm_up()
        for method in methods_for(dim, config["sm_max_dim"]):
            bench.zero_grad()
            peak = allocated_peak_mib(
                lambda method=method, bench=bench: bench.step(method, zero_grad=False)
            )
            release_memory()
            out["rows"].append(dict(dim=dim, method=method, peak_mib=peak))
            print(f"  memory D={dim:5d} {method:22s} {peak:10.1f} MiB", flush=True)
    return out


def start_memory_worker(config: dict) -> subprocess.Popen:
    payload = json.dumps({"dims": config["dims"], "sm_max_dim": config["sm_max_dim"]})
    return subprocess.Popen(
        [sys.executable, __file__, "--memory-worker", payload],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # the profiler logs every start and stop there
        text=True,
    )


def collect_memory_worker(proc: subprocess.Popen, log) -> dict | None:
    stdout, stderr = proc.communicate()
    lines = stdout.splitlines()
    for line in lines:
        if line.startswith("  memory"):
            log(line)
    if proc.returncode != 0:
        log(f"memory worker failed (exit {proc.returncode}):\n{stderr[-3000:]}")
        return None
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------
# Correlated Gaussians shared by parts 2 and 3
# ---------------------------------------------------------------------------
class CorrelatedGaussian:
    """N(m, C) with a random rotation and eigenvalues log-uniform in [0.2, 5]."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        rotation, _ = torch.linalg.qr(
            torch.randn(dim, dim, generator=g, dtype=torch.float64)
        )
        eigenvalues = torch.exp(
            torch.empty(dim, dtype=torch.float64).uniform_(
                math.log(0.2), math.log(5.0), generator=g
            )
        )
        self.dim = dim
        self.cov = (rotation * eigenvalues) @ rotation.T
        self.mean = 0.5 * torch.randn(dim, generator=g, dtype=torch.float64)
        self.chol = torch.linalg.cholesky(self.cov)
        self.generator = torch.Generator().manual_seed(seed + 1)

    def sample(self, n: int) -> torch.Tensor:
        z = torch.randn(n, self.dim, generator=self.generator, dtype=torch.float64)
        return (self.mean + z @ self.chol.T).float()


def gaussian_kl(mean0, cov0, mean1, precision1, logdet1) -> float:
    """KL(N(mean0, cov0) || N(mean1, precision1^-1)), float64."""
    diff = mean1 - mean0
    dim = len(mean0)
    value = (
        torch.trace(precision1 @ cov0)
        + diff @ precision1 @ diff
        - dim
        + logdet1
        - torch.logdet(cov0)
    )
    return 0.5 * float(value)


# ---------------------------------------------------------------------------
# Part 2: variance of the objective estimate
# ---------------------------------------------------------------------------
def variance_estimators(dim: int, sm_max_dim: int):
    names = [
        "CSM",
        "SSM (M=1)",
        "SSM (M=8)",
        "SSM-VR (M=1)",
        "SSM-VR (M=8)",
        "DSM (sigma=0.1)",
    ]
    if dim <= sm_max_dim:
        names.append("SM (exact)")
    return names


def _variance_estimator_fns(made: GaussianMADE) -> dict[str, Callable]:
    """Objective estimators of a fixed Gaussian MADE: batch -> per-sample values."""
    score_fn = score_from_log_prob(made.log_prob)
    g = torch.Generator().manual_seed(2)
    return {
        "CSM": lambda x: composite_score_matching(made_conditional_scores(made, x), x),
        "SSM (M=1)": lambda x: sliced_score_matching(score_fn, x, 1, generator=g),
        "SSM (M=8)": lambda x: sliced_score_matching(score_fn, x, 8, generator=g),
        "SSM-VR (M=1)": lambda x: sliced_score_matching(
            score_fn, x, 1, variance_reduction=True, generator=g
        ),
        "SSM-VR (M=8)": lambda x: sliced_score_matching(
            score_fn, x, 8, variance_reduction=True, generator=g
        ),
        "DSM (sigma=0.1)": lambda x: denoising_score_matching(
            score_fn, x, 0.1, generator=g
        ),
        "SM (exact)": lambda x: exact_score_matching(score_fn, x),
    }


def study_variance(config: dict, log) -> list[dict]:
    rows = []
    for dim in config["variance_dims"]:
        data = CorrelatedGaussian(dim, seed=1)
        torch.manual_seed(0)
        made = GaussianMADE(dim, (HIDDEN,) * 3)
        optimizer = torch.optim.Adam(made.parameters(), LR)
        for _ in range(config["variance_fit_steps"]):
            optimizer.zero_grad()
            (-made.log_prob(data.sample(BATCH))).mean().backward()
            optimizer.step()
        made.requires_grad_(False)  # fixed parameters from here on
        estimators = _variance_estimator_fns(made)
        fixed_batch = data.sample(BATCH)
        batches = [data.sample(BATCH) for _ in range(config["variance_repeats"])]
        for name in variance_estimators(dim, config["variance_sm_max_dim"]):
            fn = estimators[name]
            c0 = time.process_time()
            total = [fn(x).mean().item() for x in batches]
            given = (
                [fn(fixed_batch).mean().item() for _ in batches]
                if name not in ("CSM", "SM (exact)")
                else [0.0, 0.0]
            )
            cost = (time.process_time() - c0) / (len(batches) + len(given))
            rows.append(
                dict(
                    dim=dim,
                    estimator=name,
                    mean=statistics.fmean(total),
                    variance=statistics.variance(total),
                    variance_given_batch=statistics.variance(given),
                    cpu_ms_per_estimate=1e3 * cost,
                )
            )
            log(
                f"  variance D={dim:4d} {name:16s} var={rows[-1]['variance']:.4g}"
                f" given batch={rows[-1]['variance_given_batch']:.4g}"
            )
    return rows


# ---------------------------------------------------------------------------
# Part 3: convergence on a correlated Gaussian
# ---------------------------------------------------------------------------
class LinearGaussianAR(torch.nn.Module):
    """``x_d = mu_d + sum_{j<d} A_dj (x_j - mu_j) + exp(log_v_d / 2) eps_d``.

    A Gaussian with full covariance ``(I - A)^-1 V (I - A)^-T``, whose
    conditional scores, joint score, and KL divergences are exact.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(dim))
        self.weight = torch.nn.Parameter(torch.zeros(dim, dim))
        self.log_v = torch.nn.Parameter(torch.zeros(dim))
        self.register_buffer("mask", torch.tril(torch.ones(dim, dim), diagonal=-1))

    def coefficients(self) -> torch.Tensor:
        return self.weight * self.mask

    def conditional_scores(self, x: torch.Tensor):
        prediction = self.mu + (x - self.mu) @ self.coefficients().T
        precision = torch.exp(-self.log_v)
        return lambda u: -(u - prediction) * precision

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        w = x - self.mu
        residual = w - w @ self.coefficients().T
        return (
            -0.5 * residual.square() * torch.exp(-self.log_v) - 0.5 * self.log_v
        ).sum(-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)

    @torch.no_grad()
    def kl_pair(self, data: CorrelatedGaussian) -> tuple[float, float]:
        """``(KL(truth || model), KL(model || truth))``."""
        eye = torch.eye(data.dim, dtype=torch.float64)
        b = eye - self.coefficients().double()
        v = torch.exp(self.log_v.double())
        precision = b.T @ (b / v[:, None])
        mu = self.mu.double()
        forward = gaussian_kl(data.mean, data.cov, mu, precision, self.log_v.sum())
        b_inv = torch.linalg.solve_triangular(b, eye, upper=False)
        cov = (b_inv * v) @ b_inv.T
        truth_precision = torch.cholesky_inverse(data.chol)
        reverse = gaussian_kl(
            mu, cov, data.mean, truth_precision, torch.logdet(data.cov)
        )
        return forward, reverse


CONV_DSM_SIGMAS = [0.03, 0.1, 0.3, 1.0]


def convergence_methods() -> list[str]:
    return ["MLE (reference)", "CSM", "SSM (M=1)", "SSM-VR (M=1)"] + [
        f"DSM (sigma={s})" for s in CONV_DSM_SIGMAS
    ]


def _convergence_loss(name: str, model: LinearGaussianAR, g: torch.Generator):
    score_fn = score_from_log_prob(model.log_prob)
    if name.startswith("MLE"):
        return lambda x: -model.log_prob(x)
    if name == "CSM":
        return lambda x: composite_score_matching(model.conditional_scores(x), x)
    if name.startswith("SSM-VR"):
        return lambda x: sliced_score_matching(
            score_fn, x, variance_reduction=True, generator=g
        )
    if name.startswith("SSM"):
        return lambda x: sliced_score_matching(score_fn, x, generator=g)
    sigma = float(name.split("=")[1].rstrip(")"))
    return lambda x: denoising_score_matching(score_fn, x, sigma, generator=g)


def study_convergence(config: dict, log) -> tuple[list[dict], dict]:
    dim, iters, every = config["conv_dim"], config["conv_iters"], config["conv_every"]
    rows = []
    for name in convergence_methods():
        data = CorrelatedGaussian(dim, seed=3)  # same stream for every method
        torch.manual_seed(0)
        model = LinearGaussianAR(dim)
        optimizer = torch.optim.Adam(model.parameters(), 3e-3)
        loss_fn = _convergence_loss(name, model, torch.Generator().manual_seed(4))
        c0 = time.process_time()
        for it in range(iters + 1):
            if it % every == 0:
                forward, reverse = model.kl_pair(data)
                rows.append(
                    dict(method=name, iteration=it, kl=forward, kl_reverse=reverse)
                )
            if it == iters:
                break
            optimizer.zero_grad()
            loss_fn(data.sample(BATCH)).mean().backward()
            optimizer.step()
        log(
            f"  convergence {name:18s} KL {rows[-1]['kl']:.3f}"
            f" ({time.process_time() - c0:.1f} s CPU)"
        )
    data = CorrelatedGaussian(dim, seed=3)
    floors = {}
    for sigma in CONV_DSM_SIGMAS:
        smoothed = data.cov + sigma**2 * torch.eye(dim, dtype=torch.float64)
        floors[f"DSM (sigma={sigma})"] = gaussian_kl(
            data.mean,
            data.cov,
            data.mean,
            torch.linalg.inv(smoothed),
            torch.logdet(smoothed),
        )
    return rows, floors


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------
def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def merge_memory(step_rows: list[dict], memory: dict | None) -> None:
    peaks = {}
    if memory is not None:
        peaks = {(r["dim"], r["method"]): r["peak_mib"] for r in memory["rows"]}
    for row in step_rows:
        row["peak_mib"] = peaks.get((row["dim"], row["method"]))


def headline(step_rows, variance_rows, conv_rows, floors) -> dict:
    cpu = {(r["dim"], r["method"]): r["cpu_ms"] for r in step_rows}
    out = {"sm_over_csm": {}, "sm_over_csm_same_made": {}, "csm_over_mle": {}}
    for dim in sorted({r["dim"] for r in step_rows}):
        sm = cpu.get((dim, "SM (exact)"))
        csm = cpu[(dim, "CSM (AR-CSM)")]
        if sm is not None:
            out["sm_over_csm"][dim] = sm / csm
            out["sm_over_csm_same_made"][dim] = sm / cpu[(dim, "CSM (Gaussian MADE)")]
        out["csm_over_mle"][dim] = csm / cpu[(dim, "MLE")]
    # Growth exponent of step time in D (log-log slope over D >= 256).
    out["time_exponent"] = {}
    for method in STEP_METHODS:
        pts = [(d, c) for (d, m), c in cpu.items() if m == method and d >= 256]
        if len(pts) >= 2:
            logs = np.log(np.array(pts, dtype=float))
            out["time_exponent"][method] = float(
                np.polyfit(logs[:, 0], logs[:, 1], 1)[0]
            )
    final = {}
    for row in conv_rows:
        final[row["method"]] = row["kl"]  # rows are in iteration order
    out["final_kl"] = final
    out["dsm_kl_floor"] = floors
    return out


def report_markdown(config, step_rows, memory, variance_rows, conv_rows, floors, head):
    dims = sorted({r["dim"] for r in step_rows})
    methods = STEP_METHODS
    by = {(r["dim"], r["method"]): r for r in step_rows}
    parts = ["# Score-matching scaling study (paper section 5.1)", ""]
    parts.append(
        f"Gaussian MADE with 3 hidden layers of width {HIDDEN}, batch {STEP_BATCH}, "
        "Adam; one torch thread; CPU milliseconds per training step (median). "
        "`CSM (AR-CSM)` trains the package's AR-CSM (same MADE as context "
        "network, score head (32, 32), 4 noise levels); `CSM (Gaussian MADE)` "
        "applies CSM to the Gaussian MADE's own conditional scores. "
        f"Host: {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}."
    )
    parts.append("")
    parts.append("## Headline")
    parts.append("")
    for dim, ratio in head["sm_over_csm"].items():
        same = head["sm_over_csm_same_made"][dim]
        parts.append(
            f"- D = {dim}: SM / CSM step time = {ratio:.0f} (AR-CSM), "
            f"{same:.0f} (same Gaussian MADE)"
        )
    if head.get("time_exponent"):
        parts.append(
            "- step time grows like D^k for D >= 256, k = "
            + ", ".join(f"{m}: {k:.2f}" for m, k in head["time_exponent"].items())
        )
    parts.append("")
    parts.append("## Step time (CPU ms) vs dimension")
    parts.append("")
    parts.append(
        markdown_table(
            ["method"] + [f"D={d}" for d in dims],
            [[m] + [by.get((d, m), {}).get("cpu_ms") for d in dims] for m in methods],
        )
    )
    parts.append("")
    parts.append("Relative to the likelihood (MLE) step of the same MADE:")
    parts.append("")
    parts.append(
        markdown_table(
            ["method"] + [f"D={d}" for d in dims],
            [
                [m]
                + [
                    by[(d, m)]["cpu_ms"] / by[(d, "MLE")]["cpu_ms"]
                    if (d, m) in by
                    else None
                    for d in dims
                ]
                for m in methods
            ],
        )
    )
    parts.append("")
    parts.append(
        "On one CPU thread nothing runs in parallel. CSM on the Gaussian MADE "
        "costs what its likelihood step costs, at every D. The AR-CSM step is "
        "dominated by its score head's elementwise work on (batch, D, 32) "
        "tensors (forward, the input derivative, and their backward), which "
        "grow linearly with D; the paper's "
        "flat CSM curve was measured on a GPU, where that work is parallel. "
        "Exact SM runs one double backward per dimension, so its cost relative "
        "to the likelihood step grows linearly in D."
    )
    parts.append("")
    parts.append(
        "## Peak memory of one step (MiB held by torch above the step's start)"
    )
    parts.append("")
    parts.append(
        "Exact SM keeps every per-dimension graph until the update, hence "
        "memory linear in D on top of the per-pass size. (The process's "
        "resident size is larger still: with a batch of 128 at D = 1024, one "
        "exact-SM step peaked at 13 GB resident.)"
    )
    parts.append("")
    if memory is None:
        parts.append("Not measured (the memory worker failed; see the log).")
    else:
        parts.append(
            markdown_table(
                ["method"] + [f"D={d}" for d in dims],
                [
                    [m] + [by.get((d, m), {}).get("peak_mib") for d in dims]
                    for m in methods
                ],
            )
        )
        parts.append("")
        parts.append(
            f"Calibration: a 64 MiB tensor reads as "
            f"{memory['calibration_64mib']:.1f} MiB. Parameters (Gaussian MADE): "
            + ", ".join(
                f"D={d}: {by[(d, 'MLE')]['n_parameters'] / 1e6:.2f} M" for d in dims
            )
            + "."
        )
    parts.append("")
    parts.append("## Variance of the objective estimate at fixed parameters")
    parts.append("")
    parts.append(
        f"Mean over a batch of {BATCH}; variance over "
        f"{config['variance_repeats']} fresh batches (with fresh projections or "
        "noise), and over projections or noise alone at one fixed batch. The "
        "Gaussian MADE was fitted by maximum likelihood first. CSM and SM "
        "estimate different objectives (each equals its divergence up to a "
        "data constant); SSM estimates SM's."
    )
    parts.append("")
    parts.append(
        markdown_table(
            ["D", "estimator", "mean", "variance", "given the batch", "CPU ms"],
            [
                [
                    r["dim"],
                    r["estimator"],
                    r["mean"],
                    r["variance"],
                    r["variance_given_batch"],
                    r["cpu_ms_per_estimate"],
                ]
                for r in variance_rows
            ],
        )
    )
    parts.append("")
    parts.append(
        f"## Convergence on a correlated {config['conv_dim']}-D Gaussian "
        "(KL(truth || model))"
    )
    parts.append("")
    iters = sorted({r["iteration"] for r in conv_rows})
    marks = [iters[len(iters) * k // 4] for k in range(1, 4)] + [iters[-1]]
    kl = {(r["method"], r["iteration"]): r["kl"] for r in conv_rows}
    parts.append(
        markdown_table(
            ["method"] + [f"it {i}" for i in marks] + ["bias floor"],
            [
                [m] + [kl[(m, i)] for i in marks] + [floors.get(m, 0.0)]
                for m in convergence_methods()
            ],
        )
    )
    parts.append("")
    parts.append(
        "Linear autoregressive Gaussian model (full covariance), Adam lr 3e-3, "
        f"batch {BATCH} of fresh samples per iteration, identical data stream "
        "for every method; eigenvalues of the true covariance log-uniform in "
        "[0.2, 5] under a random rotation. 'bias floor': KL(truth || truth "
        "smoothed by sigma), where DSM's minimizer sits. The KL that remains "
        "for MLE and CSM is the noise of a constant learning rate."
    )
    parts.append("")
    return "\n".join(parts)


def make_plots(prefix, step_rows, variance_rows, conv_rows, floors) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key, ylabel, name in [
        ("cpu_ms", "CPU ms per training step", "step_time"),
        ("peak_mib", "peak MiB per training step", "step_memory"),
    ]:
        if all(r.get(key) is None for r in step_rows):
            continue
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for method in STEP_METHODS:
            pts = [
                (r["dim"], r[key])
                for r in step_rows
                if r["method"] == method and r.get(key) is not None
            ]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=method)
        ax.set(xscale="log", yscale="log", xlabel="dimension D", ylabel=ylabel)
        dims = sorted({r["dim"] for r in step_rows})
        ax.set_xticks(dims, [str(d) for d in dims], rotation=45)
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = RESULTS / f"{prefix}{name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path.name)

    dims = sorted({r["dim"] for r in variance_rows})
    fig, axes = plt.subplots(1, len(dims), figsize=(5 * len(dims), 4), squeeze=False)
    for ax, dim in zip(axes[0], dims, strict=True):
        rows = [r for r in variance_rows if r["dim"] == dim]
        names = [r["estimator"] for r in rows]
        pos = np.arange(len(rows))
        ax.bar(pos - 0.2, [r["variance"] for r in rows], 0.4, label="total")
        given = [r["variance_given_batch"] for r in rows]
        ax.bar(pos + 0.2, given, 0.4, label="given the batch")
        for p, v in zip(pos, given, strict=True):
            if v == 0:  # deterministic given the batch: nothing to draw on a log axis
                ax.annotate("0", (p + 0.2, 0), xycoords=("data", "axes fraction"))
        positive = [r["variance"] for r in rows] + [v for v in given if v > 0]
        ax.set_xticks(pos, names, rotation=45, ha="right", fontsize=8)
        ax.set(
            yscale="log",
            ylim=(min(positive) / 5, max(positive) * 5),
            title=f"D = {dim}",
            ylabel=f"variance of the batch-{BATCH} estimate",
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / f"{prefix}variance.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path.name)

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method in convergence_methods():
        pts = [(r["iteration"], r["kl"]) for r in conv_rows if r["method"] == method]
        style = "--" if method.startswith("MLE") else "-"
        ax.plot(*zip(*pts, strict=True), style, label=method)
    ax.set(yscale="log", xlabel="iteration", ylabel="KL(truth || model)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / f"{prefix}convergence.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path.name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small, ~1 minute run")
    parser.add_argument(
        "--replot",
        action="store_true",
        help="rewrite the report and plots from the saved summary JSON only",
    )
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.memory_worker:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return 0

    config = QUICK if args.quick else FULL
    prefix = "scaling_quick_" if args.quick else "scaling_"
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.replot:
        return replot(prefix)
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {msg}", flush=True)

    log("part 1: step time (this process)")
    step_rows = time_steps(
        config["dims"], config["sm_max_dim"], config["timed_steps"], log
    )
    # Memory runs in a child process while parts 2 and 3, whose results do
    # not depend on timing, run here.
    log("part 1: step memory (child process, in parallel with parts 2-3)")
    worker = start_memory_worker(config)
    log("part 2: variance of the objective estimates")
    variance_rows = study_variance(config, log)
    log("part 3: convergence")
    conv_rows, floors = study_convergence(config, log)
    memory = collect_memory_worker(worker, log)
    merge_memory(step_rows, memory)

    head = headline(step_rows, variance_rows, conv_rows, floors)
    report = report_markdown(
        config, step_rows, memory, variance_rows, conv_rows, floors, head
    )
    (RESULTS / f"{prefix}report.md").write_text(report)
    write_csv(RESULTS / f"{prefix}step_cost.csv", step_rows)
    write_csv(RESULTS / f"{prefix}variance.csv", variance_rows)
    write_csv(RESULTS / f"{prefix}convergence.csv", conv_rows)
    plots = make_plots(prefix, step_rows, variance_rows, conv_rows, floors)
    summary = dict(
        config=config,
        hidden=HIDDEN,
        step_batch=STEP_BATCH,
        batch=BATCH,
        torch=torch.__version__,
        python=platform.python_version(),
        machine=platform.machine(),
        headline=head,
        step_cost=step_rows,
        memory_calibration_64mib=None
        if memory is None
        else memory["calibration_64mib"],
        variance=variance_rows,
        convergence=conv_rows,
        wall_seconds=time.perf_counter() - start,
    )
    (RESULTS / f"{prefix}summary.json").write_text(json.dumps(summary, indent=1))
    log(f"wrote {prefix}report.md, CSVs, {prefix}summary.json, " + ", ".join(plots))
    print(report)
    return 0


def replot(prefix: str) -> int:
    saved = json.loads((RESULTS / f"{prefix}summary.json").read_text())
    memory = None
    if saved["memory_calibration_64mib"] is not None:
        memory = {"calibration_64mib": saved["memory_calibration_64mib"]}
    floors = saved["headline"]["dsm_kl_floor"]
    head = headline(saved["step_cost"], saved["variance"], saved["convergence"], floors)
    report = report_markdown(
        saved["config"],
        saved["step_cost"],
        memory,
        saved["variance"],
        saved["convergence"],
        floors,
        head,
    )
    (RESULTS / f"{prefix}report.md").write_text(report)
    make_plots(
        prefix, saved["step_cost"], saved["variance"], saved["convergence"], floors
    )
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
