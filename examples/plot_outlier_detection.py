"""
=====================================================
Outlier detection with the exact log-density
=====================================================

:meth:`~sklearn_arcsm.ARCSMDensity.score_samples` returns the exact,
normalized log-density of each sample, so a low value flags an unusual
sample. This example fits :class:`~sklearn_arcsm.ARCSMDensity` on hand-written
digits of the classes 0 to 4 and asks it to tell held-out digits of those
classes from two kinds of outliers:

* **other classes**: digits 5 to 9, never seen in training;
* **corrupted**: held-out digits 0 to 4 with a fifth of their pixels replaced
  by uniform noise;
* **constant**: images of one grey level (the classic failure of likelihood
  models in the paper's Table 1);
* **flipped**: held-out digits 0 to 4 mirrored left to right.

``benchmarks/bench_outliers.py`` runs the full comparison (all ten classes,
uniform-noise and pixel-permuted images too, flows, IsolationForest and
pyod's detectors).

The area under the ROC curve (:func:`~sklearn.metrics.roc_auc_score`) of the
negative log-density measures how well each model separates inliers from
outliers; :class:`~sklearn.neighbors.KernelDensity` and
:class:`~sklearn.mixture.GaussianMixture`, both tuned by cross-validated
likelihood, serve as baselines.
"""

# %%
# Data
# ----
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neighbors import KernelDensity

from sklearn_arcsm import ARCSMDensity, ARCSMOutlierDetector

digits = load_digits()
rng = np.random.RandomState(0)
X = digits.data + rng.uniform(size=digits.data.shape)  # dequantize 0..16
inlier = digits.target <= 4
X_train, X_inlier = train_test_split(X[inlier], test_size=0.25, random_state=0)
X_other = X[~inlier][rng.choice((~inlier).sum(), len(X_inlier), replace=False)]

X_corrupted = X_inlier.copy()
mask = rng.uniform(size=X_corrupted.shape) < 0.2
X_corrupted[mask] = rng.uniform(0, 17, size=mask.sum())
levels = rng.randint(0, 17, size=(len(X_inlier), 1))
X_constant = np.repeat(levels, 64, axis=1) + rng.uniform(size=X_inlier.shape)
X_flipped = X_inlier.reshape(-1, 8, 8)[:, :, ::-1].reshape(-1, 64)

print(f"training digits: {len(X_train)}; each test group: {len(X_inlier)}")

# %%
# Fit the density models
# ----------------------
# The baselines' hyper-parameters are chosen by :class:`GridSearchCV`, which
# ranks candidates by their ``score`` (the held-out log-likelihood).
# :class:`~sklearn_arcsm.ARCSMDensity` keeps its defaults, except
# ``max_epochs=100`` (the default is 300) to keep the example quick. It is
# fitted inside an :class:`~sklearn_arcsm.ARCSMOutlierDetector` with
# ``statistic="log_ratio"``: the detector scores the log-density minus that
# of independent per-pixel histograms of the training digits, which discounts
# how much of an image is blank; ``detector.estimator_`` is the fitted
# density itself, scored by its plain log-density below.
detector = ARCSMOutlierDetector(
    ARCSMDensity(max_epochs=100, random_state=0), statistic="log_ratio"
).fit(X_train)
arcsm = detector.estimator_
kde = GridSearchCV(KernelDensity(), {"bandwidth": np.logspace(-0.5, 1, 12)}).fit(
    X_train
)
gmm = GridSearchCV(
    GaussianMixture(covariance_type="diag", random_state=0),
    {"n_components": [1, 2, 4, 8, 16, 32]},
).fit(X_train)
models = {
    "ARCSMDensity": arcsm,
    "ARCSMOutlierDetector (log_ratio)": detector,
    f"KernelDensity (bandwidth={kde.best_params_['bandwidth']:.2f})": kde,
    f"GaussianMixture ({gmm.best_params_['n_components']} components)": gmm,
}

# %%
# Outlier scores and ROC AUC
# --------------------------
# The outlier score is the negative log-density (the negative log-ratio for
# the detector); label 1 marks an outlier.
groups = {
    "inliers": X_inlier,
    "other classes": X_other,
    "corrupted": X_corrupted,
    "constant": X_constant,
    "flipped": X_flipped,
}
log_density = {
    name: {group: model.score_samples(data) for group, data in groups.items()}
    for name, model in models.items()
}


def auroc(scores, outlier_group):
    """ROC AUC of ``-log p`` for held-out inliers against one outlier group."""
    inliers, outliers = scores["inliers"], scores[outlier_group]
    labels = np.r_[np.zeros(len(inliers)), np.ones(len(outliers))]
    return roc_auc_score(labels, -np.r_[inliers, outliers])


outlier_groups = [group for group in groups if group != "inliers"]
print(f"{'model':<38}" + "".join(f"{group:>14}" for group in outlier_groups))
for name, scores in log_density.items():
    print(f"{name:<38}" + "".join(f"{auroc(scores, g):>14.3f}" for g in outlier_groups))

# %%
# Every model flags the corrupted and the constant images easily. Unseen
# classes and mirrored digits are harder: they share strokes and background
# with the training classes. At the time of writing (100 epochs), the ratio
# lifted the AR-CSM on flipped digits from 0.862 to 0.881 AUROC, past the
# Gaussian mixture's 0.873, but lowered it on unseen classes from 0.907 to
# 0.884, where the Gaussian mixture was best (0.966): the ratio is no free
# gain. On all ten classes (the benchmark, ``benchmarks/bench_outliers.py``)
# it lifts flipped digits from 0.923 to 0.935, close behind the best peer
# (pyod's OCSVM, 0.940); on tables, where outliers leave the training range,
# the plain log-density is the better statistic (the user guide says why).
#
# Distribution of the log-density
# -------------------------------
# Histograms of the AR-CSM log-density for the three groups (values below
# -400 nats are piled up in the leftmost bin).
fig, ax = plt.subplots(figsize=(7, 4))
bins = np.linspace(-400, -50, 60)
for group, values in log_density["ARCSMDensity"].items():
    ax.hist(np.clip(values, bins[0], bins[-1]), bins=bins, alpha=0.5, label=group)
ax.set_xlabel("ARCSMDensity log-density (nats per image, clipped to the range)")
ax.set_ylabel("number of digits")
ax.legend()
fig.tight_layout()
plt.show()
