"""The exercise-check mechanism: an exercise is data (id, checker, known answers), ``check`` runs one.

A check cell in a notebook calls ``check("<id>", answer)``, which prints exactly one deterministic line:
``✔ <id> passed`` or ``✘ <id>: <hint>``. The hint says what to look at, never the answer. Grading compares that line
with the instructor notebook's stored output, so the format here is part of the grading contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = [
    "PASS_MARK",
    "FAIL_MARK",
    "CheckFailed",
    "Exercise",
    "passed_line",
    "failed_line",
    "report",
    "expect",
    "expect_close",
    "run_check",
    "is_finite_number",
]

PASS_MARK = "✔"
FAIL_MARK = "✘"


class CheckFailed(Exception):
    """Raised by a checker with a hint a learner can act on."""


@dataclass(frozen=True)
class Exercise:
    """One graded exercise.

    Parameters
    ----------
    id : str
        ``"<chapter>-<n>"``, e.g. ``"gd-1"``; the same id appears in the check cell's metadata.
    checker : callable
        ``checker(answer)`` returns nothing when the answer is right and raises :class:`CheckFailed` with a hint
        otherwise.
    reference : callable
        Returns a known-good answer. ``tests/test_checks.py`` asserts it passes, so no check is impossible.
    wrong : tuple of callables
        Each returns a known-bad answer. The test asserts each fails, so no check is vacuous.
    """

    id: str
    checker: Callable[[Any], None]
    reference: Callable[[], Any]
    wrong: tuple[Callable[[], Any], ...] = field(default_factory=tuple)


def passed_line(exercise_id: str) -> str:
    """The line a passing check prints (what the instructor notebook stores)."""
    return f"{PASS_MARK} {exercise_id} passed"


def failed_line(exercise_id: str, hint: str) -> str:
    """The line a failing check prints."""
    return f"{FAIL_MARK} {exercise_id}: {hint}"


def report(exercise_id: str, passed: bool, hint: str = "not quite right yet.") -> None:
    """Print the standard one-line verdict. Hidden check cells use it directly."""
    print(passed_line(exercise_id) if passed else failed_line(exercise_id, hint))


def expect(condition: bool, hint: str) -> None:
    """Inside a checker: fail with ``hint`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(hint)


def expect_close(actual, expected, hint: str, *, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Inside a checker: fail with ``hint`` unless ``actual`` is numerically close to ``expected``.

    Works for Python numbers, NumPy arrays and torch tensors; a shape mismatch or a non-numeric answer fails with a
    hint of its own rather than an exception.
    """
    import numpy as np

    try:
        a = _as_numpy(actual)
    except (TypeError, ValueError):
        raise CheckFailed(f"expected a number or an array, got {type(actual).__name__}.") from None
    e = _as_numpy(expected)
    if a.shape != e.shape:
        raise CheckFailed(f"expected a result of shape {e.shape}, got shape {a.shape}.")
    if not np.all(np.isfinite(a)) and np.all(np.isfinite(e)):
        raise CheckFailed("your result contains NaN or inf values.")
    if not np.allclose(a, e, rtol=rtol, atol=atol):
        raise CheckFailed(hint)


def _as_numpy(value):
    import numpy as np

    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=float)
    return array


def run_check(exercise: Exercise, answer: Any) -> tuple[bool, str]:
    """Run one exercise's checker on ``answer``; returns ``(passed, hint)`` and never raises for a wrong answer."""
    try:
        exercise.checker(answer)
    except CheckFailed as failure:
        return False, str(failure)
    except NotImplementedError:
        return False, "not implemented yet: replace `raise NotImplementedError()` with your code."
    except Exception as error:  # a learner's code may fail in any way; report it instead of crashing the cell
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        detail = f": {message}" if message else ""
        return False, f"your code raised {type(error).__name__}{detail}"
    return True, ""


def is_finite_number(value) -> bool:
    """True for a real, finite Python or NumPy scalar (not bool)."""
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(float(value))
