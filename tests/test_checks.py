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
        prefix, _, number = exercise.id.rpartition("-")
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
