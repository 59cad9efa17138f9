"""Tests for sustainlab.evidence: interleaved repeats, spreads, paired ratios and computed verdicts."""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest

from sustainlab import evidence
from sustainlab.evidence import (
    CHEAPER,
    COSTS_MORE,
    NO_DIFFERENCE,
    compare_interleaved,
    say,
    spread,
    verdict_from_ratios,
)


def test_docstring_examples_run():
    """Do the module's examples (which a reader copies) still give what they print?"""
    failures, _ = doctest.testmod(evidence, optionflags=doctest.ELLIPSIS)
    assert failures == 0


@pytest.mark.parametrize(
    "ratios, expected",
    [
        ([0.5, 0.9, 0.99], CHEAPER),
        ([1.01, 2.0, 1.5], COSTS_MORE),
        ([0.9, 1.1, 0.95], NO_DIFFERENCE),
        ([1.0, 1.0], NO_DIFFERENCE),  # exactly equal is not cheaper
        ([0.9, float("nan"), 0.8], CHEAPER),  # NaN (a run without energy) is ignored
        ([float("nan")], NO_DIFFERENCE),
    ],
)
def test_verdict_from_ratios(ratios, expected):
    """Is a verdict given only when every paired ratio lies on one side of 1?"""
    assert verdict_from_ratios(ratios) == expected


def test_spread_is_median_and_range():
    """Does spread() give the median and min–max of the finite values?"""
    s = spread([4.0, 1.0, 3.0, 2.0, float("inf")])
    assert (s.median, s.low, s.high, s.n) == (2.5, 1.0, 4.0, 4)
    assert s.format(".1f", "×") == "2.5× (1.0–4.0×)"
    assert math.isnan(spread([]).median)


def _recorder(calls, name, result=None):
    def run():
        calls.append(name)
        return result

    return run


def test_runs_are_interleaved_round_robin_with_rotation():
    """Does each round run every configuration once, starting with a different one each round?"""
    calls: list[str] = []
    configs = {name: _recorder(calls, name) for name in "abc"}
    comparison = compare_interleaved(configs, repeats=6, energy=False, warmup=False)
    assert calls == list("abc" "bca" "cab" "abc" "bca" "cab")
    assert [r.round for r in comparison.runs] == [i // 3 for i in range(18)]
    # every configuration is first in a round equally often
    firsts = [run.config for run in comparison.runs if run.position == 0]
    assert sorted(firsts) == sorted(list("abc") * 2)


def test_warmup_runs_each_configuration_once_unmeasured():
    calls: list[str] = []
    comparison = compare_interleaved({n: _recorder(calls, n) for n in "ab"}, repeats=2, energy=False)
    assert calls[:2] == ["a", "b"] and len(calls) == 6
    assert len(comparison.runs) == 4


def test_paired_ratios_and_verdicts_follow_the_measured_times(monkeypatch):
    """With scripted timings, are ratios paired by round and verdicts computed from them?"""
    # Per round: ref, fast, same, slow (the order rotates, so timings are keyed by configuration and round).
    script = {
        "ref": [1.0, 2.0, 1.0, 3.0, 1.0],
        "fast": [0.5, 1.5, 0.9, 2.0, 0.8],  # below ref in every round, although not below ref's median
        "same": [1.1, 1.9, 0.9, 3.1, 1.0],
        "slow": [2.0, 3.0, 1.5, 4.0, 1.2],
    }
    counters = {name: itertools.count() for name in script}

    def fake_run_once(func, label, energy):
        i = next(counters[label])
        return script[label][i], 2 * script[label][i], label, None

    monkeypatch.setattr(evidence, "_run_once", fake_run_once)
    comparison = compare_interleaved({name: (lambda: None) for name in script}, repeats=5, warmup=False)
    np.testing.assert_allclose(comparison.ratios("fast"), np.array(script["fast"]) / np.array(script["ref"]))
    assert comparison.verdict("fast") == CHEAPER
    assert comparison.verdict("same") == NO_DIFFERENCE
    assert comparison.verdict("slow", "energy_j") == COSTS_MORE
    assert comparison.verdict("ref") == "reference"
    assert comparison.results("slow") == ["slow"] * 5
    table = comparison.table()
    assert table.loc["fast", "seconds verdict"] == CHEAPER
    assert table.loc["slow", "energy_j median"] == pytest.approx(2 * 2.0)
    assert table.loc["fast", "seconds ratio max"] == pytest.approx(0.9 / 1.0)
    sentence = comparison.describe("fast")
    assert "fast takes" in sentence and "5 interleaved rounds: cheaper." in sentence


def test_real_workloads_get_the_right_verdict():
    """Does a workload that clearly takes longer come out as costing more, measured for real?"""
    import time

    comparison = compare_interleaved(
        {"short": lambda: time.sleep(0.002), "long": lambda: time.sleep(0.03)}, repeats=5, energy=False
    )
    assert comparison.verdict("long") == COSTS_MORE
    assert comparison.verdict("short") == "reference"


def test_energy_is_measured_per_run():
    """With energy on, does every run carry an energy figure and the method say how it was obtained?"""
    comparison = compare_interleaved({"a": lambda: sum(range(10_000))}, repeats=2, warmup=False)
    energies = comparison.values("a", "energy_j")
    assert energies.shape == (2,) and np.all(np.isfinite(energies)) and np.all(energies > 0)
    assert comparison.energy_method != "not measured"


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"configs": {}}, ValueError, "non-empty mapping"),
        ({"configs": [lambda: 1]}, ValueError, "non-empty mapping"),
        ({"configs": {"a": 3}}, ValueError, r"configs\['a'\] must be a function"),
        ({"configs": {"a": lambda: 1}, "repeats": 0}, ValueError, "repeats must be >= 1"),
        ({"configs": {"a": lambda: 1}, "repeats": 2.5}, TypeError, "repeats must be an integer"),
        ({"configs": {"a": lambda: 1}, "reference": "b"}, ValueError, "reference 'b' is not one of"),
    ],
)
def test_bad_input_is_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        compare_interleaved(**kwargs, energy=False)


def test_unknown_configuration_and_metric_are_named():
    comparison = compare_interleaved({"a": lambda: 1}, repeats=1, energy=False, warmup=False)
    with pytest.raises(ValueError, match="Unknown configuration 'b'"):
        comparison.values("b")
    with pytest.raises(ValueError, match="metric must be one of"):
        comparison.values("a", "watts")


def test_say_renders_markdown_and_rejects_non_text():
    assert say("**3** runs").data == "**3** runs"
    assert say("x")._repr_markdown_() == "x"
    with pytest.raises(TypeError, match="takes the Markdown text as a str"):
        say(0.937)
