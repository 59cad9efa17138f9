"""Exercise checks for ``notebooks/05_energy.ipynb`` (ids ``energy-*``, chapter module :mod:`sustainlab.energy`).

- ``energy-1`` (build): ``footprint_kg(phases, n_gpus, pue, grid_g_per_kwh)``, a run of several phases of different
  power, in kg CO₂e;
- ``energy-1-hidden``: what the visible check does not show (phases as a NumPy array, no device at all, fractions
  of an hour, a very large run);
- ``energy-2`` (interpret): ``greenest_region(job_kwh, pue_by_country)``, where a job emits least;
- ``energy-3`` (interpret): ``greenest_slot(intensity, hours)``, the region and start hour at which a job of
  ``hours`` consecutive hours emits least, on an hourly table;
- ``energy-4`` (measure): ``per_1000_predictions(models, repeats, meter)``, energy per 1,000 predictions of two
  models in interleaved rounds, paired per round, with the chapter's verdict.

**No delegation.** While energy-1's checker calls the learner's function, :func:`sustainlab.energy.estimate_footprint`
(which computes one phase, and through which ``PublishedEstimate.recompute`` and ``reproduce_published`` go) is
unavailable (:func:`._core.unavailable`). The other exercises are checked where the package does not apply:
energy-2 on data centres whose PUE reverses the ranking of their grids (``carbon_intensity_table`` ranks grids
only), energy-3 on hourly tables where the yearly average (``carbon_intensity``) picks the wrong region, energy-4
with a scripted meter whose joules the answer must normalise and pair (``compare_interleaved`` alone returns raw
figures of its own). Each exercise's ``wrong`` tuple holds such a delegating answer:
``tests/test_checks.py`` asserts that it fails, ``tests/test_energy.py`` that energy-1's would pass but for the block.

The exercises are independent: none needs the learner's answer to another.
"""

from __future__ import annotations

import math

import numpy as np

from ._core import (CheckFailed, Exercise, Raised, compare_close, expect, expect_close, expect_function,
                    expect_paired_verdict, is_finite_number)
from ._core import unavailable as _unavailable

__all__ = ["EXERCISES"]


# energy-1: a training run's footprint from its phases ---------------------------------------------------------------


def _reference_footprint():
    def footprint_kg(phases, n_gpus, pue, grid_g_per_kwh):
        watt_hours_per_gpu = sum(hours * watts for hours, watts in phases)
        return watt_hours_per_gpu / 1000 * n_gpus * pue * grid_g_per_kwh / 1000

    return footprint_kg


def _check_footprint(footprint_kg) -> None:
    from .. import energy

    expect_function(footprint_kg, "energy-1", "footprint_kg")
    with _unavailable(energy.estimate_footprint):
        _check_footprint_values(footprint_kg)


def _check_footprint_values(footprint_kg) -> None:
    reference = _reference_footprint()
    result = footprint_kg([(1, 1000)], 1, 1.0, 1000)
    expect(is_finite_number(result), f"footprint_kg should return one number, got {type(result).__name__}.")
    expect_close(result, 1.0, "one GPU at a kilowatt for an hour, on a grid of 1000 g per kWh, emits one kilogram: "
                              "check your unit conversions (W to kW, g to kg).")
    expect_close(footprint_kg([(10, 300)], 8, 1.0, 400), 9.6,
                 "with a PUE of 1, emissions must grow with every device and every hour.")
    expect_close(footprint_kg([(10, 300)], 8, 1.5, 400), 14.4,
                 "a PUE of 1.5 should change the result: where does the data centre's overhead come in?")
    phases = [(0.5, 100), (10, 300), (2, 150)]
    expect_close(footprint_kg(phases, 8, 1.0, 400), reference(phases, 8, 1.0, 400),
                 "with several phases, every phase counts, for its own duration at its own power.")
    expect_close(footprint_kg([], 8, 1.5, 400), 0.0, "a run with no phases emits nothing.")
    expect_close(footprint_kg([(0, 300)], 8, 1.5, 400), 0.0, "a phase of zero hours emits nothing.")
    gpt3 = [(24 * 14.8, 330)]
    expect_close(footprint_kg(gpt3, 10_000, 1.1, 429), reference(gpt3, 10_000, 1.1, 429),
                 "right for small runs but not for a large one: avoid rounding inside the formula.", rtol=1e-9)


