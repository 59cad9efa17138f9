"""Exercise checks for ``notebooks/00_welcome.ipynb``."""

from __future__ import annotations

from ._core import Exercise, compare_close, expect, expect_close

__all__ = ["EXERCISES"]


def _check_kwh(kwh) -> None:
    expect(callable(kwh), "pass your function itself, e.g. check(\"wel-1\", kwh), not its result.")
    expect_close(kwh(1000, 1), 1.0, "1000 W for 1 hour should be exactly 1 kWh: check the unit conversion.")
    expect_close(kwh(60, 2), 0.12, "a 60 W bulb for 2 hours: energy grows with both power and time.")
    expect_close(kwh(250, 0.5), 0.125, "hours can be fractional; use them as they are.")
    expect_close(kwh(0, 5), 0.0, "zero power should use zero energy.")


def _reference_kwh():
    return lambda watts, hours: watts * hours / 1000


def _probes_kwh(rng):
    return [(float(rng.uniform(0, 3000)), float(rng.uniform(0, 24))) for _ in range(4)]


EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        id="wel-1",
        checker=_check_kwh,
        reference=_reference_kwh,
        probes=_probes_kwh,
        compare=compare_close("right on the check's examples but not on other powers and durations: use the "
                              "arguments, not fixed numbers."),
        wrong=(
            lambda: (lambda watts, hours: watts * hours),  # forgot the /1000
            lambda: (lambda watts, hours: watts / hours / 1000),
            lambda: 0.12,  # a number, not a function
        ),
    ),
)
