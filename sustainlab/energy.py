"""Measuring (or, honestly, estimating) the energy and carbon of a block of code, and published footprints.

Taught in ``notebooks/05_energy.ipynb``; every chapter's closing *energy box* uses :func:`measure`.

The measurement wraps codecarbon's ``OfflineEmissionsTracker`` and fixes the traps listed in the course notes:

- **offline only**: the online tracker, without network, silently assumes Canada; the offline one reads the grid
  carbon intensity of the country you give from data bundled with codecarbon;
- **quiet**: no log lines in notebooks, and no ``emissions.csv`` written unless asked;
- **always stopped**: the tracker's two background threads are stopped even when the measured block raises;
- **honest**: each figure says whether it came from a *sensor* (RAPL energy counters, NVIDIA's NVML) or from a power
  *model* (an assumed TDP scaled by CPU load, a constant for RAM). In the course's containers and on most laptops no
  sensor is readable, so every figure is an estimate, and :attr:`Measurement.estimated` says so.

Examples
--------
>>> from sustainlab.energy import measure
>>> with measure("a tiny loop") as m:
...     _ = sum(range(10_000))
>>> m.energy_kwh >= 0 and m.duration_s >= 0
True
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

from .validation import check_option, check_scalar

__all__ = [
    "DEFAULT_COUNTRY",
    "WORLD",
    "set_location",
    "location",
    "DEFAULT_INTERVAL_S",
    "Measurement",
    "Meter",
    "measure",
    "measure_call",
    "carbon_intensity",
    "carbon_intensity_table",
    "synthetic_hourly_intensity",
    "how_energy_is_measured",
    "Footprint",
    "estimate_footprint",
    "PublishedEstimate",
    "PUBLISHED_ESTIMATES",
    "reproduce_published",
    "per_unit",
    "compare_runs",
    "plot_runs",
    "distillation_loss",
    "pack_distillation_targets",
    "training_flops",
    "split_validation",
    "SealedData",
    "LeverRun",
    "LeverData",
    "train_to_target",
    "run_training",
    "training_config",
    "choose_lr",
    "lever_table",
    "plot_energy_vs_accuracy",
    "inference_config",
    "quantize_int8",
    "prune_magnitude",
    "model_bytes",
    "accuracy",
]

#: Pseudo country code for the world-average grid, the default until the learner says where they compute.
WORLD = "WORLD"

#: Default grid: the **world average**, because the course cannot know where a learner computes and a single
#: country's figure would be wrong for most of them (France's, the previous default, is among the cleanest grids, so
#: it understated most learners' emissions several-fold). The figure is the one codecarbon bundles for its own
#: fallback: 475 g CO₂e/kWh, from the IEA *Global Energy & CO2 Status Report 2019* (2018 data). Set your own grid
#: once per session with :func:`set_location` or the ``SUSTAINLAB_COUNTRY`` / ``SUSTAINLAB_PUE`` environment variables.
DEFAULT_COUNTRY = WORLD

#: Environment variables read by :func:`location` when :func:`set_location` was not called.
COUNTRY_ENV = "SUSTAINLAB_COUNTRY"
PUE_ENV = "SUSTAINLAB_PUE"

#: codecarbon's sampling interval in seconds. Shorter than its default of 15 s so that a notebook-sized block (a few
#: seconds) gets several power samples; the tracker also measures once more when it stops, so blocks shorter than
#: this still get a figure.
DEFAULT_INTERVAL_S = 1.0

# CPU modes in which codecarbon reads a hardware energy counter rather than a power model.
_CPU_SENSOR_MODES = {
    "intel_rapl": "RAPL energy counters",
    "intel_power_gadget": "Intel Power Gadget",
    "windows_emi": "Windows Energy Meter Interface",
}


def _codecarbon():
    """Import codecarbon quietly: its log level must be set *before* import, or the init lines still print."""
    os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")
    import codecarbon

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    return codecarbon


@functools.lru_cache(maxsize=1)
def _energy_mix() -> dict:
    _codecarbon()
    from codecarbon.input import DataSource

    return DataSource().get_global_energy_mix_data()


@functools.lru_cache(maxsize=1)
def _world_average() -> tuple[float, str]:
    """codecarbon's bundled world-average intensity (g/kWh) and the source it names."""
    _codecarbon()
    from codecarbon.input import DataSource

    data = DataSource().get_carbon_intensity_per_source_data()
    return float(data["world_average"]), str(data.get("world_average_source", "codecarbon's bundled data"))


def _check_country(country_iso_code, name: str = "country_iso_code") -> str:
    if not isinstance(country_iso_code, str):
        raise TypeError(f"{name} must be a 3-letter ISO code such as 'FRA', got {country_iso_code!r}.")
    code = country_iso_code.strip().upper()
    if code == WORLD:
        return code
    mix = _energy_mix()
    if code not in mix:
        import difflib

        by_name = {data.get("country_name", "").lower(): iso for iso, data in mix.items()}
        guess = by_name.get(country_iso_code.strip().lower())
        close = [guess] if guess else difflib.get_close_matches(code, list(mix), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown {name} {country_iso_code!r}: codecarbon's bundled data has no grid carbon intensity "
            f"for it. Use a 3-letter ISO 3166-1 code such as 'FRA', 'DEU' or 'USA', or 'WORLD' for the world "
            f"average.{hint}"
        )
    return code


# The learner's location, once set with set_location(); None means "not set here: look at the environment".
_LOCATION: dict[str, Any] = {"country_iso_code": None, "pue": None}


def set_location(country_iso_code: str | None = None, *, pue: float | None = None) -> dict:
    """Say once where you compute: every later :func:`measure` (every chapter's energy box) uses this grid and PUE.

    Parameters
    ----------
    country_iso_code : str, optional
        ISO 3166-1 alpha-3 code of your country (``"DEU"``, ``"USA"``, ``"IND"``, ...), or ``"WORLD"`` for the world
        average. ``None`` leaves the country as it is.
    pue : float, optional
        Power usage effectiveness of where the computer runs, ≥ 1 (1.0 for a laptop or desktop at home).

    Returns
    -------
    dict
        The location now in force, as :func:`location` gives it.

    Raises
    ------
    ValueError
        A country code codecarbon has no data for, or ``pue < 1``.

    Notes
    -----
    This lasts for the Python session (the notebook's kernel). To set it for every notebook at once, set the
    environment variables ``SUSTAINLAB_COUNTRY`` and ``SUSTAINLAB_PUE`` before starting JupyterLab, e.g.
    ``SUSTAINLAB_COUNTRY=DEU make lab``. An explicit ``measure(country_iso_code=..., pue=...)`` still wins.

    Examples
    --------
    >>> set_location("DEU", pue=1.0)["country_iso_code"]
    'DEU'
    >>> _ = set_location("WORLD")
    """
    if country_iso_code is not None:
        _LOCATION["country_iso_code"] = _check_country(country_iso_code)
    if pue is not None:
        _LOCATION["pue"] = check_scalar(pue, "pue", min_value=1.0)
    return location()


def location() -> dict:
    """The grid and PUE :func:`measure` uses when not told: from :func:`set_location`, else the environment, else
    the defaults (world average, PUE 1).

    Returns a dict with ``country_iso_code``, ``pue`` and ``source`` (where each came from).

    Raises
    ------
    ValueError
        If ``SUSTAINLAB_COUNTRY`` or ``SUSTAINLAB_PUE`` holds a value that is not a known country code / a number ≥ 1.
    """
    sources = []
    country = _LOCATION["country_iso_code"]
    if country is not None:
        sources.append("country from set_location()")
    elif os.environ.get(COUNTRY_ENV, "").strip():
        country = _check_country(os.environ[COUNTRY_ENV], COUNTRY_ENV)
        sources.append(f"country from {COUNTRY_ENV}")
    else:
        country = DEFAULT_COUNTRY
        sources.append("country not set: world average")
    pue = _LOCATION["pue"]
    if pue is not None:
        sources.append("PUE from set_location()")
    elif os.environ.get(PUE_ENV, "").strip():
        raw = os.environ[PUE_ENV].strip()
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{PUE_ENV} must be a number >= 1 (e.g. 1.0 at home), got {raw!r}.") from None
        pue = check_scalar(value, PUE_ENV, min_value=1.0)
        sources.append(f"PUE from {PUE_ENV}")
    else:
        pue = 1.0
        sources.append("PUE not set: 1.0")
    return {"country_iso_code": country, "pue": pue, "source": "; ".join(sources)}


