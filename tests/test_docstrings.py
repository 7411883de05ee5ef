"""Every public estimator documents exactly its constructor parameters."""

import inspect

import pytest
from numpydoc.docscrape import ClassDoc

from sklearn_arcsm import ARCSMDensity, CSMScoreEstimator


@pytest.mark.parametrize("cls", [ARCSMDensity, CSMScoreEstimator])
def test_parameters_section_matches_the_signature(cls):
    documented = [p.name for p in ClassDoc(cls)["Parameters"]]
    assert documented == list(inspect.signature(cls).parameters)
    assert "{parameters}" not in cls.__doc__
