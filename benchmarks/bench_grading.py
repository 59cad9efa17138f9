"""Benchmark ``sustainlab grade``: a synthetic class of N submissions of 00_welcome on J parallel workers.

Half the class hands in the instructor notebook (correct), half the untouched release. Writes
build/benchmarks/bench_grading.csv (one row per containment mode measured) and prints seconds and CPU-seconds per
submission. Target (issues #10, #17): 30 submissions in <= 120 s on 2 cores; the evidence split and sandbox should add
at most 20 % CPU per submission over plain process containment.

    python benchmarks/bench_grading.py [--students 30] [--jobs 2] [--modes bubblewrap,processes]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from sustainlab.grading import grade, release
from _results import RESULTS_DIR, write_csv  # noqa: E402  (sibling module: scripts run from this folder)

ROOT = Path(__file__).resolve().parents[1]
WELCOME = ROOT / "notebooks" / "00_welcome.ipynb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--modes", default="best",
                        help="comma-separated: containment modes (bubblewrap, namespaces, processes), 'best', or "
                             "'dask' (the best mode on a 2-worker local Dask cluster)")
    args = parser.parse_args()
    tables = [run(args, None if mode == "best" else mode) for mode in args.modes.split(",")]
    out = write_csv(tables, RESULTS_DIR / "bench_grading.csv")
    print(f"wrote {out}")


def run(args, mode):
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        tmp = Path(tmp)
        (tmp / "src").mkdir()
        shutil.copy(WELCOME, tmp / "src" / WELCOME.name)
        release(tmp / "src", tmp / "release")
        for n in range(args.students):
            folder = tmp / "subs" / f"student{n:02d}"
            folder.mkdir(parents=True)
            source = WELCOME if n % 2 == 0 else tmp / "release" / "student" / WELCOME.name
            shutil.copy(source, folder / WELCOME.name)
        cpu_before = _children_cpu_s()
        self_before = _self_cpu_s()
        start = time.perf_counter()
        if mode == "dask":
            from distributed import LocalCluster

            with LocalCluster(n_workers=args.jobs, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                              processes=True) as cluster:
                result = grade(tmp / "release", tmp / "subs", tmp / "gradebook.csv", progress=True,
                               dask=cluster.scheduler_address)
        else:
            result = grade(tmp / "release", tmp / "subs", tmp / "gradebook.csv", jobs=args.jobs, progress=True,
                           sandbox_mode=mode)
        total = time.perf_counter() - start
        cpu = _children_cpu_s() - cpu_before
        grader_cpu = _self_cpu_s() - self_before

    passed = sum(r.status == "passed" for r in result.rows)
    runs = sorted(result.run_seconds)
    contained_cpu = sum(result.cpu_seconds)
    # Children's rusage misses what ran in a PID namespace: the groups' own accounting is the better figure.
    cpu = max(cpu, contained_cpu + grader_cpu)
    table = {
        "mode": result.mode + (" on dask" if mode == "dask" else ""),
        "students": args.students,
        "jobs": args.jobs,
        "cpu_count": os.cpu_count(),
        "total_s": round(total, 1),
        "s_per_submission": round(total / args.students, 2),
        "median_run_s": round(runs[len(runs) // 2], 1),
        "max_run_s": round(runs[-1], 1),
        # CPU time of the grading processes does not grow with contention from other users of the machine, so
        # cpu_s / jobs estimates the wall time on an otherwise idle machine with `jobs` cores.
        "cpu_s": round(cpu, 1),
        "cpu_s_per_submission": round(cpu / args.students, 2),
        # CPU of each submission's contained process tree (its cgroup's accounting, else wait4), and of the grader
        # process itself (planning, judging, writing; with dask, only the client side).
        "contained_cpu_s_per_submission": round(contained_cpu / args.students, 2),
        "grader_cpu_s_per_submission": round(grader_cpu / args.students, 3),
        "total_cpu_s_per_submission": round((contained_cpu + grader_cpu) / args.students, 2),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "idle_estimate_s": round(cpu / args.jobs, 1),
        "passed_rows": passed,
        "target_s": 4.0 * args.students,  # the target: 30 submissions in 120 s
        "within_target": total <= 4.0 * args.students,
        "idle_estimate_within_target": cpu / args.jobs <= 4.0 * args.students,
    }
    for key, value in table.items():
        print(f"{key:<32} {value}")
    print(f"(ratio total/target: {total / table['target_s']:.2f}; idle estimate/target: "
          f"{table['idle_estimate_s'] / table['target_s']:.2f})")
    assert passed == (args.students + 1) // 2, "every correct submission should pass"
    return table


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
