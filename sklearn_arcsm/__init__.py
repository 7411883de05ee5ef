"""Autoregressive conditional score models for scikit-learn."""

from sklearn_arcsm._denoiser import ARCSMDenoiser
from sklearn_arcsm._density import ARCSMDensity
from sklearn_arcsm._ensemble import ARCSMEnsemble
from sklearn_arcsm._outlier import ARCSMOutlierDetector
from sklearn_arcsm._score_estimator import CSMScoreEstimator

__version__ = "0.5.0"
__all__ = [
    "ARCSMDenoiser",
    "ARCSMDensity",
    "ARCSMEnsemble",
    "ARCSMOutlierDetector",
    "CSMScoreEstimator",
    "__version__",
]
