"""The ``sustainlab`` command line: the only place that parses arguments and sets exit codes.

Each subcommand forwards to a plain Python function that can also be called from a notebook or a test.

    sustainlab run-all [NOTEBOOK ...] [--save] [--budget-seconds S] [--budget-mb MB]
    sustainlab env
    sustainlab exercises [--src notebooks] [--dest exercises]
    sustainlab release [SRC ...] OUT
    sustainlab grade RELEASE SUBMISSIONS [--out gradebook.csv] [--timeout S] [--cell-timeout S] [--jobs N]
                     [--sandbox MODE] [--manual scores.csv] [--feedback DIR] [--dask ADDRESS]
                     [--student NAME] [--deadline WHEN [--late-penalty F]] [--report]
    sustainlab ledger [--reset]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (what is wrong, where help is) and exit with status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


_RELEASE_SRC = "notebooks"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


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

    try:
        report = environment_report()
    except Exception as error:  # the diagnostic command must diagnose, not crash
        return _fail(f"could not inspect this environment: {type(error).__name__}: {error}")
    for name, value in report.items():
        print(f"{name:<18} {value}")
    return 0


def _cmd_exercises(args: argparse.Namespace) -> int:
    from .exercises import write_exercises

    try:
        result = write_exercises(args.src, args.dest)
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:
        return _fail(str(error))
    print(result.summary())
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    from .grading import GradingSetupError, release

    *sources, out = args.paths
    out = Path(out)
    for source in sources or [_RELEASE_SRC]:
        if not Path(source).exists() and not any(char in source for char in "*?["):  # a glob is resolved by release
            only_out = not sources
            hint = f" (SRC defaults to {_RELEASE_SRC}/: run this in the course folder, or pass SRC OUT)" if only_out else ""
            return _fail(f"the notebooks folder or file {source} does not exist{hint}.")
    if out.exists() and not out.is_dir():
        return _fail(f"{out} is a file: the release needs a folder to write student/ and release.json into.")
    try:
        result = release(sources or [_RELEASE_SRC], out)
    except GradingSetupError as error:
        return _fail(str(error))
    except OSError as error:
        return _fail(f"cannot write the release to {out}: {error.strerror or error}")
    print(f"released {len(result.student_notebooks)} notebook(s) to {result.manifest.parent / 'student'} "
          f"({result.checks} check(s), {result.hidden} hidden); keep {result.manifest} private")
    return 0


def _cmd_grade(args: argparse.Namespace) -> int:
    import tempfile

    from . import gradebook as gb
    from .grading import GradingSetupError, grade, totals_path_for

    out = Path(args.out)
    try:
        deadline = gb.parse_deadline(args.deadline) if args.deadline is not None else None
    except ValueError as error:
        return _fail(f"--deadline: {error}")
    if args.late_penalty and deadline is None:
        return _fail("--late-penalty needs --deadline (which submissions are late?).")
    existing = []
    if args.student is not None and out.exists():
        try:
            existing = gb.read_gradebook(out)
        except (OSError, ValueError) as error:
            return _fail(f"cannot update {out}: {error}")
    try:
        # File times first: grading runs student code, which could touch the files.
        times = gb.submission_times(args.submissions, args.student) if deadline is not None else {}
    except OSError:
        times = {}  # grade() below reports the unreadable folder
    with tempfile.TemporaryDirectory(prefix="sustainlab-regrade-") as scratch:
        try:
            result = grade(
                args.release, args.submissions, Path(scratch) / out.name if args.student else out,
                timeout_s=args.timeout, cell_timeout_s=args.cell_timeout, memory_mb=args.memory_mb, jobs=args.jobs,
                junit_dir=args.junit_dir, progress=not args.no_progress, student=args.student,
                sandbox_mode=args.sandbox, manual=args.manual, feedback=args.feedback, dask=args.dask,
            )
        except GradingSetupError as error:  # only a set-up problem is exit 2: a grader bug must show its traceback
            return _fail(str(error))
    summary = result.summary()
    if args.student is not None:  # graded into a scratch file, merged into --out below
        summary = summary.replace(str(result.gradebook), str(out))
        summary = summary.replace(str(result.totals_path), str(totals_path_for(out)))
    print(summary)
    try:
        notes = gb.finish(result.rows, out, student=args.student, existing=existing, deadline=deadline, times=times,
                          penalty=args.late_penalty, report=args.report)
    except OSError as error:
        return _fail(f"cannot write the gradebook {out}: {error.strerror or error}")
    for note in notes:
        print(note)
    return 0  # whatever the students scored: a non-zero exit means the grader itself could not run


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction between 0 and 1, got {text}")
    return value


def _cmd_ledger(args: argparse.Namespace) -> int:
    from . import ledger

    path = ledger.ledger_path()
    if path is None:
        print(f"The carbon ledger is off ({ledger.LEDGER_ENV}=off): nothing is recorded.")
        return 0
    if args.reset:
        deleted = ledger.reset()
        print(f"deleted {deleted}" if deleted else f"no ledger at {path}: nothing to delete")
        return 0
    try:
        rows = ledger.read()
    except ledger.LedgerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if rows.empty:
        print(f"The carbon ledger at {path} is empty: run a notebook's energy box to add to it.")
        return 0
    totals = ledger.totals_by_chapter(rows)
    print(f"carbon ledger: {path}")
    print(totals[["runs", "seconds", "energy_J", "g_CO2e"]].round(3).to_string())
    total = totals.loc["total"]
    print(f"whole course: {total['energy_kwh'] * 1000:.4f} Wh, {total['g_CO2e']:.4f} g CO2e "
          f"(as much energy as {ledger.everyday_comparison(total['energy_kwh'])})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .runner import DEFAULT_BUDGET_MB, DEFAULT_BUDGET_S

    parser = _Parser(prog="sustainlab", description="Tools for the sustainlab course.")
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
    run_all.add_argument("--budget-seconds", type=_positive, default=DEFAULT_BUDGET_S, metavar="S")
    run_all.add_argument("--budget-mb", type=_positive, default=DEFAULT_BUDGET_MB, metavar="MB")
    run_all.set_defaults(handler=_cmd_run_all)

    from .grading import DEFAULT_CELL_TIMEOUT_S, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S

    rel = commands.add_parser(
        "release",
        help="write student notebooks (solutions and hidden checks removed) and the private grading manifest",
        description="Write OUT/student/*.ipynb to hand out and OUT/release.json to keep. See docs/grading.md.",
    )
    rel.add_argument("paths", nargs="+", metavar="SRC ... OUT",
                     help="instructor notebooks: folders, files or glob patterns (default: notebooks/), then the "
                          "output folder")
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
    grd.add_argument("--sandbox", default=None, choices=("bubblewrap", "namespaces", "processes"),
                     help="strongest containment to try (default: the best this machine offers)")
    grd.add_argument("--feedback", default=None, metavar="DIR",
                     help="write one HTML feedback page per student and notebook to DIR")
    grd.add_argument("--dask", default=None, metavar="ADDRESS",
                     help="run the submissions on a Dask distributed scheduler (e.g. tcp://host:8786)")
    grd.add_argument("--manual", default=None, metavar="CSV",
                     help="filled-in written-answer scores (student,notebook,check,points) to merge")
    grd.add_argument("--student", metavar="NAME", default=None,
                     help="regrade only SUBMISSIONS/NAME and replace that student's rows in the gradebook --out")
    grd.add_argument("--deadline", metavar="WHEN", default=None,
                     help="ISO date-time (local unless it has an offset), e.g. 2026-12-01T23:59; submissions whose "
                     "file is newer get a `late` column in hours (points unchanged without --late-penalty)")
    grd.add_argument("--late-penalty", type=_fraction, default=0.0, metavar="F",
                     help="fraction of a late submission's points to take off, 0-1 (default 0)")
    grd.add_argument("--report", action="store_true",
                     help="also write <stem>_report.html beside the gradebook: a one-page class report")
    grd.set_defaults(handler=_cmd_grade)

    led = commands.add_parser(
        "ledger",
        help="your carbon ledger: energy and CO2e of every measured block of the course, by chapter",
        description="Totals of the ledger sustainlab.energy.measure writes (SUSTAINLAB_LEDGER=off turns it off, "
        "SUSTAINLAB_LEDGER=PATH moves it). Exits 2 when the ledger file cannot be read.",
    )
    led.add_argument("--reset", action="store_true", help="delete the ledger")
    led.set_defaults(handler=_cmd_ledger)

    env = commands.add_parser("env", help="print versions and the device this machine offers")
    env.set_defaults(handler=_cmd_env)

    exe = commands.add_parser(
        "exercises",
        help="write your own exercise copies of the notebooks (solutions removed); never overwrites your work",
        description="Write the student version of every notebook in SRC to DEST, skipping notebooks DEST already "
        "has, so a learner's work is never overwritten and notebooks added to the course later are added. "
        "`make lab` runs this before opening JupyterLab on DEST/00_welcome.ipynb.",
    )
    exe.add_argument("--src", default="notebooks", help="instructor notebooks (default: notebooks/)")
    exe.add_argument("--dest", default="exercises", help="your exercise folder (default: exercises/, git-ignored)")
    exe.set_defaults(handler=_cmd_exercises)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
