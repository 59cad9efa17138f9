"""Where benchmark results go and how they are written, shared by every ``benchmarks/bench_*.py`` script."""

from __future__ import annotations

import csv
from pathlib import Path

#: git-ignored folder for CSVs and plots
RESULTS_DIR = Path(__file__).resolve().parents[1] / "build" / "benchmarks"


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """Write ``rows`` (dicts with the same keys) as a CSV file, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