def _probes_footprint(rng):
    probes = []
    for _ in range(4):
        phases = [(float(rng.uniform(0, 200)), float(rng.uniform(50, 700))) for _ in range(int(rng.integers(1, 5)))]
        probes.append((phases, int(rng.integers(1, 64)), float(rng.uniform(1.0, 2.0)), float(rng.uniform(10, 900))))
    return probes


def _wrong_delegating_footprint():
    from .. import energy

    def footprint_kg(phases, n_gpus, pue, grid_g_per_kwh):  # one package call per phase
        return sum(energy.estimate_footprint(hours=h, n_devices=n_gpus, device_power_w=w, pue=pue,
                                             carbon_intensity_kg_per_kwh=grid_g_per_kwh / 1000).emissions_kg
                   for h, w in phases)

    return footprint_kg


def _wrong_footprint_mean_power():
    def footprint_kg(phases, n_gpus, pue, grid_g_per_kwh):  # average power × total time: long phases under-weighted
        if not phases:
            return 0.0
        mean_watts = sum(w for _, w in phases) / len(phases)
        total_hours = sum(h for h, _ in phases)
        return mean_watts * total_hours / 1000 * n_gpus * pue * grid_g_per_kwh / 1000

    return footprint_kg


def _wrong_footprint_first_phase():
    def footprint_kg(phases, n_gpus, pue, grid_g_per_kwh):
        if not phases:
            return 0.0
        hours, watts = phases[0]
        return hours * watts / 1000 * n_gpus * pue * grid_g_per_kwh / 1000

    return footprint_kg


# energy-1-hidden: what the visible check does not show --------------------------------------------------------------

#: What each hidden probe tries, in the order :func:`_probes_footprint_hidden` returns them.
_HIDDEN_FOOTPRINT_CASES = (
    "phases given as a NumPy array of (hours, watts) rows",
    "a run on zero GPUs",
    "phases lasting fractions of an hour",
    "a very large run",
    "phases given as a tuple, the GPU count as a NumPy integer",
)


def _probes_footprint_hidden(rng):
    def phases(k, low=0.0, high=100.0):
        return [(float(rng.uniform(low, high)), float(rng.uniform(50, 700))) for _ in range(k)]

    return [
        (np.array(phases(int(rng.integers(2, 5)))), int(rng.integers(1, 64)), float(rng.uniform(1.0, 2.0)),
         float(rng.uniform(10, 900))),
        (phases(3), 0, float(rng.uniform(1.0, 2.0)), float(rng.uniform(10, 900))),
        ([(float(rng.uniform(0.05, 0.95)), float(rng.uniform(50, 700))) for _ in range(3)],
         int(rng.integers(1, 64)), float(rng.uniform(1.0, 2.0)), float(rng.uniform(10, 900))),
        (phases(2, 1e5, 1e6), int(rng.integers(10_000, 50_000)), float(rng.uniform(1.0, 2.0)),
         float(rng.uniform(10, 900))),
        (tuple(phases(3)), np.int64(rng.integers(1, 64)), float(rng.uniform(1.0, 2.0)), float(rng.uniform(10, 900))),
    ]


def _compare_footprint_hidden(student, reference, probes) -> str | None:
    """Say what went wrong on the first probe that fails: not started, a crash, zero devices, truncated hours, …"""
    for got, want, args, case in zip(student, reference, probes, _HIDDEN_FOOTPRINT_CASES):
        phases, n_gpus, pue, grid = args
        if isinstance(got, Raised):
            if got.kind == "NotImplementedError":
                return "footprint_kg is not implemented yet."
            return f"footprint_kg raised {got.kind} for {case}: it must accept any sequence of (hours, watts) pairs."
        if not is_finite_number(got):
            return f"for {case} footprint_kg returned {type(got).__name__}, not one number."
        got = float(got)
        if case == "a run on zero GPUs" and got != 0:
            return "on zero GPUs nothing runs, so nothing is emitted: does your function count at least one device?"
        truncated = sum(math.floor(h) * w for h, w in phases) / 1000 * n_gpus * pue * grid / 1000
        if not math.isclose(truncated, float(want), rel_tol=1e-9) and math.isclose(got, truncated, rel_tol=1e-9):
            return f"for {case} the fractions of an hour were dropped: keep the hours as they are."
        if not math.isclose(got, float(want), rel_tol=1e-9, abs_tol=1e-12):
            return (f"footprint_kg is wrong for {case}, which the visible check does not show: an answer tailored "
                    f"to the visible check's numbers?")
    return None


