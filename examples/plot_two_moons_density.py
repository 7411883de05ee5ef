"""
=====================================
Density estimation on the two moons
=====================================

This example fits an :class:`~sklearn_arcsm.ARCSMDensity` to the 2-D "two
moons" data set and compares it with a
:class:`~sklearn.mixture.GaussianMixture`.

:class:`~sklearn_arcsm.ARCSMDensity` is trained by composite score matching:
it only ever sees the derivatives of the log-density, never the density
itself. Yet every fitted model is an exact, normalized density: the
log-density of each 1-D conditional is recovered by quadrature of its score,
so :meth:`~sklearn_arcsm.ARCSMDensity.score_samples` returns true
log-densities. We check that below by integrating the density over a grid.
"""

# %%
# Data
# ----
# 2000 points: half to fit the models, half to evaluate held-out
# log-likelihood.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_moons
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split

from sklearn_arcsm import ARCSMDensity

X, _ = make_moons(n_samples=2000, noise=0.1, random_state=0)
X_train, X_test = train_test_split(X, test_size=0.5, random_state=0)

# %%
# Fit the AR-CSM and a Gaussian mixture
# -------------------------------------
# The AR-CSM uses its defaults: noise-conditional composite score matching
# plus an unbiased estimate of the exact likelihood (score matching alone
# cannot see how much mass each moon carries), with early stopping on the
# held-out log-likelihood. The number of mixture components is chosen by the
# Bayesian information criterion.
arcsm = ARCSMDensity(random_state=0)
arcsm.fit(X_train)

bics = {
    k: GaussianMixture(n_components=k, random_state=0).fit(X_train).bic(X_train)
    for k in (2, 4, 8, 16, 32)
}
best_k = min(bics, key=bics.get)
gmm = GaussianMixture(n_components=best_k, random_state=0).fit(X_train)

print(f"AR-CSM trained for {arcsm.n_iter_} epochs")
print(f"GaussianMixture: {best_k} components (lowest BIC)")
print(f"held-out mean log-likelihood, AR-CSM:          {arcsm.score(X_test):.3f}")
print(f"held-out mean log-likelihood, GaussianMixture: {gmm.score(X_test):.3f}")

# %%
# Both ``score`` methods return the *mean* log-likelihood per sample, so the
# two numbers are directly comparable (higher is better). On this small 2-D
# problem a Gaussian mixture with enough components is a strong baseline; at
# the time of writing it scored higher than the AR-CSM trained for 100
# epochs.
#
# Density contours and samples
# ----------------------------
# We evaluate both densities on a regular grid and draw 500 samples from
# each. ``ARCSMDensity.sample`` draws exact samples by inverting each 1-D
# conditional CDF on the quadrature grid.
x_grid = np.linspace(-2.5, 3.5, 120)
y_grid = np.linspace(-2.0, 2.5, 120)
xx, yy = np.meshgrid(x_grid, y_grid)
grid = np.column_stack([xx.ravel(), yy.ravel()])
log_density = {
    "ARCSMDensity": arcsm.score_samples(grid).reshape(xx.shape),
    "GaussianMixture": gmm.score_samples(grid).reshape(xx.shape),
}
samples = {
    "ARCSMDensity": arcsm.sample(500, random_state=0),
    "GaussianMixture": gmm.sample(500)[0],
}

fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True, sharey=True)
for ax, name in zip(axes, log_density, strict=True):
    ax.contourf(xx, yy, np.exp(log_density[name]), levels=20, cmap="Blues")
    ax.scatter(*samples[name].T, s=3, c="tab:orange", label="samples")
    ax.set_title(name)
    ax.set_xlabel("$x_1$")
axes[0].set_ylabel("$x_2$")
axes[0].legend(loc="upper right")
fig.tight_layout()
plt.show()

# %%
# The density integrates to one
# -----------------------------
# ``score_samples`` is normalized by construction, not after the fact: no
# grid over the plane was ever used to fit or normalize it. A Riemann sum over
# the grid above, which covers the data with a wide margin, recovers a total
# mass of one up to the grid and quadrature errors.
cell_area = (x_grid[1] - x_grid[0]) * (y_grid[1] - y_grid[0])
for name, values in log_density.items():
    print(f"{name}: integral over the grid = {np.exp(values).sum() * cell_area:.4f}")