def _grid_name(code: str) -> str:
    return "World average" if code == WORLD else _energy_mix()[code].get("country_name", code)


def _grid_source(code: str) -> str:
    if code == WORLD:
        return "IEA Global Energy & CO2 Status Report 2019, bundled with codecarbon"
    return f"{_energy_mix()[code].get('year', '?')} yearly average, codecarbon's bundled data"


def carbon_intensity(country_iso_code: str | None = None) -> float:
    """Average carbon intensity of a country's electricity grid, in g CO₂e per kWh, from codecarbon's bundled data.

    Works offline and is deterministic (one yearly figure per country, not the live grid).

    Parameters
    ----------
    country_iso_code : str, optional
        ISO 3166-1 alpha-3 code, or ``"WORLD"`` for the world average (:data:`DEFAULT_COUNTRY`). Default: the
        country of :func:`location`.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If codecarbon has no data for this code (the message suggests close matches).

    Examples
    --------
    >>> round(carbon_intensity("FRA")), round(carbon_intensity("WORLD"))
    (56, 475)
    """
    code = location()["country_iso_code"] if country_iso_code is None else _check_country(country_iso_code)
    if code == WORLD:
        return _world_average()[0]
    from codecarbon.core.emissions import Emissions

    return float(Emissions._global_energy_mix_to_emissions_rate(_energy_mix()[code]).kgs_per_kWh * 1000)


def carbon_intensity_table(countries: Sequence[str] | None = None):
    """Grid carbon intensity per country (g CO₂e/kWh), lowest first, as a pandas DataFrame.

    Columns: ``country_iso_code``, ``country``, ``g_per_kwh``, ``year`` (of codecarbon's data).
    ``countries`` restricts the table (all ~200 countries otherwise).
    """
    import pandas as pd

    codes = [_check_country(c) for c in countries] if countries is not None else sorted(_energy_mix())
    rows = [
        {
            "country_iso_code": code,
            "country": _energy_mix()[code].get("country_name", code),
            "g_per_kwh": carbon_intensity(code),
            "year": _energy_mix()[code].get("year"),
        }
        for code in codes
    ]
    return pd.DataFrame(rows).sort_values(["g_per_kwh", "country_iso_code"], ignore_index=True)


def synthetic_hourly_intensity(countries: Sequence[str], *, hours: int = 48, seed: int = 0):
    """A **made-up** hourly carbon intensity (g CO₂e/kWh) per country, built around its yearly average: for exercises.

    Real hourly figures come from grid operators or services such as Electricity Maps, which an offline course
    cannot call. This table only has their typical shape: each country's yearly average (:func:`carbon_intensity`)
    times a daily cycle with a midday solar dip and an evening peak of random depth, and a slow random drift (wind,
    imports). Nothing here is data about any real day.

    Parameters
    ----------
    countries : sequence of str
        ISO 3166-1 alpha-3 codes (at least one), one column each, in this order.
    hours : int, default 48
        Rows, one per hour from hour 0 (at least 1).
    seed : int, default 0
        Same seed, same table.

    Returns
    -------
    pandas.DataFrame
        Index ``hour`` (0, 1, …), one column per country, every value positive.

    Raises
    ------
    ValueError
        No country, an unknown code, a repeated code, or ``hours`` < 1.

    Examples
    --------
    >>> day = synthetic_hourly_intensity(["FRA", "DEU"], hours=24, seed=1)
    >>> day.shape, bool((day > 0).all().all())
    ((24, 2), True)
    """
    import numpy as np
    import pandas as pd

    if isinstance(countries, str) or not isinstance(countries, Sequence) or len(countries) == 0:
        raise ValueError(f"countries must be a non-empty sequence of ISO codes, got {countries!r}.")
    codes = [_check_country(c, "countries") for c in countries]
    if len(set(codes)) != len(codes):
        raise ValueError(f"countries must not repeat a code, got {list(countries)!r}.")
    hours = check_scalar(hours, "hours", min_value=1, integer=True)
    seed = check_scalar(seed, "seed", min_value=0, integer=True)
    rng = np.random.default_rng(seed)
    clock = np.arange(hours) % 24
    solar_bump = np.exp(-(((clock - 13) / 3.0) ** 2))
    evening_bump = np.exp(-(((clock - 19) / 2.0) ** 2))
    columns = {}
    for code in codes:
        solar, evening = rng.uniform(0.0, 0.6), rng.uniform(0.0, 0.3)
        drift = np.cumsum(rng.normal(0.0, 0.04, size=hours))  # a slow random walk, in log space
        shape = (1 - solar * solar_bump + evening * evening_bump) * np.exp(drift - drift.mean())
        columns[code] = carbon_intensity(code) * np.maximum(shape, 0.05)
    return pd.DataFrame(columns, index=pd.RangeIndex(hours, name="hour"))


# --------------------------------------------------------------------------------------------------------------------
# Measuring a block
# --------------------------------------------------------------------------------------------------------------------

_NAN = float("nan")


