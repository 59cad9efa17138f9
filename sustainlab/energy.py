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
    "DEFAULT_INTERVAL_S",
    "Measurement",
    "Meter",
    "measure",
    "carbon_intensity",
    "carbon_intensity_table",
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
    "LeverRun",
    "run_training",
    "lever_table",
    "plot_energy_vs_accuracy",
]

#: Default country for the grid's carbon intensity: France (≈ 56 g CO₂e/kWh in codecarbon's bundled data), where the
#: course was written. Pass ``country_iso_code=`` (ISO 3166-1 alpha-3, e.g. ``"DEU"``, ``"USA"``) for yours.
DEFAULT_COUNTRY = "FRA"

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


def _check_country(country_iso_code) -> str:
    if not isinstance(country_iso_code, str):
        raise TypeError(f"country_iso_code must be a 3-letter ISO code such as 'FRA', got {country_iso_code!r}.")
    code = country_iso_code.strip().upper()
    mix = _energy_mix()
    if code not in mix:
        import difflib

        by_name = {data.get("country_name", "").lower(): iso for iso, data in mix.items()}
        guess = by_name.get(country_iso_code.strip().lower())
        close = [guess] if guess else difflib.get_close_matches(code, list(mix), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown country_iso_code {country_iso_code!r}: codecarbon's bundled data has no grid carbon intensity "
            f"for it. Use a 3-letter ISO 3166-1 code such as 'FRA', 'DEU' or 'USA'.{hint}"
        )
    return code


def carbon_intensity(country_iso_code: str = DEFAULT_COUNTRY) -> float:
    """Average carbon intensity of a country's electricity grid, in g CO₂e per kWh, from codecarbon's bundled data.

    Works offline and is deterministic (one yearly figure per country, not the live grid).

    Parameters
    ----------
    country_iso_code : str, default "FRA"
        ISO 3166-1 alpha-3 code.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If codecarbon has no data for this code (the message suggests close matches).

    Examples
    --------
    >>> round(carbon_intensity("FRA"))
    56
    """
    code = _check_country(country_iso_code)
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

    @property
    def estimated(self) -> bool:
        """True when any energy figure comes from a power model rather than a sensor."""
        parts = [v for k, v in self.method.items() if k in ("cpu", "gpu", "ram")]
        return not parts or any(not v.startswith("sensor") for v in parts if not v.startswith("none"))

    @property
    def sensor_parts(self) -> list[str]:
        """The parts (``"cpu"``, ``"gpu"``, ``"ram"``) whose figure was read from a sensor."""
        return [k for k in ("cpu", "gpu", "ram") if self.method.get(k, "").startswith("sensor")]

    def how(self) -> str:
        """One phrase saying how the energy was obtained: estimated, partly measured, or measured."""
        sensors = self.sensor_parts
        if not self.estimated:
            return "measured by sensors"
        if not sensors:
            return "ESTIMATE (no power sensor readable here)"
        estimated = [k.upper() for k in ("cpu", "gpu", "ram") if self.method.get(k, "").startswith("estimate")]
        return f"PARTLY MEASURED: {'/'.join(k.upper() for k in sensors)} from a sensor, {'/'.join(estimated)} estimated"

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
        """A few human-readable lines: time, energy and its split, CO₂e, and whether the figures are estimates."""
        if not self.finished:
            return f"{self.label}: still running (the figures are filled in when the block ends)."
        if not math.isfinite(self.energy_kwh):
            return f"{self.label}: {self.duration_s:.2f} s; energy unavailable ({self.method.get('error', '?')})."
        parts = [
            f"{name} {share:.0%}"
            for name, share in (
                ("CPU", self.cpu_energy_kwh / self.energy_kwh if self.energy_kwh else 0.0),
                ("GPU", self.gpu_energy_kwh / self.energy_kwh if self.energy_kwh else 0.0),
                ("RAM", self.ram_energy_kwh / self.energy_kwh if self.energy_kwh else 0.0),
            )
            if share > 0 or name != "GPU"
        ]
        kind = self.how()
        lines = [
            f"{self.label}: {self.duration_s:.2f} s, {_fmt_energy(self.energy_kwh)} "
            f"(≈ {self.average_power_w:.1f} W on average; {', '.join(parts)})",
            f"  {_fmt_mass(self.emissions_kg)} CO₂e at {self.carbon_intensity_g_per_kwh:.0f} g/kWh "
            f"({self.country_name or self.country_iso_code} grid), PUE {self.pue:g}",
            f"  how: {kind}",
        ]
        for part in ("cpu", "gpu", "ram"):
            if part in self.method:
                lines.append(f"    {part.upper()}: {self.method[part]}")
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


