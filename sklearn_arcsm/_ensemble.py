"""ARCSMEnsemble: a uniform mixture of AR-CSMs over variable orderings."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from scipy.special import logsumexp, softmax
from sklearn.base import BaseEstimator, DensityMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_arcsm._base import image_shape_of
from sklearn_arcsm._density import ARCSMDensity
from sklearn_arcsm._inference import _is_integer_at_least

__all__ = ["ARCSMEnsemble"]

_SEED_MAX = np.iinfo(np.int32).max


class ARCSMEnsemble(DensityMixin, BaseEstimator):
    """Uniform mixture of AR-CSM densities, each in its own variable order.

    An autoregressive model factorizes ``p(x)`` in one order of the
    variables, and how well it fits depends on that order. This estimator
    fits ``n_orderings`` clones of ``estimator``, clone ``k`` to the columns
    permuted by ``orderings_[k]``, and averages their densities::

        p(x) = (1 / K) sum_k p_k(x[orderings_[k]])

    A mixture of normalized densities is a normalized density, so
    ``score_samples`` stays exact (each member's is), and ``sample`` draws
    exactly: a member uniformly at random, then its own draw, put back in
    the columns' order. By Jensen's inequality its log-likelihood is at
    least the members' average; where the members err differently (small
    data, an unlucky order) it is higher than each of theirs.

    Parameters
    ----------
    estimator : ARCSMDensity or None, default=None
        The member model, cloned ``n_orderings`` times; None means
        ``ARCSMDensity()``. Any density estimator with ``fit``,
        ``score_samples`` and ``sample(n_samples, random_state=...)`` works.
        Per-column ``bounds`` of an :class:`ARCSMDensity` are permuted with
        the columns.
    n_orderings : int, default=4
        Number of members ``K``. The cost of ``fit``, ``score_samples`` and
        ``log_density_gradient`` is ``K`` times a member's.
    orderings : {"random", "flips"}, default="random"
        ``"random"``: the identity, then the reversed order, then uniformly
        random permutations, distinct while ``n_features!`` allows.
        ``"flips"``: for images (a member with ``backbone="pixelcnn"`` needs
        its grid kept), the image in raster order, mirrored left to right,
        upside down, and both (at most four); the estimator's
        ``image_shape`` (or a square grayscale image) gives the grid, and
        channels keep their order within each pixel.
    random_state : int, RandomState instance or None, default=None
        Seeds the random orderings, each member's ``random_state`` (if it has
        one) and nothing else.

    Attributes
    ----------
    estimators_ : list of ARCSMDensity
        The fitted members; member ``k`` models ``X[:, orderings_[k]]``.
    orderings_ : ndarray of shape (n_orderings, n_features)
        Column permutation of each member.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features, if ``X`` had string column names.

    See Also
    --------
    ARCSMDensity : One AR-CSM in the columns' own order.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_arcsm import ARCSMDensity, ARCSMEnsemble
    >>> X = np.random.RandomState(0).normal(size=(200, 3))
    >>> ensemble = ARCSMEnsemble(
    ...     ARCSMDensity(max_epochs=5), n_orderings=2, random_state=0
    ... ).fit(X)
    >>> ensemble.orderings_
    array([[0, 1, 2],
           [2, 1, 0]])
    >>> ensemble.sample(4, random_state=0).shape
    (4, 3)
    """

    _parameter_constraints: dict = {
        "estimator": [None, HasMethods(["fit", "score_samples", "sample"])],
        "n_orderings": [Interval(Integral, 1, None, closed="left")],
        "orderings": [StrOptions({"random", "flips"})],
        "random_state": ["random_state"],
    }

    def __init__(
        self, estimator=None, *, n_orderings=4, orderings="random", random_state=None
    ):
        self.estimator = estimator
        self.n_orderings = n_orderings
        self.orderings = orderings
        self.random_state = random_state

    def __sklearn_is_fitted__(self) -> bool:
        # validate_data sets n_features_in_ before the members are fitted: a
        # fit that failed part way must not look fitted.
        return hasattr(self, "estimators_")

    def _orderings(self, estimator, n_features: int, rng) -> np.ndarray:
        """The ``(n_orderings, n_features)`` column permutations."""
        if self.orderings == "flips":
            if self.n_orderings > 4:
                raise ValueError(
                    f"orderings='flips' gives at most 4 orderings; got "
                    f"n_orderings={self.n_orderings}."
                )
            grid = _image_grid(estimator, n_features)
            flips = [grid, grid[:, ::-1], grid[::-1], grid[::-1, ::-1]]
            return np.stack([f.ravel() for f in flips[: self.n_orderings]])
        identity = np.arange(n_features)
        orders = [identity, identity[::-1]]
        seen = {tuple(o) for o in orders}
        while len(orders) < self.n_orderings:
            # Distinct orderings while there are any left to draw (a repeat
            # only adds a differently seeded member of the same order).
            for _ in range(100):
                order = rng.permutation(n_features)
                if tuple(order) not in seen:
                    break
            seen.add(tuple(order))
            orders.append(order)
        return np.stack(orders[: self.n_orderings])

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, groups=None):
        """Fit one member per ordering.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.
        groups : array-like of shape (n_samples,), default=None
            Group label of each row, passed to every member's ``fit`` (an
            :class:`ARCSMDensity` holds out whole groups for early
            stopping); None passes nothing.

        Returns
        -------
        self : ARCSMEnsemble
        """
        X = validate_data(self, X, ensure_min_samples=2, dtype=np.float64)
        rng = check_random_state(self.random_state)
        estimator = ARCSMDensity() if self.estimator is None else self.estimator
        orderings = self._orderings(estimator, X.shape[1], rng)
        members = []
        for order in orderings:
            member = clone(estimator)
            params = member.get_params(deep=False)
            updates = {}
            if "random_state" in params:
                updates["random_state"] = int(rng.randint(_SEED_MAX))
            if params.get("bounds") is not None:
                updates["bounds"] = _permuted_bounds(params["bounds"], order)
            # X[:, order] is a copy: no member sees (or mutates) the user's X.
            member.set_params(**updates)
            fit_params = {} if groups is None else {"groups": groups}
            members.append(member.fit(X[:, order], **fit_params))
        # Set only once every member is fitted: a failed member leaves the
        # ensemble unfitted.
        self.estimators_ = members
        self.orderings_ = orderings
        return self

    def _member_log_densities(self, X) -> np.ndarray:
        """``(n_orderings, n_samples)`` member log-densities."""
        return np.stack(
            [
                est.score_samples(X[:, order])
                for est, order in zip(self.estimators_, self.orderings_, strict=True)
            ]
        )

    def score_samples(self, X):
        """Exact log-density of each sample: log of the members' mean density.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        members = self._member_log_densities(X)
        # -inf where every member is (outside their bounds), without warnings.
        return logsumexp(members, axis=0) - np.log(len(members))

    def score(self, X, y=None):
        """Mean log-likelihood of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        score : float
        """
        return float(np.mean(self.score_samples(X)))

    def log_density_gradient(self, X):
        """Gradient of the mixture's log-density at each sample.

        ``grad log p = sum_k w_k grad log p_k`` with ``w_k`` the members'
        posterior weights ``p_k(x) / sum_j p_j(x)``; each member's gradient
        is put back in the columns' order. Members must provide
        ``log_density_gradient`` (:class:`ARCSMDensity` does).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        gradient : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        weights = softmax(self._member_log_densities(X), axis=0)
        gradient = np.zeros_like(X)
        for w, est, order in zip(
            weights, self.estimators_, self.orderings_, strict=True
        ):
            gradient[:, order] += w[:, None] * est.log_density_gradient(X[:, order])
        return gradient

    def sample(self, n_samples=1, random_state=None, **kwargs):
        """Exact draws: a member uniformly at random, then its draw.

        Parameters
        ----------
        n_samples : int, default=1
        random_state : int, RandomState instance or None, default=None
            Seeds the choice of members and their draws.
        **kwargs
            Passed to every member's ``sample`` (for :class:`ARCSMDensity`:
            ``method``, ``n_steps``, ``step_size``).

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        if not _is_integer_at_least(n_samples, 0):
            raise ValueError(
                f"n_samples must be a non-negative integer; got {n_samples!r}."
            )
        rng = check_random_state(random_state)
        members = rng.randint(len(self.estimators_), size=int(n_samples))
        out = np.empty((int(n_samples), self.n_features_in_))
        for k, (est, order) in enumerate(
            zip(self.estimators_, self.orderings_, strict=True)
        ):
            rows = np.flatnonzero(members == k)
            if len(rows):
                draws = est.sample(
                    len(rows), random_state=int(rng.randint(_SEED_MAX)), **kwargs
                )
                out[np.ix_(rows, order)] = draws
        return out


def _image_grid(estimator, n_features: int) -> np.ndarray:
    """The index of each dimension arranged as ``(height, width, channels)``.

    Rows of ``X`` are ``(height, width, channels)`` images flattened, so
    flipping this array's first two axes and flattening it mirrors the
    pixels and keeps the channels in order within each pixel.
    """
    shape = estimator.get_params(deep=False).get("image_shape")
    channels, height, width = image_shape_of(
        shape, n_features, "orderings='flips' (through its estimator)"
    )
    return np.arange(n_features).reshape(height, width, channels)


def _permuted_bounds(bounds, order: np.ndarray):
    """``bounds=(low, high)`` with per-column arrays permuted like the columns."""
    low, high = bounds

    def permute(b):
        b = np.asarray(b, dtype=np.float64)
        return b if b.ndim == 0 else b[order]

    return (permute(low), permute(high))