@dataclass
class Measurement:
    """Time, energy and carbon of one measured block. Fields are NaN until the block ends.

    Energies are in kWh and include the PUE factor (data-centre overhead); emissions are kg CO₂e.
    ``method`` maps each part (``"cpu"``, ``"gpu"``, ``"ram"``, ``"carbon_intensity"``) to how its figure was
    obtained, starting with ``"sensor:"`` or ``"estimate:"``.
    """

    label: str
    country_iso_code: str
    pue: float
    country_name: str = ""
    duration_s: float = _NAN
    energy_kwh: float = _NAN
    cpu_energy_kwh: float = _NAN
    gpu_energy_kwh: float = _NAN
    ram_energy_kwh: float = _NAN
    emissions_kg: float = _NAN
    carbon_intensity_g_per_kwh: float = _NAN
    method: dict = field(default_factory=dict)
    finished: bool = False
    #: One line saying what the figure is on this machine, e.g. "estimate: CPU 2 threads × 4 W assumed × load,
    #: RAM 10 W assumed, no sensor".
    basis: str = ""
    #: The grid that turned kWh into CO₂e, e.g. "Germany grid, 381 g/kWh (2023 yearly average, codecarbon's data)".
    grid: str = ""

    def _tracked(self) -> dict[str, str]:
        return {k: v for k, v in self.method.items() if k in ("cpu", "gpu", "ram") and not v.startswith("none")}

    @property
    def estimated(self) -> bool:
        """True unless every tracked part (CPU, GPU, RAM) was read from a sensor; also True when none was tracked."""
        tracked = self._tracked()
        return not tracked or any(not v.startswith("sensor") for v in tracked.values())

    @property
    def sensor_parts(self) -> list[str]:
        """The parts (``"cpu"``, ``"gpu"``, ``"ram"``) whose figure was read from a sensor."""
        return [k for k in ("cpu", "gpu", "ram") if self.method.get(k, "").startswith("sensor")]

    def how(self) -> str:
        """One phrase saying how the energy was obtained: estimated, partly measured, measured, or not at all."""
        if not self._tracked():
            return "NOTHING MEASURED (no CPU, GPU or RAM was tracked)"
        sensors = self.sensor_parts
        if not self.estimated:
            return "measured by sensors"
        if not sensors:
            return "ESTIMATE (no power sensor readable here)"
        estimated = [k.upper() for k in ("cpu", "gpu", "ram") if self.method.get(k, "").startswith("estimate")]
        return f"PARTLY MEASURED: {'/'.join(k.upper() for k in sensors)} from a sensor, {'/'.join(estimated)} estimated"

    def shares(self) -> dict[str, float]:
        """Each part's **share of the energy** (not its utilisation), e.g. ``{"CPU": 0.21, "RAM": 0.79}``.

        GPU is left out when it used nothing. Empty when the energy is unknown or zero.
        """
        if not (math.isfinite(self.energy_kwh) and self.energy_kwh > 0):
            return {}
        parts = {"CPU": self.cpu_energy_kwh, "GPU": self.gpu_energy_kwh, "RAM": self.ram_energy_kwh}
        return {name: kwh / self.energy_kwh for name, kwh in parts.items() if kwh > 0 or name != "GPU"}

    @property
    def average_power_w(self) -> float:
        """Mean power over the block in watts (energy / duration, PUE included)."""
        if not self.duration_s or not math.isfinite(self.duration_s):
            return _NAN
        return self.energy_kwh * 3.6e6 / self.duration_s

    @property
    def energy_j(self) -> float:
        """Energy in joules (1 kWh = 3.6 MJ), handier than kWh for small blocks."""
        return self.energy_kwh * 3.6e6

    def to_dict(self) -> dict:
        """The fields as a flat dict (``method`` as ``method_cpu`` etc.), e.g. for a DataFrame row."""
        out = asdict(self)
        method = out.pop("method")
        out.update({f"method_{k}": v for k, v in method.items()})
        out["estimated"] = self.estimated
        return out

    def summary(self) -> str:
        """A few human-readable lines: time, energy, what the figure is, each part's share of it, CO₂e and its grid."""
        if not self.finished:
            return f"{self.label}: still running (the figures are filled in when the block ends)."
        if not math.isfinite(self.energy_kwh):
            return f"{self.label}: {self.duration_s:.2f} s; energy unavailable ({self.method.get('error', '?')})."
        shares = ", ".join(f"{name} {share:.0%}" for name, share in self.shares().items())
        kind, _, detail = (self.basis or self.how()).partition(": ")
        lines = [
            f"{self.label}: {self.duration_s:.2f} s, {_fmt_energy(self.energy_kwh)} "
            f"(≈ {self.average_power_w:.1f} W on average)",
            f"  what this is: {kind.upper()}: {detail}" if detail else f"  what this is: {kind}",
            f"  share of the energy: {shares or 'none'}",
            f"  {_fmt_mass(self.emissions_kg)} CO₂e on the {self.grid or self.country_name + ' grid'}, PUE {self.pue:g}",
        ]
        if self.country_iso_code == WORLD:
            lines.append("  (your grid is not set: energy.set_location('DEU', pue=1.0) or SUSTAINLAB_COUNTRY=DEU)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        if not self.finished:
            return f"Measurement({self.label!r}, running)"
        return (
            f"Measurement({self.label!r}, {self.duration_s:.2f} s, {_fmt_energy(self.energy_kwh)}, "
            f"{_fmt_mass(self.emissions_kg)} CO₂e, {'estimate' if self.estimated else 'sensor'})"
        )


def _fmt_energy(kwh: float) -> str:
    if not math.isfinite(kwh):
        return "nan kWh"
    if kwh >= 1:
        return f"{kwh:.3g} kWh"
    return f"{kwh * 1000:.3g} Wh ({kwh * 3.6e6:.3g} J)"


def _fmt_mass(kg: float) -> str:
    if not math.isfinite(kg):
        return "nan kg"
    if kg >= 1000:
        return f"{kg / 1000:.3g} t"
    if kg >= 1:
        return f"{kg:.3g} kg"
    if kg >= 1e-3:
        return f"{kg * 1000:.3g} g"
    return f"{kg * 1e6:.3g} mg"


def _describe_hardware(tracker) -> dict[str, str]:
    """How codecarbon gets each figure, read from the tracker's hardware objects (sensor vs power model)."""
    method = {"cpu": "none: no CPU tracked", "gpu": "none: no GPU found", "ram": "none: no RAM tracked"}
    for hw in getattr(tracker, "_hardware", []):
        kind = type(hw).__name__
        if kind == "CPU":
            mode = getattr(hw, "_mode", "?")
            tdp = getattr(hw, "_tdp", None)
            model = getattr(hw, "_model", "unknown CPU")
            if mode in _CPU_SENSOR_MODES:
                method["cpu"] = f"sensor: {_CPU_SENSOR_MODES[mode]}"
            elif mode == "cpu_load":
                method["cpu"] = f"estimate: CPU load × assumed power of {tdp} W ({model})"
            elif mode == "constant":
                method["cpu"] = f"estimate: constant share of an assumed TDP of {tdp} W ({model})"
            else:
                method["cpu"] = f"estimate: codecarbon mode {mode!r} ({model})"
        elif kind == "GPU":
            method["gpu"] = "sensor: NVML/AMD-SMI readings (whole device, not per process)"
        elif kind == "AppleSiliconChip":
            part = getattr(hw, "chip_part", "chip").lower()
            method["gpu" if part == "gpu" else "cpu"] = "sensor: macOS powermetrics"
        elif kind == "RAM":
            forced = getattr(hw, "_force_ram_power", None)
            if forced:
                method["ram"] = f"estimate: constant {forced} W given by the user"
            else:
                method["ram"] = "estimate: constant power per guessed memory module (RAM is never measured)"
        else:
            method[kind.lower()] = f"estimate: codecarbon {kind}"
    return method


def _basis(tracker, m: Measurement, data=None) -> str:
    """The one line of :attr:`Measurement.basis`: which figures were assumed and which read, with the numbers used."""
    try:
        from codecarbon.core.cpu import DEFAULT_POWER_PER_CORE as per_thread
    except ImportError:  # pragma: no cover - older codecarbon
        per_thread = 4
    parts = []
    order = {"CPU": 0, "GPU": 1, "RAM": 2}
    for hw in sorted(getattr(tracker, "_hardware", []), key=lambda hw: order.get(type(hw).__name__, 3)):
        kind = type(hw).__name__
        if kind == "CPU":
            mode, tdp, threads = getattr(hw, "_mode", "?"), getattr(hw, "_tdp", None), getattr(hw, "_cpu_count", None)
            if mode in _CPU_SENSOR_MODES:
                parts.append(f"CPU read from {_CPU_SENSOR_MODES[mode]}")
            elif tdp is not None and threads and tdp == threads * per_thread:
                parts.append(f"CPU {threads} threads × {per_thread:g} W assumed × load")
            elif mode == "constant":
                parts.append(f"CPU {tdp} W TDP assumed × constant share")
            else:
                parts.append(f"CPU {tdp} W TDP of {getattr(hw, '_model', 'this CPU')} assumed × load")
        elif kind == "GPU":
            parts.append("GPU read from NVML (whole device)")
        elif kind == "RAM":
            # codecarbon's own RAM power (W, PUE included): our block's duration can be shorter than the span
            # codecarbon's energy covers (from the tracker's start), so energy / duration would overstate it.
            reported = getattr(data, "ram_power", None)
            if reported is not None and math.isfinite(float(reported)):
                watts = float(reported) / m.pue
            else:
                watts = m.ram_energy_kwh * 3.6e6 / m.pue / m.duration_s if m.duration_s > 0 else _NAN
            parts.append(f"RAM {watts:.0f} W assumed" if math.isfinite(watts) else "RAM assumed")
    if not parts:
        return "nothing measured: codecarbon tracked no CPU, GPU or RAM"
    if not m.sensor_parts:
        return f"estimate: {', '.join(parts)}, no sensor"
    return f"{'measured' if not m.estimated else 'partly measured'}: {', '.join(parts)}"


def _stop_tracker(tracker):
    """Stop a tracker and make sure its background threads are gone, whatever codecarbon's stop() swallowed."""
    import threading

    schedulers = [getattr(tracker, name, None) for name in ("_scheduler", "_scheduler_monitor_power")]
    schedulers = [s for s in schedulers if s is not None]
    try:
        # codecarbon only re-measures at stop() when its last sample is >= 50 ms old, so a very short block would
        # get no CPU figure at all; one explicit final sample fixes that (a private method: tolerate its absence).
        try:
            tracker._measure_power_and_energy()
        except Exception:  # noqa: BLE001
            pass
        tracker.stop()
    finally:
        for scheduler in schedulers:
            try:
                scheduler.stop()
            except Exception:  # noqa: BLE001 - best effort, the timer may already be gone
                pass
        # A cancelled threading.Timer ends asynchronously: wait for it so no tracker thread outlives the block.
        for thread in threading.enumerate():
            owner = getattr(getattr(thread, "function", None), "__self__", None)
            if isinstance(thread, threading.Timer) and any(owner is s for s in schedulers):
                thread.join(timeout=5)
    return getattr(tracker, "final_emissions_data", None)


# Measurements whose block is running in this process, outermost first (to keep nested blocks out of the ledger).
_ACTIVE: list[Measurement] = []


def _record_in_ledger(measurement: Measurement) -> None:
    from . import ledger

    try:
        ledger.record(measurement)
    except ledger.LedgerError as error:
        # The measurement itself is kept (the caller has it); only its copy in the ledger could not be written.
        warnings.warn(str(error), RuntimeWarning, stacklevel=3)


class Meter:
    """What :func:`measure` returns: a context manager and a decorator. Use :func:`measure` to create one."""

    def __init__(
        self,
        label: str,
        *,
        country_iso_code: str | None,
        pue: float | None,
        carbon_intensity_g_per_kwh: float | None,
        tracking_mode: str,
        interval_s: float,
        output_dir: str | None,
    ):
        if not isinstance(label, str):
            raise TypeError(f"label must be a string, got {type(label).__name__}.")
        self.label = label
        where = location() if country_iso_code is None or pue is None else {}
        self.country_iso_code = _check_country(where["country_iso_code"] if country_iso_code is None
                                               else country_iso_code)
        self.pue = check_scalar(where["pue"] if pue is None else pue, "pue", min_value=1.0)
        self.forced_intensity = (
            None
            if carbon_intensity_g_per_kwh is None
            else check_scalar(carbon_intensity_g_per_kwh, "carbon_intensity_g_per_kwh", min_value=0.0)
        )
        self.tracking_mode = check_option(tracking_mode, "tracking_mode", ("process", "machine"))
        self.interval_s = check_scalar(interval_s, "interval_s", min_value=0.0, include_min=False)
        self.output_dir = output_dir
        self.measurements: list[Measurement] = []
        self._running: list[tuple[Any, Measurement, float]] = []

    @property
    def last(self) -> Measurement | None:
        """The most recent measurement (also after using the meter as a decorator)."""
        return self.measurements[-1] if self.measurements else None

    def _tracker(self):
        codecarbon = _codecarbon()
        from codecarbon.output_methods.base_output import OutputMethod

        world = self.country_iso_code == WORLD
        kwargs: dict[str, Any] = dict(
            # codecarbon has no world entry: any country will do, its intensity is replaced just below.
            country_iso_code="USA" if world else self.country_iso_code,
            pue=self.pue,
            measure_power_secs=self.interval_s,
            tracking_mode=self.tracking_mode,
            log_level="error",
            project_name="sustainlab",
            experiment_name=self.label,
            # Nested or concurrent measurements are fine in one process; the lock file would forbid them.
            allow_multiple_runs=True,
            output_methods=[OutputMethod.CSV] if self.output_dir is not None else [],
        )
        if self.output_dir is not None:
            kwargs["output_dir"] = str(self.output_dir)
        if self.forced_intensity is not None or world:
            kwargs["force_carbon_intensity_g_co2e_kwh"] = (
                self.forced_intensity if self.forced_intensity is not None else _world_average()[0]
            )
        return codecarbon.OfflineEmissionsTracker(**kwargs)

    def __enter__(self) -> Measurement:
        measurement = Measurement(
            label=self.label,
            country_iso_code=self.country_iso_code,
            pue=self.pue,
            country_name=_grid_name(self.country_iso_code),
        )
        _ACTIVE.append(measurement)
        tracker = self._tracker()
        tracker.start()
        if getattr(tracker, "_start_time", None) is None:
            # start() swallows its own errors; stop whatever it did start and carry on without energy figures.
            _stop_tracker(tracker)
            tracker = None
        self._running.append((tracker, measurement, time.perf_counter()))
        return measurement

    def __exit__(self, exc_type, exc, tb) -> bool:
        tracker, measurement, started = self._running.pop()
        measurement.duration_s = time.perf_counter() - started
        data = _stop_tracker(tracker) if tracker is not None else None
        if tracker is not None:
            measurement.method = _describe_hardware(tracker)
        if data is None:
            measurement.method["error"] = "codecarbon could not start or stop its tracker"
            warnings.warn(
                f"measure({self.label!r}): codecarbon returned no data; energy and emissions are NaN.",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            measurement.cpu_energy_kwh = float(data.cpu_energy)
            measurement.gpu_energy_kwh = float(data.gpu_energy)
            measurement.ram_energy_kwh = float(data.ram_energy)
            measurement.energy_kwh = float(data.energy_consumed)
            measurement.emissions_kg = float(data.emissions)
        if self.forced_intensity is not None:
            measurement.carbon_intensity_g_per_kwh = self.forced_intensity
            measurement.method["carbon_intensity"] = "given: carbon_intensity_g_per_kwh argument"
            source = "given by the caller"
        else:
            measurement.carbon_intensity_g_per_kwh = carbon_intensity(self.country_iso_code)
            source = _grid_source(self.country_iso_code)
            measurement.method["carbon_intensity"] = f"estimate: {measurement.country_name} grid ({source})"
        measurement.grid = (
            f"{measurement.country_name} grid, {measurement.carbon_intensity_g_per_kwh:.0f} g/kWh ({source})"
        )
        measurement.basis = _basis(tracker, measurement, data) if tracker is not None else "no figure: tracker failed"
        measurement.finished = True
        self.measurements.append(measurement)
        _ACTIVE[:] = [m for m in _ACTIVE if m is not measurement]  # by identity: equal fields are not the same block
        if not _ACTIVE:
            # Only outermost blocks go to the ledger: an inner block's energy is already in its outer one's.
            _record_in_ledger(measurement)
        return False  # an exception in the block propagates

    def __call__(self, func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with self:
                return func(*args, **kwargs)

        wrapper.meter = self  # type: ignore[attr-defined]
        return wrapper


def measure(
    label: str = "run",
    *,
    country_iso_code: str | None = None,
    pue: float | None = None,
    carbon_intensity_g_per_kwh: float | None = None,
    tracking_mode: str = "process",
    interval_s: float = DEFAULT_INTERVAL_S,
    output_dir: str | None = None,
) -> Meter:
    """Measure the time, energy and CO₂e of a block of code: ``with measure("label") as m: ...``.

    A context manager whose ``as`` target is a :class:`Measurement`: it exists inside the block, and its fields are
    filled in when the block ends (also when the block raises: the tracker is stopped, its threads end, and the
    exception propagates). Also a decorator: ``@measure("train")`` measures every call, kept in
    ``func.meter.measurements``.

    Each outermost block also adds a row to the learner's carbon ledger (:mod:`sustainlab.ledger`), unless
    ``SUSTAINLAB_LEDGER=off`` (as under the test suite, the runners and grading).

    Parameters
    ----------
    label : str, default "run"
        Name shown in summaries and comparison tables.
    country_iso_code : str, optional
        Country whose grid carbon intensity turns kWh into CO₂e (ISO 3166-1 alpha-3, or ``"WORLD"``), from
        codecarbon's offline data. Default: :func:`location` (set once with :func:`set_location` or
        ``SUSTAINLAB_COUNTRY``; the world average until then).
    pue : float, optional
        Default: :func:`location` (``SUSTAINLAB_PUE``, else 1.0). Power Usage Effectiveness of the building: total facility energy / computing energy, ≥ 1. 1.0 means
        "computing only" (a laptop); hyperscale data centres report about 1.1, typical ones 1.5–1.6.
    carbon_intensity_g_per_kwh : float, optional
        Override the country's average (e.g. with a live figure from your grid operator).
    tracking_mode : {"process", "machine"}, default "process"
        ``"process"`` attributes CPU power by this process's share of CPU time (fairer on a shared machine);
        ``"machine"`` counts the whole machine's load. GPU power is always the whole device.
    interval_s : float, default 1.0
        codecarbon's sampling interval. The tracker measures once more when it stops, so shorter blocks still get
        a figure (from a single sample: treat sub-second figures as rough).
    output_dir : str, optional
        Write codecarbon's ``emissions.csv`` there. By default nothing is written.

    Returns
    -------
    Meter
        Use with ``with`` (yields a :class:`Measurement`) or as a decorator.

    Raises
    ------
    ValueError
        Unknown country code, ``pue < 1``, a non-finite or negative intensity, an unknown tracking mode.

    See Also
    --------
    how_energy_is_measured : whether this machine has a readable power sensor.

    Examples
    --------
    >>> with measure("sum") as m:
    ...     _ = sum(range(1000))
    >>> m.finished, m.country_iso_code
    (True, 'WORLD')
    """
    return Meter(
        label,
        country_iso_code=country_iso_code,
        pue=pue,
        carbon_intensity_g_per_kwh=carbon_intensity_g_per_kwh,
        tracking_mode=tracking_mode,
        interval_s=interval_s,
        output_dir=output_dir,
    )


def measure_call(func: Callable[[], Any], label: str = "run") -> tuple[float, Any]:
    """Call ``func()`` once inside :func:`measure` and return ``(energy in joules, what func returned)``.

    The meter the chapter's measure exercise hands to the learner's function: one measured run, nothing else.

    Examples
    --------
    >>> joules, result = measure_call(lambda: sum(range(1000)))
    >>> result, joules >= 0
    (499500, True)
    """
    if not callable(func):
        raise TypeError(f"func must be a function of no arguments, got {type(func).__name__}.")
    with measure(label) as measurement:
        result = func()
    return measurement.energy_j, result


def how_energy_is_measured() -> str:
    """One line per component saying whether this machine's energy figures come from a sensor or a power model.

    Runs an empty measurement (about half a second the first time in a process, while codecarbon detects the
    hardware). Used by the welcome notebook's set-up check.
    """
    with measure("probe") as m:
        pass
    if not m.estimated:
        verdict = "Energy figures on this machine come from hardware sensors."
    elif m.sensor_parts:
        verdict = f"Energy figures on this machine are {m.how()}."
    else:
        verdict = "Energy figures on this machine are ESTIMATES from power models (no sensor readable)."
    details = [f"  {part.upper()}: {m.method[part]}" for part in ("cpu", "gpu", "ram")]
    return "\n".join([verdict, *details, f"  in one line: {m.basis}", f"  grid: {m.grid}"])


# --------------------------------------------------------------------------------------------------------------------
# Footprint estimates from published inputs
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Footprint:
    """Energy (kWh) and emissions (kg CO₂e) of a training run estimated from its inputs."""

    energy_kwh: float
    emissions_kg: float

    @property
    def energy_mwh(self) -> float:
        return self.energy_kwh / 1000

    @property
    def emissions_t(self) -> float:
        return self.emissions_kg / 1000


def estimate_footprint(
    *,
    hours: float,
    n_devices: float,
    device_power_w: float,
    pue: float = 1.0,
    carbon_intensity_kg_per_kwh: float,
) -> Footprint:
    """The standard footprint estimate: devices × power × time × PUE, times the grid's carbon intensity.

    ``energy_kwh = n_devices × device_power_w / 1000 × hours × pue``;
    ``emissions_kg = energy_kwh × carbon_intensity_kg_per_kwh``. Arguments are keyword-only so units can't be
    swapped by position.

    Parameters
    ----------
    hours : float
        Wall-clock training time (≥ 0).
    n_devices : float
        Number of accelerators (or servers) drawing ``device_power_w`` each (≥ 0).
    device_power_w : float
        Average power per device in watts (≥ 0): measured, or the TDP as an upper bound.
    pue : float, default 1.0
        Data-centre Power Usage Effectiveness (≥ 1).
    carbon_intensity_kg_per_kwh : float
        Grid carbon intensity in kg CO₂e per kWh (≥ 0); note kg, i.e. g/kWh ÷ 1000.

    Returns
    -------
    Footprint

    Raises
    ------
    ValueError
        Negative or non-finite inputs, or ``pue < 1``.

    Examples
    --------
    GPT-3 as estimated by Patterson et al. (2021), see :data:`PUBLISHED_ESTIMATES`:

    >>> f = estimate_footprint(hours=14.8 * 24, n_devices=10_000, device_power_w=330, pue=1.10,
    ...                        carbon_intensity_kg_per_kwh=0.429)
    >>> round(f.energy_mwh), round(f.emissions_t)
    (1289, 553)
    """
    hours = check_scalar(hours, "hours", min_value=0.0)
    n_devices = check_scalar(n_devices, "n_devices", min_value=0.0)
    device_power_w = check_scalar(device_power_w, "device_power_w", min_value=0.0)
    pue = check_scalar(pue, "pue", min_value=1.0)
    intensity = check_scalar(carbon_intensity_kg_per_kwh, "carbon_intensity_kg_per_kwh", min_value=0.0)
    energy = n_devices * device_power_w / 1000 * hours * pue
    return Footprint(energy_kwh=energy, emissions_kg=energy * intensity)


@dataclass(frozen=True)
class PublishedEstimate:
    """One published training footprint: the paper's inputs and its reported outputs, with the paper's rounding.

    ``rel_tol`` is how far the recomputed figure may be from the published one given the rounding of the published
    inputs (e.g. 14.8 days, 0.429 kg/kWh) and outputs.
    """

    name: str
    citation: str
    hours: float
    n_devices: float
    device_power_w: float
    pue: float
    carbon_intensity_kg_per_kwh: float
    published_energy_kwh: float | None
    published_emissions_kg: float
    rel_tol: float
    note: str = ""

    def recompute(self) -> Footprint:
        return estimate_footprint(
            hours=self.hours,
            n_devices=self.n_devices,
            device_power_w=self.device_power_w,
            pue=self.pue,
            carbon_intensity_kg_per_kwh=self.carbon_intensity_kg_per_kwh,
        )


_LBS_PER_KG = 2.20462

#: Published training-footprint estimates whose outputs :func:`estimate_footprint` reproduces from their inputs.
#: Citations are in the ``citation`` field and in ``data/README.md`` (energy section).
PUBLISHED_ESTIMATES: tuple[PublishedEstimate, ...] = (
    PublishedEstimate(
        name="GPT-3 (175B)",
        citation=(
            "Patterson, D. et al. (2021). Carbon Emissions and Large Neural Network Training. arXiv:2104.10350, "
            "Table 4."
        ),
        hours=14.8 * 24,
        n_devices=10_000,
        device_power_w=330,
        pue=1.10,
        carbon_intensity_kg_per_kwh=0.429,
        published_energy_kwh=1_287_000,
        published_emissions_kg=552_000,
        rel_tol=0.005,
        note="10,000 V100 GPUs at 330 W for 14.8 days in a Microsoft data centre.",
    ),
    PublishedEstimate(
        name="Transformer (big), Strubell",
        citation=(
            "Strubell, E., Ganesh, A. & McCallum, A. (2019). Energy and Policy Considerations for Deep Learning in "
            "NLP. ACL 2019, Tables 1 and 3."
        ),
        hours=84,
        n_devices=1,  # the 1,515.43 W is the measured total of CPU + DRAM + 8 P100 GPUs
        device_power_w=1515.43,
        pue=1.58,
        carbon_intensity_kg_per_kwh=0.954 / _LBS_PER_KG,  # 0.954 lbs/kWh, the US average (EPA 2018)
        published_energy_kwh=201,  # Table 3's "kWh·PUE" column: the energy with the PUE of 1.58 included
        published_emissions_kg=192 / _LBS_PER_KG,
        rel_tol=0.005,
        note="8 P100 GPUs; 1,515.43 W measured for CPU + DRAM + GPUs; 201 kWh·PUE; 192 lbs CO₂e.",
    ),
    PublishedEstimate(
        name="BLOOM (176B), dynamic",
        citation=(
            "Luccioni, A. S., Viguier, S. & Ligozat, A.-L. (2022). Estimating the Carbon Footprint of BLOOM, a 176B "
            "Parameter Language Model. arXiv:2211.02001, Tables 1–2."
        ),
        hours=1_082_990,  # A100 GPU-hours
        n_devices=1,
        device_power_w=400,
        pue=1.0,  # the 433 MWh dynamic figure is reported before PUE
        carbon_intensity_kg_per_kwh=0.057,
        published_energy_kwh=433_196,
        published_emissions_kg=24_690,
        rel_tol=0.005,
        note="1.08 M A100-hours at 400 W TDP on the French grid (57 g/kWh); dynamic energy only.",
    ),
)


def reproduce_published():
    """Recompute every :data:`PUBLISHED_ESTIMATES` entry and compare with the published figures (a DataFrame)."""
    import pandas as pd

    rows = []
    for est in PUBLISHED_ESTIMATES:
        ours = est.recompute()
        rows.append(
            {
                "estimate": est.name,
                "published_MWh": None if est.published_energy_kwh is None else est.published_energy_kwh / 1000,
                "ours_MWh": ours.energy_kwh / 1000,
                "published_tCO2e": est.published_emissions_kg / 1000,
                "ours_tCO2e": ours.emissions_kg / 1000,
                "rel_diff_emissions": ours.emissions_kg / est.published_emissions_kg - 1,
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------------------------
# Per-unit figures and comparisons
# --------------------------------------------------------------------------------------------------------------------


def per_unit(
    measurement: Measurement,
    *,
    steps: int | None = None,
    samples: int | None = None,
    flops: float | None = None,
) -> dict[str, float]:
    """Energy and emissions per optimizer step, per training sample and per FLOP.

    Returns a dict with keys among ``J_per_step``, ``mg_per_step``, ``J_per_sample``, ``mg_per_sample``,
    ``J_per_flop``, ``kwh_per_flop`` (only those whose count was given).

    Raises
    ------
    ValueError
        If the measurement has not finished, or a count is not positive.
    """
    if not isinstance(measurement, Measurement) or not measurement.finished:
        raise ValueError("measurement must be a finished Measurement (use it after the `with` block ends).")
    out: dict[str, float] = {}
    energy_j = measurement.energy_kwh * 3.6e6
    mg = measurement.emissions_kg * 1e6
    for name, count in (("step", steps), ("sample", samples)):
        if count is not None:
            count = check_scalar(count, f"{name}s", min_value=0, include_min=False)
            out[f"J_per_{name}"] = energy_j / count
            out[f"mg_per_{name}"] = mg / count
    if flops is not None:
        flops = check_scalar(flops, "flops", min_value=0, include_min=False)
        out["J_per_flop"] = energy_j / flops
        out["kwh_per_flop"] = measurement.energy_kwh / flops
    return out


def compare_runs(measurements: Iterable[Measurement], *, extra: dict[str, dict] | None = None):
    """A table of measured runs (one row each): seconds, joules, CPU/GPU/RAM shares, mg CO₂e, estimate or sensor.

    ``extra`` maps a label to more columns for that row (e.g. ``{"bf16": {"accuracy": 0.95}}``).
    """
    import pandas as pd

    rows = []
    for m in measurements:
        if not isinstance(m, Measurement) or not m.finished:
            raise ValueError("compare_runs needs finished Measurement objects.")
        row = {
            "label": m.label,
            "seconds": m.duration_s,
            "energy_J": m.energy_j,
            "cpu_J": m.cpu_energy_kwh * 3.6e6,
            "gpu_J": m.gpu_energy_kwh * 3.6e6,
            "ram_J": m.ram_energy_kwh * 3.6e6,
            "mg_CO2e": m.emissions_kg * 1e6,
            "method": "estimate" if m.estimated else "sensor",
        }
        row.update((extra or {}).get(m.label, {}))
        rows.append(row)
    return pd.DataFrame(rows)


def plot_runs(measurements: Sequence[Measurement], ax=None, *, title: str = "Energy per run"):
    """Stacked bars of CPU / GPU / RAM energy (J) per run; returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    table = compare_runs(measurements)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    bottom = None
    for column, colour in (("cpu_J", "tab:blue"), ("gpu_J", "tab:green"), ("ram_J", "tab:orange")):
        values = table[column].to_numpy()
        if column == "gpu_J" and not values.any():
            continue
        ax.bar(table["label"], values, bottom=bottom, label=column[:3].upper(), color=colour)
        bottom = values if bottom is None else bottom + values
    ax.set_ylabel("energy (J)")
    ax.set_title(title)
    ax.legend()
    ax.tick_params(axis="x", rotation=20)
    return ax


# --------------------------------------------------------------------------------------------------------------------
# Knowledge distillation (a lever measured in the notebook)
# --------------------------------------------------------------------------------------------------------------------


def distillation_loss(student_logits, targets, *, temperature: float = 4.0, alpha: float = 0.5):
    """Hinton et al.'s (2015) distillation loss: hard-label cross-entropy mixed with soft-target KL divergence.

    ``loss = (1 - alpha) · CE(student, y) + alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T))``.
    The T² factor keeps the soft term's gradients on the same scale as the hard term's as T changes.

    Parameters
    ----------
    student_logits : torch.Tensor, shape (n, classes)
    targets : tensor or tuple
        Either ``(y, teacher_logits)``; or one float tensor of shape (n, 1 + classes) made by
        :func:`pack_distillation_targets` (the form :func:`sustainlab.optim.train` handles, since it counts samples
        from the targets' first dimension); or plain class indices of shape (n,), which gives ordinary cross-entropy
        (so the same function evaluates on held-out data with true labels only).
    temperature : float, default 4.0
        Softens both distributions (> 0); higher shows more of the teacher's "dark knowledge".
    alpha : float, default 0.5
        Weight of the soft term, in [0, 1]; 0 is plain cross-entropy.

    Returns
    -------
    torch.Tensor
        Scalar loss (mean over the batch).

    Examples
    --------
    >>> import functools, torch
    >>> loss_fn = functools.partial(distillation_loss, temperature=2.0, alpha=0.7)
    >>> y, teacher = torch.tensor([0, 1]), torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> float(loss_fn(teacher, (y, teacher))) < float(loss_fn(-teacher, (y, teacher)))
    True

    Taught in ``notebooks/05_energy.ipynb`` (*Does distillation save energy?*).
    """
    import torch.nn.functional as F

    temperature = check_scalar(temperature, "temperature", min_value=0.0, include_min=False)
    alpha = check_scalar(alpha, "alpha", min_value=0.0, max_value=1.0)
    if isinstance(targets, (tuple, list)):
        y, teacher_logits = targets
    elif targets.ndim == 2:
        y, teacher_logits = targets[:, 0].long(), targets[:, 1:]
    else:
        return F.cross_entropy(student_logits, targets)
    hard = F.cross_entropy(student_logits, y)
    if alpha == 0:
        return hard
    soft = F.kl_div(
        F.log_softmax(student_logits.float() / temperature, dim=-1),
        F.log_softmax(teacher_logits.float() / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - alpha) * hard + alpha * temperature**2 * soft


def pack_distillation_targets(y, teacher_logits):
    """Pack class indices and teacher logits into one float tensor of shape (n, 1 + classes) for a data loader.

    Class indices up to 2**24 are exact in float32, so the round trip in :func:`distillation_loss` is lossless.
    """
    import torch

    if y.ndim != 1 or teacher_logits.ndim != 2 or len(y) != len(teacher_logits):
        raise ValueError(
            f"Expected y of shape (n,) and teacher_logits of shape (n, classes); got {tuple(y.shape)} and "
            f"{tuple(teacher_logits.shape)}."
        )
    return torch.cat([y.to(teacher_logits.dtype).unsqueeze(1), teacher_logits.detach()], dim=1).float()


# --------------------------------------------------------------------------------------------------------------------
# The chapter's lever experiments (small enough for a 2-core CPU)
# --------------------------------------------------------------------------------------------------------------------


def training_flops(model, samples: int) -> float:
    """Approximate training FLOPs of a dense network: 6 × parameters × samples (2 forward + 4 backward per weight).

    The same rule Kaplan et al. (2020) and Brown et al. (2020) use for GPT-3's 3.14e23 FLOPs.
    """
    return _dense_training_flops(_n_params(model), samples)


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _dense_training_flops(n_params: int, samples: int) -> float:
    return 6.0 * n_params * samples


def split_validation(X, y, *, fraction: float = 0.2, random_state: int = 0):
    """Split a validation set off the training data, stratified by class and seeded: ``(X_fit, y_fit, X_val, y_val)``.

    The stopping rule and every choice (learning rate, target) are made on the validation set, so the test set stays
    unseen until the one final evaluation (chapter 03's rule against leakage).

    Raises
    ------
    ValueError
        If ``fraction`` is not strictly between 0 and 1, or ``X`` and ``y`` differ in length.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    fraction = check_scalar(fraction, "fraction", min_value=0.0, max_value=1.0, include_min=False,
                            include_max=False)
    if len(X) != len(y):
        raise ValueError(f"X and y must have the same length, got {len(X)} and {len(y)}.")
    fit, val = train_test_split(np.arange(len(y)), test_size=fraction, random_state=random_state,
                                stratify=np.asarray(y))
    return X[fit], y[fit], X[val], y[val]


class SealedData:
    """Batches that cannot be iterated until :meth:`unseal`: the proof that a test set is seen once, after training.

    Examples
    --------
    >>> test = SealedData([("x", "y")])
    >>> list(test)
    Traceback (most recent call last):
    ...
    RuntimeError: The test set was iterated before training stopped. Stop on the validation set; evaluate on the test set once, at the end.
    >>> list(test.unseal()), test.times_iterated
    ([('x', 'y')], 1)
    """

    def __init__(self, data):
        self._data = data
        self.sealed = True
        self.times_iterated = 0

    def unseal(self) -> "SealedData":
        self.sealed = False
        return self

    def __iter__(self):
        if self.sealed:
            raise RuntimeError("The test set was iterated before training stopped. Stop on the validation set; "
                               "evaluate on the test set once, at the end.")
        self.times_iterated += 1
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class _StepChunks:
    """``n`` batches at a time from ``data``, cycling through its epochs, so that ``optim.train``'s per-"epoch" hooks
    (evaluation, ``stop_when``) run every ``n`` batches instead of at epoch ends."""

    def __init__(self, data, n: int):
        self.data, self.n, self._it = data, n, None

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            if self._it is None:
                self._it = iter(self.data)
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = iter(self.data)
                batch = next(self._it)
            yield batch


@dataclass
class LeverRun:
    """One training run of the lever experiments: stopped on validation, then evaluated once on the test set."""

    label: str
    history: Any
    n_params: int
    test_accuracy: float
    reached_target: bool
    eval_every: int
    measurement: Measurement | None = None
    model: Any = field(default=None, repr=False)

    @property
    def steps(self) -> int:
        return self.history.optimizer_steps

    @property
    def samples(self) -> int:
        return self.history.samples_seen

    @property
    def val_accuracy(self) -> float:
        return float(self.history.eval_accuracy[-1])

    @property
    def flops(self) -> float:
        return _dense_training_flops(self.n_params, self.history.samples_seen)


def train_to_target(
    model,
    train_data,
    val_data,
    test_data=None,
    *,
    lr: float = 1e-3,
    target_accuracy: float | None = None,
    eval_every: int = 10,
    max_steps: int = 1000,
    precision: str = "fp32",
    accumulation_steps: int = 1,
    loss_fn: Callable | None = None,
    device=None,
    label: str = "run",
) -> LeverRun:
    """Train with Adam until **validation** accuracy reaches ``target_accuracy`` (checked every ``eval_every``
    optimizer steps) or ``max_steps``; then evaluate on ``test_data`` once.

    Parameters
    ----------
    model : torch.nn.Module
    train_data, val_data : iterables of (inputs, targets)
        ``val_data`` is evaluated every ``eval_every`` steps; it decides when to stop.
    test_data : iterable, optional
        Evaluated once, after training stopped (a :class:`SealedData` is unsealed then, and raises if anything
        iterates it earlier). Without it ``test_accuracy`` is NaN.
    lr : float, default 1e-3
    target_accuracy : float in [0, 1], optional
        Validation accuracy at which to stop; ``None`` trains all ``max_steps``.
    eval_every : int, default 10
        Optimizer steps between two checks of the stopping rule.
    max_steps : int, default 1000
        Budget in optimizer steps (rounded up to a multiple of ``eval_every``).
    precision, accumulation_steps, loss_fn, device
        As for :func:`sustainlab.optim.train`.

    Returns
    -------
    LeverRun

    Raises
    ------
    ValueError
        Bad ``eval_every``, ``max_steps``, ``target_accuracy`` or ``lr``.
    """
    import torch

    from .optim import _evaluate, train

    lr = check_scalar(lr, "lr", min_value=0.0, include_min=False)
    eval_every = check_scalar(eval_every, "eval_every", min_value=1, integer=True)
    max_steps = check_scalar(max_steps, "max_steps", min_value=1, integer=True)
    accumulation_steps = check_scalar(accumulation_steps, "accumulation_steps", min_value=1, integer=True)
    stop_when = None
    if target_accuracy is not None:
        target_accuracy = check_scalar(target_accuracy, "target_accuracy", min_value=0.0, max_value=1.0)
        stop_when = lambda h: h.eval_accuracy[-1] >= target_accuracy  # noqa: E731
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    chunks = _StepChunks(train_data, eval_every * accumulation_steps)
    history = train(
        model, chunks, optimizer, math.ceil(max_steps / eval_every), loss_fn=loss_fn, device=device,
        accumulation_steps=accumulation_steps, precision=precision, eval_data=val_data, stop_when=stop_when,
        desc=label,
    )
    reached = target_accuracy is not None and history.eval_accuracy[-1] >= target_accuracy
    test_accuracy = _NAN
    if test_data is not None:
        if isinstance(test_data, SealedData):
            test_data.unseal()
        device = next(model.parameters()).device
        _, test_accuracy = _evaluate(model, test_data, torch.nn.functional.cross_entropy, device, precision)
    return LeverRun(label, history, _n_params(model), float(test_accuracy), bool(reached), eval_every, model=model)


def run_training(label: str, model, train_data, val_data, test_data=None, **options) -> LeverRun:
    """:func:`train_to_target` inside :func:`measure`; the measurement is in ``LeverRun.measurement``.

    ``options`` go to :func:`train_to_target` (``lr``, ``target_accuracy``, ``eval_every``, ...).
    """
    with measure(label) as m:
        run = train_to_target(model, train_data, val_data, test_data, label=label, **options)
    run.measurement = m
    return run


@dataclass
class LeverData:
    """The lever experiments' data: a fit / validation / test split, the validation set cut from the training data."""

    X_fit: Any
    y_fit: Any
    X_val: Any
    y_val: Any
    X_test: Any
    y_test: Any

    @classmethod
    def digits(cls, *, validation_fraction: float = 0.2, random_state: int = 0) -> "LeverData":
        """scikit-learn's 8×8 digits (offline): chapter 1's train/test split, then a stratified validation split."""
        from .datasets import load_digits_tensors

        X_train, y_train, X_test, y_test = load_digits_tensors(random_state=random_state)
        X_fit, y_fit, X_val, y_val = split_validation(X_train, y_train, fraction=validation_fraction,
                                                      random_state=random_state)
        return cls(X_fit, y_fit, X_val, y_val, X_test, y_test)

    def with_noise(self, std: float, *, seed: int = 0) -> "LeverData":
        """The same split with seeded Gaussian pixel noise of standard deviation ``std`` added: a new, related task
        (for "reuse, don't retrain")."""
        import torch

        std = check_scalar(std, "std", min_value=0.0)
        generator = torch.Generator().manual_seed(seed)
        noisy = lambda X: X + std * torch.randn(X.shape, generator=generator)  # noqa: E731
        return LeverData(noisy(self.X_fit), self.y_fit, noisy(self.X_val), self.y_val, noisy(self.X_test),
                         self.y_test)

    def val_loader(self):
        from .optim import make_loader

        return make_loader(self.X_val, self.y_val, len(self.y_val), shuffle=False)

    def sealed_test(self) -> SealedData:
        from .optim import make_loader

        return SealedData(make_loader(self.X_test, self.y_test, len(self.y_test), shuffle=False))


def training_config(
    data: LeverData,
    *,
    hidden: Sequence[int] = (128,),
    batch_size: int = 32,
    lr: float = 1e-3,
    target_accuracy: float | None = None,
    check_every_samples: int = 320,
    max_epochs: int = 20,
    precision: str = "fp32",
    accumulation_steps: int = 1,
    targets=None,
    loss_fn: Callable | None = None,
    init=None,
    device=None,
    label: str = "run",
) -> Callable[[], LeverRun]:
    """A function of no arguments that trains one fresh model per call, for :func:`sustainlab.evidence.compare_interleaved`.

    Call ``k`` uses seed ``k`` for the initial weights and the batch order (0, 1, 2, ...), so round ``r`` of an
    interleaved comparison trains every configuration from the same seed: paired runs, several initialisations.

    The stopping rule is checked every ``check_every_samples`` training samples (``eval_every`` = that many samples
    in optimizer steps, at least 1), so every batch size is checked equally often in data seen; the budget is
    ``max_epochs`` epochs of ``data.X_fit``. ``targets`` replaces ``data.y_fit`` (e.g. packed distillation
    targets); ``init`` is a trained model whose copy is fine-tuned instead of a fresh one ("reuse, don't retrain").
    """
    import copy

    from .optim import make_loader, make_mlp

    batch_size = check_scalar(batch_size, "batch_size", min_value=1, integer=True)
    accumulation_steps = check_scalar(accumulation_steps, "accumulation_steps", min_value=1, integer=True)
    check_every_samples = check_scalar(check_every_samples, "check_every_samples", min_value=1, integer=True)
    max_epochs = check_scalar(max_epochs, "max_epochs", min_value=1, integer=True)
    step_samples = batch_size * accumulation_steps
    eval_every = max(1, round(check_every_samples / step_samples))
    max_steps = max_epochs * math.ceil(len(data.y_fit) / step_samples)
    y = data.y_fit if targets is None else targets
    calls = iter(range(1 << 30))
    val = data.val_loader()

    def run() -> LeverRun:
        seed = next(calls)
        model = copy.deepcopy(init) if init is not None else make_mlp(tuple(hidden), random_state=seed)
        return train_to_target(
            model, make_loader(data.X_fit, y, batch_size, random_state=seed), val, data.sealed_test(), lr=lr,
            target_accuracy=target_accuracy, eval_every=eval_every, max_steps=max_steps, precision=precision,
            accumulation_steps=accumulation_steps, loss_fn=loss_fn, device=device, label=label,
        )

    return run


def choose_lr(data: LeverData, lrs: Sequence[float] = (1e-3, 3e-3, 1e-2), **options):
    """The learning rate that reaches the validation target on the fewest training samples (seed 0, no test set).

    ``options`` go to :func:`training_config` and must include ``target_accuracy``. Returns ``(best_lr, table)``,
    the table with one row per rate: ``lr``, ``reached``, ``samples``, ``val_accuracy``. Ties go to the smaller rate.

    Raises
    ------
    ValueError
        No rates, or no ``target_accuracy``.
    """
    import pandas as pd

    if not lrs:
        raise ValueError("lrs must list at least one learning rate.")
    if options.get("target_accuracy") is None:
        raise ValueError("choose_lr needs target_accuracy: it picks the rate that reaches it soonest.")
    rows = []
    for lr in lrs:
        run = training_config(data, lr=lr, **options)()
        rows.append({"lr": lr, "reached": run.reached_target, "samples": run.samples,
                     "val_accuracy": run.val_accuracy})
    table = pd.DataFrame(rows)
    reached = table[table["reached"]].sort_values(["samples", "lr"])
    best = float(reached["lr"].iloc[0]) if len(reached) else float(table.sort_values("val_accuracy").iloc[-1]["lr"])
    return best, table


def lever_table(comparison, *, quality: str = "test_accuracy"):
    """The lever comparison as one row per configuration: median and range of the test accuracy, steps, energy and
    time, the paired energy ratio against the reference, and the verdict computed from those ratios.

    ``comparison`` is what :func:`sustainlab.evidence.compare_interleaved` returned for configurations made by
    :func:`training_config` (their results are :class:`LeverRun`).
    """
    import pandas as pd

    from .evidence import spread

    rows = {}
    for name in comparison.configs:
        results = comparison.results(name)
        acc = spread([getattr(r, quality) for r in results])
        steps = spread([r.steps for r in results])
        energy_ = comparison.spread(name, "energy_j")
        seconds = comparison.spread(name, "seconds")
        ratio = comparison.ratio_spread(name, "energy_j")
        rows[name] = {
            "runs": len(results),
            "reached target": f"{sum(r.reached_target for r in results)}/{len(results)}",
            "test acc": acc.format(".3f"),
            "steps": steps.format(".0f"),
            "seconds": seconds.format(".2f"),
            "energy J": energy_.format(".2f"),
            "energy vs ref": ratio.format(".2f", "×"),
            "verdict": comparison.verdict(name, "energy_j"),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "configuration"
    return table


def plot_energy_vs_accuracy(comparison, ax=None, *, quality: str = "test_accuracy",
                            title: str = "Levers: energy vs test accuracy (median, bars: min–max)"):
    """Median energy against median test accuracy per configuration, with min–max error bars; returns the Axes."""
    import matplotlib.pyplot as plt
    import numpy as np

    from .evidence import spread

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    markers = "osD^v<>Pp*Xh"
    for i, name in enumerate(comparison.configs):
        e = comparison.spread(name, "energy_j")
        a = spread([getattr(r, quality) for r in comparison.results(name)])
        ax.errorbar(e.median, a.median, xerr=np.array([[e.median - e.low], [e.high - e.median]]),
                    yerr=np.array([[a.median - a.low], [a.high - a.median]]), fmt=markers[i % len(markers)],
                    capsize=3, label=name, alpha=0.85)
    ax.set_xlabel(f"energy of one training run (J, {'estimated' if 'ESTIMATE' in comparison.energy_method else 'measured'})")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    return ax


# --------------------------------------------------------------------------------------------------------------------
# Levers at prediction time: a smaller model, int8 weights, pruned weights
# --------------------------------------------------------------------------------------------------------------------


def accuracy(model, X, y) -> float:
    """Share of ``X`` that ``model`` classifies as ``y`` (eval mode, no gradients; the mode is restored)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return float((model(X).argmax(dim=1) == y).float().mean())
    finally:
        model.train(was_training)


def inference_config(model, X, *, predictions: int = 50_000) -> Callable[[], int]:
    """A function of no arguments that predicts ``predictions`` samples with ``model`` (``X`` over and over, in one
    batch of ``len(X)`` per call), for :func:`sustainlab.evidence.compare_interleaved`; it returns the count.

    Raises
    ------
    ValueError
        If ``predictions`` < 1 or ``X`` is empty.
    """
    import torch

    predictions = check_scalar(predictions, "predictions", min_value=1, integer=True)
    if len(X) == 0:
        raise ValueError("X must hold at least one sample to predict.")
    calls = math.ceil(predictions / len(X))
    model.eval()

    def run() -> int:
        with torch.inference_mode():
            for _ in range(calls):
                model(X)
        return calls * len(X)

    return run


def quantize_int8(model):
    """A copy of ``model`` whose ``nn.Linear`` layers hold int8 weights (post-training *dynamic* quantisation:
    activations are quantised on the fly), via ``torch.ao.quantization.quantize_dynamic``. CPU only."""
    import copy

    import torch

    with warnings.catch_warnings():
        # torch announces the deprecation of its quantized tensor types on every call: a warning for the course's
        # maintainers (torchao is the successor), not for learners.
        # torch.ao.quantization itself is deprecated in favour of torchao, which the course does not install.
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu().eval(), {torch.nn.Linear},
                                                      dtype=torch.qint8)


def model_bytes(model) -> int:
    """Size of ``model``'s saved ``state_dict`` in bytes (what storing or shipping the model costs)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def prune_magnitude(model, amount: float = 0.5):
    """A copy of ``model`` with the ``amount`` share of its ``nn.Linear`` weights of smallest magnitude set to zero
    (global L1 unstructured pruning, ``torch.nn.utils.prune``, made permanent). Returns ``(model, sparsity)``.

    The weights stay dense tensors: zeros are still multiplied, so without sparse kernels or structured pruning the
    saving is in model size after compression, not in compute.

    Raises
    ------
    ValueError
        If ``amount`` is not in [0, 1).
    """
    import copy

    import torch
    from torch.nn.utils import prune

    amount = check_scalar(amount, "amount", min_value=0.0, max_value=1.0, include_max=False)
    pruned = copy.deepcopy(model)
    layers = [(m, "weight") for m in pruned.modules() if isinstance(m, torch.nn.Linear)]
    if not layers:
        raise ValueError("model has no nn.Linear layer to prune.")
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in layers:
        prune.remove(module, name)
    total = sum(m.weight.numel() for m, _ in layers)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in layers)
    return pruned, zeros / total
