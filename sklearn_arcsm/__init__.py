"""Autoregressive conditional score models for scikit-learn."""

from sklearn_arcsm._density import ARCSMDensity

__version__ = "0.1.0"
__all__ = ["ARCSMDensity", "__version__"]
