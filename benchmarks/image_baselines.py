"""Normalized autoregressive baselines for the image benchmark (benchmark-only).

* the Gaussian-conditional MADE of the package (:class:`sklearn_arcsm.nn.
  GaussianMADE`), the paper's maximum-likelihood counterpart of an AR-CSM;
* :class:`LogisticMixtureMADE`, a MADE whose conditionals are mixtures of
  ``K`` logistics, a stronger normalized autoregressive model;

both trained by maximum likelihood with early stopping on standardized data
by :class:`AutoregressiveMLE`, which reports densities and samples in data
units.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sklearn_arcsm.nn import MADE, GaussianMADE

__all__ = ["AutoregressiveMLE", "LogisticMixtureMADE", "train_early_stopped"]


class LogisticMixtureMADE(nn.Module):
    """MADE with a mixture of ``n_components`` logistics per conditional."""

    def __init__(self, n_features: int, hidden_sizes, n_components: int = 5) -> None:
        super().__init__()
        self.n_features = n_features
        self.n_components = n_components
        self.made = MADE(n_features, hidden_sizes, context_size=3 * n_components)

    def _mixture(self, x):
        out = self.made(x)  # (batch, D, 3K)
        logits, means, log_scales = out.split(self.n_components, dim=-1)
        return F.log_softmax(logits, -1), means, log_scales.clamp(-7.0, 5.0)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        log_w, means, log_scales = self._mixture(x)
        z = (x[..., None] - means) * torch.exp(-log_scales)
        log_f = -z - log_scales - 2.0 * F.softplus(-z)
        return torch.logsumexp(log_w + log_f, dim=-1).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        x = torch.zeros(n, self.n_features)
        for d in range(self.n_features):
            log_w, means, log_scales = (p[:, d] for p in self._mixture(x))
            k = torch.multinomial(log_w.exp(), 1, generator=generator)[:, 0]
            u = torch.rand(n, generator=generator).clamp(1e-6, 1 - 1e-6)
            rows = torch.arange(n)
            x[:, d] = means[rows, k] + log_scales[rows, k].exp() * (
                torch.log(u) - torch.log1p(-u)
            )
        return x


def train_early_stopped(
    module: nn.Module,
    log_prob,
    train: torch.Tensor,
    valid: torch.Tensor,
    *,
    max_epochs: int,
    batch_size: int,
    patience: int,
    min_delta: float,
) -> int:
    """Maximum likelihood with Adam (lr 1e-3), early-stopped on ``valid``.

    ``log_prob(batch)`` is the per-row log-density under ``module``'s
    parameters. The best validation weights are loaded back at the end.

    Returns
    -------
    n_epochs : int
        Epochs run.
    """
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    best, best_state, waited = math.inf, None, 0
    n_epochs = 0
    for _ in range(max_epochs):
        n_epochs += 1
        perm = torch.randperm(len(train))
        for i in range(0, len(train), batch_size):
            loss = -log_prob(train[perm[i : i + batch_size]]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            value = -float(log_prob(valid).mean())
        if value < best - min_delta:
            best, waited = value, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            waited += 1
            if waited >= patience:
                break
    module.load_state_dict(best_state)
    return n_epochs


def _gaussian_made_sample(model: GaussianMADE, n: int, generator) -> torch.Tensor:
    x = torch.zeros(n, model.n_features)
    with torch.no_grad():
        for d in range(model.n_features):
            mean, log_scale = model.conditional_parameters(x)
            noise = torch.randn(n, generator=generator)
            x[:, d] = mean[:, d] + log_scale[:, d].exp() * noise
    return x


class AutoregressiveMLE:
    """Maximum-likelihood training with early stopping, in data units.

    Parameters
    ----------
    kind : {"gaussian", "logistic_mixture"}
    hidden_sizes : tuple of int
    max_epochs, patience : int
    seed : int
    """

    def __init__(self, kind, hidden_sizes, max_epochs=300, patience=20, seed=0):
        self.kind = kind
        self.hidden_sizes = tuple(hidden_sizes)
        self.max_epochs = max_epochs
        self.patience = patience
        self.seed = seed

    def fit(self, X: np.ndarray) -> AutoregressiveMLE:
        torch.manual_seed(self.seed)
        self.mean_, self.scale_ = X.mean(0), X.std(0) + 1e-6
        Z = torch.as_tensor((X - self.mean_) / self.scale_, dtype=torch.float32)
        D = Z.shape[1]
        if self.kind == "gaussian":
            self.model_ = GaussianMADE(D, self.hidden_sizes)
        else:
            self.model_ = LogisticMixtureMADE(D, self.hidden_sizes)
        order = torch.randperm(len(Z))
        n_valid = max(1, len(Z) // 10)
        valid, train = Z[order[:n_valid]], Z[order[n_valid:]]
        self.n_iter_ = train_early_stopped(
            self.model_,
            self.model_,
            train,
            valid,
            max_epochs=self.max_epochs,
            batch_size=256,
            patience=self.patience,
            min_delta=1e-4,
        )
        self.model_.eval()
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        Z = torch.as_tensor((X - self.mean_) / self.scale_, dtype=torch.float32)
        with torch.no_grad():
            log_p = self.model_(Z).double().numpy()
        return log_p - np.log(self.scale_).sum()

    def sample(self, n: int, random_state: int = 0) -> np.ndarray:
        generator = torch.Generator().manual_seed(random_state)
        if self.kind == "gaussian":
            Z = _gaussian_made_sample(self.model_, n, generator)
        else:
            Z = self.model_.sample(n, generator)
        return Z.double().numpy() * self.scale_ + self.mean_
