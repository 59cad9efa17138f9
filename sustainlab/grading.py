"""Release student notebooks and grade a class with nbval; write a CSV gradebook.

Backs ``sustainlab release`` and ``sustainlab grade`` (the instructor guide is ``docs/grading.md``). The notebook
transforms are pure functions in :mod:`sustainlab.notebook`; this module reads and writes files, runs
``python -m pytest --nbval-lax`` on scratch copies, and turns nbval's junit XML into gradebook rows.

Grading contract: the reference output of every check cell comes from the *instructor* notebook (stored in the
release manifest), never from the submission, so editing stored outputs or check cells changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .utils import progress as progress_bar
from .validation import check_scalar
from .notebook import CheckSpec, check_id, check_specs, foreign_check_ids, restore_checks, student_version

__all__ = [
    "MANIFEST_NAME",
    "STUDENT_DIR",
    "MANIFEST_FORMAT",
    "GRADEBOOK_HEADER",
    "STATUSES",
    "TOTALS_HEADER",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_CELL_TIMEOUT_S",
    "DEFAULT_MEMORY_MB",
    "GradingSetupError",
    "ReleaseResult",
    "release",
    "load_manifest",
    "parse_manifest",
    "CellResult",
    "RunResult",
    "parse_junit",
    "Row",
    "score",
    "invalid_rows",
    "missing_rows",
    "read_submission",
    "run_nbval",
    "kill_tree",
    "snapshot",
    "restore_snapshot",
    "GradeResult",
    "totals_path_for",
    "grade",
    "student_totals",
]

MANIFEST_NAME = "release.json"
STUDENT_DIR = "student"
MANIFEST_FORMAT = 1
GRADEBOOK_HEADER = ("student", "notebook", "check", "points", "max_points", "status", "message")
STATUSES = ("passed", "failed", "error", "timeout", "missing", "invalid")
TOTALS_HEADER = ("student", "points", "max_points", "percent") + STATUSES
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_CELL_TIMEOUT_S = 120.0
#: Address-space limit for each grading process tree (pytest and the kernel it starts). Importing torch needs
#: about 1.5 GB of address space; a course notebook stays under 2 GB of memory.
DEFAULT_MEMORY_MB = 4096


class GradingSetupError(Exception):
    """The grader itself cannot run (unreadable release, bad submissions folder): ``sustainlab grade`` exits 2."""


# ------------------------------------------------------------------------------------------------------ release


@dataclass(frozen=True)
class ReleaseResult:
    """What :func:`release` wrote."""

    student_notebooks: tuple[Path, ...]
    manifest: Path
    checks: int
    hidden: int


def release(src: str | Path = "notebooks", out: str | Path = "release") -> ReleaseResult:
    """Write the student notebooks to ``OUT/student/`` and the private manifest to ``OUT/release.json``.

    Every ``*.ipynb`` directly in ``src`` is released (in name order): solution regions become stubs, hidden
    check cells are removed, solution and check cells lose their outputs. The manifest holds, per notebook, each
    check's id, points, hidden flag, source and reference output. Running it twice writes identical bytes.

    Raises
    ------
    GradingSetupError
        When ``src`` holds no notebook, ``out`` would overwrite the sources, or a notebook breaks the conventions
        (unbalanced markers, a check cell without stored output, a duplicated check id).
    """
    src, out = Path(src), Path(out)
    sources = sorted(src.glob("*.ipynb")) if src.is_dir() else []
    if not sources:
        raise GradingSetupError(f"no notebooks (*.ipynb) found in {src}.")
    student_dir = out / STUDENT_DIR
    if student_dir.resolve() == src.resolve():
        raise GradingSetupError(f"refusing to write the student copies over the instructor notebooks in {src}.")
    manifest: dict = {"format": MANIFEST_FORMAT, "notebooks": {}}
    owners: dict[str, str] = {}
    released = []
    for path in sources:
        try:
            nb = nbformat.read(path, as_version=4)
            specs = check_specs(nb)
            student = student_version(nb)
        except ValueError as error:  # nbformat's read errors are ValueErrors too
            raise GradingSetupError(f"{path}: {error}") from None
        for spec in specs:
            if spec.id in owners:
                raise GradingSetupError(f"{path}: check id {spec.id!r} is also used in {owners[spec.id]}.")
            owners[spec.id] = path.name
        manifest["notebooks"][path.name] = {"checks": [spec.to_json() for spec in specs]}
        released.append((path.name, nbformat.writes(student) + "\n"))
    student_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in released:
        _write_atomic(student_dir / name, text.encode("utf-8"))
        paths.append(student_dir / name)
    manifest_path = out / MANIFEST_NAME
    manifest_text = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    _write_atomic(manifest_path, manifest_text.encode("utf-8"), mode=0o600)  # the answers: keep private
    all_specs = [c for nb in manifest["notebooks"].values() for c in nb["checks"]]
    return ReleaseResult(tuple(paths), manifest_path, len(all_specs), sum(c["hidden"] for c in all_specs))


def load_manifest(release_dir: str | Path) -> dict[str, list[CheckSpec]]:
    """The release manifest as ``{notebook file name: [CheckSpec, ...]}``.

    Raises
    ------
    GradingSetupError
        When ``release_dir/release.json`` is missing, not JSON, or not a manifest this version understands.
    """
    path = Path(release_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise GradingSetupError(
            f"no release manifest at {path}: pass the folder written by `sustainlab release`."
        ) from None
    except (OSError, ValueError) as error:
        raise GradingSetupError(f"cannot read the release manifest {path}: {error}") from None
    return parse_manifest(data, str(path))


def parse_manifest(data, where: str = "manifest") -> dict[str, list[CheckSpec]]:
    """Validate manifest data (as loaded from JSON) and return ``{notebook: [CheckSpec, ...]}``."""
    notebooks = data.get("notebooks") if isinstance(data, dict) else None
    if not isinstance(notebooks, dict) or data.get("format") != MANIFEST_FORMAT:
        raise GradingSetupError(f"{where} is not a sustainlab release manifest (format {MANIFEST_FORMAT}).")
    try:
        return {name: [CheckSpec.from_json(c) for c in entry["checks"]] for name, entry in data["notebooks"].items()}
    except (KeyError, TypeError, ValueError) as error:
        raise GradingSetupError(f"{where}: {error}") from None


# --------------------------------------------------------------------------------------------- reading nbval's verdict


@dataclass(frozen=True)
class CellResult:
    """nbval's verdict on one code cell: ``outcome`` is passed, failed, error, timeout or skipped."""

    outcome: str
    message: str = ""