def _wrong_footprint_tailored():
    """Answers the visible check's cases from a table, and nothing else correctly."""
    known = {((1, 1000),): 1.0, ((10, 300),): 9.6}

    def footprint_kg(phases, n_gpus, pue, grid_g_per_kwh):
        if len(phases) == 0 or all(h == 0 for h, _ in phases):
            return 0.0
        value = known.get(tuple(tuple(p) for p in phases))
        if value is not None:
            return value * pue
        return _reference_footprint()(phases, n_gpus, pue, grid_g_per_kwh) if n_gpus in (8, 10_000) else 1.0

    return footprint_kg


def _wrong_footprint_truthiness():
    def footprint_kg(phases, n_gpus, pue, grid_g_per_kwh):  # `if not phases` is ambiguous for an array
        if not phases:
            return 0.0
        return sum(h * w for h, w in phases) / 1000 * n_gpus * pue * grid_g_per_kwh / 1000

    return footprint_kg


def _wrong_footprint_whole_hours():
    def footprint_kg(phases, n_gpus, pue, grid_g_per_kwh):
        return sum(int(h) * w for h, w in phases) / 1000 * n_gpus * pue * grid_g_per_kwh / 1000

    return footprint_kg


def _wrong_footprint_at_least_one_gpu():
    def footprint_kg(phases, n_gpus, pue, grid_g_per_kwh):
        return sum(h * w for h, w in phases) / 1000 * max(n_gpus, 1) * pue * grid_g_per_kwh / 1000

    return footprint_kg


# energy-2: where to run a job ---------------------------------------------------------------------------------------


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
    expect_function(greenest_region, "energy-2", "greenest_region")
    reference = _reference_greenest_region()
    for job_kwh, options in _REGION_CASES:
        got = greenest_region(job_kwh, dict(options))
        expect(isinstance(got, str), f"return the country code (a string such as 'FRA'), got {type(got).__name__}.")
        expected = reference(job_kwh, options)
        if got != expected:
            if len(options) == 2:
                raise CheckFailed(
                    "the cleanest grid did not win here: the data centres' overheads (their PUE) differ. Compare "
                    "what the whole job emits in each place."
                )
            raise CheckFailed("pick the country where the whole job emits least; look each candidate grid up with "
                              "carbon_intensity(code).")


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


def _wrong_delegating_greenest_grid():
    from .. import energy

    # The package's table ranks grids, cleanest first: the data centres' PUE never enters.
    return lambda job_kwh, pue_by_country: str(
        energy.carbon_intensity_table(list(pue_by_country))["country_iso_code"].iloc[0])


# energy-4: energy per 1,000 predictions, measured in interleaved rounds ---------------------------------------------

#: The check's scripted experiments: each model's predictions per run and the joules its runs cost (base × drift).
_METER_SCENARIOS = (
    # The student makes four times as many predictions per run: dearer per run, cheaper per prediction.
    ({"teacher": (1000, 2.0), "student": (4000, 3.0)}, 5),
    # Same model twice: only the drift of the machine separates them.
    ({"fp32": (500, 1.0), "int8": (500, 1.0)}, 6),
    ({"big": (250, 4.0), "small": (2000, 5.0)}, 3),
)
# Each metered run costs a little more than the one before, so what the answer returns shows the order of the runs.
# Not a round figure: a figure scaled by the wrong prediction count must not land on another run's figure.
_DRIFT = 0.0123


def _scripted_models(scenario):
    """Workloads that return their prediction count, and a meter whose joules reveal which call of it they came from."""
    log: list[str] = []

    def workload(name, predictions):
        def run():
            log.append(name)
            return predictions

        return run

    models = {name: workload(name, n) for name, (n, _) in scenario.items()}
    calls = [0]

    def meter(run):
        before = len(log)
        result = run()
        if len(log) != before + 1:
            raise ValueError("meter(run) must be given one of the models' functions, to run it once.")
        calls[0] += 1
        return scenario[log[-1]][1] * (1 + _DRIFT * calls[0]), result

    return models, meter


