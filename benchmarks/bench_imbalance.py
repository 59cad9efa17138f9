"""Benchmark: sustainlab.imbalance.SMOTE vs imblearn.over_sampling.SMOTE, measured in the same run.

Usage::

    .venv/bin/python benchmarks/bench_imbalance.py [--n-samples 100000] [--n-features 20] [--repeats 3]

Writes ``build/benchmarks/bench_imbalance.csv`` and prints a table: best-of-``repeats`` wall time and peak memory
(``tracemalloc``: Python and NumPy allocations) of one ``fit_resample`` for each implementation, and our/imblearn
ratios. The goal set in issue #7 is a time ratio of at most 2.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from pathlib import Path

import numpy as np
from imblearn.over_sampling import SMOTE as ImblearnSMOTE
from sklearn.datasets import make_classification

from sustainlab.imbalance import SMOTE
from _results import RESULTS_DIR, write_csv  # noqa: E402  (sibling module: scripts run from this folder)



def _run(sampler, X, y):
    gc.collect()
    start = time.perf_counter()
    X_res, _ = sampler.fit_resample(X, y)
    return time.perf_counter() - start, X_res.shape[0]


def _peak_mib(sampler, X, y):
    gc.collect()
    tracemalloc.start()
    sampler.fit_resample(X, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def bench(n_samples, n_features, weights, repeats):
    X, y = make_classification(
        n_samples=n_samples, n_features=n_features, n_informative=10, n_classes=len(weights) + 1,
        weights=weights, random_state=0,
    )
    rows = []
    implementations = {
        "sustainlab": lambda: SMOTE(random_state=0),
        "imblearn": lambda: ImblearnSMOTE(random_state=0),
    }
    for name, make in implementations.items():
        times, n_out = [], 0
        for _ in range(repeats):
            seconds, n_out = _run(make(), X, y)
            times.append(seconds)
        rows.append({
            "implementation": name, "n_samples": n_samples, "n_features": n_features,
            "n_classes": len(weights) + 1, "n_out": n_out, "best_s": min(times), "median_s": float(np.median(times)),
            "peak_mib": _peak_mib(make(), X, y),
        })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=100_000)
    parser.add_argument("--n-features", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    rows = []
    for weights in ([0.9], [0.8, 0.15]):
        rows += bench(args.n_samples, args.n_features, weights, args.repeats)
    path = write_csv(rows, RESULTS_DIR / "bench_imbalance.csv")

    print(f"{'classes':>7} {'impl':<11} {'n_out':>8} {'best s':>8} {'median s':>9} {'peak MiB':>9}")
    for row in rows:
        print(f"{row['n_classes']:>7} {row['implementation']:<11} {row['n_out']:>8} {row['best_s']:>8.3f} "
              f"{row['median_s']:>9.3f} {row['peak_mib']:>9.1f}")
    for i in range(0, len(rows), 2):
        ours, ref = rows[i], rows[i + 1]
        print(f"{ours['n_classes']} classes: time ratio sustainlab/imblearn = {ours['best_s'] / ref['best_s']:.2f}x "
              f"(goal <= 2x), peak-memory ratio = {ours['peak_mib'] / ref['peak_mib']:.2f}x")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
