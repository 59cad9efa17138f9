"""Exercise checks for ``notebooks/03_smote.ipynb`` (module ``sustainlab.imbalance``).

- ``smote-1``: the interpolation step, ``interpolate_rows(X_base, X_neighbor, steps)``.
- ``smote-2``: the neighbour search, ``neighbors_within_class(X_class, k)``.
- ``smote-3``: a leakage-free cross-validation loop, ``cv_scores_without_leakage(model, sampler, X, y, splitter)``.

Each checker compares with the package's reference implementation on fixed data, so a later exercise never depends on
an earlier one being solved.
"""

from __future__ import annotations

import numpy as np

from ._core import Exercise, compare_close, expect, expect_close

__all__ = ["EXERCISES"]

# --- smote-1: interpolation ------------------------------------------------------------------------------------------


def _check_interpolate(answer) -> None:
    from ..imbalance import interpolate

    expect(callable(answer), 'pass your function itself, e.g. check("smote-1", interpolate_rows), not its result.')
    rng = np.random.RandomState(11)
    # Square inputs first: a step vector of shape (n,) silently multiplies the columns instead of the rows there.
    base, end, steps = rng.normal(size=(3, 3)), rng.normal(size=(3, 3)), np.array([0.1, 0.5, 0.9])
    result = np.asarray(answer(base, end, steps), dtype=float)
    expect(result.shape == (3, 3), f"with 3 points of 3 features the result should have shape (3, 3), got "
                                   f"{result.shape}.")
    expect_close(answer(base, end, np.zeros(3)), base, "a step of 0 should give the base point itself.")
    expect_close(answer(base, end, np.ones(3)), end, "a step of 1 should give the neighbour itself.")
    expect_close(result, interpolate(base, end, steps),
                 "each row needs its own step: check that steps[i] multiplies the whole row i of the difference "
                 "(think about the shapes (n,) and (n, n_features) when NumPy broadcasts them).")
    base, end, steps = rng.normal(size=(7, 4)), rng.normal(size=(7, 4)), rng.uniform(size=7)
    expect_close(answer(base, end, steps), interpolate(base, end, steps),
                 "right on a square example but not on 7 points with 4 features: avoid hard-coded sizes.")


def _reference_interpolate():
    def interpolate_rows(X_base, X_neighbor, steps):
        return X_base + steps[:, None] * (X_neighbor - X_base)

    return interpolate_rows


def _probes_interpolate(rng):
    probes = []
    for _ in range(2):
        n, d = int(rng.integers(2, 12)), int(rng.integers(1, 6))
        probes.append((rng.normal(size=(n, d)), rng.normal(size=(n, d)), rng.uniform(size=n)))
    return probes


# --- smote-2: neighbour search ---------------------------------------------------------------------------------------


def _check_neighbors(answer) -> None:
    from ..imbalance import minority_neighbors

    expect(callable(answer), 'pass your function itself, e.g. check("smote-2", neighbors_within_class).')
    rng = np.random.RandomState(12)
    X = rng.normal(size=(30, 3))
    for k in (1, 4):
        result = np.asarray(answer(X, k))
        expect(result.shape == (30, k), f"with 30 points and k={k} the result should have shape (30, {k}), got "
                                        f"{result.shape}.")
        expect(np.issubdtype(result.dtype, np.integer), "return row indices (integers), not distances or points.")
        expect(not np.any(result == np.arange(30)[:, None]),
               "a point must not be its own neighbour: the closest 'neighbour' at distance 0 is the point itself.")
        expected = minority_neighbors(X, k)
        expect(np.array_equal(np.sort(result, axis=1), np.sort(expected, axis=1)),
               f"for k={k} some rows list points that are not among the k nearest ones (Euclidean distance).")
        expect(np.array_equal(result, expected), "the right neighbours, but order each row nearest first.")


def _reference_neighbors():
    def neighbors_within_class(X_class, k):
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k + 1).fit(X_class)
        return nn.kneighbors(X_class, return_distance=False)[:, 1:]

    return neighbors_within_class


def _probes_neighbors(rng):
    return [(rng.normal(size=(int(rng.integers(12, 30)), int(rng.integers(2, 5)))), int(k))
            for k in rng.integers(1, 5, size=2)]


def _wrong_neighbors_with_self():
    def neighbors_within_class(X_class, k):
        from sklearn.neighbors import NearestNeighbors

        return NearestNeighbors(n_neighbors=k).fit(X_class).kneighbors(X_class, return_distance=False)

    return neighbors_within_class


