"""The learner's carbon ledger: every measured block of the course, in one file, totalled by chapter.

Every outermost :func:`sustainlab.energy.measure` block adds one row (when, notebook, chapter, label, seconds, kWh,
kg CO₂e, grid, how the figure was obtained) to a SQLite file in the user's data directory, as located by
``platformdirs`` (e.g. ``~/.local/share/sustainlab/ledger.sqlite`` on Linux). ``sustainlab ledger`` prints the
totals; the end of ``notebooks/05_energy.ipynb`` plots them.

Switching it off or elsewhere, with the environment variable ``SUSTAINLAB_LEDGER``:

- ``off`` (or ``0``, ``false``, ``no``): nothing is written. The test suite, ``sustainlab run-all`` and grading set
  it, so they never write to the home directory;
- a file path: the ledger lives there instead;
- unset: the default location above.

``sustainlab ledger --reset`` deletes it.

Safety: writes take a lock file next to the ledger (two kernels writing at once both get their row in); a file that
is not a readable ledger is **moved aside** (``ledger.sqlite.corrupt-<time>``) with a warning, never overwritten, and
the new row goes to a fresh ledger; a ledger that cannot be written raises :class:`LedgerError` (``measure`` turns
it into a warning, so the measurement itself is kept).
"""

from __future__ import annotations

import datetime as _dt
import os
import sqlite3
import warnings
from pathlib import Path

__all__ = [
    "LEDGER_ENV",
    "LedgerError",
    "LED_BULB_W",
    "current_notebook",
    "everyday_comparison",
    "ledger_path",
    "plot_totals",
    "read",
    "record",
    "reset",
    "totals_by_chapter",
]

LEDGER_ENV = "SUSTAINLAB_LEDGER"
_OFF = {"off", "0", "false", "no"}
#: Power of the LED bulb in the everyday comparison (a typical household LED bulb; a formula constant, not measured).
LED_BULB_W = 10.0

_COLUMNS = ("recorded_at", "notebook", "chapter", "label", "seconds", "energy_kwh", "emissions_kg", "grid",
            "pue", "method")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS measurements (recorded_at TEXT, notebook TEXT, chapter TEXT, label TEXT, "
    "seconds REAL, energy_kwh REAL, emissions_kg REAL, grid TEXT, pue REAL, method TEXT)"
)


class LedgerError(RuntimeError):
    """The ledger file could not be read or written; the message names the file and how to move or switch it off."""


def ledger_path() -> Path | None:
    """Where the ledger lives, or ``None`` when ``SUSTAINLAB_LEDGER`` switches it off."""
    value = os.environ.get(LEDGER_ENV, "").strip()
    if value.lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("sustainlab", appauthor=False)) / "ledger.sqlite"


def current_notebook() -> str:
    """Name of the notebook this kernel runs (e.g. ``"05_energy"``), or ``"other"`` outside a known notebook.

    JupyterLab (and ``sustainlab run-all``) tell the kernel its notebook through ``JPY_SESSION_NAME``.
    """
    session = os.environ.get("JPY_SESSION_NAME", "").strip()
    if session:
        return Path(session).stem
    return "other"


def _chapter(notebook: str) -> str:
    """``"05"`` for ``"05_energy"`` (the course's chapter table), else the leading number, else ``"other"``."""
    from .chapters import CHAPTERS

    for chapter in CHAPTERS:
        if notebook == f"{chapter.number:02d}_{chapter.slug}":
            return f"{chapter.number:02d}"
    head = notebook.split("_", 1)[0]
    return head if head.isdigit() else "other"


def _unwritable(path: Path, error: Exception) -> LedgerError:
    return LedgerError(
        f"Cannot write the carbon ledger at {path}: {error}. Point {LEDGER_ENV} at a writable file "
        f"(e.g. {LEDGER_ENV}=~/sustainlab-ledger.sqlite) or switch it off with {LEDGER_ENV}=off."
    )


def _is_corrupt(error: sqlite3.DatabaseError) -> bool:
    # "database is locked" and friends are OperationalError (a subclass): those are not corruption.
    return not isinstance(error, sqlite3.OperationalError) or "malformed" in str(error) or "not a database" in str(
        error)


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=30)
    connection.execute(_SCHEMA)
    # Reading the table proves the file is a ledger (a garbage file fails here, not at the first insert).
    connection.execute("SELECT count(*) FROM measurements").fetchone()
    return connection


def _move_aside(path: Path) -> Path:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, aside)
    return aside


