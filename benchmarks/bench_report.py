"""Formatting and writing of benchmark results (markdown, CSV, JSON)."""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sklearn
import skorch
import torch

import sklearn_arcsm

__all__ = [
    "DENSITY_COLUMNS",
    "DESIGN_COLUMNS",
    "STEP_COLUMNS",
    "environment",
    "load_average",
    "markdown_table",
    "standalone_arguments",
    "write_csv",
    "write_standalone",
    "write_results",
]

# (key, header, format) per column; format is a str.format spec or "" for str().
DENSITY_COLUMNS = (
    ("dataset", "dataset", ""),
    ("n_features", "D", "{:d}"),
    ("n_train", "n_train", "{:d}"),
    ("n_test", "n_test", "{:d}"),
    ("method", "method", ""),
    ("test_log_likelihood", "test LL (nats)", "{:.3f}"),
    ("test_log_likelihood_sem", "± s.e.", "{:.3f}"),
    ("fit_time_s", "fit (s)", "{:.2f}"),
    ("select_time_s", "selection (s)", "{:.2f}"),
    ("score_time_s", "score (s)", "{:.2f}"),
    ("selected", "setting", ""),
)
STEP_COLUMNS = (
    ("n_features", "D", "{:d}"),
    ("hidden_sizes", "MADE hidden", ""),
    ("arcsm_parameters", "AR-CSM params", "{:,d}"),
    ("gaussian_made_parameters", "Gaussian MADE params", "{:,d}"),
    ("csm_step_ms", "CSM step (ms)", "{:.1f}"),
    ("plain_step_ms", "plain fwd+bwd (ms)", "{:.1f}"),
    ("mle_step_ms", "MLE step (ms)", "{:.1f}"),
    ("context_step_ms", "context net (ms)", "{:.1f}"),
    ("csm_over_plain", "CSM / plain", "{:.2f}"),
    ("csm_over_mle", "CSM / MLE", "{:.2f}"),
    ("context_over_mle", "context / MLE", "{:.2f}"),
    ("nll_step_ms", "NLL step (ms)", "{:.1f}"),
    ("nll_over_mle", "NLL / MLE", "{:.2f}"),
)
DESIGN_COLUMNS = (
    ("context_size", "context_size", "{:d}"),
    ("head_layer_sizes", "head_layer_sizes", ""),
    ("is_default", "default", ""),
    ("arcsm_parameters", "AR-CSM params", "{:,d}"),
    ("csm_step_ms", "CSM step (ms)", "{:.1f}"),
    ("mle_step_ms", "MLE step (ms)", "{:.1f}"),
    ("csm_over_mle", "CSM / MLE", "{:.2f}"),
)


def _cell(value, spec: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    return spec.format(value) if spec else str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple]) -> str:
    """Render ``rows`` as a GitHub-flavoured markdown table.

    Parameters
    ----------
    rows : sequence of dict
    columns : sequence of (key, header, format) tuples

    Returns
    -------
    table : str
        Without a trailing newline.
    """
    numeric = [spec != "" for _, _, spec in columns]
    lines = [
        "| " + " | ".join(header for _, header, _ in columns) + " |",
        "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
    ]
    for row in rows:
        cells = (_cell(row[key], spec) for key, _, spec in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """Write ``rows`` (dicts with the same keys) as CSV with full precision."""
    if not rows:
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _git(*args: str) -> str | None:
    """Output of ``git args`` in this checkout (None outside git)."""
    try:
        out = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def _git_commit() -> str:
    """Commit of the checkout, with "+dirty" if the package has local changes."""
    commit = _git("rev-parse", "--short", "HEAD")
    if commit is None:
        return "unknown"
    dirty = _git("status", "--porcelain", "--", ":/sklearn_arcsm")
    return commit + ("+dirty" if dirty else "")


def environment() -> dict:
    """Versions, machine and time of the run, for the results header."""
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M"
        ),
        "git_commit": _git_commit(),
        "sklearn_arcsm": sklearn_arcsm.__version__,
        "package_sources_sha1": package_fingerprint(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "skorch": skorch.__version__,
        "torch": torch.__version__,
        "machine": f"{platform.system()} {platform.machine()}",
        "cpu_count": os.cpu_count(),
        "torch_threads_density": torch.get_num_threads(),
        "load_average_1min_start": load_average(),
    }