@dataclass
class RunResult:
    """The outcome of executing one restored notebook under nbval.

    ``cells`` maps nbval's code-cell index to its verdict (None when no junit report was produced);
    ``killed`` says the whole run went over the per-notebook timeout; ``problem`` explains a run without a report.
    """

    cells: dict[int, CellResult] | None
    killed: bool = False
    problem: str = ""
    seconds: float = 0.0
    junit: bytes = b""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|#x1B\[[0-9;]*[A-Za-z]")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def parse_junit(xml_bytes: bytes) -> dict[int, CellResult]:
    """nbval's junit XML → ``{code cell index: CellResult}``.

    Output mismatches become ``failed`` (with the new output as message), exceptions ``error`` (with the exception
    line), cell timeouts ``timeout``, and cells nbval did not expect to pass after a timeout ``timeout`` too.
    """
    results: dict[int, CellResult] = {}
    for case in ET.fromstring(xml_bytes).iter("testcase"):
        match = re.fullmatch(r"Cell (\d+)", case.get("name", ""))
        if not match:
            continue
        index = int(match.group(1))
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        skipped = case.find("skipped")
        if problem is not None:
            text = _ANSI.sub("", problem.text or problem.get("message") or "")
            results[index] = _classify_failure(text)
        elif skipped is not None:
            reason = skipped.get("message", "")
            if "timed out" in reason:
                results[index] = CellResult("timeout", "not run to the end: an earlier cell timed out")
            else:
                results[index] = CellResult("error", f"skipped: {reason}".strip())
        else:
            results[index] = CellResult("passed")
    return results


