"""Exercise checks for ``notebooks/03_smote.ipynb`` (ids ``smote-*``, chapter module :mod:`sustainlab.imbalance`).

- ``smote-1`` (build): the generation step, ``synthesize(X_class, neighbors, rows, cols, steps)``.
- ``smote-2`` (build): the neighbour search, ``neighbors_within_class(X_class, k)``; ``smote-2-hidden`` runs it on
  shapes the visible check never shows.
- ``smote-3`` (build): the leak, fold by fold, ``leak_by_fold(model, sampler, X, y, folds)``.
- ``smote-4`` (measure): SMOTE's cost against class weights, ``smote_cost(fits)``, checked structurally.
- ``smote-5`` (interpret): the strictest threshold that meets a recall goal, ``threshold_for_recall``.

Delegation rule: the notebook imports ``interpolate`` and ``minority_neighbors`` only after these checks, and no
package function answers an exercise in one call. ``interpolate`` alone does not index the neighbours (smote-1);
``minority_neighbors`` may list a point as its own neighbour when the class holds exact duplicates, which smote-2's
probes contain; ``leakage_same_folds`` takes a splitter, not the given list of folds, and scores differently signed
columns (smote-3); ``compare_interleaved`` returns an object, not the asked-for plain figures (smote-4).
"""

from __future__ import annotations

import itertools

import numpy as np

from ._core import CheckFailed, Exercise, Raised, compare_close, expect, expect_close

__all__ = ["EXERCISES"]

# --- smote-1 (build): make synthetic points from neighbour indices ---------------------------------------------------


def _reference_synthesize():
    def synthesize(X_class, neighbors, rows, cols, steps):
        base = X_class[rows]
        return base + steps[:, None] * (X_class[neighbors[rows, cols]] - base)

    return synthesize


def _synthesize_probes(rng):
    probes = []
    for _ in range(3):
        n, d, k = int(rng.integers(4, 15)), int(rng.integers(1, 6)), int(rng.integers(1, 4))
        X = rng.normal(size=(n, d))
        neighbors = np.array([rng.permutation(np.delete(np.arange(n), i))[:k] for i in range(n)])
        m = int(rng.integers(1, 20))
        probes.append((X, neighbors, rng.integers(0, n, size=m), rng.integers(0, k, size=m), rng.uniform(size=m)))
    return probes


def _check_synthesize(answer) -> None:
    expect(callable(answer), 'pass your function itself, e.g. check("smote-1", synthesize), not its result.')
    X = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    neighbors = np.array([[1, 2], [3, 0], [0, 3], [1, 2]])
    rows, cols = np.array([0, 0, 2]), np.array([0, 1, 1])
    result = np.asarray(answer(X, neighbors, rows, cols, np.zeros(3)), dtype=float)
    expect(result.shape == (3, 2), f"3 new points of 2 features should have shape (3, 2), got {result.shape}.")
    expect_close(result, X[rows], "a step of 0 should give the base sample X_class[rows[j]] itself.")
    expect_close(answer(X, neighbors, rows, cols, np.ones(3)), np.array([[4.0, 0.0], [0.0, 2.0], [3.0, 3.0]]),
                 "a step of 1 should give the chosen neighbour: column cols[j] of row rows[j] of neighbors holds "
                 "its row index in X_class (it is not an index into X_class itself).")
    steps = np.array([0.25, 0.5, 0.75])
    expect_close(answer(X, neighbors, rows, cols, steps), _reference_synthesize()(X, neighbors, rows, cols, steps),
                 "the end points are right but not the points between: new point j is steps[j] of the way from its "
                 "base sample to its neighbour (look at how shapes (m,) and (m, n_features) broadcast).")


def _wrong_delegating_interpolate():
    from ..imbalance import interpolate

    return lambda X_class, neighbors, rows, cols, steps: interpolate(X_class[rows], X_class[cols], steps)


# --- smote-2 (build): neighbour search, duplicates included ----------------------------------------------------------