def package_fingerprint() -> str:
    """SHA-1 (12 hex digits) of the package's Python sources as imported.

    With ``git_commit`` it pins what was measured even when the package had
    uncommitted changes (``+dirty``).
    """
    root = Path(sklearn_arcsm.__file__).parent
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def load_average() -> float | None:
    """One-minute load average of the machine (None where the OS has none).

    Timings are only comparable between runs on similarly loaded machines.
    """
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _markdown_document(results: dict) -> str:
    """The results page: environment, then one section per benchmark."""
    env = results["environment"]
    lines = ["# Benchmark results", ""]
    lines += [f"- {key}: {value}" for key, value in env.items()]
    lines.append(f"- quick mode: {results['quick']}")
    lines.append(f"- total wall time: {results['wall_time_s']:.0f} s")
    lines.append(f"- load average (1 min) at the end: {results['load_average_end']}")
    sections = (
        ("density", "Held-out log-likelihood", DENSITY_COLUMNS),
        ("steps", "Training-step time (1 thread)", STEP_COLUMNS),
        ("design", "Design points (1 thread)", DESIGN_COLUMNS),
    )
    for key, title, columns in sections:
        if results.get(key):
            lines += ["", f"## {title}", ""]
            notes = results.get("notes", {}).get(key)
            if notes:
                lines += [notes, ""]
            lines.append(markdown_table(results[key], columns))
    return "\n".join(lines) + "\n"


def write_results(output_dir: Path, results: dict) -> list:
    """Write ``results.md``, ``results.json`` and one CSV per benchmark.

    Parameters
    ----------
    output_dir : pathlib.Path
        Created if needed.
    results : dict
        Keys ``environment``, ``quick``, ``wall_time_s``, ``load_average_end``,
        ``notes`` and the
        row lists ``density``, ``steps``, ``design`` (each may be empty).

    Returns
    -------
    paths : list of pathlib.Path
        The files written.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / "results.md", output_dir / "results.json"]
    paths[0].write_text(_markdown_document(results))
    paths[1].write_text(json.dumps(results, indent=1, default=str) + "\n")
    for key in ("density", "steps", "design"):
        if results.get(key):
            path = output_dir / f"{key}.csv"
            write_csv(path, results[key])
            paths.append(path)
    return paths


def standalone_arguments(description: str, prefix: str, results_dir: Path, argv=None):
    """The command line shared by the stand-alone benchmark scripts.

    ``--quick`` (a smoke run), ``--threads`` (torch and BLAS threads, default
    2) and ``--output-dir``; without it a quick run writes to a new temporary
    folder, so that it never overwrites the committed results, and a full
    run to ``results_dir``.

    Returns
    -------
    args : argparse.Namespace
    out : pathlib.Path
        The output folder, created.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.output_dir or (
        Path(tempfile.mkdtemp(prefix=prefix)) if args.quick else results_dir
    )
    out.mkdir(parents=True, exist_ok=True)
    return args, out


def write_standalone(
    out: Path, stem: str, title: str, header: str, tables: str, payload: dict
) -> list:
    """Print ``tables``; write ``stem.md`` (title, header, tables) and ``stem.json``."""
    print("\n" + tables)
    paths = [out / f"{stem}.md", out / f"{stem}.json"]
    paths[0].write_text(f"# {title}\n\n{header}\n\n{tables}\n")
    paths[1].write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {paths[0]} and {paths[1]}")
    return paths
