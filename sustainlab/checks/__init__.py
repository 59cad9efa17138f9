"""Exercise checks for the notebooks' check cells.

Usage in a notebook::

    from sustainlab.checks import check
    check("wel-1", kwh)        # prints "✔ wel-1 passed" or "✘ wel-1: <hint>"

In grading (``SUSTAINLAB_EVIDENCE_DIR`` set by ``sustainlab grade``) the same call prints nothing and only writes
evidence; the grader decides (see :mod:`sustainlab.checks._core`).

Each chapter declares its exercises in its own file here as a module-level ``EXERCISES`` tuple; the registry below
reads the files that ``sustainlab.chapters.CHAPTERS`` names (``Chapter.checks``: the chapter's module, or its slug
for the welcome chapter), in course order, with no import-time discovery, and rejects duplicate ids.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import import_module
import os
from typing import Any

from ..chapters import CHAPTERS

from ._core import (
    EVIDENCE_ENV,
    FAIL_MARK,
    PASS_MARK,
    SEED_ENV,
    CheckFailed,
    EvidenceError,
    Exercise,
    Raised,
    Verdict,
    collect,
    compare_close,
    expect,
    expect_close,
    failed_line,
    judge,
    passed_line,
    report,
    run_check,
    write_evidence,
)

__all__ = [
    "CHAPTER_CHECK_MODULES",
    "check",
    "report",
    "registry",
    "get_exercise",
    "Exercise",
    "CheckFailed",
    "EvidenceError",
    "Raised",
    "Verdict",
    "collect",
    "judge",
    "compare_close",
    "expect",
    "expect_close",
    "passed_line",
    "failed_line",
    "PASS_MARK",
    "FAIL_MARK",
]

#: The chapter files that declare exercises, in course order: derived from the one chapter table.
CHAPTER_CHECK_MODULES = tuple(chapter.checks for chapter in CHAPTERS)


@lru_cache(maxsize=1)
def registry() -> dict[str, Exercise]:
    """All exercises by id, in course order."""
    exercises: dict[str, Exercise] = {}
    for name in CHAPTER_CHECK_MODULES:
        module = import_module(f"{__name__}.{name}")
        for exercise in module.EXERCISES:
            if exercise.id in exercises:
                raise RuntimeError(f"Exercise id {exercise.id!r} is declared twice (second time in checks/{name}.py).")
            exercises[exercise.id] = exercise
    return exercises


def get_exercise(exercise_id: str) -> Exercise:
    """The exercise with this id; a clear error lists the known ids otherwise."""
    exercises = registry()
    if exercise_id not in exercises:
        known = ", ".join(exercises) or "none"
        raise ValueError(f"Unknown exercise id {exercise_id!r}. Known ids: {known}.")
    return exercises[exercise_id]


def check(exercise_id: str, answer: Any) -> None:
    """Check a learner's ``answer`` to exercise ``exercise_id`` and print the one-line verdict.

    Never raises for a wrong or crashing answer (the verdict line says what went wrong); raises ``ValueError`` only
    for an unknown exercise id, which is a mistake in the notebook rather than in the answer. While grading it only
    writes the evidence (the grader decides, outside this kernel) and prints nothing.
    """
    exercise = get_exercise(exercise_id)
    folder = os.environ.get(EVIDENCE_ENV)
    if folder:
        write_evidence(folder, collect(exercise, answer, int(os.environ.get(SEED_ENV, "0"))))
        return
    passed, hint = run_check(exercise, answer)
    report(exercise_id, passed, hint)
