"""Tests for sustainlab.checks: every registered exercise can be passed and can be failed."""

import pytest

from sustainlab.checks import (
    Exercise,
    check,
    failed_line,
    get_exercise,
    passed_line,
    registry,
)
from sustainlab.checks._core import run_check

EXERCISES = list(registry().values())


def test_registry_is_not_empty_and_ids_are_well_formed():
    assert EXERCISES, "no exercises registered"
    for exercise in EXERCISES:
        prefix, _, number = exercise.id.removesuffix("-hidden").rpartition("-")
        assert prefix and number.isdigit(), f"exercise id {exercise.id!r} should look like '<chapter>-<n>'"


@pytest.mark.parametrize("exercise", EXERCISES, ids=[e.id for e in EXERCISES])
def test_reference_answer_passes(exercise: Exercise):
    """Can a correct answer pass this check (so the check is not impossible)?"""
    passed, hint = run_check(exercise, exercise.reference())
    assert passed, f"reference answer for {exercise.id} fails: {hint}"


@pytest.mark.parametrize("exercise", EXERCISES, ids=[e.id for e in EXERCISES])
def test_every_wrong_answer_fails_with_a_hint(exercise: Exercise):
    """Does the check catch known-wrong answers (so it is not vacuous)?"""
    assert exercise.wrong, f"{exercise.id} declares no known-wrong answers"
    for make_wrong in exercise.wrong:
        passed, hint = run_check(exercise, make_wrong())
        assert not passed, f"a wrong answer passes {exercise.id}"
        assert hint and "\n" not in hint


#: Chapters whose visible exercises follow issue 16's rule (an answer that just calls the package must fail): all but
#: the welcome notebook's one exercise. Exemptions name their reason.
DELEGATION_RULE_CHAPTERS = ("gd", "att", "smote", "fair", "energy", "priv")
DELEGATION_EXEMPT = {"priv-5": "interpret: choose a setting from a table; no sustainlab function makes the choice"}
RULED = [e for e in EXERCISES if e.id.split("-")[0] in DELEGATION_RULE_CHAPTERS and not e.hidden
         and e.id not in DELEGATION_EXEMPT]


@pytest.mark.parametrize("exercise", RULED, ids=[e.id for e in RULED])
def test_an_answer_delegating_to_the_package_fails(exercise: Exercise):
    """Does the exercise declare a wrong answer that just calls sustainlab (named "..._delegating_..."), and fail it?"""
    delegating = [make for make in exercise.wrong if "delegating" in getattr(make, "__name__", "")]
    assert delegating, f"{exercise.id} declares no delegating wrong answer"
    for make in delegating:
        passed, hint = run_check(exercise, make())
        assert not passed and hint, f"{exercise.id} passes an answer that delegates to the package"


def test_check_prints_exactly_one_line(capsys):
    exercise = get_exercise("wel-1")
    check("wel-1", exercise.reference())
    assert capsys.readouterr().out == passed_line("wel-1") + "\n"
    check("wel-1", exercise.wrong[0]())
    out = capsys.readouterr().out
    assert out.startswith("✘ wel-1: ") and out.count("\n") == 1


def test_unimplemented_answer_gets_a_friendly_hint(capsys):
    def kwh(watts, hours):
        raise NotImplementedError()

    check("wel-1", kwh)
    assert capsys.readouterr().out == failed_line("wel-1", "not implemented yet: replace `raise NotImplementedError()` with your code.") + "\n"


def test_crashing_answer_is_reported_not_raised(capsys):
    check("wel-1", lambda watts, hours: 1 / 0)
    assert "your code raised ZeroDivisionError" in capsys.readouterr().out


def test_unknown_exercise_id_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Unknown exercise id 'nope-1'. Known ids: .*wel-1"):
        check("nope-1", None)


# ------------------------------------------------------------------------- evidence split (collect in kernel, judge here)

from sustainlab.checks import EvidenceError, collect, judge  # noqa: E402
from sustainlab.checks._core import decode  # noqa: E402


def _evidence(exercise_id, answer, seed=7):
    import json

    return json.loads(json.dumps(collect(get_exercise(exercise_id), answer, seed)))


def test_judge_passes_reference_evidence_and_rejects_another_seed():
    """Evidence is judged against the reference on the grader's probes: evidence made for other probes fails."""
    exercise = get_exercise("wel-1")
    assert judge(exercise, _evidence("wel-1", exercise.reference(), seed=7), 7).passed
    verdict = judge(exercise, _evidence("wel-1", exercise.reference(), seed=7), 8)
    assert verdict.status == "failed" and "other powers" in verdict.hint


@pytest.mark.parametrize(
    "forge, status",
    [
        (lambda e: {**e, "format": 99}, "error"),
        (lambda e: {**e, "exercise": "gd-1"}, "error"),
        (lambda e: {**e, "calls": e["calls"][:1]}, "error"),  # ends before the check does
        (lambda e: {**e, "calls": [{"result": {"t": "float", "v": 1.0}}] * 5}, "failed"),  # right first, then wrong
        (lambda e: {**e, "calls": [{"result": {"t": "ndarray", "dtype": "object", "shape": [1], "v": [1]}}]}, "error"),
        (lambda e: {**e, "calls": [{"result": {"t": "ndarray", "dtype": "float64", "shape": [3], "v": [1]}}]}, "error"),
        (lambda e: {**e, "probes": []}, "error"),
        (lambda e: {**e, "callable": "yes"}, "error"),
        (lambda e: [], "error"),
    ],
)
def test_judge_never_passes_forged_or_malformed_evidence(forge, status):
    """Forged, truncated, wrong-type or wrong-shape evidence is failed/error with a reason, never passed."""
    good = _evidence("wel-1", get_exercise("wel-1").reference())
    verdict = judge(get_exercise("wel-1"), forge(good), 7)
    assert verdict.status == status and verdict.hint


def test_objects_that_claim_equality_do_not_pass():
    """An answer returning an object whose __eq__ is always True (or a float subclass) earns nothing."""

    class Liar:
        def __eq__(self, other):
            return True

        def __float__(self):
            return 1.0

    passed, hint = run_check(get_exercise("wel-1"), lambda watts, hours: Liar())
    assert not passed and "Liar" in hint


def test_decode_refuses_oversized_and_unknown_values():
    with pytest.raises(EvidenceError):
        decode({"t": "ndarray", "dtype": "float64", "shape": [10**7], "v": []})
    with pytest.raises(EvidenceError):
        decode({"t": "pickle", "v": "gASV"})


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda theta, grad, lr: theta + lr * grad, "uphill"),
        (lambda theta, grad, lr: (_ for _ in ()).throw(NotImplementedError()), "not implemented"),
        (lambda theta, grad, lr: __import__("numpy").array([0.95, -2.4]), "shape"),
        (lambda theta, grad, lr: theta - grad, "learning rate"),
    ],
)
def test_hidden_check_hint_says_what_it_caught(answer, words):
    """gd-1-hidden tells a sign error, an unstarted answer, a hard-coded shape and a missing lr apart."""
    passed, hint = run_check(get_exercise("gd-1-hidden"), answer)
    assert not passed and words in hint
