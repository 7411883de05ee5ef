"""Smoke test: the benchmark command runs end to end in quick mode."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _run_quick(script: str, *extra: str) -> str:
    """Run a benchmark script in quick mode; return its stdout."""
    result = subprocess.run(
        [sys.executable, script, "--quick", *extra],
        cwd=ROOT,
        check=True,
        timeout=300,
        capture_output=True,
        text=True,
    )
    return result.stdout


def test_benchmark_command_quick_mode_writes_its_tables(tmp_path):
    _run_quick("benchmarks/run.py", "--output-dir", str(tmp_path))
    for name in (
        "results.md",
        "results.json",
        "density.csv",
        "steps.csv",
        "design.csv",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "CSM" in (tmp_path / "results.md").read_text()


def test_quality_benchmark_quick_mode_writes_its_table(tmp_path):
    # Flows need zuko (the benchmarks extra); every other method runs here.
    methods = [
        "arcsm",
        "arcsm_csm",
        "arcsm_csm_nll",
        "arcsm_spline_ensemble",
        "gmm",
        "kde",
    ]
    _run_quick(
        "benchmarks/quality/run.py",
        *("--targets", "banana", "--methods", *methods),
        *("--output-dir", str(tmp_path)),
    )
    table = (tmp_path / "quality.md").read_text()
    for method in methods:
        assert f"| banana | {method} |" in table, method
    assert (tmp_path / "quality_kl.png").stat().st_size > 0


def test_inference_benchmark_quick_mode_writes_its_tables(tmp_path):
    stdout = _run_quick("benchmarks/bench_inference.py", "--output-dir", str(tmp_path))
    table = (tmp_path / "inference.md").read_text()
    # the default (spline head, knot rule) against the flow, and its errors
    assert "NSF score s" in table and "knot rule (default)" in table
    assert "adaptive, spline head" in table
    assert "| 4 | chebyshev 8 panels |" in stdout
    # the MLP head's speed table and its error rows, from the same run
    assert "MLP score s" in table and "adaptive, MLP head" in table
    payload = json.loads((tmp_path / "inference.json").read_text())
    assert all(row["arcsm_score_s"] > 0 for row in payload["speed"])
    assert all(row["mlp_score_s"] > 0 for row in payload["speed"])
    # and the four-order spline ensemble's scoring and sampling
    assert "4-order ensemble score s" in table
    assert all(row["ensemble_sample_s"] > 0 for row in payload["speed"])
    assert (tmp_path / "inference.json").stat().st_size > 0


def test_device_check_quick_mode_writes_its_tables(tmp_path):
    # CPU only here: the weights move from CPU to CPU, which must agree
    # exactly; where CUDA exists the same run compares it with the CPU.
    _run_quick("benchmarks/device_check.py", "--output-dir", str(tmp_path))
    table = (tmp_path / "device_check.md").read_text()
    assert "train steps / s" in table and "| 4 | cpu |" in table
    payload = json.loads((tmp_path / "device_check.json").read_text())
    cpu = [r for r in payload["agreement"] if r["device"] == "cpu"]
    assert all(r["max_abs_diff"] == 0.0 for r in cpu)
    assert all(r["sample_mean_max_z"] < 5 for r in payload["agreement"])


def test_outlier_benchmark_quick_mode_writes_its_table(tmp_path):
    _run_quick("benchmarks/bench_outliers.py", "--output-dir", str(tmp_path))
    table = (tmp_path / "outliers.md").read_text()
    for method in (
        "arcsm",
        "arcsm_log_ratio",
        "arcsm_ensemble",
        "arcsm_ensemble_log_ratio",
        "arcsm_bounded",
        "arcsm_csm_statistic",
        "gmm",
        "kde",
        "iforest",
        "maf",
    ):
        assert f"| {method} |" in table, method
    header = next(line for line in table.splitlines() if line.startswith("| method"))
    for ood in ("uniform", "constant", "permuted", "flipped", "upside_down", "mnist"):
        assert f" {ood} |" in header, ood
    assert (tmp_path / "outliers.json").stat().st_size > 0


def test_tabular_outlier_benchmark_quick_mode_writes_both_statistics(tmp_path):
    _run_quick("benchmarks/bench_outliers_tabular.py", "--output-dir", str(tmp_path))
    payload = json.loads((tmp_path / "outliers_tabular.json").read_text())
    rows = {row["method"]: row for row in payload["rows"]}
    assert set(rows) >= {"arcsm", "arcsm_log_ratio", "gmm", "ocsvm", "lof"}
    assert all(0.0 <= row["auroc"] <= 1.0 for row in rows.values())
    # the ratio is its own statistic, not the log-density under a new name
    assert rows["arcsm_log_ratio"]["auroc"] != rows["arcsm"]["auroc"]


def test_restoration_benchmark_quick_mode_writes_its_tables(tmp_path):
    _run_quick("benchmarks/bench_restoration.py", "--output-dir", str(tmp_path))
    table = (tmp_path / "restoration.md").read_text()
    for method in ("arcsm_tweedie", "gaussian_filter", "pca", "gmm_tweedie"):
        assert f"| {method} |" in table, method
    for mask in ("lower_half", "random"):
        assert f"| {mask} | arcsm |" in table, mask
    assert (tmp_path / "restoration.json").stat().st_size > 0


def test_image_benchmark_quick_mode_writes_its_tables(tmp_path):
    _run_quick("benchmarks/bench_images.py", "--output-dir", str(tmp_path))
    table = (tmp_path / "images.md").read_text()
    for method in (
        "arcsm_made_nll",
        "arcsm_pixelcnn_csm",
        "arcsm_made_nll_bounded",
        "arcsm_pixelcnn_csm_bounded",
        "gaussian_made",
        "nsf",
    ):
        assert f"| {method} |" in table, method
    assert "| arcsm_made_csm | langevin |" in table
    assert "| arcsm_made_csm_bounded | langevin |" in table
    assert (tmp_path / "image_samples.png").stat().st_size > 0


def test_mnist_benchmark_quick_mode_writes_its_table(tmp_path):
    _run_quick("benchmarks/bench_mnist.py", "--output-dir", str(tmp_path))
    table = (tmp_path / "mnist.md").read_text()
    methods = (
        "arcsm_made_nll_bounded",
        "arcsm_pixelcnn_nll_bounded",
        "arcsm_made_nll",
        "gaussian_made_bounded",
        "gaussian_made",
        "nsf_bounded",
        "nsf",
    )
    for method in methods:
        assert f"| {method} |" in table, method
    rows = json.loads((tmp_path / "mnist.json").read_text())["likelihood"]
    assert all(np.isfinite([row["bits_per_dim"], row["median"]]).all() for row in rows)
    # Refitting one method keeps the other rows and replaces its own.
    before = {row["method"]: row for row in rows}
    _run_quick(
        "benchmarks/bench_mnist.py", "--output-dir", str(tmp_path), "--methods", "nsf"
    )
    after = {
        row["method"]: row
        for row in json.loads((tmp_path / "mnist.json").read_text())["likelihood"]
    }
    assert list(after) == list(methods)
    assert after["gaussian_made"] == before["gaussian_made"]
    assert after["nsf"]["fit_s"] != before["nsf"]["fit_s"]


def test_real_data_benchmark_quick_mode_writes_its_table(tmp_path):
    # The two data sets that ship with scikit-learn (the others need the
    # benchmarks extra); every method, flows included (zuko is in the test
    # extra).
    _run_quick(
        "benchmarks/quality/run_real.py",
        *("--datasets", "diabetes", "breast_cancer"),
        *("--output-dir", str(tmp_path)),
    )
    table = (tmp_path / "real.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| data set"))
    methods = ("arcsm", "arcsm_bounded", "arcsm_cholesky", "arcsm_pca")
    for method in (*methods, "gmm", "kde", "maf", "nsf"):
        assert f" {method} |" in header, method
    for method in methods:
        assert f" {method} - best peer (paired se) |" in header, method
    rows = [line for line in table.splitlines() if line.startswith("| diabetes | 10")]
    # Eight methods with standard errors, the best peer and four paired gaps
    # (one per AR-CSM row: diabetes declares its bounds).
    assert len(rows) == 1 and rows[0].count("+-") == 8
    assert rows[0].rstrip(" |").endswith(")") and rows[0].count(") |") == 4
    assert "(scikit-learn load_breast_cancer)" in table


def test_real_data_benchmark_runs_the_opt_in_ensemble(tmp_path):
    _run_quick(
        "benchmarks/quality/run_real.py",
        *("--datasets", "diabetes", "--methods", "arcsm_ensemble", "gmm"),
        *("--output-dir", str(tmp_path)),
    )
    table = (tmp_path / "real.md").read_text()
    assert " arcsm_ensemble - best peer (paired se) |" in table
    row = next(line for line in table.splitlines() if line.startswith("| diabetes |"))
    assert row.count("+-") == 2 and row.rstrip(" |").endswith(")")
    assert '"epochs": [3, 3, 3, 3]' in table  # four members


def test_score_benchmark_quick_mode_writes_its_table(tmp_path):
    _run_quick("benchmarks/bench_scores.py", "--output-dir", str(tmp_path))
    payload = json.loads((tmp_path / "scores.json").read_text())
    names = {row["target"] for row in payload["rows"]}
    assert names == {"gaussian8", "mixture2", "banana"}
    assert all(-10 < row["r2_mean"] <= 1 for row in payload["rows"])


def test_vae_benchmark_quick_mode_writes_its_tables(tmp_path):
    _run_quick("benchmarks/bench_vae.py", "--output-dir", str(tmp_path))
    payload = json.loads((tmp_path / "vae.json").read_text())
    methods = {row["method"] for row in payload["rows"]}
    assert methods == {"elbo", "csm", "csm-joint", "ssm"}
    assert all(0 < row["nll"] < 1000 for row in payload["rows"])
    assert (
        payload["ais_check"] and "AIS convergence" in (tmp_path / "vae.md").read_text()
    )


def test_score_oracles_match_finite_differences_of_exact_log_densities():
    # The exact conditional scores are derivatives of log marginals; check
    # them against central differences of the closed-form Gaussian mixture
    # marginal log-density, with and without smoothing.
    import importlib.util

    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    spec = importlib.util.spec_from_file_location(
        "score_oracles", ROOT / "benchmarks" / "score_oracles.py"
    )
    oracles = importlib.util.module_from_spec(spec)
    sys.modules["score_oracles"] = oracles  # dataclasses look their module up
    spec.loader.exec_module(oracles)
    target = oracles.gaussian_mixture()
    Y = target.sample(20, np.random.default_rng(0))
    for noise in (None, 0.3):
        covs = target.covs + (0 if noise is None else noise**2 * np.eye(2))

        def log_marginal(Z, d, covs=covs):
            comps = [
                np.log(w)
                + multivariate_normal(m[: d + 1], c[: d + 1, : d + 1]).logpdf(
                    Z[:, : d + 1]
                )
                for w, m, c in zip(
                    np.exp(target.log_weights), target.means, covs, strict=True
                )
            ]
            return logsumexp(np.stack(comps), axis=0)

        scores = target.conditional_scores(Y, noise)
        for d in range(2):
            step = np.zeros(2)
            step[d] = 1e-5
            fd = (log_marginal(Y + step, d) - log_marginal(Y - step, d)) / 2e-5
            np.testing.assert_allclose(scores[:, d], fd, rtol=1e-5, atol=1e-6)


def test_real_data_benchmark_tunes_the_whitening_by_three_folds(tmp_path):
    # arcsm_tuned searches parameters that the default spline head uses
    # (the whitening), by 3-fold cross-validation: one score per candidate.
    _run_quick(
        "benchmarks/quality/run_real.py",
        *("--datasets", "diabetes", "--methods", "arcsm_tuned"),
        *("--output-dir", str(tmp_path)),
    )
    with open(tmp_path / "real.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    info = json.loads(row["info"])
    assert row["method"] == "arcsm_tuned"
    assert info["best_params"]["whiten"] in ("None", "cholesky")
    assert info["n_splits"] == 3 and len(info["cv_means"]) == 2
    assert set(info["plain_best"]) == {"max_epochs", "whiten"}
