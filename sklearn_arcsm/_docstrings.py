"""Parameter and attribute documentation shared by the AR-CSM estimators.

Both estimators take the same constructor parameters and set the same fitted
attributes; their docstrings are built from the tables here, with
per-estimator text only where the meaning differs.
"""

from __future__ import annotations

__all__ = [
    "ATTRIBUTE_ORDER",
    "PARAMETER_ORDER",
    "SHARED_ATTRIBUTES",
    "SHARED_PARAMETERS",
    "attributes_section",
    "parameters_section",
]

PARAMETER_ORDER = (
    "backbone",
    "image_shape",
    "bounds",
    "marginal_transform",  # ARCSMDensity only
    "whiten",  # ARCSMDensity only
    "linear_location",  # ARCSMDensity only
    "hidden_layer_sizes",
    "kernel_size",
    "context_size",
    "score_head",
    "head_layer_sizes",
    "n_frequencies",
    "n_knots",
    "objective",
    "noise_levels",
    "n_quadrature",
    "max_epochs",
    "batch_size",
    "lr",
    "learning_rate",
    "ema_decay",
    "device",
    "distributed",
    "mixed_precision",
    "early_stopping",
    "validation_fraction",
    "n_iter_no_change",
    "tol",
    "callbacks",
    "verbose",
    "warm_start",
    "random_state",
)

