"""VAE building blocks: training runs end to end for every method, and fails loudly."""

import runpy
from pathlib import Path

import matplotlib
import pytest
import torch

from sklearn_arcsm.vae import (
    METHODS,
    BernoulliDecoder,
    GaussianEncoder,
    build_vae,
    fit_vae,
    standard_normal_log_prob,
)

EXAMPLE = (
    Path(__file__).resolve().parents[1] / "examples" / "plot_vae_implicit_encoder.py"
)


def _binary_rows(n=120, n_features=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(3, n_features, generator=g) > 0.5).float()
    rows = prototypes[torch.randint(0, 3, (n,), generator=g)]
    flips = torch.rand(n, n_features, generator=g) < 0.05
    return torch.where(flips, 1.0 - rows, rows)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_improves_its_objective(method):
    torch.manual_seed(0)
    X = _binary_rows()
    encoder, decoder, entropy = build_vae(method, 12, 2, hidden_sizes=(32,))
    history = fit_vae(
        encoder,
        decoder,
        X,
        entropy,
        epochs=15,
        batch_size=20,
        score_warmup=5,
        generator=torch.Generator().manual_seed(1),
    )
    assert len(history["objective"]) == 15
    assert all(torch.isfinite(torch.tensor(history["objective"])))
    # Three prototypes with 5% flips: the reconstruction term must improve.
    assert history["objective"][-1] > history["objective"][0] + 1.0


def test_fit_vae_is_reproducible_with_a_generator():
    X = _binary_rows()

    def fit():
        torch.manual_seed(0)
        encoder, decoder, entropy = build_vae("csm", 12, 2, hidden_sizes=(16,))
        return fit_vae(
            encoder,
            decoder,
            X,
            entropy,
            epochs=2,
            score_warmup=2,
            generator=torch.Generator().manual_seed(5),
        )["objective"]

    assert fit() == fit()


def test_gaussian_encoder_entropy_is_the_closed_form():
    torch.manual_seed(0)
    encoder = GaussianEncoder(5, 3, (8,))
    x = torch.rand(4, 5)
    _, entropy = encoder(x)
    log_std = encoder.out(encoder.trunk(x)).chunk(2, dim=-1)[1]
    expected = torch.distributions.Normal(0.0, log_std.exp()).entropy().sum(-1)
    torch.testing.assert_close(entropy, expected)


def test_decoder_log_likelihood_is_the_bernoulli_log_pmf():
    torch.manual_seed(0)
    decoder = BernoulliDecoder(2, 6, (8,))
    z, x = torch.randn(3, 2), (torch.rand(3, 6) > 0.5).float()
    expected = torch.distributions.Bernoulli(logits=decoder(z)).log_prob(x).sum(-1)
    torch.testing.assert_close(decoder.log_likelihood(x, z), expected)
    torch.testing.assert_close(
        standard_normal_log_prob(z),
        torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1),
    )


def test_fit_vae_rejects_mismatched_encoders_and_stops_on_divergence():
    X = _binary_rows(n=20)
    encoder, decoder, _ = build_vae("elbo", 12, 2, hidden_sizes=(8,))
    _, _, entropy = build_vae("ssm", 12, 2, hidden_sizes=(8,))
    with pytest.raises(ValueError, match="exact entropy"):
        fit_vae(encoder, decoder, X, entropy, epochs=1)
    implicit, decoder, _ = build_vae("csm", 12, 2, hidden_sizes=(8,))
    with pytest.raises(ValueError, match="needs an entropy-gradient"):
        fit_vae(implicit, decoder, X, None, epochs=1)
    with pytest.raises(ValueError, match="method must be one of"):
        build_vae("stein", 12, 2)
    encoder, decoder, _ = build_vae("elbo", 12, 2, hidden_sizes=(8,))
    with pytest.raises(FloatingPointError, match="non-finite"):
        fit_vae(encoder, decoder, X * float("nan"), None, epochs=1)


def test_the_gallery_example_runs(monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.setattr("matplotlib.pyplot.show", lambda: None)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
