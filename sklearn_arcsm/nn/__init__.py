"""Torch layer: context networks, the score head and the AR-CSM module.

Nothing here imports scikit-learn or skorch.
"""

from sklearn_arcsm.nn.arcsm import ARCSM, check_context_network
from sklearn_arcsm.nn.averaging import ExponentialAverage
from sklearn_arcsm.nn.conditional import ConditionalMADE
from sklearn_arcsm.nn.conv import GatedPixelCNN, MaskedConv2d, PixelCNN
from sklearn_arcsm.nn.gaussian_made import GaussianMADE
from sklearn_arcsm.nn.made import MADE, MaskedLinear, made_masks
from sklearn_arcsm.nn.score_head import ConditionalScoreHead
from sklearn_arcsm.nn.spline_head import SplineScoreHead

__all__ = [
    "ARCSM",
    "ConditionalMADE",
    "ConditionalScoreHead",
    "ExponentialAverage",
    "GatedPixelCNN",
    "GaussianMADE",
    "MADE",
    "MaskedConv2d",
    "MaskedLinear",
    "PixelCNN",
    "SplineScoreHead",
    "check_context_network",
    "made_masks",
]