SHARED_PARAMETERS = {
    "n_quadrature": """\
    n_quadrature : "auto" or int, default="auto"
        How each conditional's 1-D integrals are computed (by
        ``score_samples``, ``sample`` and the validation likelihood).
        ``"auto"``: an adaptive rule
        (:class:`~sklearn_arcsm.adaptive.AdaptiveRule`) that refines each
        conditional separately, on 16 Chebyshev panels whose order doubles
        from 4 to 64 (65 to 1025 score evaluations), until its estimated
        error is below 1e-5 nats; measured error per row on fitted models:
        at most 6e-6 nats (digits, 64-D). With ``score_head="spline"``,
        ``"auto"`` is the knot rule instead
        (:class:`~sklearn_arcsm.knot_quadrature.KnotRule`: closed-form
        energies, 4 to 32 Gauss-Legendre nodes per knot interval, no score
        evaluations), which also trains the likelihood term. An integer
        ``n``: a fixed rule of ``n`` Chebyshev panels of order 8 (``8 n +
        1`` evaluations per conditional). The resolved rule is ``quadrature_``.
""",
    "backbone": """\
    backbone : {"made", "pixelcnn"} or callable, default="made"
        Context network. ``"made"``: masked autoencoder, for vectors.
        ``"pixelcnn"``: a gated PixelCNN (vertical and horizontal stacks, no
        blind spot; :class:`~sklearn_arcsm.nn.GatedPixelCNN`) over images
        flattened in raster order, row by row and, within a pixel, channel by
        channel. A callable: ``backbone(n_features, context_size)`` returns a
        ``torch.nn.Module`` mapping ``(batch, n_features)`` to ``(batch,
        n_features, context_size)`` autoregressively (a module class with
        that signature works); ``fit`` checks it for leaks
        (:func:`~sklearn_arcsm.nn.check_context_network`).
""",
    "bounds": """\
    bounds : None or (low, high), default=None
        Known support of the data: ``low`` and ``high`` are numbers, or
        arrays of shape ``(n_features,)``; ``-inf`` or ``inf`` leaves that
        side of a column unbounded. Each bounded column is mapped onto the
        real line by ``log(x - low) - log(high - x)`` (``log(x - low)`` or
        ``-log(high - x)`` with one bound) before standardizing,
        and densities, scores and samples are mapped back exactly (change of
        variables): the fitted density is normalized on the open box and
        zero outside it (``score_samples`` gives ``-inf`` there; ``fit``
        refuses training data on or beyond a bound), and samples and
        inpaintings stay inside. For dequantized pixels ``v + U[0, 1)`` of
        values ``0..K-1``, use ``(0, K)``. Measured on digits
        (``benchmarks/bench_images.py``): see the user guide's "Bounded
        data". None: the model has full support on R^D.
""",
    "image_shape": """\
    image_shape : tuple of int, default=None
        ``(height, width)`` or ``(channels, height, width)`` of the images,
        for ``backbone="pixelcnn"``; None means square grayscale images. Rows
        of ``X`` are images of shape ``(height, width, channels)`` flattened
        (for an ``(n, C, H, W)`` array: ``images.transpose(0, 2, 3,
        1).reshape(n, -1)``).
""",
    "hidden_layer_sizes": """\
    hidden_layer_sizes : "auto" or tuple of int, default="auto"
        Hidden widths of the context network. For ``"pixelcnn"``, one entry
        per gated layer, all equal (the channels of each stack, a multiple of
        the image's channels). ``"auto"``: for MADE two layers of width
        ``clip(2 * n_features, 128, 1024)``; for PixelCNN ``(32, 32, 32, 32)``.
""",
    "kernel_size": """\
    kernel_size : int, default=5
        Odd convolution width of ``backbone="pixelcnn"`` (its vertical
        convolutions cover ``kernel_size // 2 + 1`` rows); ignored otherwise.
""",
    "context_size": """\
    context_size : int, default=8
        Width of the context vector per dimension.
""",
    "score_head": """\
    score_head : {"auto", "spline", "mlp"}, default="auto"
        The conditional score network shared by all dimensions.
        ``"spline"``: a cubic spline of ``x_d`` on each conditional's
        window, ``n_knots`` knots, coefficients linear in the context
        (:class:`~sklearn_arcsm.nn.SplineScoreHead`), integrated by its
        exact knot rule, which evaluates no network at the quadrature
        nodes: on the inference benchmark (four runs) it scored rows in 0.5
        to 1.1 times a neural spline flow's time and trained an epoch in
        0.12 to 0.37 times the flow's. ``"mlp"``: an MLP of Fourier features of
        ``x_d`` (``head_layer_sizes``, ``n_frequencies``), integrated by the
        adaptive rule, at 10 to 22 times the flow's scoring time and 1.7 to
        3 times its epoch time. The MLP is ahead by 0.5 to 1.4 nats per row
        on three of five real tables (diabetes, breast cancer, image
        patches), on heavy tails and on sharply switching conditionals; the
        spline on the rings, mixture, banana and funnel targets, weather
        and vowels (user guide, "What an AR-CSM is"; ``ARCSMEnsemble`` of
        four spline models beat both on every real table). ``"auto"``:
        ``"spline"`` under maximum likelihood (``objective_ == "nll"``,
        :class:`ARCSMDensity`'s default), ``"mlp"`` under the CSM
        objectives (:class:`CSMScoreEstimator`, ``objective="csm"`` or
        ``"csm+nll"``): the spline's noise conditioning is linear in ``log
        sigma``, too rigid for the larger noise levels they train and
        Langevin sampling walks through. Version 0.1 used ``"mlp"``
        everywhere. The resolved head is ``score_head_``.
""",
    "head_layer_sizes": """\
    head_layer_sizes : tuple of int, default=(32, 32)
        Hidden widths of the conditional score network
        (``score_head="mlp"``).
""",
    "n_frequencies": """\
    n_frequencies : int, default=6
        Fourier frequencies encoding the scalar input of the score network
        (``0.5 * 2**k`` radians per standardized unit, ``k < n_frequencies``).
        The highest frequency sets the quadrature's resolution: with 3,
        smooth fitted conditionals need 129 score evaluations instead of
        257 and scored up to 4.5 times faster, fitting as well or better;
        sharp, multi-modal ones fit worse (rings +0.06 and mixture +0.04
        nats of KL in the quality benchmark; see the user guide).
""",
    "n_knots": """\
    n_knots : int, default=24
        Knots of ``score_head="spline"`` on each window, ends included: the
        spline's resolution is ``(window width) / (n_knots - 1)`` (in window
        coordinates, which the affine layer zooms per conditional). Fewer
        knots give smoother conditionals and cheaper quadrature: 24 fitted
        the synthetic suite and four of five real tables as well as or
        better than 96 (funnel 0.045 against 0.107 nats of KL, mixture 0.055
        against 0.086, both under the zoom-out bound of the time) and scored
        3 to 6 times faster; digits, whose grey levels leave steps, lost 0.9
        nats per image (-99.05 against -98.16).
""",
    "batch_size": """\
    batch_size : "auto" or int, default="auto"
        Mini-batch size. ``"auto"`` takes ``n_train // 16`` rows clipped to
        16..256 (``n_train``: the rows left after the validation split), so
        that every epoch has at least 16 optimizer steps wherever batches can
        stay 16 rows or more; from 4,096 training rows up it is 256. The
        resolved size is ``batch_size_``. A small table with a fixed 256
        gets one or two steps per epoch, too few for the weight average and
        the early-stopping patience, which count steps and epochs: on
        weather, diabetes and breast_cancer (300 to 1,000 training rows)
        ``"auto"`` raised the held-out log-likelihood by 0.33, 1.03 and
        2.75 nats per row over 256 (see the user guide).
""",
    "lr": """\
    lr : "auto" or float, default="auto"
        Adam's initial learning rate. ``"auto"``: for
        :class:`ARCSMDensity`, ``1e-2 * sqrt(batch_size_ / 256)`` (Adam's
        square-root scaling with the batch size: 1e-2 at batches of 256
        rows, 2.5e-3 at 16); for :class:`CSMScoreEstimator`, 1e-3.
""",
    "learning_rate": """\
    learning_rate : {"auto", "constant", "adaptive"}, default="auto"
        Learning-rate schedule. ``"adaptive"``: multiply the rate by 0.3
        after each 6 epochs in a row without an improvement of ``tol`` on
        the validation loss (the training loss without early stopping),
        down to 1e-6, as :class:`~sklearn.neural_network.MLPRegressor`'s
        ``"adaptive"`` does (which divides by 5 after 2 epochs).
        ``"constant"``: keep ``lr``. ``"auto"``: ``"adaptive"`` for
        :class:`ARCSMDensity`, ``"constant"`` for
        :class:`CSMScoreEstimator` (whose held-out CSM is too noisy from
        epoch to epoch to read a plateau from).
""",
    "ema_decay": """\
    ema_decay : "auto", float in [0, 1) or None, default="auto"
        Exponential moving average of the weights, updated after every
        optimizer step with the decay ``min(ema_decay, (1 + t) / (10 + t))``
        at step ``t`` (so the first ~900 steps average roughly their last
        tenth; later about ``1 / (1 - ema_decay)`` recent steps carry it;
        :class:`sklearn_arcsm.nn.ExponentialAverage`). Validation, early
        stopping and the fitted model use the average; the optimizer steps
        the live weights, and continued fits resume both. None keeps the
        last (or, with early stopping, the best) iterate. "auto": 0.99, the
        measured default of both estimators (user guide, "Weight
        averaging").
""",
    "device": """\
    device : str, default="cpu"
        Torch device: "cpu", "cuda", "cuda:N" or "auto" (CUDA when available).
""",
    "mixed_precision": """\
    mixed_precision : {None, "bf16"}, default=None
        ``"bf16"``: train the context network under bfloat16 autocast, for
        GPUs where it dominates the step (large D, the PixelCNN backbone).
        The score head, its input derivative and all quadrature stay in
        float32 during training and float64 at inference: they set the
        accuracy of scores and densities, which bfloat16's 8-bit mantissa
        would dominate. Scoring and sampling are unaffected. On a 2-core
        CPU at D = 64 it changed neither the epoch time nor the held-out
        log-likelihood (to 1e-4 nats).
""",
    "distributed": """\
    distributed : {None, "accelerate"}, default=None
        ``"accelerate"``: data-parallel training across the processes of an
        ``accelerate launch`` or ``torchrun`` launch, through Hugging Face
        Accelerate (``pip install 'sklearn_arcsm[accelerate]'``). Every
        process calls ``fit`` on the same data; the training batches are
        sharded (``batch_size`` stays the global batch, so it must be a
        multiple of the number of processes), gradients are averaged after
        each step, and every process ends with the same fitted,
        single-process estimator. ``device`` gives the device type; each
        process takes the device of its local rank. Without a launch it
        trains in the one process, as with None.
""",
    "validation_fraction": """\
    validation_fraction : float, default=0.1
        Fraction of the data held out for early stopping.
""",
    "n_iter_no_change": """\
    n_iter_no_change : "auto" or int, default="auto"
        Patience of early stopping, in epochs. "auto": 20 for
        :class:`ARCSMDensity` (held-out log-likelihood), 50 for
        :class:`CSMScoreEstimator` (held-out CSM, a noisier criterion).
""",
    "tol": """\
    tol : float, default=1e-4
        Minimum improvement of the validation loss.
""",
    "callbacks": """\
    callbacks : list of skorch callbacks, default=None
        Extra callbacks for the private skorch net (copied before use).
""",
    "verbose": """\
    verbose : int, default=0
        0: silent; 1: skorch's epoch table; 2: also a progress bar.
""",
    "warm_start": """\
    warm_start : bool, default=False
        If True, ``fit`` continues training the fitted model on the new data
        (keeping the standardization, window and optimizer state).
""",
    "random_state": """\
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialization, shuffling, the validation split and
        every noise draw.
""",
}