def _classify_failure(text: str) -> CellResult:
    if "Cell outputs differ" in text:
        # pytest's diff lists the new output with "- " (the stored reference with "+ ").
        new = [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("- ")]
        return CellResult("failed", " / ".join(new)[:300] or "output differs from the reference")
    if "Timeout of" in text:
        line = next(line for line in text.splitlines() if "Timeout of" in line)
        return CellResult("timeout", line.split(":", 1)[-1].strip())
    if "Cell execution caused an exception" in text:
        # "NotImplementedError: " (no message) reads better without its colon
        return CellResult("error", _last_line(text).rstrip(":").strip()[:300])
    if "Kernel dead" in text:
        return CellResult("error", "the kernel died (out of memory or killed)")
    return CellResult("error", (_last_line(text) or "nbval reported an error")[:300])


# --------------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Row:
    """One gradebook row."""

    student: str
    notebook: str
    check: str
    points: int
    max_points: int
    status: str
    message: str = ""

    def as_tuple(self) -> tuple:
        return (self.student, self.notebook, self.check, self.points, self.max_points, self.status, self.message)


def score(student: str, notebook: str, specs: list[CheckSpec], graded: dict, missing, run: RunResult) -> list[Row]:
    """Gradebook rows for one executed submission, one per check in instructor order.

    A check earns its points only when nbval ran its restored cell and the output equalled the reference.
    """
    rows = []
    earlier_failure = _first_error_before(run, graded)
    for spec in specs:
        def row(status, message="", points=0):
            return Row(student, notebook, spec.id, points, spec.points, status, message)

        if spec.id in missing:
            rows.append(row("missing", "check cell deleted from the notebook"))
            continue
        index = graded.get(spec.id)
        result = run.cells.get(index) if run.cells is not None and index is not None else None
        if result is None:
            if run.killed:
                rows.append(row("timeout", run.problem))
            else:
                rows.append(row("error", run.problem or "check cell was not executed"))
        elif result.outcome == "passed":
            rows.append(row("passed", "", spec.points))
        elif result.outcome == "error":
            hint = earlier_failure(index)
            rows.append(row("error", result.message + (f" ({hint})" if hint else "")))
        else:
            rows.append(row(result.outcome, result.message))
    return rows


def _first_error_before(run: RunResult, graded: dict):
    check_cells = set(graded.values())

    def find(index: int) -> str:
        for cell in sorted(run.cells or {}):
            if cell >= index:
                break
            result = run.cells[cell]
            if cell not in check_cells and result.outcome in ("error", "timeout"):
                return f"first failing cell before it: code cell {cell}: {result.message}"
        return ""

    return find


def invalid_rows(student: str, notebook: str, specs: list[CheckSpec] | None, message: str) -> list[Row]:
    """Rows for a submission that cannot be graded: one per expected check, or one with an empty check."""
    if not specs:
        return [Row(student, notebook, "", 0, 0, "invalid", message)]
    return [Row(student, notebook, spec.id, 0, spec.points, "invalid", message) for spec in specs]


def missing_rows(student: str, notebook: str, specs: list[CheckSpec]) -> list[Row]:
    """Rows for a release notebook the student did not hand in."""
    return [Row(student, notebook, spec.id, 0, spec.points, "missing", "notebook not submitted") for spec in specs]