def record(measurement, *, notebook: str | None = None, path: str | Path | None = None) -> Path | None:
    """Add one finished measurement to the ledger; returns the ledger's path (``None`` when switched off).

    Parameters
    ----------
    measurement : sustainlab.energy.Measurement
        A finished measurement.
    notebook : str, optional
        Default: :func:`current_notebook`.
    path : path-like, optional
        Default: :func:`ledger_path` (whose ``off`` this overrides).

    Raises
    ------
    ValueError
        If ``measurement`` is not a finished Measurement.
    LedgerError
        If the ledger cannot be created or written. A corrupt ledger is not an error: it is moved aside (a
        ``RuntimeWarning`` names where) and the row goes to a fresh ledger.
    """
    from .energy import Measurement

    if not isinstance(measurement, Measurement) or not measurement.finished:
        raise ValueError("record() needs a finished Measurement (use it after the `with measure(...)` block ends).")
    path = ledger_path() if path is None else Path(path).expanduser()
    if path is None:
        return None
    notebook = current_notebook() if notebook is None else str(notebook)
    row = (
        _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), notebook, _chapter(notebook),
        measurement.label, measurement.duration_s, measurement.energy_kwh, measurement.emissions_kg,
        measurement.grid or measurement.country_iso_code, measurement.pue, measurement.basis or measurement.how(),
    )
    from filelock import FileLock, Timeout

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock", timeout=30)
        with lock:
            try:
                connection = _connect(path)
            except sqlite3.DatabaseError as error:
                if not _is_corrupt(error):
                    raise
                aside = _move_aside(path)
                warnings.warn(
                    f"The carbon ledger {path} was not readable ({error}); it was moved to {aside} (nothing "
                    f"deleted) and a new ledger started.", RuntimeWarning, stacklevel=2,
                )
                connection = _connect(path)
            try:
                with connection:
                    connection.execute(f"INSERT INTO measurements VALUES ({', '.join('?' * len(_COLUMNS))})", row)
            finally:
                connection.close()
    except Timeout as error:
        raise _unwritable(path, f"another process holds {error.lock_file}") from error
    except (OSError, sqlite3.Error) as error:
        raise _unwritable(path, error) from error
    return path


def read(path: str | Path | None = None):
    """Every row of the ledger as a pandas DataFrame (empty, with the columns, when there is no ledger yet)."""
    import pandas as pd

    path = ledger_path() if path is None else Path(path).expanduser()
    if path is None or not path.exists():
        return pd.DataFrame(columns=list(_COLUMNS))
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            cursor = connection.execute(f"SELECT {', '.join(_COLUMNS)} FROM measurements ORDER BY recorded_at")
            return pd.DataFrame(cursor.fetchall(), columns=list(_COLUMNS))
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise LedgerError(f"Cannot read the carbon ledger at {path}: {error}. The next measurement moves it aside "
                          f"and starts a new one; `sustainlab ledger --reset` deletes it.") from error


def totals_by_chapter(table=None):
    """Runs, seconds, kWh, joules and g CO₂e per chapter, with a ``total`` row last."""
    table = read() if table is None else table
    numeric = table.astype({"seconds": float, "energy_kwh": float, "emissions_kg": float})
    grouped = numeric.groupby("chapter", sort=True).agg(
        runs=("label", "size"), seconds=("seconds", "sum"), energy_kwh=("energy_kwh", "sum"),
        emissions_kg=("emissions_kg", "sum"),
    )
    grouped.loc["total"] = grouped.sum(numeric_only=True)
    grouped["runs"] = grouped["runs"].astype(int)
    grouped["energy_J"] = grouped["energy_kwh"] * 3.6e6
    grouped["g_CO2e"] = grouped["emissions_kg"] * 1000
    return grouped


def everyday_comparison(energy_kwh: float) -> str:
    """The same energy as minutes of a :data:`LED_BULB_W` LED bulb, e.g. ``"a 10 W LED bulb lit for 3.2 minutes"``."""
    minutes = float(energy_kwh) * 1000 / LED_BULB_W * 60
    if minutes >= 120:
        return f"a {LED_BULB_W:g} W LED bulb lit for {minutes / 60:.1f} hours"
    if minutes >= 1:
        return f"a {LED_BULB_W:g} W LED bulb lit for {minutes:.1f} minutes"
    return f"a {LED_BULB_W:g} W LED bulb lit for {minutes * 60:.1f} seconds"


def plot_totals(totals=None, ax=None):
    """Bar chart of the energy (J) per chapter from :func:`totals_by_chapter`; returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    totals = totals_by_chapter() if totals is None else totals
    per_chapter = totals.drop(index="total", errors="ignore")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    ax.bar([str(c) for c in per_chapter.index], per_chapter["energy_J"], color="tab:green")
    ax.set_xlabel("chapter")
    ax.set_ylabel("energy (J, as measured or estimated)")
    ax.set_title("Your course so far: energy per chapter (carbon ledger)")
    return ax


def reset(path: str | Path | None = None) -> Path | None:
    """Delete the ledger (and its lock file); returns the path deleted, or ``None`` if there was none."""
    path = ledger_path() if path is None else Path(path).expanduser()
    if path is None or not path.exists():
        return None
    path.unlink()
    Path(str(path) + ".lock").unlink(missing_ok=True)
    return path