class Meter:
    """What :func:`measure` returns: a context manager and a decorator. Use :func:`measure` to create one."""

    def __init__(
        self,
        label: str,
        *,
        country_iso_code: str,
        pue: float,
        carbon_intensity_g_per_kwh: float | None,
        tracking_mode: str,
        interval_s: float,
        output_dir: str | None,
    ):
        if not isinstance(label, str):
            raise TypeError(f"label must be a string, got {type(label).__name__}.")
        self.label = label
        self.country_iso_code = _check_country(country_iso_code)
        self.pue = check_scalar(pue, "pue", min_value=1.0)
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

        kwargs: dict[str, Any] = dict(
            country_iso_code=self.country_iso_code,
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
        if self.forced_intensity is not None:
            kwargs["force_carbon_intensity_g_co2e_kwh"] = self.forced_intensity
        return codecarbon.OfflineEmissionsTracker(**kwargs)

    def __enter__(self) -> Measurement:
        country = _energy_mix()[self.country_iso_code]
        measurement = Measurement(
            label=self.label,
            country_iso_code=self.country_iso_code,
            pue=self.pue,
            country_name=country.get("country_name", self.country_iso_code),
        )
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
        else:
            measurement.carbon_intensity_g_per_kwh = carbon_intensity(self.country_iso_code)
            year = _energy_mix()[self.country_iso_code].get("year", "?")
            measurement.method["carbon_intensity"] = (
                f"estimate: yearly average of the {measurement.country_name} grid ({year}, codecarbon's bundled data)"
            )
        measurement.finished = True
        self.measurements.append(measurement)
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
    country_iso_code: str = DEFAULT_COUNTRY,
    pue: float = 1.0,
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

    Parameters
    ----------
    label : str, default "run"
        Name shown in summaries and comparison tables.
    country_iso_code : str, default "FRA"
        Country whose grid carbon intensity turns kWh into CO₂e (ISO 3166-1 alpha-3), from codecarbon's offline data.
    pue : float, default 1.0
        Power Usage Effectiveness of the building: total facility energy / computing energy, ≥ 1. 1.0 means
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
    (True, 'FRA')
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
    return "\n".join([verdict, *details])


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
        published_energy_kwh=None,
        published_emissions_kg=192 / _LBS_PER_KG,
        rel_tol=0.005,
        note="8 P100 GPUs; 1,515.43 W measured for CPU + DRAM + GPUs; 192 lbs CO₂e.",
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

    Taught in ``notebooks/05_energy.ipynb``, *Which levers save energy?*
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


@dataclass
class LeverRun:
    """One measured training run of the lever experiments."""

    label: str
    measurement: Measurement
    history: Any
    n_params: int
    model: Any = field(default=None, repr=False)

    @property
    def eval_accuracy(self) -> float:
        return float(self.history.eval_accuracy[-1])

    @property
    def flops(self) -> float:
        return _dense_training_flops(self.n_params, self.history.samples_seen)


def run_training(
    label: str,
    model,
    train_data,
    eval_data,
    *,
    lr: float = 1e-3,
    epochs: int = 30,
    target_accuracy: float | None = None,
    precision: str = "fp32",
    accumulation_steps: int = 1,
    loss_fn: Callable | None = None,
    device=None,
    **measure_kwargs,
) -> LeverRun:
    """Train ``model`` with Adam through :func:`sustainlab.optim.train` inside :func:`measure`.

    With ``target_accuracy``, training stops after the first epoch whose eval accuracy reaches it (early stopping);
    otherwise it runs all ``epochs``.
    """
    import torch

    from .optim import train

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    stop_when = None
    if target_accuracy is not None:
        target_accuracy = check_scalar(target_accuracy, "target_accuracy", min_value=0.0, max_value=1.0)
        stop_when = lambda h: h.eval_accuracy[-1] >= target_accuracy  # noqa: E731
    with measure(label, **measure_kwargs) as m:
        history = train(
            model, train_data, optimizer, epochs, loss_fn=loss_fn, device=device, accumulation_steps=accumulation_steps,
            precision=precision, eval_data=eval_data, stop_when=stop_when, desc=label,
        )
    return LeverRun(label, m, history, _n_params(model), model)


def lever_table(runs: Sequence[LeverRun], *, reference: str | None = None):
    """The levers table: epochs, optimizer steps, samples, eval accuracy, seconds, joules, energy ratio.

    ``reference`` names the run the ``energy_vs_ref`` column divides by (the first run by default).
    """
    import pandas as pd

    rows = [
        {
            "run": r.label,
            "params": r.n_params,
            "epochs": r.history.epochs,
            "steps": r.history.optimizer_steps,
            "samples": r.history.samples_seen,
            "eval_acc": r.eval_accuracy,
            "seconds": r.measurement.duration_s,
            "energy_J": r.measurement.energy_j,
            "mJ_per_sample": r.measurement.energy_j * 1000 / max(r.history.samples_seen, 1),
            "mg_CO2e": r.measurement.emissions_kg * 1e6,
        }
        for r in runs
    ]
    table = pd.DataFrame(rows)
    ref = table.set_index("run").loc[reference, "energy_J"] if reference else table["energy_J"].iloc[0]
    table["energy_vs_ref"] = table["energy_J"] / ref
    return table


def plot_energy_vs_accuracy(runs: Sequence[LeverRun], ax=None):
    """Scatter of eval accuracy against measured energy (J), one labelled point per run; returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    # Runs that stop at the same target accuracy pile up on one line: a legend stays readable where labels would not.
    markers = "osD^v<>Pp*Xh"
    for i, r in enumerate(runs):
        ax.scatter(r.measurement.energy_j, r.eval_accuracy, marker=markers[i % len(markers)], s=50, label=r.label,
                   alpha=0.85)
    ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("energy of the training run (J, estimated)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Levers: energy vs accuracy")
    return ax
