"""Exercise checks for ``notebooks/04_fairness.ipynb`` (ids ``fair-*``).

Each exercise asks for a small function and is checked on fresh data with three groups of unequal size, against the
package's reference implementation in :mod:`sustainlab.fairness`. The exercises are independent: none needs the
learner's answer to another.
"""

from __future__ import annotations

import numpy as np

from ._core import CheckFailed, Exercise, Raised, compare_close, expect, expect_close

__all__ = ["EXERCISES"]


def _cases():
    """Small data sets the learner has not seen: (y_true, y_pred, groups) with unequal group sizes."""
    rng = np.random.default_rng(2024)
    cases = []
    for n, labels, shares in ((60, ["x", "y", "z"], [0.5, 0.3, 0.2]), (41, ["p", "q"], [0.8, 0.2])):
        groups = rng.choice(labels, size=n, p=shares)
        y_true = rng.integers(0, 2, n)
        y_pred = np.where(rng.random(n) < 0.7, y_true, 1 - y_true)
        # Make every group hold both classes so that every rate is defined.
        for label in labels:
            idx = np.flatnonzero(groups == label)
            y_true[idx[:2]] = [0, 1]
        cases.append((y_true, y_pred, groups))
    return cases


def _probe_cases(rng, with_truth: bool):
    probes = []
    for _ in range(2):
        n = int(rng.integers(40, 90))
        groups = rng.choice(["a", "b", "c"], size=n)
        groups[:6] = ["a", "a", "b", "b", "c", "c"]
        y_true = rng.integers(0, 2, n)
        y_true[:6] = [0, 1, 0, 1, 0, 1]  # every group holds both classes, so every rate is defined
        y_pred = np.where(rng.random(n) < 0.7, y_true, 1 - y_true)
        probes.append((y_true, y_pred, groups) if with_truth else (y_pred, groups))
    return probes


def _call(func, *args):
    expect(callable(func), "pass your function itself (without calling it), e.g. check(\"fair-1\", selection_rates).")
    return func(*args)


# --- fair-1: selection rate of every group --------------------------------------------------------------------------


def _reference_selection_rates():
    def selection_rates(y_pred, groups):
        y_pred, groups = np.asarray(y_pred), np.asarray(groups)
        return {g: float(np.mean(y_pred[groups == g] == 1)) for g in np.unique(groups)}

    return selection_rates


def _check_selection_rates(func) -> None:
    for _, y_pred, groups in _cases():
        answer = _call(func, y_pred, groups)
        if hasattr(answer, "to_dict"):
            answer = answer.to_dict()
        expect(isinstance(answer, dict), f"return a dict (or pandas Series) {{group: rate}}, got {type(answer).__name__}.")
        expected = _reference_selection_rates()(y_pred, groups)
        expect(
            set(map(str, answer)) == set(map(str, expected)),
            f"the keys should be the group labels {sorted(expected)}, one entry per group; got {sorted(map(str, answer))}.",
        )
        answer = {str(k): v for k, v in answer.items()}
        for group, rate in expected.items():
            expect_close(
                answer[str(group)], rate,
                f"the rate for group '{group}' is off: divide the number of positive predictions *in that group* by "
                "the size *of that group*.",
            )


def _compare_rates(student, reference, probes):
    for got, want in zip(student, reference):
        if isinstance(got, Raised):
            return got.describe() + " (on data the check had not shown before)"
        if not isinstance(got, dict) or {str(k) for k in got} != {str(k) for k in want}:
            return "on other data, return a dict with one entry per group label present."
        got = {str(k): v for k, v in got.items()}
        for group, rate in want.items():
            try:
                expect_close(got[str(group)], rate, "")
            except CheckFailed:
                return ("right on the check's data but not on other predictions and groups: compute each rate from "
                        "the arguments.")
    return None


# --- fair-2: demographic-parity difference --------------------------------------------------------------------------


def _reference_dp_difference():
    def dp_difference(y_pred, groups):
        rates = _reference_selection_rates()(y_pred, groups)
        return max(rates.values()) - min(rates.values())

    return dp_difference


