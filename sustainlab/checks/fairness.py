"""Exercise checks for ``notebooks/04_fairness.ipynb`` (ids ``fair-*``, chapter module :mod:`sustainlab.fairness`).

Each exercise is checked on fresh data (groups of unequal size) against this file's reference implementation. The
inputs are chosen where the package's own functions do *not* give the asked-for answer, so an answer that just
delegates to :mod:`sustainlab.fairness` fails:

- fair-1 (build): decisions with more than two outcomes (the package's rates need binary predictions);
- fair-2 (build): several sensitive columns, each judged on its own (the package intersects them);
- fair-3 (build): unknown group labels to leave out and a group with no actual positive to skip (the package refuses
  missing labels, and reports an undefined rate as 0 by default);
- fair-4 (measure): an interval for the *gap* (the package's bootstrap gives one interval per group), reproducible
  from the seed passed in;
- fair-5 (interpret/choose): a threshold meeting a stated goal (no package function chooses one);
- fair-1-hidden: the cases the visible check does not show (integer labels, a one-person group, a group never
  given the favourable outcome).

The exercises are independent: none needs the learner's answer to another.
"""

from __future__ import annotations

import math

import numpy as np

from ._core import Exercise, Raised, expect, expect_close

__all__ = ["EXERCISES"]

_OUTCOMES = ("summons", "bail", "detained")


def _call(func, *args):
    expect(callable(func), "pass your function itself (without calling it), e.g. check(\"fair-1\", selection_rates).")
    return func(*args)


def _as_dict(answer):
    if hasattr(answer, "to_dict"):
        answer = answer.to_dict()
    return {str(k): v for k, v in answer.items()} if isinstance(answer, dict) else None


def _close(got, want, atol=1e-9) -> bool:
    try:
        return bool(np.isclose(float(got), float(want), rtol=1e-6, atol=atol))
    except (TypeError, ValueError):
        return False


# --- fair-1 (build): selection rate of every group, for decisions with several outcomes ------------------------------


def _reference_selection_rates():
    def selection_rates(outcomes, groups, favourable):
        outcomes, groups = np.asarray(outcomes), np.asarray(groups)
        return {g: float(np.mean(outcomes[groups == g] == favourable)) for g in np.unique(groups)}

    return selection_rates


def _outcome_case(rng, n, labels, shares):
    groups = rng.choice(labels, size=n, p=shares)
    groups[: len(labels)] = labels  # every group present
    outcomes = rng.choice(_OUTCOMES, size=n, p=[0.5, 0.3, 0.2])
    return outcomes, groups


def _cases():
    """Data the learner has not seen: (outcomes, groups, favourable) with unequal group sizes."""
    rng = np.random.default_rng(2024)
    return [(*_outcome_case(rng, 60, ["x", "y", "z"], [0.5, 0.3, 0.2]), "summons"),
            (*_outcome_case(rng, 41, ["p", "q"], [0.8, 0.2]), "bail")]


def _check_selection_rates(func) -> None:
    for outcomes, groups, favourable in _cases():
        answer = _as_dict(_call(func, outcomes, groups, favourable))
        expect(answer is not None, "return a dict (or pandas Series) {group: rate}.")
        expected = _reference_selection_rates()(outcomes, groups, favourable)
        expect(set(answer) == {str(g) for g in expected},
               f"the keys should be the group labels {sorted(expected)}, one entry per group; got {sorted(answer)}.")
        for group, rate in expected.items():
            expect_close(answer[str(group)], rate,
                         f"the rate for group '{group}' is off: which rows belong to that group, and what share of "
                         f"*those rows* got the outcome '{favourable}'? (Other outcomes are not favourable.)")


def _fair1_probes(rng):
    probes = []
    for _ in range(2):
        outcomes, groups = _outcome_case(rng, int(rng.integers(40, 90)), ["a", "b", "c"], [0.4, 0.35, 0.25])
        probes.append((outcomes, groups, str(rng.choice(_OUTCOMES))))
    return probes