def _wrong_neighbors_farthest():
    def neighbors_within_class(X_class, k):
        distances = ((X_class[:, None, :] - X_class[None, :, :]) ** 2).sum(-1)
        return np.argsort(-distances, axis=1)[:, :k]

    return neighbors_within_class


# --- smote-3: leakage-free cross-validation ---------------------------------------------------------------------------


def _leakage_case():
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    from ..datasets import make_imbalanced
    from ..imbalance import SMOTE

    X, y = make_imbalanced(400, minority_share=0.1, n_features=6, flip_y=0.05, random_state=3)
    splitter = StratifiedKFold(n_splits=4, shuffle=True, random_state=0)
    return KNeighborsClassifier(n_neighbors=3), SMOTE(random_state=0), X, y, splitter


def _honest_scores(model, sampler, X, y, splitter):
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score

    scores = []
    for train, test in splitter.split(X, y):
        X_train, y_train = clone(sampler).fit_resample(X[train], y[train])
        fitted = clone(model).fit(X_train, y_train)
        scores.append(balanced_accuracy_score(y[test], fitted.predict(X[test])))
    return np.array(scores)


def _check_leakage(answer) -> None:
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score

    expect(callable(answer), 'pass your function itself, e.g. check("smote-3", cv_scores_without_leakage).')
    model, sampler, X, y, splitter = _leakage_case()
    X_before, y_before = X.copy(), y.copy()
    scores = np.asarray(answer(model, sampler, X, y, splitter), dtype=float).ravel()
    expect(np.array_equal(X, X_before) and np.array_equal(y, y_before), "your function changed X or y in place.")
    expect(scores.shape == (4,), f"return one score per fold: 4 folds here, got {scores.size} value(s).")
    expected = _honest_scores(model, sampler, X, y, splitter)
    unbalanced = []
    for train, test in splitter.split(X, y):
        fitted = clone(model).fit(X[train], y[train])
        unbalanced.append(balanced_accuracy_score(y[test], fitted.predict(X[test])))
    if np.allclose(scores, unbalanced):
        expect(False, "these are the scores without any rebalancing: resample the training part of each fold.")
    expect(scores.mean() <= expected.mean() + 1e-9,
           "your scores are higher than an honest evaluation gives: does a test point, or a synthetic point made "
           "from one, reach the model before it is scored? Split first, then resample only the training part.")
    expect_close(scores, expected,
                 "close but not the honest scores: score each fold with balanced accuracy on the untouched test part, "
                 "and fit a fresh copy of the model (sklearn.base.clone) on the resampled training part.",
                 atol=1e-9)


def _reference_leakage():
    return _honest_scores


def _wrong_leakage_resample_first():
    def cv_scores_without_leakage(model, sampler, X, y, splitter):
        X_res, y_res = sampler.fit_resample(X, y)
        return _honest_scores(model, _Identity(), X_res, y_res, splitter)

    return cv_scores_without_leakage


def _wrong_leakage_no_resampling():
    def cv_scores_without_leakage(model, sampler, X, y, splitter):
        return _honest_scores(model, _Identity(), X, y, splitter)

    return cv_scores_without_leakage


class _Identity:
    """A sampler that returns its input (for building known-bad answers)."""

    def fit_resample(self, X, y):
        return X, y

    def get_params(self, deep=True):
        return {}


EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        id="smote-1",
        checker=_check_interpolate,
        reference=_reference_interpolate,
        probes=_probes_interpolate,
        compare=compare_close("right on the check's examples but not on other points: one step per row, any number "
                              "of points and features."),
        wrong=(
            lambda: (lambda X_base, X_neighbor, steps: X_base + steps * (X_neighbor - X_base)),  # steps per column
            lambda: (lambda X_base, X_neighbor, steps: X_neighbor + steps[:, None] * (X_neighbor - X_base)),
            lambda: (lambda X_base, X_neighbor, steps: (X_base + X_neighbor) / 2),  # always the midpoint
            lambda: np.zeros((3, 3)),  # a result, not a function
        ),
    ),
    Exercise(
        id="smote-2",
        checker=_check_neighbors,
        reference=_reference_neighbors,
        probes=_probes_neighbors,
        compare=compare_close("right on the check's points but not on other points and k: use X_class and k as "
                              "given."),
        wrong=(_wrong_neighbors_with_self, _wrong_neighbors_farthest),
    ),
    Exercise(
        id="smote-3",
        checker=_check_leakage,
        reference=_reference_leakage,
        wrong=(_wrong_leakage_resample_first, _wrong_leakage_no_resampling),
    ),
)
