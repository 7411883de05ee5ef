"""Linear whitening: a fixed linear map in front of the autoregressive model.

An AR-CSM models ``p(z) = prod_d p(z_d | z_<d)`` in a fixed order. When the
features are strongly correlated, each conditional must learn a regression
on all earlier features before it can shape what is left, from the same
finite sample. Mapping the (standardized) rows by a matrix ``W`` fitted to
the training correlation matrix ``C``, ``z = W s`` with ``W C W^T = I``,
removes all second-order dependence first: the model is left with what a
Gaussian cannot explain. Two such maps (:meth:`Whitening.fit`):

* Cholesky, ``W = L^(-1)`` for ``C = L L^T``: lower triangular, so the
  columns keep their order and ``z_<d`` depends on ``s_<d`` only;
* PCA, ``W = Lambda^(-1/2) U^T`` for ``C = U Lambda U^T``: principal axes,
  largest variance first (coarse to fine), which rotates and reorders.

The map is linear and invertible, so the density stays exact and
normalized::

    log p_S(s) = log p_Z(W s) + log |det W|

and samples are ``s = W^(-1) z``.

The eigenvalues are floored at :data:`EIGENVALUE_FLOOR` times the largest,
so that exactly collinear features (a column that is a sum of others) give
a very narrow direction rather than a division by zero; the map stays
exactly invertible, and the narrow direction is no harder for the model
than the deterministic column it replaces. Pure numpy and torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["EIGENVALUE_FLOOR", "Whitening"]

# Smallest eigenvalue kept, relative to the largest (see the module docstring).
EIGENVALUE_FLOOR = 1e-8


@dataclass(frozen=True, eq=False)
class Whitening:
    """The whitening map ``z = s @ matrix.T`` and its inverse.

    Parameters
    ----------
    matrix : ndarray of shape (n_features, n_features)
        ``W``: ``L^(-1)`` (Cholesky) or ``Lambda^(-1/2) U^T`` (PCA, row
        ``k`` the ``k``-th principal axis over the square root of its
        variance).
    inverse : ndarray of shape (n_features, n_features)
        ``W^(-1)``: ``L`` or ``U Lambda^(1/2)``.
    log_det : float
        ``log |det W|``.
    method : {"pca", "cholesky"}
        How the map was made (see :meth:`fit`).
    """

    matrix: np.ndarray
    inverse: np.ndarray
    log_det: float
    method: str = "pca"

    @classmethod
    def fit(cls, S: np.ndarray, method: str = "pca") -> Whitening:
        """Whitening of centred rows ``S``, shape ``(n_samples, n_features)``.

        ``method="pca"``: ``W = Lambda^(-1/2) U^T``, components by decreasing
        variance, eigenvectors' signs fixed (largest entry positive) so that
        the map depends on the data only, not on the eigensolver.
        ``method="cholesky"``: ``W = L^(-1)`` for ``C = L L^T``, lower
        triangular: ``z_d`` is the residual of the least-squares regression
        of ``s_d`` on ``s_<d``, over its standard deviation, so the columns
        keep their order and ``z_<d`` depends on ``s_<d`` only.
        Columns that are constant in ``S`` are left as they are.
        """
        if method not in ("pca", "cholesky"):
            raise ValueError(f"method must be 'pca' or 'cholesky'; got {method!r}.")
        S = np.asarray(S, dtype=np.float64)
        D = S.shape[1]
        covariance = S.T @ S / len(S)
        active = np.flatnonzero(np.diag(covariance) > 0)
        if len(active) == 0:  # every column constant: nothing to whiten
            return cls(np.eye(D), np.eye(D), 0.0, method)
        C = covariance[np.ix_(active, active)]
        eigenvalues, vectors = np.linalg.eigh(C)
        top = max(float(eigenvalues.max(initial=0.0)), np.finfo(np.float64).tiny)
        floor = EIGENVALUE_FLOOR * top
        if method == "pca":
            order = np.argsort(eigenvalues)[::-1]
            eigenvalues, vectors = eigenvalues[order], vectors[:, order]
            biggest = np.abs(vectors).argmax(axis=0)
            vectors = vectors * np.sign(vectors[biggest, np.arange(len(order))])
            root = np.sqrt(np.maximum(eigenvalues, floor))
            block, block_inverse = vectors.T / root[:, None], vectors * root
        else:
            # The floored spectrum, so that collinear columns still factor.
            C = (vectors * np.maximum(eigenvalues, floor)) @ vectors.T
            block_inverse = np.linalg.cholesky((C + C.T) / 2)
            block = np.linalg.inv(block_inverse)
            block = np.tril(block)  # exactly triangular, not to rounding
        matrix, inverse = np.eye(D), np.eye(D)
        matrix[np.ix_(active, active)] = block
        inverse[np.ix_(active, active)] = block_inverse
        _, log_det = np.linalg.slogdet(matrix)
        return cls(matrix, inverse, float(log_det), method)

    @property
    def triangular(self) -> bool:
        """True when ``z_<d`` depends on ``s_<d`` only (Cholesky whitening)."""
        return self.method == "cholesky"

    def forward(self, S: torch.Tensor) -> torch.Tensor:
        """``z = W s`` for rows ``S`` of shape ``(n, D)``."""
        return S @ torch.as_tensor(self.matrix).to(S).T

    def inverse_map(self, Z: torch.Tensor) -> torch.Tensor:
        """``s = W^(-1) z`` for rows ``Z`` of shape ``(n, D)``."""
        return Z @ torch.as_tensor(self.inverse).to(Z).T

    def pullback(self, grad_z: torch.Tensor) -> torch.Tensor:
        """Gradient in ``s`` from a gradient in ``z`` (rows): ``W^T grad_z``."""
        return grad_z @ torch.as_tensor(self.matrix).to(grad_z)

    def covariance(self) -> np.ndarray:
        """The (floored) covariance ``W^(-1) W^(-T)`` the map whitens."""
        return self.inverse @ self.inverse.T

    def conditional_draw(
        self,
        S: torch.Tensor,
        missing: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw the ``missing`` entries of ``S`` from the Gaussian this map whitens.

        ``s_M ~ N(C_MO C_OO^(-1) s_O, C_MM - C_MO C_OO^(-1) C_OM)`` per row,
        with ``C`` = :meth:`covariance`: the second-order part of the data's
        conditional, a cheap start for a chain that targets the model's own.
        Rows are grouped by mask; observed entries are returned unchanged.

        Parameters
        ----------
        S : torch.Tensor of shape (n, D)
            Rows in the coordinates this map whitens (standardized units).
        missing : torch.BoolTensor of shape (n, D)
        generator : torch.Generator, optional

        Returns
        -------
        S_drawn : torch.Tensor of shape (n, D)
        """
        out = S.clone()
        C = torch.as_tensor(self.covariance()).to(S)
        patterns, group = torch.unique(missing, dim=0, return_inverse=True)
        for k, pattern in enumerate(patterns):
            if not pattern.any():
                continue
            rows = torch.nonzero(group == k).flatten()
            m, o = pattern, ~pattern
            noise = torch.randn(
                len(rows),
                int(m.sum()),
                generator=generator,
                dtype=S.dtype,
                device=S.device,
            )
            if o.any():
                gain = torch.linalg.solve(C[o][:, o], C[o][:, m]).T  # C_MO C_OO^-1
                mean = S[rows][:, o] @ gain.T
                cov = C[m][:, m] - gain @ C[o][:, m]
            else:
                mean = S.new_zeros(len(rows), int(m.sum()))
                cov = C[m][:, m]
            cov = (cov + cov.T) / 2
            jitter = 1e-10 * cov.diagonal().abs().max().clamp_min(1e-300)
            chol = torch.linalg.cholesky(cov + jitter * torch.eye(len(cov)).to(cov))
            block = out[rows]
            block[:, m] = mean + noise @ chol.T
            out[rows] = block
        return out