def _reference_neighbors():
    def neighbors_within_class(X_class, k):
        distances = ((X_class[:, None, :] - X_class[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(distances, np.inf)
        return np.argsort(distances, axis=1, kind="stable")[:, :k]

    return neighbors_within_class


def _neighbor_hint(X, k, got) -> str | None:
    """What is wrong with ``got`` as the k nearest other rows of ``X`` (ties between equal distances accepted)."""
    n = len(X)
    if isinstance(got, Raised):
        return got.describe()
    result = np.asarray(got)
    if result.shape != (n, k):
        return f"with {n} points and k={k} the result should have shape ({n}, {k}), got {result.shape}."
    if not np.issubdtype(result.dtype, np.integer):
        return "return row indices (integers), not distances or points."
    if result.min() < 0 or result.max() >= n:
        return "some entries are not row indices of X_class."
    if np.any(result == np.arange(n)[:, None]):
        return ("a row lists its own point: point i is never its own neighbour, not even when another point sits "
                "at the same place (an exact duplicate is a real neighbour at distance 0).")
    distances = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(distances, np.inf)
    got_d = np.take_along_axis(distances, result, axis=1)
    if np.any([len(set(row)) < k for row in result.tolist()]):
        return "a row lists the same neighbour twice."
    want_d = np.sort(distances, axis=1)[:, :k]
    if not np.allclose(np.sort(got_d, axis=1), want_d):
        return f"for k={k} some rows list points that are not among the k nearest other points (Euclidean distance)."
    if not np.allclose(got_d, want_d):
        return "the right neighbours, but order each row nearest first."
    return None


def _neighbor_probes(rng):
    probes = []
    for _ in range(2):
        X = rng.normal(size=(int(rng.integers(12, 30)), int(rng.integers(2, 5))))
        copies = rng.choice(len(X), size=3, replace=False)
        X[copies[1:]] = X[copies[0]]  # exact duplicates: SMOTE data often has them after rounding or copying
        probes.append((X, int(rng.integers(1, 5))))
    return probes


def _compare_neighbors(student, reference, probes) -> str | None:
    for got, (X, k) in zip(student, probes):
        hint = _neighbor_hint(X, k, got)
        if hint:
            return "on other points: " + hint
    return None


def _check_neighbors(answer) -> None:
    expect(callable(answer), 'pass your function itself, e.g. check("smote-2", neighbors_within_class).')
    rng = np.random.RandomState(12)
    X = rng.normal(size=(30, 3))
    X[[5, 17, 23]] = X[9]  # four copies of one point
    for k in (1, 4):
        hint = _neighbor_hint(X, k, answer(X.copy(), k))
        if hint:
            raise CheckFailed(hint)


def _hidden_neighbor_probes(rng):
    """What the visible check never shows: one feature, k = n - 1 (every other point), integer coordinates."""
    n = int(rng.integers(5, 12))
    return [(rng.normal(size=(n, 1)), int(rng.integers(1, 3))),
            (rng.normal(size=(n, 3)), n - 1),
            (rng.integers(-3, 4, size=(int(rng.integers(8, 20)), 2)).astype(float), 2)]


def _compare_hidden_neighbors(student, reference, probes) -> str | None:
    """Say which unseen case broke the answer: one feature, every other point as neighbour, or tied grid points."""
    cases = ("with a single feature column", "with k = n - 1 (every other point is a neighbour)",
             "on integer grid points with many equal distances")
    for got, (X, k), case in zip(student, probes, cases):
        if isinstance(got, Raised) and got.kind == "NotImplementedError":
            return "neighbors_within_class is not implemented yet."
        hint = _neighbor_hint(X, k, got)
        if hint:
            return f"{case}: {hint}"
    return None


def _wrong_delegating_neighbors():
    from ..imbalance import minority_neighbors

    return lambda X_class, k: minority_neighbors(X_class, k)


def _wrong_neighbors_farthest():
    def neighbors_within_class(X_class, k):
        distances = ((X_class[:, None, :] - X_class[None, :, :]) ** 2).sum(-1)
        return np.argsort(-distances, axis=1)[:, :k]

    return neighbors_within_class


# --- smote-3 (build): the leak alone, fold by fold, on given folds ---------------------------------------------------


def _reference_leak():
    def leak_by_fold(model, sampler, X, y, folds):
        from sklearn.base import clone
        from sklearn.metrics import balanced_accuracy_score

        n = len(y)
        X_all, y_all = clone(sampler).fit_resample(X, y)
        X_syn, y_syn = np.asarray(X_all)[n:], np.asarray(y_all)[n:]
        leaks = []
        for train, test in folds:
            leaky = clone(model).fit(np.vstack([X[train], X_syn]), np.concatenate([y[train], y_syn]))
            X_tr, y_tr = clone(sampler).fit_resample(X[train], y[train])
            honest = clone(model).fit(X_tr, y_tr)
            leaks.append(balanced_accuracy_score(y[test], leaky.predict(X[test]))
                         - balanced_accuracy_score(y[test], honest.predict(X[test])))
        return np.array(leaks)

    return leak_by_fold


def _leak_case(seed, n=300, n_folds=4):
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    from ..datasets import make_imbalanced
    from ..imbalance import SMOTE

    X, y = make_imbalanced(n, minority_share=0.12, n_features=6, flip_y=0.05, random_state=seed)
    folds = list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(X, y))
    return KNeighborsClassifier(n_neighbors=1), SMOTE(random_state=seed), X, y, folds


def _leak_probes(rng):
    return [_leak_case(int(rng.integers(0, 10_000)), n=int(rng.integers(150, 300)), n_folds=int(rng.integers(3, 6)))
            for _ in range(2)]


def _check_leak(answer) -> None:
    expect(callable(answer), 'pass your function itself, e.g. check("smote-3", leak_by_fold).')
    model, sampler, X, y, folds = _leak_case(3)
    X_before, y_before = X.copy(), y.copy()
    got = np.asarray(answer(model, sampler, X, y, folds), dtype=float).ravel()
    expect(np.array_equal(X, X_before) and np.array_equal(y, y_before), "your function changed X or y in place.")
    expect(got.shape == (len(folds),), f"return one value per fold: {len(folds)} folds here, got {got.size}.")
    want = _reference_leak()(model, sampler, X, y, folds)
    expect(not np.allclose(got, -want), "the sign is reversed: leaky score minus honest score, per fold.")
    expect(not np.allclose(got, 0.0) or np.allclose(want, 0.0),
           "every difference is 0: do both protocols really differ? Only the leaky one sees synthetic points made "
           "from the test rows.")
    expect_close(got, want, "not the leak on these folds: both models must be scored on the same untouched real "
                            "test rows; the leaky one trains on the fold's real training rows plus every synthetic row "
                            "from resampling all of X, the honest one on a resampling of the training rows only.",
                 atol=1e-9)


def _wrong_delegating_leak():
    from ..imbalance import leakage_same_folds

    def leak_by_fold(model, sampler, X, y, folds):
        scores = leakage_same_folds(model, X, y, sampler=sampler, cv=folds)
        return scores["oversample then split"] - scores["split then oversample"]

    return leak_by_fold


def _wrong_leak_resampled_test_rows():
    def leak_by_fold(model, sampler, X, y, folds):
        from sklearn.base import clone
        from sklearn.metrics import balanced_accuracy_score

        X_all, y_all = clone(sampler).fit_resample(X, y)
        honest = []
        for train, test in folds:
            X_tr, y_tr = clone(sampler).fit_resample(X[train], y[train])
            honest.append(balanced_accuracy_score(y[test], clone(model).fit(X_tr, y_tr).predict(X[test])))
        leaky = [balanced_accuracy_score(y_all[test], clone(model).fit(X_all[train], y_all[train]).predict(X_all[test]))
                 for train, test in folds]
        return np.array(leaky) - np.array(honest)

    return leak_by_fold


# --- smote-4 (measure): what SMOTE costs against class weights --------------------------------------------------------

_COST_CONFIGS = ("class weights", "SMOTE")


def _cost_fits():
    """Two real, small fits that return a shared call counter, so the evidence shows the order they ran in."""
    from sklearn.linear_model import LogisticRegression

    from ..datasets import make_imbalanced
    from ..imbalance import SMOTE

    X, y = make_imbalanced(300, minority_share=0.1, n_features=6, random_state=0)
    calls = itertools.count()

    def weights():
        LogisticRegression(class_weight="balanced").fit(X, y)
        return next(calls)

    def smote():
        LogisticRegression().fit(*SMOTE(random_state=0).fit_resample(X, y))
        return next(calls)

    return {"class weights": weights, "SMOTE": smote}


def _check_cost(answer) -> None:
    from ..evidence import verdict_from_ratios

    expect(callable(answer), 'pass your function itself, e.g. check("smote-4", smote_cost).')
    got = answer(_cost_fits())
    expect(isinstance(got, dict) and {"seconds", "results", "verdict"} <= set(got),
           'return a plain dict with keys "seconds", "results" and "verdict" (not the Comparison object itself).')
    seconds, results = got["seconds"], got["results"]
    for name in _COST_CONFIGS:
        expect(isinstance(seconds, dict) and name in seconds and isinstance(results, dict) and name in results,
               f'"seconds" and "results" need an entry for each configuration, "{name}" included.')
    times = {name: np.asarray(seconds[name], dtype=float).ravel() for name in _COST_CONFIGS}
    runs = {name: [int(r) for r in results[name]] for name in _COST_CONFIGS}
    n = len(times["SMOTE"])
    expect(n >= 5 and all(len(times[c]) == n and len(runs[c]) == n for c in _COST_CONFIGS),
           "measure at least 5 rounds, with one time and one result per configuration and round.")
    expect(all(np.all(np.isfinite(t)) and np.all(t > 0) for t in times.values()),
           "every time must be a positive number of seconds.")
    order = sorted((r, c) for c in _COST_CONFIGS for r in runs[c])
    expect(len({r for r, _ in order}) == len(order), "the results repeat: give what each run returned, in round order.")
    balance = np.cumsum([1 if c == "SMOTE" else -1 for _, c in order])
    expect(np.all(np.abs(balance) <= 1),
           "the runs were not interleaved: all runs of one configuration came before the other's. Alternate them, "
           "round by round, so that drift on a shared machine hits both alike.")
    verdict = verdict_from_ratios(times["SMOTE"] / times["class weights"])
    expect(got["verdict"] == verdict,
           "the verdict does not follow from your own paired ratios (SMOTE / class weights, one per round): "
           "compute it from them, do not type it.")


def _reference_cost():
    def smote_cost(fits):
        from ..evidence import compare_interleaved

        comparison = compare_interleaved(fits, repeats=5, reference="class weights", energy=False, warmup=False)
        return {"seconds": {name: comparison.values(name).tolist() for name in fits},
                "results": {name: comparison.results(name) for name in fits},
                "verdict": comparison.verdict("SMOTE")}

    return smote_cost


def _wrong_delegating_cost():
    from ..evidence import compare_interleaved

    return lambda fits: compare_interleaved(fits, repeats=5, reference="class weights", energy=False)


def _wrong_cost_blocked():
    def smote_cost(fits):
        import time

        seconds, results = {}, {}
        for name, fit in fits.items():  # one configuration after the other: drift lands on one of them
            seconds[name], results[name] = [], []
            for _ in range(5):
                start = time.perf_counter()
                results[name].append(fit())
                seconds[name].append(time.perf_counter() - start)
        return {"seconds": seconds, "results": results, "verdict": "cheaper"}

    return smote_cost


def _wrong_cost_typed_verdict():
    def smote_cost(fits):
        out = _reference_cost()(fits)
        out["verdict"] = "costs more" if out["verdict"] != "costs more" else "cheaper"
        return out

    return smote_cost


# --- smote-5 (interpret): the strictest threshold that meets a recall goal -------------------------------------------


def _reference_threshold():
    def threshold_for_recall(y_val, scores, min_recall):
        positives = scores[y_val == 1]
        for t in np.unique(scores)[::-1]:  # from the strictest threshold down
            if np.mean(positives >= t) >= min_recall:
                return float(t)
        return float(scores.min())

    return threshold_for_recall


def _threshold_probes(rng):
    probes = []
    for _ in range(4):
        n = int(rng.integers(40, 200))
        y = (rng.uniform(size=n) < rng.uniform(0.05, 0.3)).astype(int)
        y[:2] = [0, 1]
        scores = np.round(np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1), 2)  # rounded: ties, as real scores have
        probes.append((y, scores, float(rng.choice([0.5, 0.7, 0.8, 0.9, 1.0]))))
    return probes


def _compare_threshold(student, reference, probes) -> str | None:
    for got, want, (y, scores, goal) in zip(student, reference, probes):
        if isinstance(got, Raised):
            return got.describe()
        try:
            value = float(got)
        except (TypeError, ValueError):
            return "return one threshold (a number)."
        if np.mean(scores[y == 1] >= value) < goal:
            return (f"at your threshold the minority recall is below the goal {goal}: predict the rare class when "
                    "the score is at least the threshold.")
        if not np.isclose(value, want):
            return ("your threshold meets the recall goal, but a stricter one (fewer false alarms) also does: "
                    "return the highest threshold that still reaches it.")
    return None


def _wrong_delegating_threshold_prior():
    # "Delegating" to ThresholdAtPrior's rule: the prior is the cheap default, not the answer to a recall goal.
    return lambda y_val, scores, min_recall: float(np.mean(y_val))


EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        id="smote-1",
        checker=_check_synthesize,
        reference=_reference_synthesize,
        probes=_synthesize_probes,
        compare=compare_close("right on the check's example but not on other classes: use the arrays as given, "
                              "any number of points, features, neighbours and new points."),
        wrong=(
            _wrong_delegating_interpolate,
            lambda: (lambda X, nb, r, c, s: X[r] + s[:, None] * (X[c] - X[r])),  # cols read as row indices
            lambda: (lambda X, nb, r, c, s: X[r] + s * (X[nb[r, c]] - X[r])),  # steps per column
            lambda: (lambda X, nb, r, c, s: (X[r] + X[nb[r, c]]) / 2),  # always the midpoint
        ),
    ),
    Exercise(
        id="smote-2",
        checker=_check_neighbors,
        reference=_reference_neighbors,
        probes=_neighbor_probes,
        compare=_compare_neighbors,
        wrong=(_wrong_delegating_neighbors, _wrong_neighbors_farthest),
    ),
    Exercise(
        id="smote-2-hidden",
        hidden=True,
        answer="neighbors_within_class",
        reference=_reference_neighbors,
        probes=_hidden_neighbor_probes,
        compare=_compare_hidden_neighbors,
        wrong=(
            lambda: (lambda X, k: np.argsort(((X[:, None] - X[None]) ** 2).sum(-1), axis=1)[:, 1:k + 1]),  # drops col 0
            lambda: (lambda X, k: np.tile(np.arange(1, k + 1), (len(X), 1))),
            _wrong_neighbors_farthest,
        ),
    ),
    Exercise(
        id="smote-3",
        checker=_check_leak,
        reference=_reference_leak,
        probes=_leak_probes,
        compare=compare_close("right on the check's folds but not on other data and folds: use the folds, model "
                              "and sampler as given.", atol=1e-9),
        wrong=(_wrong_delegating_leak, _wrong_leak_resampled_test_rows,
               lambda: (lambda m, s, X, y, folds: np.zeros(len(folds)))),
    ),
    Exercise(
        id="smote-4",
        kind="measure",
        checker=_check_cost,
        reference=_reference_cost,
        wrong=(_wrong_delegating_cost, _wrong_cost_blocked, _wrong_cost_typed_verdict),
    ),
    Exercise(
        id="smote-5",
        kind="interpret",
        checker=None,
        reference=_reference_threshold,
        probes=_threshold_probes,
        compare=_compare_threshold,
        wrong=(
            _wrong_delegating_threshold_prior,
            lambda: (lambda y, s, r: 0.5),
            lambda: (lambda y, s, r: float(s.min())),  # meets any goal, with the most false alarms
            lambda: (lambda y, s, r: float(np.quantile(s[y == 1], 1 - r))),  # interpolated quantile: misses ties
        ),
    ),
)