def _meter_call_index(per_1000: float, predictions: int, base: float) -> float:
    """Which call of the scripted meter a figure of J per 1,000 predictions came from (an integer if it did)."""
    return (per_1000 * predictions / 1000 / base - 1) / _DRIFT


def _check_per_1000(per_1000_predictions) -> None:
    expect_function(per_1000_predictions, "energy-4", "per_1000_predictions")
    for scenario, repeats in _METER_SCENARIOS:
        names = list(scenario)
        models, meter = _scripted_models(scenario)
        got = per_1000_predictions(models, repeats, meter)
        expect(isinstance(got, dict), f"return a dict with keys 'per_1000', 'ratios' and 'verdict', got "
                                      f"{type(got).__name__}.")
        missing = {"per_1000", "ratios", "verdict"} - set(got)
        expect(not missing, f"the dict lacks {sorted(missing)}.")
        table = got["per_1000"]
        expect(isinstance(table, dict) and set(table) == set(names),
               f"'per_1000' must map each model's name ({', '.join(names)}) to its list of runs.")
        expect(all(hasattr(table[n], "__len__") and len(table[n]) == repeats for n in names),
               f"with repeats = {repeats}, each model must have {repeats} figures in 'per_1000'.")
        try:
            figures = np.array([[float(table[n][r]) for n in names] for r in range(repeats)])
        except (TypeError, ValueError):
            raise CheckFailed("'per_1000' must hold one number per run.") from None
        calls = np.array([[_meter_call_index(figures[r, i], scenario[n][0], scenario[n][1])
                           for i, n in enumerate(names)] for r in range(repeats)])
        expect(bool(np.all(np.isfinite(calls)) and np.allclose(calls, np.round(calls), atol=1e-6)
                    and np.all(np.round(calls) >= 1)),
               "the 'per_1000' figures are not the meter's joules per 1,000 predictions: measure every run with "
               "meter, and scale each run's energy by the predictions that run made.")
        order = np.round(calls)
        expect(len(set(order.ravel())) == order.size, "each figure must come from its own metered run.")
        expect(all(order[r].max() < order[r + 1].min() for r in range(repeats - 1)),
               "the runs were not interleaved: each model must run once in a round before any runs in the next "
               "round (a machine that drifts would otherwise favour one of them).")
        expect_paired_verdict(got, figures, repeats, item="model", what="figure per 1,000 predictions")


def _reference_per_1000():
    from ..evidence import compare_interleaved, verdict_from_ratios

    def per_1000_predictions(models, repeats, meter):
        names = list(models)
        metered = {name: (lambda run=run: meter(run)) for name, run in models.items()}
        comparison = compare_interleaved(metered, repeats=repeats, energy=False, warmup=False)
        per_1000 = {name: [joules / predictions * 1000 for joules, predictions in comparison.results(name)]
                    for name in names}
        ratios = [b / a for a, b in zip(per_1000[names[0]], per_1000[names[1]])]
        return {"per_1000": per_1000, "ratios": ratios, "verdict": verdict_from_ratios(ratios)}

    return per_1000_predictions


def _wrong_per_1000_back_to_back():
    from ..evidence import verdict_from_ratios

    def per_1000_predictions(models, repeats, meter):  # every run of one model, then every run of the other
        per_1000 = {}
        for name, run in models.items():
            per_1000[name] = []
            for _ in range(repeats):
                joules, predictions = meter(run)
                per_1000[name].append(joules / predictions * 1000)
        a, b = list(models)
        ratios = [y / x for x, y in zip(per_1000[a], per_1000[b])]
        return {"per_1000": per_1000, "ratios": ratios, "verdict": verdict_from_ratios(ratios)}

    return per_1000_predictions


def _wrong_per_1000_per_run():
    from ..evidence import verdict_from_ratios

    def per_1000_predictions(models, repeats, meter):  # joules per run, as if every run made 1,000 predictions
        names = list(models)
        per_1000 = {name: [] for name in names}
        for _ in range(repeats):
            for name in names:
                per_1000[name].append(meter(models[name])[0])
        ratios = [b / a for a, b in zip(per_1000[names[0]], per_1000[names[1]])]
        return {"per_1000": per_1000, "ratios": ratios, "verdict": verdict_from_ratios(ratios)}

    return per_1000_predictions


