"""scikit-learn's estimator checks over every public estimator."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import sklearn_arcsm
from tests.conftest import CHEAP_PARAMS


def _public_estimators():
    from sklearn.base import BaseEstimator

    for name in sklearn_arcsm.__all__:
        obj = getattr(sklearn_arcsm, name)
        if isinstance(obj, type) and issubclass(obj, BaseEstimator):
            yield obj(random_state=0, **CHEAP_PARAMS)


# Each expected failure carries its reason; keep this table short.
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@parametrize_with_checks(
    list(_public_estimators()), expected_failed_checks=_expected_failed_checks
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_all_estimators_are_checked():
    assert len(list(_public_estimators())) >= 1
    pytest.importorskip("sklearn")
