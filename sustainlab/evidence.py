"""Noise measured, not asserted: interleaved repeats, their spread, paired ratios and the verdicts drawn from them.

Time and energy of a run vary from one run to the next (other processes, frequency scaling, caches), so one run of
configuration A against one of B says little. :func:`compare_interleaved` runs every configuration ``repeats``
times **round-robin** (A B C, then B C A, ...), so slow drift of the machine hits every configuration alike, and
compares each run with the reference run *of the same round* (paired ratios). A verdict is then computed, never
typed: a configuration is "cheaper" only when every paired ratio lies below 1, "costs more" only when every one lies
above 1, and otherwise there is "no measurable difference on this machine".

Used by every chapter that compares costs (first in ``notebooks/01_gradient_descent.ipynb``), and by :func:`say`,
which renders a sentence built from computed values as Markdown, so that no measured number is typed into prose.

Examples
--------
>>> import time
>>> comparison = compare_interleaved(
...     {"short": lambda: time.sleep(0.001), "long": lambda: time.sleep(0.02)},
...     repeats=5, reference="short", energy=False)
>>> comparison.verdict("long", "seconds")
'costs more'
>>> int(comparison.table().loc["long", "runs"])
5
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .validation import check_option, check_scalar

__all__ = [
    "CHEAPER",
    "COSTS_MORE",
    "NO_DIFFERENCE",
    "Comparison",
    "Run",
    "Spread",
    "compare_interleaved",
    "say",
    "spread",
    "verdict_from_ratios",
]

CHEAPER = "cheaper"
COSTS_MORE = "costs more"
NO_DIFFERENCE = "no measurable difference on this machine"
#: The quantities a :class:`Run` records, with their units, as used by :meth:`Comparison.spread` and friends.
METRICS = {"seconds": "s", "energy_j": "J"}


@dataclass(frozen=True)
class Spread:
    """Median and range (min–max) of repeated values; ``n`` counts the finite values behind them."""

    median: float
    low: float
    high: float
    n: int

    def format(self, fmt: str = ".3g", unit: str = "") -> str:
        """E.g. ``"0.95× (0.83–1.12×)"`` for ``unit="×"``: the median, then the range in brackets."""
        return f"{self.median:{fmt}}{unit} ({self.low:{fmt}}–{self.high:{fmt}}{unit})"

    def __str__(self) -> str:
        return self.format()


def spread(values) -> Spread:
    """The :class:`Spread` of ``values``, ignoring NaN (e.g. energy where no tracker could run).

    Examples
    --------
    >>> spread([3.0, 1.0, 2.0, float("nan")])
    Spread(median=2.0, low=1.0, high=3.0, n=3)
    """
    array = np.asarray(values, dtype=float).ravel()
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return Spread(math.nan, math.nan, math.nan, 0)
    return Spread(float(np.median(finite)), float(finite.min()), float(finite.max()), int(finite.size))


def verdict_from_ratios(ratios) -> str:
    """``"cheaper"`` if every paired ratio is below 1, ``"costs more"`` if every one is above 1, else no difference.

    The rule is deliberately strict: with 5 rounds, all five ratios on one side of 1 happens by chance with
    probability 2 × 0.5⁵ ≈ 6 % when the two configurations really cost the same (a sign test).

    Examples
    --------
    >>> verdict_from_ratios([0.8, 0.9, 0.85])
    'cheaper'
    >>> verdict_from_ratios([0.8, 1.1, 0.85])
    'no measurable difference on this machine'
    """
    finite = np.asarray(ratios, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return NO_DIFFERENCE
    if finite.max() < 1:
        return CHEAPER
    if finite.min() > 1:
        return COSTS_MORE
    return NO_DIFFERENCE


@dataclass(frozen=True)
class Run:
    """One run of one configuration: which round, its position in that round, what it cost and what it returned."""

    config: str
    round: int
    position: int
    seconds: float
    energy_j: float
    result: Any = None


@dataclass
class Comparison:
    """What :func:`compare_interleaved` measured: every run, and the summaries and verdicts computed from them."""

    runs: list[Run]
    configs: tuple[str, ...]
    reference: str
    repeats: int
    energy_method: str = "not measured"
    _by_config: dict[str, list[Run]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_config = {name: sorted((r for r in self.runs if r.config == name), key=lambda r: r.round)
                           for name in self.configs}

    def _config(self, config: str) -> list[Run]:
        if config not in self._by_config:
            raise ValueError(f"Unknown configuration {config!r}; measured: {', '.join(self.configs)}.")
        return self._by_config[config]

    def values(self, config: str, metric: str = "seconds") -> np.ndarray:
        """The ``metric`` (``"seconds"`` or ``"energy_j"``) of every run of ``config``, in round order."""
        check_option(metric, "metric", tuple(METRICS))
        return np.array([getattr(run, metric) for run in self._config(config)], dtype=float)

    def results(self, config: str) -> list:
        """What each run of ``config`` returned, in round order (e.g. the accuracy a training run reached)."""
        return [run.result for run in self._config(config)]

    def spread(self, config: str, metric: str = "seconds") -> Spread:
        """Median and min–max of ``metric`` over the runs of ``config``."""
        return spread(self.values(config, metric))

    def ratios(self, config: str, metric: str = "seconds") -> np.ndarray:
        """``config`` / reference for each round: paired, so drift between rounds cancels."""
        return self.values(config, metric) / self.values(self.reference, metric)

    def ratio_spread(self, config: str, metric: str = "seconds") -> Spread:
        """Median and min–max of the paired ratios of ``config`` against the reference."""
        return spread(self.ratios(config, metric))

    def verdict(self, config: str, metric: str = "seconds") -> str:
        """``"cheaper"``, ``"costs more"`` or ``"no measurable difference on this machine"`` (see the module)."""
        if config == self.reference:
            return "reference"
        return verdict_from_ratios(self.ratios(config, metric))

    def describe(self, config: str, metric: str = "seconds") -> str:
        """One sentence with the paired ratios' median and range, the number of rounds and the verdict.

        E.g. ``"batch 128 takes 0.91× (0.85–0.97×) the time of batch 32 over 5 interleaved rounds: cheaper."``
        """
        what = "the time" if metric == "seconds" else "the energy"
        verb = "takes" if metric == "seconds" else "uses"
        ratio = self.ratio_spread(config, metric)
        return (f"{config} {verb} {ratio.format('.2f', '×')} {what} of {self.reference} over "
                f"{self.repeats} interleaved rounds: {self.verdict(config, metric)}.")

    def table(self):
        """One row per configuration: runs, median and range of time and energy, paired ratios and verdicts."""
        import pandas as pd

        rows = {}
        for name in self.configs:
            row: dict[str, Any] = {"runs": len(self._config(name))}
            for metric, unit in METRICS.items():
                s = self.spread(name, metric)
                row.update({f"{metric} median": s.median, f"{metric} min": s.low, f"{metric} max": s.high})
            for metric in METRICS:
                r = self.ratio_spread(name, metric)
                row.update({f"{metric} ratio median": r.median, f"{metric} ratio min": r.low,
                            f"{metric} ratio max": r.high, f"{metric} verdict": self.verdict(name, metric)})
            rows[name] = row
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "configuration"
        return table


def compare_interleaved(
    configs: Mapping[str, Callable[[], Any]],
    *,
    repeats: int = 5,
    reference: str | None = None,
    energy: bool = True,
    warmup: bool = True,
) -> Comparison:
    """Run each configuration ``repeats`` times, round-robin, timing each run (and measuring its energy).

    Parameters
    ----------
    configs : mapping of str to callable
        Name → a function of no arguments that does the work once. Its return value is kept
        (:meth:`Comparison.results`), e.g. the accuracy a training run reached, so quality can be compared too.
    repeats : int, default 5
        Rounds; each round runs every configuration once. At least 5, so that a verdict can rest on more than
        chance (see :func:`verdict_from_ratios`); 1–4 are allowed for quick experiments but give no verdict other
        than "no measurable difference" when they disagree.
    reference : str, optional
        The configuration the others are compared with; defaults to the first.
    energy : bool, default True
        Measure each run with :func:`sustainlab.energy.measure` (codecarbon, offline). On a machine without a power
        sensor that figure is an estimate; ``Comparison.energy_method`` says how it was obtained.
    warmup : bool, default True
        Run each configuration once, unmeasured, before the first round (first calls pay for imports, caches and
        memory allocation).

    Returns
    -------
    Comparison

    Raises
    ------
    ValueError
        No configuration, ``repeats < 1``, an unknown reference, a configuration that is not callable.

    Notes
    -----
    The order rotates each round (round ``r`` starts with configuration ``r mod k``), so no configuration always
    runs first, when caches are cold, or last.
    """
    if not isinstance(configs, Mapping) or not configs:
        raise ValueError("configs must be a non-empty mapping of name → function of no arguments.")
    names = tuple(configs)
    for name, func in configs.items():
        if not callable(func):
            raise ValueError(f"configs[{name!r}] must be a function of no arguments, got {type(func).__name__}.")
    repeats = check_scalar(repeats, "repeats", min_value=1, integer=True)
    reference = names[0] if reference is None else reference
    if reference not in configs:
        raise ValueError(f"reference {reference!r} is not one of the configurations: {', '.join(names)}.")

    if warmup:
        for func in configs.values():
            func()
    runs: list[Run] = []
    method = "not measured"
    for round_ in range(repeats):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for position, name in enumerate(order):
            seconds, energy_j, result, how = _run_once(configs[name], name, energy)
            method = how or method
            runs.append(Run(name, round_, position, seconds, energy_j, result))
    return Comparison(runs=runs, configs=names, reference=reference, repeats=repeats, energy_method=method)


def _run_once(func: Callable[[], Any], label: str, energy: bool) -> tuple[float, float, Any, str | None]:
    if not energy:
        started = time.perf_counter()
        result = func()
        return time.perf_counter() - started, math.nan, result, None
    from .energy import measure

    with measure(label) as measurement:
        result = func()
    return measurement.duration_s, measurement.energy_j, result, measurement.how()


def say(text: str):
    """Show ``text`` (Markdown) as rendered prose in a notebook; the way a measured number enters a sentence.

    Returns the ``IPython.display.Markdown`` object (displayed when it is a cell's last value). Outside IPython it is
    still a plain object whose ``data`` is the text.

    Examples
    --------
    >>> say(f"The model reached **{0.9731:.1%}** accuracy.").data
    'The model reached **97.3%** accuracy.'
    """
    if not isinstance(text, str):
        raise TypeError(f"say() takes the Markdown text as a str, got {type(text).__name__}.")
    from IPython.display import Markdown

    return Markdown(text)