def _check_dp_difference(func) -> None:
    for _, y_pred, groups in _cases():
        answer = _call(func, y_pred, groups)
        try:
            value = float(answer)
        except (TypeError, ValueError):
            raise CheckFailed(f"return one number, got {type(answer).__name__}.") from None
        expect(value >= 0, "a difference between the largest and the smallest rate can never be negative.")
        expect(value <= 1, "rates lie in [0, 1], so their difference does too.")
        expect_close(
            value, _reference_dp_difference()(y_pred, groups),
            "compute the selection rate of each group, then take the largest minus the smallest (a difference, not "
            "a ratio; over groups, not over samples).",
        )


# --- fair-3: true-positive-rate gap (equal opportunity) -------------------------------------------------------------


def _reference_tpr_gap():
    def tpr_gap(y_true, y_pred, groups):
        y_true, y_pred, groups = map(np.asarray, (y_true, y_pred, groups))
        tprs = [np.mean(y_pred[(groups == g) & (y_true == 1)] == 1) for g in np.unique(groups)]
        return float(max(tprs) - min(tprs))

    return tpr_gap


def _check_tpr_gap(func) -> None:
    for y_true, y_pred, groups in _cases():
        answer = _call(func, y_true, y_pred, groups)
        try:
            value = float(answer)
        except (TypeError, ValueError):
            raise CheckFailed(f"return one number, got {type(answer).__name__}.") from None
        expect(0 <= value <= 1, "a gap between two rates lies between 0 and 1.")
        expect_close(
            value, _reference_tpr_gap()(y_true, y_pred, groups),
            "the true-positive rate of a group only looks at its members whose true label is 1: what share of them "
            "was predicted 1? Then take the largest minus the smallest over groups.",
        )


def _wrong_tpr_gap_uses_fpr():
    def gap(y_true, y_pred, groups):
        y_true, y_pred, groups = map(np.asarray, (y_true, y_pred, groups))
        rates = [np.mean(y_pred[(groups == g) & (y_true == 0)]) for g in np.unique(groups)]
        return float(max(rates) - min(rates))

    return gap


EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        id="fair-1",
        checker=_check_selection_rates,
        reference=_reference_selection_rates,
        probes=lambda rng: _probe_cases(rng, with_truth=False),
        compare=_compare_rates,
        wrong=(
            # the overall rate for everyone
            lambda: (lambda y_pred, groups: {g: float(np.mean(y_pred)) for g in np.unique(groups)}),
            # positives in the group divided by all samples
            lambda: (lambda y_pred, groups: {g: float(np.sum(y_pred[groups == g]) / len(y_pred))
                                             for g in np.unique(groups)}),
            # the share of negative predictions
            lambda: (lambda y_pred, groups: {g: float(np.mean(y_pred[groups == g] == 0)) for g in np.unique(groups)}),
            lambda: 0.5,
        ),
    ),
    Exercise(
        id="fair-2",
        checker=_check_dp_difference,
        reference=_reference_dp_difference,
        probes=lambda rng: _probe_cases(rng, with_truth=False),
        compare=compare_close("right on the check's data but not on other predictions and groups: compute it from "
                              "the arguments."),
        wrong=(
            # the ratio instead of the difference
            lambda: (lambda y_pred, groups: min(_reference_selection_rates()(y_pred, groups).values())
                     / max(_reference_selection_rates()(y_pred, groups).values())),
            # smallest minus largest
            lambda: (lambda y_pred, groups: -_reference_dp_difference()(y_pred, groups)),
            # the largest distance to the overall rate instead of between groups
            lambda: (lambda y_pred, groups: max(abs(r - np.mean(y_pred))
                                                for r in _reference_selection_rates()(y_pred, groups).values())),
        ),
    ),
    Exercise(
        id="fair-3",
        checker=_check_tpr_gap,
        reference=_reference_tpr_gap,
        probes=lambda rng: _probe_cases(rng, with_truth=True),
        compare=compare_close("right on the check's data but not on other labels and groups: compute it from the "
                              "arguments."),
        wrong=(
            _wrong_tpr_gap_uses_fpr,
            # the selection-rate gap (demographic parity) instead
            lambda: (lambda y_true, y_pred, groups: _reference_dp_difference()(y_pred, groups)),
            # accuracy gap
            lambda: (lambda y_true, y_pred, groups: float(np.ptp([np.mean((y_pred == y_true)[groups == g])
                                                                  for g in np.unique(groups)]))),
        ),
    ),
)
