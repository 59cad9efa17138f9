"""Benchmark sustainlab.fairness against fairlearn: time per call for growing n and number of groups.

Usage::

    python benchmarks/bench_fairness.py                       # n = 1e3 … 1e5, 2 and 16 groups (fairlearn takes seconds per call at 1e5)
    python benchmarks/bench_fairness.py --sizes 1000 100000 --groups 2

Writes ``build/benchmarks/bench_fairness.csv`` and prints a table with the ratio fairlearn / sustainlab measured in
the same run (> 1: sustainlab is faster). Time is the fastest of ``--repeats`` calls (the steadier figure on a shared
machine). Every pair of results is also checked to agree within 1e-12, so a fast wrong answer cannot win.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fairlearn.metrics as fm  # noqa: E402

from sustainlab import fairness as sf  # noqa: E402
from _results import RESULTS_DIR, write_csv  # noqa: E402  (sibling module: scripts run from this folder)

FUNCTIONS = ("demographic_parity_difference", "equalized_odds_difference", "equal_opportunity_difference")


def _best_time(func, repeats: int) -> tuple[float, float]:
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = func()
        best = min(best, time.perf_counter() - start)
    return best, value


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--groups", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "bench_fairness.csv")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        for n_groups in args.groups:
            y_true = rng.integers(0, 2, n)
            y_pred = np.where(rng.random(n) < 0.8, y_true, 1 - y_true)
            groups = rng.choice([f"g{i}" for i in range(n_groups)], n)
            for name in FUNCTIONS:
                ours_s, ours = _best_time(lambda: getattr(sf, name)(y_true, y_pred, sensitive_features=groups),
                                          args.repeats)
                theirs_s, theirs = _best_time(lambda: getattr(fm, name)(y_true, y_pred, sensitive_features=groups),
                                              args.repeats)
                if abs(ours - theirs) > 1e-12:
                    raise AssertionError(f"{name} disagrees with fairlearn at n={n}: {ours} vs {theirs}")
                rows.append({"function": name, "n": n, "groups": n_groups, "sustainlab_s": ours_s,
                             "fairlearn_s": theirs_s, "speedup": theirs_s / ours_s})

    write_csv(rows, args.out)
    print(f"{'function':<32}{'n':>9}{'groups':>7}{'sustainlab ms':>15}{'fairlearn ms':>14}{'fairlearn/ours':>16}")
    for r in rows:
        print(f"{r['function']:<32}{r['n']:>9}{r['groups']:>7}{r['sustainlab_s'] * 1e3:>15.2f}"
              f"{r['fairlearn_s'] * 1e3:>14.2f}{r['speedup']:>16.1f}")
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