def _wrong_per_1000_inverted():
    reference = _reference_per_1000()

    def per_1000_predictions(models, repeats, meter):
        got = reference(models, repeats, meter)
        got["ratios"] = [1 / r for r in got["ratios"]]
        return got

    return per_1000_predictions


def _wrong_per_1000_median_verdict():
    reference = _reference_per_1000()

    def per_1000_predictions(models, repeats, meter):  # a verdict from the median alone
        got = reference(models, repeats, meter)
        got["verdict"] = "cheaper" if np.median(got["ratios"]) < 1 else "costs more"
        return got

    return per_1000_predictions


def _wrong_delegating_compare_interleaved():
    from ..evidence import compare_interleaved

    # The repeats helper alone: its own energy figures per run (not the meter's), not per prediction, not paired.
    return lambda models, repeats, meter: compare_interleaved(models, repeats=repeats)


def _wrong_delegating_energy_ratios():
    from ..evidence import compare_interleaved

    def per_1000_predictions(models, repeats, meter):  # the helper's energy ratios, per run rather than per prediction
        names = list(models)
        comparison = compare_interleaved({n: (lambda run=run: meter(run)) for n, run in models.items()},
                                         repeats=repeats, warmup=False)
        return {"per_1000": {n: comparison.values(n, "energy_j").tolist() for n in names},
                "ratios": comparison.ratios(names[1], "energy_j").tolist(),
                "verdict": comparison.verdict(names[1], "energy_j")}

    return per_1000_predictions


# energy-3: which region and hour to run a job in --------------------------------------------------------------------

_SLOT_COUNTRIES = ("ESP", "GBR", "USA", "DEU", "CHN", "POL")


def _reference_greenest_slot():
    def greenest_slot(intensity, hours):
        best = None
        for region in intensity.columns:
            values = intensity[region].to_numpy(dtype=float)
            windows = np.convolve(values, np.ones(hours), mode="valid")  # the sum over each possible start
            start = int(np.argmin(windows))
            if best is None or windows[start] < best[0]:
                best = (windows[start], str(region), int(intensity.index[start]))
        return best[1], best[2]

    return greenest_slot


def _window_sums(table, hours):
    return {region: np.convolve(table[region].to_numpy(dtype=float), np.ones(hours), mode="valid")
            for region in table.columns}


def _probes_slot(rng):
    """Hourly tables (made up, from :func:`sustainlab.energy.synthetic_hourly_intensity`) with the traps named below."""
    from ..energy import carbon_intensity, synthetic_hourly_intensity

    probes = []
    for case in range(5):
        k = int(rng.integers(3, 5))
        countries = [str(c) for c in rng.choice(_SLOT_COUNTRIES, size=k, replace=False)]
        length = int(rng.integers(36, 60))
        hours = 1 if case == 3 else int(rng.integers(3, 9))
        table = synthetic_hourly_intensity(countries, hours=length, seed=int(rng.integers(2**31)))
        if case == 0:  # the yearly-greenest grid is not where the job emits least
            greenest = min(countries, key=carbon_intensity)
            other = str(rng.choice([c for c in countries if c != greenest]))
            sums = _window_sums(table, hours)
            table[other] *= 0.8 * sums[greenest].min() / sums[other].min()
        if case == 1:  # the single cleanest hour sits between two dirty ones
            region = str(rng.choice(countries))
            t = int(rng.integers(1, length - 1))
            peak = float(table.to_numpy().max()) * 10 * hours
            table.loc[t - 1, region], table.loc[t + 1, region] = peak, peak
            table.loc[t, region] = float(table.to_numpy().min()) / 2
        if case == 2:  # the cleanest hours are the table's last ones: a job starting there would not fit
            region = str(rng.choice(countries))
            table.loc[length - hours + 1:, region] = float(table.to_numpy().min()) / 10
        probes.append((table, hours))
    return probes


def _compare_slot(student, reference, probes) -> str | None:
    for got, want, (table, hours) in zip(student, reference, probes):
        if isinstance(got, Raised):
            return got.describe()
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            return f"return a pair (region, start hour), got {type(got).__name__}."
        region, start = got
        if not isinstance(region, str) or region not in set(table.columns):
            return f"the region must be one of the table's columns (a str), got {region!r}."
        if not is_finite_number(start) or float(start) != int(start):
            return f"the start hour must be a whole number from the table's index, got {start!r}."
        start = int(start)
        if not 0 <= start <= len(table) - hours:
            return (f"a job of {hours} hours starting at hour {start} would run past the end of the table: every "
                    f"start must leave room for the whole job.")
        if (region, start) != tuple(want):
            if region == want[0]:
                return "right region, wrong start: compare the job's whole window of hours, not single hours."
            return ("another region has a cleaner window for this job: compare every region hour by hour, not by "
                    "its yearly average.")
    return None


