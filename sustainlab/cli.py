"""The ``sustainlab`` command line: the only place that parses arguments and sets exit codes.

Each subcommand forwards to a plain Python function that can also be called from a notebook or a test.

    sustainlab run-all [NOTEBOOK ...] [--save] [--budget-seconds S] [--budget-mb MB]
    sustainlab env
    sustainlab release [SRC] OUT
    sustainlab grade RELEASE SUBMISSIONS [--out gradebook.csv] [--timeout S] [--cell-timeout S] [--jobs N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["build_parser", "main"]


def _cmd_run_all(args: argparse.Namespace) -> int:
    from .runner import course_notebooks, format_table, run_all

    paths = [Path(p) for p in args.notebooks] or course_notebooks(args.root)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    if not paths:
        print(f"error: no notebooks found under {Path(args.root) / 'notebooks'}", file=sys.stderr)
        return 2
    runs = run_all(paths, save=args.save, budget_s=args.budget_seconds, budget_mb=args.budget_mb)
    print(format_table(runs, args.budget_seconds, args.budget_mb))
    if args.save:
        saved = [run.path.name for run in runs if run.error is None]
        print(f"saved outputs of {len(saved)} notebook(s)")
    failed = [run for run in runs if not run.ok]
    if failed:
        print(f"{len(failed)} notebook(s) failed or went over budget.", file=sys.stderr)
        return 1
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    from .utils import environment_report

    for name, value in environment_report().items():
        print(f"{name:<18} {value}")
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    from .grading import GradingSetupError, release

    try:
        result = release(args.src, args.out)
    except GradingSetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"released {len(result.student_notebooks)} notebook(s) to {result.manifest.parent / 'student'} "
          f"({result.checks} check(s), {result.hidden} hidden); keep {result.manifest} private")
    return 0


def _cmd_grade(args: argparse.Namespace) -> int:
    from .grading import GradingSetupError, grade

    try:
        result = grade(
            args.release, args.submissions, args.out, timeout_s=args.timeout, cell_timeout_s=args.cell_timeout,
            memory_mb=args.memory_mb, jobs=args.jobs, junit_dir=args.junit_dir, progress=not args.no_progress,
        )
    except (GradingSetupError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0  # whatever the students scored: a non-zero exit means the grader itself could not run


def build_parser() -> argparse.ArgumentParser:
    from .runner import DEFAULT_BUDGET_MB, DEFAULT_BUDGET_S

    parser = argparse.ArgumentParser(prog="sustainlab", description="Tools for the sustainlab course.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run_all = commands.add_parser(
        "run-all",
        help="execute every notebook headless in a fresh kernel; table of time and peak memory",
        description="Execute notebooks in course order, each in a fresh kernel, and check them against the budget. "
        "Exits 1 if any notebook fails or goes over budget.",
    )
    run_all.add_argument("notebooks", nargs="*", help="notebooks to run (default: every course notebook)")
    run_all.add_argument("--root", default=".", help="repository root (default: current folder)")
    run_all.add_argument("--save", action="store_true", help="write the executed notebooks back with their outputs")
    run_all.add_argument("--budget-seconds", type=float, default=DEFAULT_BUDGET_S, metavar="S")
    run_all.add_argument("--budget-mb", type=float, default=DEFAULT_BUDGET_MB, metavar="MB")
    run_all.set_defaults(handler=_cmd_run_all)

    from .grading import DEFAULT_CELL_TIMEOUT_S, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S

    rel = commands.add_parser(
        "release",
        help="write student notebooks (solutions and hidden checks removed) and the private grading manifest",
        description="Write OUT/student/*.ipynb to hand out and OUT/release.json to keep. See docs/grading.md.",
    )
    rel.add_argument("src", nargs="?", default="notebooks", help="instructor notebooks (default: notebooks/)")
    rel.add_argument("out", help="output folder")
    rel.set_defaults(handler=_cmd_release)

    grd = commands.add_parser(
        "grade",
        help="grade SUBMISSIONS/<student>/<notebook>.ipynb with nbval against a release; write a CSV gradebook",
        description="Exits 0 when grading completed, whatever the scores; 2 when the grader could not run.",
    )
    grd.add_argument("release", help="folder written by `sustainlab release` (holds release.json)")
    grd.add_argument("submissions", help="one folder per student")
    grd.add_argument("--out", default="gradebook.csv", help="gradebook CSV (totals go to <stem>_totals.csv)")
    grd.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help="per notebook")
    grd.add_argument("--cell-timeout", type=float, default=DEFAULT_CELL_TIMEOUT_S, metavar="S", help="per cell")
    grd.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB, metavar="MB",
                     help="address-space limit per grading process; 0 for none")
    grd.add_argument("--jobs", type=int, default=None, metavar="N", help="parallel submissions (default: cores)")
    grd.add_argument("--junit-dir", default=None, metavar="DIR", help="keep nbval's junit XML per submission")
    grd.add_argument("--no-progress", action="store_true", help="no progress bar")
    grd.set_defaults(handler=_cmd_grade)

    env = commands.add_parser("env", help="print versions and the device this machine offers")
    env.set_defaults(handler=_cmd_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
