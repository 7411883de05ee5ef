"""Smoke test of the command-line demo (``sklearn-arcsm-demo``)."""

import re

import pytest
import torch

from sklearn_arcsm.demo import FIGURE_NAME, main

pytest.importorskip("matplotlib")

NUMBER = r"-?\d+\.\d+"


def test_demo_quick_writes_figure_and_table(tmp_path, capsys):
    threads = torch.get_num_threads()

    status = main(["--quick", "--output-dir", str(tmp_path), "--seed", "1"])

    assert status == 0
    figure = tmp_path / FIGURE_NAME
    assert figure.is_file()
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    for dataset in ("moons", "digits"):
        row = re.search(rf"^{dataset}\s+\d+\s+\d+\s+\d+\s+(.*)$", out, re.MULTILINE)
        assert row is not None, out
        # ARCSMDensity and GaussianMixture log-likelihoods, then the fit time.
        values = [float(v) for v in re.findall(NUMBER, row.group(1))]
        assert len(values) == 3, row.group(0)
        assert row.group(1).split()[-1] in ("ARCSM", "GMM", "tie"), row.group(0)
    # The demo restores the caller's torch thread count.
    assert torch.get_num_threads() == threads


def test_the_verdict_says_tie_within_one_standard_error():
    from sklearn_arcsm.demo import Result

    def verdict(difference, se):
        row = Result("d", 1, 1, 1, 0.0, 0.0, "", 0.0, difference, se)
        return row.verdict

    assert verdict(0.5, 0.1) == "ARCSM"
    assert verdict(-0.5, 0.1) == "GMM"
    assert verdict(-0.05, 0.1) == "tie"