ATTRIBUTE_ORDER = (
    "n_features_in_",
    "feature_names_in_",
    "module_",
    "net_",
    "loss_curve_",
    "validation_loss_curve_",
    "n_iter_",
    "bounds_",
    "marginal_",  # ARCSMDensity only
    "whitening_",  # ARCSMDensity only
    "linear_location_",  # ARCSMDensity only
    "mean_",  # documented together with scale_
    "noise_levels_",
    "objective_",
    "score_head_",
    "quadrature_",
    "batch_size_",
    "hidden_layer_sizes_",
    "device_",
)

SHARED_ATTRIBUTES = {
    "n_features_in_": """\
    n_features_in_ : int
        Number of features seen during fit.
""",
    "feature_names_in_": """\
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features, if ``X`` had string column names.
""",
    "module_": """\
    module_ : sklearn_arcsm.nn.ARCSM
        The trained torch module (standardized units, float32).
""",
    "net_": """\
    net_ : skorch.NeuralNet
        The private skorch net (its ``history`` has per-epoch details).
""",
    "loss_curve_": """\
    loss_curve_ : list of float
        Training loss per epoch (the objective's per-sample mean).
""",
    "bounds_": """\
    bounds_ : sklearn_arcsm.bounds.BoxBounds or None
        The box of a bounded model (from ``bounds``), None for none. The
        standardization ``mean_``, ``scale_`` and ``module_`` live in its
        mapped coordinates.
""",
    "noise_levels_": """\
    noise_levels_ : ndarray of shape (n_levels,)
        Noise levels used.
""",
    "objective_": """\
    objective_ : str
        Resolved training objective.
""",
    "score_head_": """\
    score_head_ : {"spline", "mlp"}
        The score head the fit used: ``score_head``, with ``"auto"``
        resolved by the objective.
""",
    "quadrature_": """\
    quadrature_ : AdaptiveRule, KnotRule or PanelRule
        The quadrature rule that ``score_samples`` and ``sample`` use,
        resolved from ``n_quadrature`` at fit time (later changes of
        ``n_quadrature`` apply at the next fit).
""",
    "batch_size_": """\
    batch_size_ : int
        The mini-batch size the fit used: ``batch_size``, with ``"auto"``
        resolved for the number of training rows.
""",
    "hidden_layer_sizes_": """\
    hidden_layer_sizes_ : tuple of int or None
        Resolved hidden widths of the context network (channels per gated
        layer for the PixelCNN); None for a backbone of the user's own that
        has no ``hidden_sizes`` attribute.
""",
    "device_": """\
    device_ : str
        Resolved device.
""",
}


