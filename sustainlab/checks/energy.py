"""Exercise checks for ``notebooks/05_energy.ipynb`` (chapter module :mod:`sustainlab.energy`)."""

from __future__ import annotations

from ._core import CheckFailed, Exercise, compare_close, expect, expect_close, is_finite_number

__all__ = ["EXERCISES"]


# energy-1: a training run's footprint from its inputs -------------------------------------------------------------

def _reference_footprint_kg(hours, n_gpus, gpu_watts, pue, grid_g_per_kwh):
    return n_gpus * gpu_watts / 1000 * hours * pue * grid_g_per_kwh / 1000


def _check_footprint(footprint_kg) -> None:
    expect(callable(footprint_kg), 'pass your function itself, e.g. check("energy-1", footprint_kg), not its result.')
    result = footprint_kg(1, 1, 1000, 1.0, 1000)
    expect(is_finite_number(result), f"footprint_kg should return one number, got {type(result).__name__}.")
    expect_close(
        result, 1.0,
        "1 GPU at 1000 W for 1 hour is 1 kWh; at 1000 g/kWh that is 1 kg. Check your unit conversions (W → kW, g → kg).",
    )
    expect_close(
        footprint_kg(10, 8, 300, 1.0, 400), 9.6,
        "with PUE 1, 8 GPUs × 300 W × 10 h on a 400 g/kWh grid: energy grows with every device and every hour.",
    )
    expect_close(
        footprint_kg(10, 8, 300, 1.5, 400), 14.4,
        "the PUE multiplies the energy drawn by the computers (cooling, power conversion): is it in your formula?",
    )
    expect_close(footprint_kg(0, 8, 300, 1.5, 400), 0.0, "zero hours should emit nothing.")
    expect_close(
        footprint_kg(24 * 14.8, 10_000, 330, 1.1, 429), _reference_footprint_kg(24 * 14.8, 10_000, 330, 1.1, 429),
        "right for small runs but not for a large one: avoid rounding inside the formula.", rtol=1e-9,
    )


def _probes_footprint(rng):
    return [(float(rng.uniform(0, 500)), int(rng.integers(1, 64)), float(rng.uniform(50, 700)),
             float(rng.uniform(1.0, 2.0)), float(rng.uniform(10, 900))) for _ in range(4)]


# energy-2: where to run a job -------------------------------------------------------------------------------------

def _reference_greenest_region():
    from sustainlab.energy import carbon_intensity

    def greenest_region(job_kwh, pue_by_country):
        return min(pue_by_country, key=lambda c: job_kwh * pue_by_country[c] * carbon_intensity(c))

    return greenest_region


_REGION_CASES = (
    # (job_kwh, {country: PUE}) — the second case is won by the higher-intensity grid thanks to its better PUE.
    (100.0, {"POL": 1.1, "FRA": 1.5, "DEU": 1.2}),
    (50.0, {"SWE": 1.6, "FRA": 1.1}),
    (10.0, {"USA": 1.1, "IND": 1.1, "NOR": 2.0}),
    (1.0, {"DEU": 1.0}),
)


def _check_greenest_region(greenest_region) -> None:
    expect(
        callable(greenest_region),
        'pass your function itself, e.g. check("energy-2", greenest_region), not its result.',
    )
    reference = _reference_greenest_region()
    for job_kwh, options in _REGION_CASES:
        got = greenest_region(job_kwh, dict(options))
        expect(isinstance(got, str), f"return the country code (a string such as 'FRA'), got {type(got).__name__}.")
        expected = reference(job_kwh, options)
        if got != expected:
            if len(options) == 2:
                raise CheckFailed(
                    "a grid with a lower carbon intensity is not always the better choice: the data centre's PUE "
                    "multiplies the energy it draws. Compare the emissions of the whole job in each place."
                )
            raise CheckFailed(
                "pick the country where the job's emissions (energy × PUE × grid intensity) are lowest; use "
                "carbon_intensity(code) for each candidate."
            )


def _probes_region(rng):
    countries = ["FRA", "DEU", "POL", "SWE", "NOR", "USA", "IND"]
    probes = []
    for _ in range(3):
        chosen = rng.choice(countries, size=int(rng.integers(2, 5)), replace=False)
        probes.append((float(rng.uniform(1, 500)), {str(c): float(rng.uniform(1.0, 2.0)) for c in chosen}))
    return probes


def _wrong_ignores_pue():
    from sustainlab.energy import carbon_intensity

    return lambda job_kwh, pue_by_country: min(pue_by_country, key=carbon_intensity)


EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        id="energy-1",
        checker=_check_footprint,
        reference=lambda: _reference_footprint_kg,
        probes=_probes_footprint,
        compare=compare_close("right on the check's examples but not on other runs: use every argument as given.",
                              rtol=1e-9),
        wrong=(
            lambda: (lambda h, n, w, pue, g: n * w / 1000 * h * g / 1000),  # forgot the PUE
            lambda: (lambda h, n, w, pue, g: n * w / 1000 * h * pue * g),  # grams, not kg
            lambda: (lambda h, n, w, pue, g: n * w * h * pue * g / 1000),  # W not converted to kW
            lambda: (lambda h, n, w, pue, g: round(n * w / 1000 * h * pue * g / 1000)),  # rounded
            lambda: 9.6,
        ),
    ),
    Exercise(
        id="energy-2",
        checker=_check_greenest_region,
        reference=_reference_greenest_region,
        probes=_probes_region,
        compare=compare_close("right on the check's cases but not on other jobs and data centres: compare energy × "
                              "PUE × grid intensity for every candidate."),
        wrong=(
            _wrong_ignores_pue,
            lambda: (lambda job_kwh, pue_by_country: min(pue_by_country, key=pue_by_country.get)),  # PUE only
            lambda: (lambda job_kwh, pue_by_country: sorted(pue_by_country)[0]),  # alphabetical
            lambda: "FRA",
        ),
    ),
)