def read_submission(data: bytes, notebook: str, manifest: dict[str, list[CheckSpec]]):
    """Parse a submitted notebook; returns ``(NotebookNode, "")`` or ``(None, reason it is invalid)``."""
    if not data.strip():
        return None, "empty file"
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not a notebook: the file is not UTF-8 text"
    except ValueError as error:
        return None, f"not a notebook: not valid JSON ({error})"
    if not isinstance(raw, dict) or "cells" not in raw:
        return None, "not a notebook: JSON without a 'cells' list"
    version = raw.get("nbformat")
    if version != 4:
        return None, f"unsupported notebook format nbformat={version!r}; expected 4 (save it with Jupyter 4 or later)"
    try:
        nb = nbformat.from_dict(raw)
        nbformat.validate(nb)
    except Exception as error:  # nbformat raises several types; any means "not a notebook we can run"
        return None, f"not a valid notebook: {str(error).strip().splitlines()[0][:200]}"
    specs = manifest[notebook]
    expected = {spec.id for spec in specs if not spec.hidden}
    foreign = foreign_check_ids(nb, specs)
    present = {check_id(cell) for cell in nb.cells}
    if foreign and not (expected & present):
        owner = next((name for name, s in manifest.items() if any(x.id == foreign[0] for x in s)), "another notebook")
        return None, f"wrong notebook: its check cells ({', '.join(foreign)}) belong to {owner}, not {notebook}"
    return nb, ""


# ---------------------------------------------------------------------------------------------- executing nbval

# Sets the address-space limit, then becomes pytest; the kernel that nbval starts inherits the limit, so a huge
# allocation fails with MemoryError instead of exhausting the machine. (A preexec_fn is unsafe with threads.)
_LAUNCHER = (
    "import os, resource, sys\n"
    "limit = int(sys.argv[1])\n"
    "if limit > 0:\n"
    "    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'pytest'] + sys.argv[2:])\n"
)


def _grading_environment(threads: int) -> dict:
    from .runner import quiet_environment

    quiet_environment()
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    # Only nbval: other installed plugins (benchmark, playwright) would slow every run and could change behaviour.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(name, str(threads))
    return env


