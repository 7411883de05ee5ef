"""Every public estimator documents exactly its constructor parameters."""

import inspect

import pytest
from numpydoc.docscrape import ClassDoc

from sklearn_arcsm import (
    ARCSMDenoiser,
    ARCSMDensity,
    ARCSMEnsemble,
    ARCSMOutlierDetector,
    CSMScoreEstimator,
)


@pytest.mark.parametrize(
    "cls",
    [
        ARCSMDenoiser,
        ARCSMDensity,
        ARCSMEnsemble,
        ARCSMOutlierDetector,
        CSMScoreEstimator,
    ],
)
def test_parameters_section_matches_the_signature(cls):
    documented = [p.name for p in ClassDoc(cls)["Parameters"]]
    assert documented == list(inspect.signature(cls).parameters)
    assert "{parameters}" not in cls.__doc__


@pytest.mark.parametrize("cls", [ARCSMDensity, CSMScoreEstimator])
def test_attributes_section_lists_every_fitted_attribute(cls, moons):
    from tests.conftest import CHEAP_PARAMS

    est = cls(**CHEAP_PARAMS, random_state=0).fit(moons)
    documented = set()
    for attribute in ClassDoc(cls)["Attributes"]:
        documented.update(name.strip() for name in attribute.name.split(","))
    fitted = {n for n in vars(est) if n.endswith("_") and not n.startswith("_")}
    # feature_names_in_ is only set for DataFrames with string column names.
    assert documented - {"feature_names_in_"} == fitted
    assert "{attributes}" not in cls.__doc__
