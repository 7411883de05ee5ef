"""
=====================================================
Denoising and inpainting digits with the exact density
=====================================================

Because :meth:`~sklearn_arcsm.ARCSMDensity.score_samples` is an exact,
differentiable log-density, a fitted :class:`~sklearn_arcsm.ARCSMDensity`
can restore corrupted images:

* :class:`~sklearn_arcsm.ARCSMDenoiser` applies Tweedie's formula
  ``y + s**2 * grad log p_s(y)`` to images ``y`` corrupted by Gaussian noise
  of standard deviation ``s``. The gradient is the *joint* score
  (:meth:`~sklearn_arcsm.ARCSMDensity.log_density_gradient`), and ``p_s`` is
  the density of the noisy images: the denoiser fits it to several noisy
  copies of each clean training image, holding out whole images for early
  stopping. (With only noisy images at hand, ``training_data="noisy"`` fits
  ``p_s`` to them: empirical Bayes.)
* :meth:`~sklearn_arcsm.ARCSMDensity.inpaint` draws the masked pixels from
  the model's conditional given the others: exactly, one pixel at a time,
  when every masked pixel comes after the observed ones in raster order
  (the lower half of the image); by Metropolis-adjusted Langevin on the
  exact log-density otherwise (random pixels).

``benchmarks/bench_restoration.py`` compares both with baselines on all
held-out digits; this example shows a few pictures. ``max_epochs=60`` (the
default is 300) keeps it quick.
"""

# %%
# Data
# ----
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_arcsm import ARCSMDenoiser, ARCSMDensity

rng = np.random.RandomState(0)
X_train, X_test = train_test_split(load_digits().data, test_size=0.25, random_state=0)
clean = X_test[:8]


def psnr(reference, estimate, peak=16.0):
    """Mean PSNR over images, in dB (pixel values 0..16)."""
    mse = np.mean((reference - estimate) ** 2, axis=1)
    return np.mean(10 * np.log10(peak**2 / mse))


def show(rows, titles):
    """One row of 8x8 images per entry of ``rows``."""
    fig, axes = plt.subplots(len(rows), len(rows[0]), figsize=(8, 1.1 * len(rows)))
    for r, (images, title) in enumerate(zip(rows, titles, strict=True)):
        for c, image in enumerate(images):
            ax = axes[r, c]
            ax.imshow(
                np.clip(image, 0, 16).reshape(8, 8), cmap="gray_r", vmin=0, vmax=16
            )
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center")
    fig.tight_layout()
    plt.show()


# %%
# Denoising
# ---------
# Corrupt the test images with Gaussian noise of standard deviation 2 (pixel
# values run from 0 to 16). The denoiser learns the density of noisy images
# from four noisy copies of each clean training image, then denoises the
# noisy test images.
noise_std = 2.0
noisy = clean + noise_std * rng.normal(size=clean.shape)

denoiser = ARCSMDenoiser(
    ARCSMDensity(max_epochs=60), noise_std=noise_std, n_copies=4, random_state=0
).fit(X_train)
denoised = denoiser.transform(noisy)
print(
    f"PSNR noisy: {psnr(clean, noisy):.1f} dB, denoised: {psnr(clean, denoised):.1f} dB"
)
show([clean, noisy, denoised], ["clean", "noisy", "denoised"])

# %%
# Inpainting
# ----------
# For inpainting the model is fitted on the clean training images,
# dequantized (pixels plus uniform noise on [0, 1)) so that the integer pixel
# values become a continuous density. Masked pixels are shown as NaN
# (white) in the pictures.
model = ARCSMDensity(max_epochs=60, random_state=0).fit(
    X_train + rng.uniform(size=X_train.shape)
)
observed = clean + rng.uniform(size=clean.shape)

lower_half = np.zeros_like(clean, dtype=bool)
lower_half[:, 32:] = True  # after every observed pixel: exact draws
random_pixels = rng.uniform(size=clean.shape) < 0.25  # MALA

rows, titles = [clean], ["original"]
for name, mask in (("lower half", lower_half), ("random 25%", random_pixels)):
    draw = model.inpaint(observed, mask, n_steps=50, random_state=0) - 0.5
    rmse = np.sqrt(np.mean((draw - clean)[mask] ** 2))
    print(f"{name}: RMSE of one draw on the masked pixels {rmse:.2f}")
    rows += [np.where(mask, np.nan, clean), draw]
    titles += [f"{name} masked", "inpainted"]
show(rows, titles)

# %%
# Each inpainted image is one draw from the model's conditional, so it is a
# plausible completion rather than an average: the lower half of an
# ambiguous digit can be completed as another digit. Averaging several draws
# (``random_state`` = 0, 1, ...) estimates the conditional mean, the best
# guess under squared error.