def _wrong_delegating_yearly_average():
    from .. import energy

    def greenest_slot(intensity, hours):  # the region from the package's yearly average, then its best window
        region = min(intensity.columns, key=energy.carbon_intensity)
        windows = np.convolve(intensity[region].to_numpy(dtype=float), np.ones(hours), mode="valid")
        return str(region), int(np.argmin(windows))

    return greenest_slot


def _wrong_slot_cleanest_hour():
    def greenest_slot(intensity, hours):  # the single cleanest hour
        values = intensity.to_numpy(dtype=float)
        row, column = np.unravel_index(np.argmin(values), values.shape)
        return str(intensity.columns[column]), int(intensity.index[row])

    return greenest_slot


def _wrong_slot_partial_windows():
    def greenest_slot(intensity, hours):  # windows cut short at the end of the table look cleanest
        best = None
        for region in intensity.columns:
            values = intensity[region].to_numpy(dtype=float)
            for start in range(len(values)):
                total = values[start:start + hours].sum()
                if best is None or total < best[0]:
                    best = (total, str(region), start)
        return best[1], best[2]

    return greenest_slot


EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        id="energy-1",
        checker=_check_footprint,
        reference=_reference_footprint,
        probes=_probes_footprint,
        compare=compare_close("right on the check's examples but not on other runs: use every argument as given.",
                              rtol=1e-9),
        wrong=(
            lambda: (lambda phases, n, pue, g: sum(h * w for h, w in phases) / 1000 * n * g / 1000),  # no PUE
            lambda: (lambda phases, n, pue, g: sum(h * w for h, w in phases) / 1000 * n * pue * g),  # grams
            lambda: (lambda phases, n, pue, g: sum(h * w for h, w in phases) * n * pue * g / 1000),  # W, not kW
            lambda: (lambda phases, n, pue, g: round(sum(h * w for h, w in phases) / 1000 * n * pue * g / 1000)),
            _wrong_footprint_mean_power,
            _wrong_footprint_first_phase,
            lambda: 9.6,
            _wrong_delegating_footprint,
        ),
    ),
    Exercise(
        id="energy-1-hidden",
        hidden=True,
        answer="footprint_kg",
        reference=_reference_footprint,
        probes=_probes_footprint_hidden,
        compare=_compare_footprint_hidden,
        wrong=(_wrong_footprint_tailored, _wrong_footprint_truthiness, _wrong_footprint_whole_hours,
               _wrong_footprint_at_least_one_gpu),
    ),
    Exercise(
        id="energy-2",
        kind="interpret",
        checker=_check_greenest_region,
        reference=_reference_greenest_region,
        probes=_probes_region,
        compare=compare_close("right on the check's cases but not on other jobs and data centres: compare what the "
                              "whole job emits at every candidate."),
        wrong=(
            _wrong_ignores_pue,
            lambda: (lambda job_kwh, pue_by_country: min(pue_by_country, key=pue_by_country.get)),  # PUE only
            lambda: (lambda job_kwh, pue_by_country: sorted(pue_by_country)[0]),  # alphabetical
            lambda: "FRA",
            _wrong_delegating_greenest_grid,
        ),
    ),
    Exercise(
        id="energy-3",
        kind="interpret",
        reference=_reference_greenest_slot,
        probes=_probes_slot,
        compare=_compare_slot,
        wrong=(_wrong_delegating_yearly_average, _wrong_slot_cleanest_hour, _wrong_slot_partial_windows,
               lambda: (lambda intensity, hours: ("ESP", 0))),
    ),
    Exercise(
        id="energy-4",
        kind="measure",
        checker=_check_per_1000,
        reference=_reference_per_1000,
        wrong=(_wrong_per_1000_back_to_back, _wrong_per_1000_per_run, _wrong_per_1000_inverted,
               _wrong_per_1000_median_verdict, _wrong_delegating_compare_interleaved, _wrong_delegating_energy_ratios),
    ),
)