def _compare_rates(student, reference, probes):
    for got, want in zip(student, reference):
        if isinstance(got, Raised):
            return got.describe() + " (on data the check had not shown before)"
        got = _as_dict(got)
        if got is None or set(got) != {str(k) for k in want}:
            return "on other data, return a dict with one entry per group label present."
        if not all(_close(got[str(g)], r) for g, r in want.items()):
            return ("right on the check's data but not on other decisions and groups: compute each rate from the "
                    "arguments, for the favourable outcome passed in.")
    return None


def _wrong_delegating_rates():
    from sustainlab.fairness import selection_rate

    def selection_rates(outcomes, groups, favourable):
        outcomes, groups = np.asarray(outcomes), np.asarray(groups)
        return {g: selection_rate(outcomes[groups == g], outcomes[groups == g], pos_label=favourable)
                for g in np.unique(groups)}

    return selection_rates


# --- fair-1-hidden: what the visible check does not show -------------------------------------------------------------


def _hidden_rates_probes(rng):
    probes = []
    n = int(rng.integers(30, 60))
    groups = rng.integers(1, 4, size=n)  # integer labels
    groups[:3] = [1, 2, 3]
    probes.append((rng.choice(_OUTCOMES, size=n), groups, "bail"))
    outcomes = rng.choice(_OUTCOMES, size=n)
    lonely = np.array(["big"] * (n - 1) + ["alone"])  # a group of one person
    probes.append((outcomes, lonely, str(outcomes[-1])))
    never = np.array(["u"] * (n // 2) + ["v"] * (n - n // 2))
    outcomes = rng.choice(["summons", "bail"], size=n)
    outcomes[never == "v"] = "bail"  # group v never gets the summons
    probes.append((outcomes, never, "summons"))
    return probes


def _compare_hidden_rates(student, reference, probes) -> str | None:
    what = ("groups labelled by integers (1, 2, 3)", "a group with a single member",
            "a group in which nobody got the favourable outcome (its rate is 0, and it still has an entry)")
    for got, want, caught in zip(student, reference, what):
        if isinstance(got, Raised):
            if got.kind == "NotImplementedError":
                return "selection_rates is not implemented yet."
            return f"selection_rates raised {got.kind} on {caught}."
        got = _as_dict(got)
        if got is None or set(got) != {str(k) for k in want} or not all(_close(got[str(g)], r)
                                                                        for g, r in want.items()):
            return f"selection_rates went wrong on {caught}."
    return None


# --- fair-2 (build): demographic-parity difference over several sensitive columns -----------------------------------


def _reference_dp_difference():
    def dp_difference(y_pred, groups):
        y_pred = np.asarray(y_pred)
        gaps = []
        for column in groups.columns:
            labels = groups[column].to_numpy()
            rates = [np.mean(y_pred[labels == g] == 1) for g in np.unique(labels)]
            gaps.append(max(rates) - min(rates))
        return float(max(gaps))

    return dp_difference


def _fair2_probes(rng):
    import pandas as pd

    probes = []
    for columns in (("colour",), ("colour", "sex"), ("colour", "sex", "age band")):
        n = int(rng.integers(80, 160))
        table = {}
        for k, column in enumerate(columns):
            labels = np.array([f"{column[0]}{j}" for j in range(2 + k)])
            values = rng.choice(labels, size=n)
            values[: len(labels)] = labels
            table[column] = values
        groups = pd.DataFrame(table)
        # The chance of a positive depends on the first two columns (most on the second), so their combinations
        # differ most and the first column alone is not the worst.
        p = 0.3 + 0.2 * (groups.iloc[:, 0] == groups.iloc[0, 0]).to_numpy()
        if len(columns) > 1:
            p = p + 0.35 * (groups.iloc[:, 1] == groups.iloc[0, 1]).to_numpy()
        probes.append(((rng.random(n) < p).astype(int), groups))
    return probes


def _compare_dp(student, reference, probes) -> str | None:
    for got, want, (_, groups) in zip(student, reference, probes):
        if isinstance(got, Raised):
            return got.describe() + " (on data the check had not shown before)"
        try:
            value = float(got)
        except (TypeError, ValueError):
            return f"return one number, got {type(got).__name__}."
        if not 0 <= value <= 1:
            return "a gap between two selection rates lies between 0 and 1 (largest minus smallest)."
        if not _close(value, want):
            if groups.shape[1] == 1:
                return ("with one sensitive column the answer is off: compare the groups' selection rates (a "
                        "difference, largest minus smallest; over groups, not over samples).")
            return (f"with {groups.shape[1]} sensitive columns the answer is off: judge each column on its own and "
                    "report the worst of them, not the gap between combinations of columns.")
    return None


def _wrong_delegating_dp():
    from sustainlab.fairness import demographic_parity_difference

    return lambda y_pred, groups: demographic_parity_difference(y_pred, y_pred, sensitive_features=groups)


def _wrong_dp_first_column():
    return lambda y_pred, groups: _reference_dp_difference()(y_pred, groups[[groups.columns[0]]])


def _wrong_dp_ratio():
    def ratio(y_pred, groups):
        y_pred, labels = np.asarray(y_pred), groups.iloc[:, 0].to_numpy()
        rates = [np.mean(y_pred[labels == g]) for g in np.unique(labels)]
        return float(min(rates) / max(rates))

    return ratio


# --- fair-3 (build): true-positive-rate gap with unknown and undefined groups ---------------------------------------


def _known_tprs(y_true, y_pred, groups):
    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups, dtype=object)
    known = np.array([g is not None for g in groups])
    y_true, y_pred, groups = y_true[known], y_pred[known], groups[known].astype(str)
    return {g: float(np.mean(y_pred[(groups == g) & (y_true == 1)] == 1)) for g in np.unique(groups)
            if np.any((groups == g) & (y_true == 1))}


def _reference_tpr_gap():
    def tpr_gap(y_true, y_pred, groups):
        tprs = _known_tprs(y_true, y_pred, groups).values()
        return float(max(tprs) - min(tprs))

    return tpr_gap


def _fair3_probes(rng):
    probes = []
    for _ in range(3):
        n = int(rng.integers(50, 100))
        groups = rng.choice(np.array(["a", "b", "c", None], dtype=object), size=n, p=[0.35, 0.3, 0.2, 0.15])
        groups[:7] = ["a", "a", "b", "b", "c", "c", None]
        y_true = rng.integers(0, 2, n)
        y_true[:6] = [0, 1, 0, 1, 0, 1]
        y_pred = np.where(rng.random(n) < 0.7, y_true, 1 - y_true)
        # A small group with no actual positive: its TPR is undefined, not 0.
        groups[-4:], y_true[-4:] = "d", 0
        # Unknown people whose predictions would change the gap if they were counted.
        y_true[groups == None], y_pred[groups == None] = 1, 0  # noqa: E711 (elementwise on an object array)
        probes.append((y_true, y_pred, groups))
    return probes


def _compare_tpr(student, reference, probes) -> str | None:
    for got, want in zip(student, reference):
        if isinstance(got, Raised):
            return got.describe() + " (on data with unknown groups and a group without actual positives)"
        try:
            value = float(got)
        except (TypeError, ValueError):
            return f"return one number, got {type(got).__name__}."
        if not _close(value, want):
            return ("the gap is off: which people does a group's TPR look at? Think about people whose group is "
                    "unknown (None), and about a group whose TPR cannot be defined.")
    return None


def _wrong_delegating_tpr():
    from sustainlab.fairness import equal_opportunity_difference

    return lambda y_true, y_pred, groups: equal_opportunity_difference(y_true, y_pred, sensitive_features=groups)


def _wrong_delegating_tpr_filtered():
    from sustainlab.fairness import equal_opportunity_difference

    def gap(y_true, y_pred, groups):
        known = np.array([g is not None for g in groups])
        return equal_opportunity_difference(np.asarray(y_true)[known], np.asarray(y_pred)[known],
                                            sensitive_features=np.asarray(groups)[known].astype(str),
                                            zero_division=0.0)

    return gap


def _wrong_tpr_uses_fpr():
    def gap(y_true, y_pred, groups):
        flipped = 1 - np.asarray(y_true)
        return _reference_tpr_gap()(flipped, y_pred, groups)

    return gap


# --- fair-4 (measure): bootstrap interval for the selection-rate gap -------------------------------------------------


def _reference_gap_interval():
    def gap_interval(y_pred, groups, n_boot, seed):
        y_pred, groups = np.asarray(y_pred), np.asarray(groups)
        rng = np.random.default_rng(seed)
        rows = rng.integers(0, len(y_pred), size=(n_boot, len(y_pred)))
        pred, grp = y_pred[rows], groups[rows]
        rates = np.stack([np.nanmean(np.where(grp == g, pred, np.nan), axis=1) for g in np.unique(groups)])
        gaps = np.nanmax(rates, axis=0) - np.nanmin(rates, axis=0)
        low, high = np.percentile(gaps, [2.5, 97.5])
        return float(low), float(high)

    return gap_interval


def _fair4_probes(rng):
    probes = []
    for labels, shares, rates in ((["a", "b"], [0.6, 0.4], [0.55, 0.4]),
                                  (["a", "b", "c"], [0.5, 0.3, 0.2], [0.5, 0.45, 0.3])):
        n = int(rng.integers(300, 500))
        groups = rng.choice(labels, size=n, p=shares)
        p = np.select([groups == g for g in labels], rates)
        probes.append(((rng.random(n) < p).astype(int), groups, 1000, int(rng.integers(2**31))))
    y_pred, groups, n_boot, seed = probes[0]
    probes += [(y_pred, groups, n_boot, seed), (y_pred, groups, n_boot, seed + 1)]  # reproducible, and seed-driven
    return probes


def _compare_interval(student, reference, probes) -> str | None:
    for got in student:
        if isinstance(got, Raised):
            return got.describe() + " (on data the check had not shown before)"
        try:
            low, high = (float(v) for v in got)
        except (TypeError, ValueError):
            return f"return (low, high): two numbers, got {type(got).__name__}."
        if not low < high:
            return "low must be below high: did every bootstrap round resample the rows (with replacement)?"
    for got, want in zip(student[:2], reference[:2]):
        # Another resampling scheme moves each end by Monte Carlo error, about 2 % of the width at n_boot = 1000.
        tol = 0.15 * (want[1] - want[0]) + 1e-3
        if abs(float(got[0]) - want[0]) > tol or abs(float(got[1]) - want[1]) > tol:
            return (f"your interval ({float(got[0]):.3f}, {float(got[1]):.3f}) is not where a 95 % percentile "
                    "bootstrap of the gap puts it: what does one resample hold, is the gap recomputed on each one "
                    "(rather than built from per-group intervals), and which share of the gaps lies inside?")
    if [float(v) for v in student[2]] != [float(v) for v in student[0]]:
        return "the same seed gave two different intervals: draw every resample from one generator made from the seed passed in."
    if [float(v) for v in student[3]] == [float(v) for v in student[0]]:
        return "another seed gave exactly the same interval: the resamples must come from the seed passed in."
    return None


def _wrong_delegating_interval():
    from sustainlab.fairness import bootstrap_group_metric, selection_rate

    def gap_interval(y_pred, groups, n_boot, seed):
        ci = bootstrap_group_metric(selection_rate, y_pred, y_pred, sensitive_features=groups, n_boot=n_boot,
                                    random_state=seed)
        return float(ci["low"].max() - ci["high"].min()), float(ci["high"].max() - ci["low"].min())

    return gap_interval


def _wrong_interval_one_sd():
    def gap_interval(y_pred, groups, n_boot, seed):
        low, high = _reference_gap_interval()(y_pred, groups, n_boot, seed)
        middle, half = (low + high) / 2, (high - low) / 2
        return middle - half / 1.96, middle + half / 1.96  # a 68 % interval

    return gap_interval


# --- fair-5 (interpret/choose): the best threshold within a parity budget --------------------------------------------


def _balanced_accuracy(y_true, y_pred):
    return float((np.mean(y_pred[y_true == 1] == 1) + np.mean(y_pred[y_true == 0] == 0)) / 2)


def _gap(y_pred, groups):
    rates = [np.mean(y_pred[groups == g]) for g in np.unique(groups)]
    return float(max(rates) - min(rates))


def _reference_threshold():
    def fairest_threshold(scores, y_true, groups, thresholds, max_gap):
        scores, y_true, groups = np.asarray(scores), np.asarray(y_true), np.asarray(groups)
        best, best_acc = None, -math.inf
        for t in sorted(thresholds):
            pred = (scores >= t).astype(int)
            if _gap(pred, groups) <= max_gap:
                acc = _balanced_accuracy(y_true, pred)
                if acc > best_acc + 1e-12:
                    best, best_acc = float(t), acc
        return best

    return fairest_threshold


def _fair5_probes(rng):
    probes = []
    for max_gap in (0.04, 0.08, 0.15, 0.25):
        n = int(rng.integers(600, 1000))
        groups = rng.choice(["a", "b"], size=n, p=[0.7, 0.3])
        y_true = (rng.random(n) < np.where(groups == "a", 0.3, 0.15)).astype(int)
        # Scores separate the classes and run higher in group a, so the accurate thresholds are the unequal ones.
        scores = 1 / (1 + np.exp(-(1.5 * y_true + 0.3 * (groups == "a") + rng.normal(0, 1, n) - 1)))
        thresholds = [round(float(t), 2) for t in np.linspace(0.05, 0.95, 19)]
        probes.append((scores, y_true, groups, thresholds, max_gap))
    probes.append((*probes[0][:3], [0.5], 0.0))  # a lone threshold that cannot meet exact parity
    return probes


def _compare_threshold(student, reference, probes) -> str | None:
    for got, want, (_, _, _, thresholds, max_gap) in zip(student, reference, probes):
        if isinstance(got, Raised):
            return got.describe() + " (on data the check had not shown before)"
        if want is None:
            if got is not None:
                return "when no candidate threshold keeps the gap within max_gap, return None."
            continue
        if got is None:
            return f"some candidate threshold keeps the gap within {max_gap}: return it, not None."
        if not _close(got, want, atol=1e-9):
            return (f"with max_gap = {max_gap} you chose {got}: among the candidates whose selection-rate gap is "
                    "within the budget, is yours the one that predicts both classes best (balanced accuracy)?")
    return None


def _wrong_threshold_smallest_gap():
    def choice(scores, y_true, groups, thresholds, max_gap):
        scores, groups = np.asarray(scores), np.asarray(groups)
        return float(min(sorted(thresholds), key=lambda t: _gap((scores >= t).astype(int), groups)))

    return choice


def _wrong_threshold_ignores_gap():
    return lambda s, y, g, ts, m: _reference_threshold()(s, y, g, ts, math.inf)


def _wrong_threshold_plain_accuracy():
    def choice(scores, y_true, groups, thresholds, max_gap):
        scores, y_true, groups = np.asarray(scores), np.asarray(y_true), np.asarray(groups)
        ok = [t for t in sorted(thresholds) if _gap((scores >= t).astype(int), groups) <= max_gap]
        return max(ok, key=lambda t: np.mean((scores >= t) == y_true)) if ok else None

    return choice


def _wrong_delegating_threshold():
    from sustainlab.fairness import demographic_parity_difference

    def choice(scores, y_true, groups, thresholds, max_gap):
        return float(min(sorted(thresholds), key=lambda t: demographic_parity_difference(
            y_true, (np.asarray(scores) >= t).astype(int), sensitive_features=groups)))

    return choice


EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        id="fair-1",
        checker=_check_selection_rates,
        reference=_reference_selection_rates,
        probes=_fair1_probes,
        compare=_compare_rates,
        wrong=(
            _wrong_delegating_rates,
            # the overall rate for everyone
            lambda: (lambda o, g, f: {k: float(np.mean(np.asarray(o) == f)) for k in np.unique(g)}),
            # favourable outcomes in the group divided by all samples
            lambda: (lambda o, g, f: {k: float(np.sum(np.asarray(o)[np.asarray(g) == k] == f) / len(o))
                                      for k in np.unique(g)}),
            # "anything but the first outcome" is favourable
            lambda: (lambda o, g, f: {k: float(np.mean(np.asarray(o)[np.asarray(g) == k] != "detained"))
                                      for k in np.unique(g)}),
            lambda: 0.5,
        ),
    ),
    Exercise(
        id="fair-1-hidden",
        hidden=True,
        answer="selection_rates",
        reference=_reference_selection_rates,
        probes=_hidden_rates_probes,
        compare=_compare_hidden_rates,
        wrong=(
            # string labels only: integer groups lose their keys
            lambda: (lambda o, g, f: {str(k): float(np.mean(np.asarray(o)[np.asarray(g) == k] == f))
                                      for k in np.unique(g) if isinstance(k, str)}),
            # drops groups with fewer than two members
            lambda: (lambda o, g, f: {k: float(np.mean(np.asarray(o)[np.asarray(g) == k] == f))
                                      for k in np.unique(g) if np.sum(np.asarray(g) == k) > 1}),
            # only lists groups that got the favourable outcome
            lambda: (lambda o, g, f: {k: float(np.mean(np.asarray(o)[np.asarray(g) == k] == f))
                                      for k in np.unique(np.asarray(g)[np.asarray(o) == f])}),
        ),
    ),
    Exercise(
        id="fair-2",
        reference=_reference_dp_difference,
        probes=_fair2_probes,
        compare=_compare_dp,
        wrong=(
            _wrong_delegating_dp,
            _wrong_dp_first_column,
            _wrong_dp_ratio,
            lambda: (lambda y_pred, groups: 0.0),
        ),
    ),
    Exercise(
        id="fair-3",
        reference=_reference_tpr_gap,
        probes=_fair3_probes,
        compare=_compare_tpr,
        wrong=(
            _wrong_delegating_tpr,
            _wrong_delegating_tpr_filtered,
            _wrong_tpr_uses_fpr,
            # unknown people counted as a group of their own
            lambda: (lambda y, p, g: _reference_tpr_gap()(y, p, np.array([str(x) for x in g], dtype=object))),
        ),
    ),
    Exercise(
        id="fair-4",
        kind="measure",
        reference=_reference_gap_interval,
        probes=_fair4_probes,
        compare=_compare_interval,
        wrong=(
            _wrong_delegating_interval,
            _wrong_interval_one_sd,
            # ignores the seed: a fixed generator
            lambda: (lambda y, g, b, s: _reference_gap_interval()(y, g, b, 0)),
            # the point estimate twice
            lambda: (lambda y, g, b, s: (_gap(np.asarray(y), np.asarray(g)),) * 2),
        ),
    ),
    Exercise(
        id="fair-5",
        kind="interpret",
        reference=_reference_threshold,
        probes=_fair5_probes,
        compare=_compare_threshold,
        wrong=(
            _wrong_delegating_threshold,
            _wrong_threshold_smallest_gap,
            _wrong_threshold_ignores_gap,
            _wrong_threshold_plain_accuracy,
        ),
    ),
)