# Entries of one estimator only: documented where given, skipped elsewhere.
ESTIMATOR_SPECIFIC = frozenset(
    {
        "whiten",
        "whitening_",
        "marginal_transform",
        "marginal_",
        "linear_location",
        "linear_location_",
    }
)


def _section(title, order, shared, specific):
    order = [n for n in order if n in specific or n not in ESTIMATOR_SPECIFIC]
    missing = set(order) - set(shared) - set(specific)
    if missing:
        raise ValueError(f"no documentation for {title.lower()} {sorted(missing)}")
    body = "".join(specific.get(name, shared.get(name)) for name in order)
    return f"{title}\n    {'-' * len(title)}\n" + body


def parameters_section(**specific: str) -> str:
    """The numpydoc ``Parameters`` section, with estimator-specific entries.

    Parameters
    ----------
    **specific : str
        Full entries (name line and description, indented as in a class
        docstring) for the parameters whose meaning differs per estimator.

    Returns
    -------
    section : str
    """
    return _section("Parameters", PARAMETER_ORDER, SHARED_PARAMETERS, specific)


def attributes_section(**specific: str) -> str:
    """The numpydoc ``Attributes`` section, with estimator-specific entries.

    Parameters
    ----------
    **specific : str
        Full entries for the attributes whose meaning differs per estimator,
        keyed as in ``ATTRIBUTE_ORDER``.

    Returns
    -------
    section : str
    """
    return _section("Attributes", ATTRIBUTE_ORDER, SHARED_ATTRIBUTES, specific)
