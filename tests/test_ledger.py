"""Tests for sustainlab.ledger: location, on/off, concurrency, corruption, totals and the `sustainlab ledger` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from sustainlab import ledger
from sustainlab.cli import main
from sustainlab.energy import Measurement, measure

ROOT = Path(__file__).resolve().parents[1]


def _m(label="run", kwh=1e-6, seconds=1.0):
    return Measurement(label, "FRA", 1.0, duration_s=seconds, energy_kwh=kwh, cpu_energy_kwh=kwh / 4,
                       gpu_energy_kwh=0.0, ram_energy_kwh=3 * kwh / 4, emissions_kg=kwh * 0.056,
                       carbon_intensity_g_per_kwh=56.0, grid="France grid, 56 g/kWh", finished=True,
                       method={"cpu": "estimate: x", "gpu": "none: y", "ram": "estimate: z"},
                       basis="estimate: CPU 2 threads × 4 W assumed × load, RAM 10 W assumed, no sensor")


@pytest.fixture
def book(tmp_path, monkeypatch):
    path = tmp_path / "data" / "ledger.sqlite"
    monkeypatch.setenv("SUSTAINLAB_LEDGER", str(path))
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "05_energy.ipynb"))
    return path


def test_off_under_the_test_suite_and_never_in_home():
    # conftest.py switches it off for the whole suite, so no test (and no notebook under nbval) writes to ~.
    assert os.environ["SUSTAINLAB_LEDGER"] == "off"
    assert ledger.ledger_path() is None
    assert ledger.record(_m()) is None


def test_default_location_is_the_user_data_dir(monkeypatch):
    import platformdirs

    monkeypatch.delenv("SUSTAINLAB_LEDGER")
    expected = Path(platformdirs.user_data_dir("sustainlab", appauthor=False)) / "ledger.sqlite"
    assert ledger.ledger_path() == expected


def test_measure_records_outermost_blocks_only(book):
    with measure("outer"):
        with measure("inner"):
            pass
    rows = ledger.read()
    assert list(rows["label"]) == ["outer"], "an inner block's energy is already in the outer one's"
    row = rows.iloc[0]
    assert (row["notebook"], row["chapter"]) == ("05_energy", "05")
    assert row["energy_kwh"] > 0 and row["seconds"] > 0 and "grid" in row["grid"]
    assert row["method"].startswith(("estimate:", "measured:", "partly measured:"))


def test_totals_by_chapter_and_everyday_comparison(book):
    ledger.record(_m("a", kwh=1e-3), notebook="01_gradient_descent")
    ledger.record(_m("b", kwh=2e-3), notebook="05_energy")
    ledger.record(_m("c", kwh=3e-3), notebook="05_energy")
    ledger.record(_m("d", kwh=4e-3), notebook="scratch")
    totals = ledger.totals_by_chapter()
    assert list(totals.index) == ["01", "05", "other", "total"]
    assert totals.loc["05", "runs"] == 2 and totals.loc["total", "runs"] == 4
    assert totals.loc["05", "energy_kwh"] == pytest.approx(5e-3)
    assert totals.loc["total", "energy_J"] == pytest.approx(10e-3 * 3.6e6)
    assert totals.loc["total", "g_CO2e"] == pytest.approx(10e-3 * 0.056 * 1000)
    # 10 Wh keep a 10 W bulb lit for an hour.
    assert ledger.everyday_comparison(10e-3) == "a 10 W LED bulb lit for 60.0 minutes"
    assert ledger.everyday_comparison(1e-6) == "a 10 W LED bulb lit for 0.4 seconds"


_WRITER = """
import sys
from sustainlab import ledger
from sustainlab.energy import Measurement
m = Measurement("p", "FRA", 1.0, duration_s=0.1, energy_kwh=1e-7, emissions_kg=1e-9, finished=True)
for i in range(int(sys.argv[2])):
    ledger.record(m, notebook=sys.argv[1])
"""


def test_two_processes_writing_at_once_lose_nothing(book):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, name, "40"], env=env)
               for name in ("03_smote", "04_fairness")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    rows = ledger.read()
    assert len(rows) == 80
    assert rows["notebook"].value_counts().to_dict() == {"03_smote": 40, "04_fairness": 40}


def test_corrupt_ledger_is_moved_aside_and_the_row_kept(book):
    book.parent.mkdir(parents=True)
    book.write_bytes(b"this is not a database, but a learner's notes" * 100)
    with pytest.warns(RuntimeWarning, match="moved to .*corrupt-"):
        ledger.record(_m("after corruption"))
    aside = list(book.parent.glob("ledger.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database"), "never overwritten"
    assert list(ledger.read()["label"]) == ["after corruption"], "no measurement lost"


def test_corrupt_ledger_through_measure_warns_and_keeps_the_measurement(book):
    book.parent.mkdir(parents=True)
    book.write_text("garbage")
    with pytest.warns(RuntimeWarning, match="carbon ledger"):
        with measure("kept") as m:
            pass
    assert m.finished and list(ledger.read()["label"]) == ["kept"]


def test_unwritable_ledger_is_a_clear_error_and_measure_still_returns(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("SUSTAINLAB_LEDGER", str(blocker / "ledger.sqlite"))
    with pytest.raises(ledger.LedgerError, match="Cannot write the carbon ledger .*SUSTAINLAB_LEDGER=off"):
        ledger.record(_m())
    with pytest.warns(RuntimeWarning, match="Cannot write the carbon ledger"):
        with measure("still measured") as m:
            pass
    assert m.finished and m.energy_kwh >= 0


def test_record_rejects_unfinished_measurements(book):
    with pytest.raises(ValueError, match="finished Measurement"):
        ledger.record(Measurement("x", "FRA", 1.0))


def test_cli_ledger_totals_and_reset(book, capsys):
    assert main(["ledger"]) == 0
    assert "empty" in capsys.readouterr().out
    ledger.record(_m("a", kwh=2e-3), notebook="02_attention")
    assert main(["ledger"]) == 0
    out = capsys.readouterr().out
    assert "02" in out and "total" in out and "LED bulb" in out and str(book) in out
    assert main(["ledger", "--reset"]) == 0
    assert "deleted" in capsys.readouterr().out and not book.exists()


def test_cli_ledger_off_and_corrupt(book, monkeypatch, capsys):
    book.parent.mkdir(parents=True)
    book.write_text("garbage")
    assert main(["ledger"]) == 2
    assert "Cannot read the carbon ledger" in capsys.readouterr().err
    monkeypatch.setenv("SUSTAINLAB_LEDGER", "off")
    assert main(["ledger"]) == 0
    assert "off" in capsys.readouterr().out