def run_nbval(
    notebook_text: str,
    name: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    cell_timeout_s: float = DEFAULT_CELL_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    env: dict | None = None,
) -> RunResult:
    """Execute one restored notebook with ``pytest --nbval-lax`` in a fresh scratch folder and kernel.

    The repository's pytest configuration is ignored (``-c`` points to an empty ini in the scratch folder). The
    process tree is killed when it runs longer than ``timeout_s``.
    """
    # The command loads nbval explicitly (-p), so autoloading must be off whoever calls this, or nbval registers twice.
    env = dict(env) if env is not None else _grading_environment(threads=1)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    scratch = Path(tempfile.mkdtemp(prefix="sustainlab-grade-"))
    try:
        (scratch / "pytest.ini").write_text("[pytest]\n")
        (scratch / name).write_text(notebook_text, encoding="utf-8")
        junit = scratch / "junit.xml"
        command = [
            sys.executable, "-c", _LAUNCHER, str(int(memory_mb) * 2**20),
            "-c", str(scratch / "pytest.ini"), "--rootdir", str(scratch), "-p", "no:cacheprovider",
            "-p", "nbval.plugin", "-p", "sustainlab.nbval_hooks", "--nbval-lax", "--nbval-current-env",
            "--nbval-cell-timeout", str(max(1, int(min(cell_timeout_s, timeout_s)))),
            "--junitxml", str(junit), "--color=no", "-q", name,
        ]
        start = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        killed = False
        try:
            output, _ = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            killed = True
            kill_tree(process.pid)
            output, _ = process.communicate()
        seconds = time.perf_counter() - start
        kill_tree(process.pid)  # kernels run in their own session: make sure none outlives its notebook
        if killed:
            return RunResult(None, killed=True, problem=f"notebook ran longer than {timeout_s:g} s and was stopped",
                             seconds=seconds)
        try:
            report = junit.read_bytes()
            cells = parse_junit(report)
        except (OSError, ET.ParseError):
            tail = _last_line(output.decode("utf-8", "replace")) or f"pytest exited with code {process.returncode}"
            return RunResult(None, problem=f"nbval produced no report: {tail[:200]}", seconds=seconds)
        return RunResult(cells, seconds=seconds, junit=report)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def kill_tree(pid: int) -> None:
    """Kill a process, its process group and all its descendants (kernels start in sessions of their own)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.Error:
        family = []
    for proc in family:
        try:
            proc.kill()
        except psutil.Error:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    psutil.wait_procs(family, timeout=5)


def _become_subreaper() -> bool:
    # On Linux, orphaned descendants (e.g. a student's daemonised process) get re-parented to us instead of init,
    # so they can be found and killed before the files are verified.
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _descendants() -> set[tuple[int, float]]:
    import psutil

    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            found.add((proc.pid, proc.create_time()))
        except psutil.Error:
            pass
    return found


def _kill_new_descendants(before: set[tuple[int, float]]) -> None:
    """Kill every process below this one that grading started (the caller's own children are left alone)."""
    for pid, _ in _descendants() - before:
        kill_tree(pid)
        try:
            os.waitpid(pid, os.WNOHANG)  # reap orphans re-parented to us as subreaper
        except OSError:
            pass


# ------------------------------------------------------------------------------------------- protecting the files


def snapshot(root: Path) -> dict[Path, bytes | str | None]:
    """Everything under ``root``: a file maps to its bytes, a folder to None, a symlink to its target (a str)."""
    entries: dict[Path, bytes | str | None] = {}
    for path in sorted(root.rglob("*")):  # rglob does not descend into symlinked folders
        if path.is_symlink():
            entries[path] = os.readlink(path)
        elif path.is_file():
            entries[path] = path.read_bytes()
        elif path.is_dir():
            entries[path] = None
    return entries


def _matches(path: Path, entry) -> bool:
    if isinstance(entry, str):
        return path.is_symlink() and os.readlink(path) == entry
    if path.is_symlink():
        return False
    if entry is None:
        return path.is_dir()
    return path.is_file() and _digest(path.read_bytes()) == _digest(entry)


def restore_snapshot(root: Path, entries: dict[Path, bytes | str | None]) -> list[str]:
    """Make the tree under ``root`` exactly ``entries`` again (extra paths removed); returns what was repaired."""
    repaired = []
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path in entries:
            try:
                same_kind = (entries[path] is None) == (path.is_dir() and not path.is_symlink())
                if _matches(path, entries[path]) or same_kind:  # same kind: the loop below repairs the content
                    continue
            except OSError:
                pass
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        if path not in entries:
            repaired.append(f"removed {path}")
    for path, entry in entries.items():
        try:
            if _matches(path, entry):
                continue
        except OSError:
            pass
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir() and entry is not None:
            shutil.rmtree(path, ignore_errors=True)
        if entry is None:
            path.mkdir(parents=True, exist_ok=True)
        elif isinstance(entry, str):
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(entry, path)
        else:
            _write_atomic(path, entry)
        repaired.append(f"restored {path}")
    return repaired


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write via a temporary file and a rename, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    if mode is None:  # what open() would give: mkstemp's 0600 is only right for private files
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        os.chmod(tmp, mode)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------------- grading


@dataclass
class GradeResult:
    """What :func:`grade` produced."""

    rows: list[Row]
    totals: list[tuple]
    gradebook: Path
    totals_path: Path
    repaired: list[str] = field(default_factory=list)
    seconds: float = 0.0
    run_seconds: list[float] = field(default_factory=list)

    def summary(self) -> str:
        """A short text summary for the terminal."""
        counts = {status: sum(r.status == status for r in self.rows) for status in STATUSES}
        lines = [f"graded {len(self.totals)} student(s), {len(self.rows)} row(s) in {self.seconds:.1f} s"]
        lines.append("  " + ", ".join(f"{status} {n}" for status, n in counts.items()))
        width = max([len(t[0]) for t in self.totals] + [7])
        for t in self.totals:
            lines.append(f"  {t[0]:<{width}}  {t[1]:>4}/{t[2]:<4} {t[3]:>6}%")
        if self.repaired:
            lines.append(f"  WARNING: submissions tampered with files; repaired {len(self.repaired)}:")
            lines.extend(f"    {item}" for item in self.repaired[:20])
        lines.append(f"gradebook: {self.gradebook}   totals: {self.totals_path}")
        return "\n".join(lines)


def totals_path_for(gradebook: Path) -> Path:
    """Where the per-student totals go: ``<gradebook stem>_totals.csv`` beside the gradebook."""
    return gradebook.with_name(gradebook.stem + "_totals.csv")


def grade(
    release_dir: str | Path,
    submissions: str | Path,
    out: str | Path = "gradebook.csv",
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    cell_timeout_s: float = DEFAULT_CELL_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    jobs: int | None = None,
    junit_dir: str | Path | None = None,
    progress: bool = True,
) -> GradeResult:
    """Grade every submission in ``submissions/<student>/<notebook>.ipynb`` against the release manifest.

    Parameters
    ----------
    release_dir : path-like
        The folder written by :func:`release` (it holds ``release.json``).
    submissions : path-like
        One folder per student; the folder name is the student's name (any characters, spaces and non-ASCII
        included).
    out : path-like
        The gradebook CSV; the per-student totals go to ``<stem>_totals.csv`` beside it.
    timeout_s, cell_timeout_s : float
        Longest run of a whole notebook and of one cell.
    memory_mb : int
        Address-space limit of each grading process (0: none).
    jobs : int, optional
        Parallel submissions (default: the number of CPU cores).
    junit_dir : path-like, optional
        Where to keep nbval's junit XML per submission, for audit.
    progress : bool
        Draw a progress bar on stderr.

    Returns
    -------
    GradeResult

    Raises
    ------
    GradingSetupError
        When the release or the submissions folder cannot be read. A bad *submission* never raises: it is a row.
    """
    started = time.perf_counter()
    release_dir, submissions, out = Path(release_dir), Path(submissions), Path(out)
    timeout_s = check_scalar(timeout_s, "timeout_s", min_value=0, include_min=False)
    cell_timeout_s = check_scalar(cell_timeout_s, "cell_timeout_s", min_value=0, include_min=False)
    memory_mb = check_scalar(memory_mb, "memory_mb", min_value=0, integer=True)
    if jobs is not None:
        jobs = check_scalar(jobs, "jobs", min_value=1, integer=True)
    manifest = load_manifest(release_dir)
    if not submissions.is_dir():
        raise GradingSetupError(f"submissions folder {submissions} does not exist.")
    # Everything student code could touch is read into memory before any of it runs.
    try:
        release_files = snapshot(release_dir)
        submission_files = snapshot(submissions)
    except OSError as error:
        raise GradingSetupError(f"cannot read the files to grade: {error}") from None

    rows_by_key: dict[tuple, list[Row]] = {}
    tasks = []
    students = sorted(p.name for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    for path, data in submission_files.items():
        if not isinstance(data, bytes):
            continue
        parts = path.relative_to(submissions).parts
        if any(part.startswith(".") for part in parts):
            continue  # .ipynb_checkpoints, .DS_Store: editor state, not submissions
        if len(parts) == 1:
            rows_by_key[("", parts[0])] = invalid_rows(
                "", parts[0], None, "file outside a student folder: expected SUBMISSIONS/<student>/<notebook>.ipynb")
            continue
        student, name = parts[0], "/".join(parts[1:])
        if name not in manifest:
            if Path(name).name in manifest:
                message = f"in a sub-folder: put it directly in the student folder as {student}/{Path(name).name}"
            elif name.endswith(".ipynb"):
                message = "not a notebook of this release (expected one of: " + ", ".join(manifest) + ")"
            else:
                message = "extra file, not graded"
            rows_by_key[(student, name)] = invalid_rows(student, name, None, message)
            continue
        specs = manifest[name]
        if not specs:
            rows_by_key[(student, name)] = invalid_rows(student, name, None, "this notebook has no graded checks")
            continue
        try:
            nb, problem = read_submission(data, name, manifest)
            restored = restore_checks(nb, specs) if nb is not None else None
        except Exception as error:  # a notebook nbformat accepts but we cannot restore must not stop the class
            restored, problem = None, f"could not prepare this notebook for grading: {error!r}"[:300]
        if restored is None:
            rows_by_key[(student, name)] = invalid_rows(student, name, specs, problem)
            continue
        tasks.append((student, name, specs, restored))
    queued = {(task[0], task[1]) for task in tasks}
    for student in students:
        for name, specs in manifest.items():
            if specs and (student, name) not in rows_by_key and (student, name) not in queued:
                rows_by_key[(student, name)] = missing_rows(student, name, specs)

    jobs = max(1, int(jobs or os.cpu_count() or 1))
    env = _grading_environment(max(1, (os.cpu_count() or 1) // jobs))
    _become_subreaper()
    already_running = _descendants()
    run_seconds = []
    junits = {}
    # Explicit `disable`: the grading environment above switches the course's progress bars off for the kernels.
    bar = progress_bar(None, desc="grading", total=len(tasks), unit="nb", file=sys.stderr, disable=not progress)
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {
                pool.submit(
                    run_nbval, nbformat.writes(task[3].notebook), task[1], timeout_s=timeout_s,
                    cell_timeout_s=cell_timeout_s, memory_mb=memory_mb, env=env,
                ): task
                for task in tasks
            }
            for future in as_completed(futures):
                student, name, specs, restored = futures[future]
                try:
                    run = future.result()
                except Exception as error:  # the grader must survive anything one submission does
                    run = RunResult(None, problem=f"grader could not run this notebook: {error}")
                run_seconds.append(run.seconds)
                junits[(student, name)] = run.junit
                rows_by_key[(student, name)] = score(student, name, specs, restored.graded, restored.missing, run)
                bar.update(1)
    finally:
        bar.close()
        _kill_new_descendants(already_running)

    # All student code has stopped: put back anything it changed, then write the results.
    repaired = restore_snapshot(release_dir, release_files) + restore_snapshot(submissions, submission_files)
    rows = [row for key in sorted(rows_by_key) for row in rows_by_key[key]]
    totals = student_totals(rows)
    _write_atomic(out, _csv_bytes(GRADEBOOK_HEADER, [r.as_tuple() for r in rows]))
    totals_path = totals_path_for(out)
    _write_atomic(totals_path, _csv_bytes(TOTALS_HEADER, totals))
    if junit_dir is not None:
        for (student, name), report in sorted(junits.items()):
            if report:
                _write_atomic(Path(junit_dir) / student / (Path(name).stem + ".junit.xml"), report)
    return GradeResult(rows, totals, out, totals_path, repaired, time.perf_counter() - started, run_seconds)


def student_totals(rows: list[Row]) -> list[tuple]:
    """Per-student totals: points, max points, percent and the count of each status."""
    by_student: dict[str, list[Row]] = {}
    for row in rows:
        by_student.setdefault(row.student, []).append(row)
    totals = []
    for student in sorted(by_student):
        mine = by_student[student]
        points, maximum = sum(r.points for r in mine), sum(r.max_points for r in mine)
        percent = f"{100 * points / maximum:.1f}" if maximum else "0.0"
        totals.append((student, points, maximum, percent) + tuple(sum(r.status == s for r in mine) for s in STATUSES))
    return totals


def _csv_bytes(header, rows) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")
