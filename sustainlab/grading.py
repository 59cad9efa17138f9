"""Release student notebooks and grade a class: verdicts computed outside the students' kernels.

Backs ``sustainlab release`` and ``sustainlab grade`` (the instructor guide, with the flow and the threat model, is
``docs/grading.md``). Two halves:

- **pure** (no I/O, millisecond tests): :class:`Manifest`, :func:`plan` (which files become which tasks and rows),
  :func:`score` (evidence and nbval's report → rows, judged by :func:`sustainlab.checks.judge`), :func:`student_totals`,
  :func:`gradebook_bytes`;
- **edge** (all I/O): release writing, snapshot/restore of the files students could touch, :func:`run_task` (one
  submission under nbval, contained by :mod:`sustainlab.sandbox`), and :func:`grade`, which ties them together.

Grading contract: a check's verdict comes only from the evidence its check cell wrote (plain JSON data), judged here
against the reference answer on inputs drawn from a secret per-grading seed. What the kernel prints, what nbval
compares, and the submission's stored outputs never decide a check.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import sandbox
from .checks import get_exercise, judge, registry, run_check
from .checks._core import MAX_EVIDENCE_BYTES
from .notebook import CheckSpec, check_id, check_specs, foreign_check_ids, restore_checks, student_version
from .utils import progress as progress_bar
from .validation import check_scalar

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
    "parse_junit",
    "Row",
    "score",
    "invalid_rows",
    "missing_rows",
    "read_submission",
    "snapshot",
    "restore_snapshot",
    "GradeResult",
    "totals_path_for",
    "grade",
    "student_totals",
    "Manifest",
    "release_sources",
    "answer_cells",
    "SubmittedFile",
    "Task",
    "Plan",
    "near_miss",
    "one_student",
    "task_seed",
    "manual_rows",
    "plan",
    "TaskResult",
    "clean",
    "sandbox_ansi",
    "merge_manual",
    "csv_cell",
    "display_name",
    "csv_bytes",
    "gradebook_bytes",
    "Entry",
    "submitted_files",
    "Settings",
    "run_task",
]

MANIFEST_NAME = "release.json"
STUDENT_DIR = "student"
MANIFEST_FORMAT = 2
#: A gradebook row: one per (student, notebook, check). ``points`` is empty for a ``manual`` row not yet scored.
GRADEBOOK_HEADER = ("student", "notebook", "check", "points", "max_points", "status", "message")
STATUSES = ("passed", "failed", "error", "timeout", "missing", "invalid", "manual")
TOTALS_HEADER = ("student", "points", "max_points", "percent") + STATUSES
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_CELL_TIMEOUT_S = 120.0
#: Memory of each submission's whole process tree (pytest and the kernel). Importing torch needs about 1.5 GB of
#: address space; a course notebook stays under 2 GB of memory.
DEFAULT_MEMORY_MB = 4096
#: Largest submitted file read (notebooks are far smaller; a bigger file is reported, never read whole).
MAX_SUBMISSION_BYTES = 32 * 2**20
MAX_JUNIT_BYTES = 8 * 2**20
_EVIDENCE_DIR = "evidence"


class GradingSetupError(Exception):
    """The grader itself cannot run (unreadable release, bad submissions folder): ``sustainlab grade`` exits 2."""


# ------------------------------------------------------------------------------------------------------ manifest


@dataclass(frozen=True)
class Manifest:
    """The private release manifest: the assignment's notebooks, in order, each with its checks and written answers."""

    notebooks: dict[str, tuple[CheckSpec, ...]]
    answers: dict[str, tuple[dict, ...]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> tuple[CheckSpec, ...]:
        return self.notebooks[name]

    def __contains__(self, name) -> bool:
        return name in self.notebooks

    def __iter__(self):
        return iter(self.notebooks)

    def items(self):
        return self.notebooks.items()

    def to_json(self) -> dict:
        return {"format": MANIFEST_FORMAT,
                "notebooks": {name: {"checks": [s.to_json() for s in specs],
                                     "answers": list(self.answers.get(name, ()))}
                              for name, specs in self.notebooks.items()}}


def parse_manifest(data, where: str = "manifest") -> Manifest:
    """Validate manifest data (as loaded from JSON) and return a :class:`Manifest`."""
    notebooks = data.get("notebooks") if isinstance(data, dict) else None
    if not isinstance(notebooks, dict) or data.get("format") != MANIFEST_FORMAT:
        raise GradingSetupError(f"{where} is not a sustainlab release manifest (format {MANIFEST_FORMAT}); "
                                "release the notebooks again with this version.")
    try:
        checks = {name: tuple(CheckSpec.from_json(c) for c in entry["checks"]) for name, entry in notebooks.items()}
        answers = {name: tuple(_answer_entry(a) for a in entry.get("answers", [])) for name, entry in notebooks.items()}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise GradingSetupError(f"{where}: {error}") from None
    return Manifest(checks, answers)


def _answer_entry(data) -> dict:
    points = data["points"]
    if isinstance(points, bool) or not isinstance(points, int) or points < 0:
        raise ValueError(f"written answer {data.get('id')!r}: points must be a non-negative integer")
    return {"id": str(data["id"]), "points": points, "rubric": str(data.get("rubric", ""))}


def load_manifest(release_dir: str | Path) -> Manifest:
    """The release manifest of ``release_dir``.

    Raises
    ------
    GradingSetupError
        When ``release_dir`` is a symlink, or ``release.json`` is missing, a symlink, not JSON, or not a manifest.
    """
    release_dir = Path(release_dir)
    if release_dir.is_symlink():
        raise GradingSetupError(f"refusing a release folder that is a symlink: {release_dir}")
    path = release_dir / MANIFEST_NAME
    data, problem = sandbox.read_capped(path, 64 * 2**20)
    if data is None:
        if problem == "missing":
            raise GradingSetupError(f"no release manifest at {path}: pass the folder written by `sustainlab release`.")
        raise GradingSetupError(f"cannot read the release manifest {path}: {problem}")
    try:
        loaded = json.loads(data)
    except ValueError as error:
        raise GradingSetupError(f"cannot read the release manifest {path}: {error}") from None
    return parse_manifest(loaded, str(path))


# ------------------------------------------------------------------------------------------------------- release


@dataclass(frozen=True)
class ReleaseResult:
    """What :func:`release` wrote."""

    student_notebooks: tuple[Path, ...]
    manifest: Path
    checks: int
    hidden: int


def release_sources(src) -> list[Path]:
    """The instructor notebooks named by ``src``: folders (their ``*.ipynb``), files and glob patterns, in order."""
    items = [src] if isinstance(src, (str, os.PathLike)) else list(src)
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            matches = sorted(path.glob("*.ipynb"))
        elif path.is_file():
            matches = [path]
        else:
            matches = [Path(p) for p in sorted(glob.glob(str(item))) if p.endswith(".ipynb")]
        for match in matches:
            if match.name not in {p.name for p in found}:
                found.append(match)
    return found


def _canonical_check(spec: CheckSpec, where: str) -> CheckSpec:
    """The check as grading runs it: ``check("<id>", <answer>)``, for an exercise of the registry."""
    if spec.id not in registry():
        raise GradingSetupError(f"{where}: check {spec.id!r} is not an exercise of sustainlab.checks; the grader "
                                "can only score registry exercises (declare it in sustainlab/checks/<chapter>.py).")
    exercise = get_exercise(spec.id)
    if exercise.hidden != spec.hidden:
        raise GradingSetupError(f"{where}: check {spec.id!r} is {'not ' if not spec.hidden else ''}hidden in the "
                                "notebook but the registry says otherwise.")
    match = re.search(r"""\bcheck\(\s*["']""" + re.escape(spec.id) + r"""["']\s*,\s*([A-Za-z_]\w*)\s*\)""",
                      spec.source)
    answer = exercise.answer or (match.group(1) if match else None)
    if answer is None:
        raise GradingSetupError(f"{where}: check cell {spec.id!r} must call check({spec.id!r}, <variable>) "
                                "(or its exercise must name its answer).")
    source = f"from sustainlab.checks import check\n\ncheck({json.dumps(spec.id)}, {answer})"
    return CheckSpec(id=spec.id, points=spec.points, hidden=spec.hidden, source=source, outputs=[],
                     anchor=spec.anchor, answer=answer)


def answer_cells(nb) -> list[dict]:
    """Written-answer cells: markdown cells whose metadata is ``{"sustainlab": {"answer": id, "points": n}}``."""
    found = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("sustainlab")
        if cell.get("cell_type") == "markdown" and isinstance(meta, dict) and isinstance(meta.get("answer"), str):
            found.append(_answer_entry({"id": meta["answer"], "points": meta.get("points"),
                                        "rubric": meta.get("rubric", "")}))
    return found


def release(src="notebooks", out: str | Path = "release") -> ReleaseResult:
    """Write the student notebooks to ``OUT/student/`` and the private manifest to ``OUT/release.json``.

    ``src`` is a folder, a notebook file, a glob pattern, or a list of those: the released notebooks are the
    assignment, and a student is only ``missing`` for those. Solution regions become stubs, hidden check cells are
    removed, solution and check cells lose their outputs; written-answer cells are kept. The manifest holds, per
    notebook, each check (id, points, hidden flag, anchor, the cell grading runs) and each written answer. Running
    it twice writes identical bytes.

    Raises
    ------
    GradingSetupError
        When ``src`` names no notebook, ``out`` would overwrite the sources, or a notebook breaks the conventions
        (unbalanced markers, a check cell without stored output, a duplicated check id, a check the registry does
        not know).
    """
    out = Path(out)
    sources = release_sources(src)
    if not sources:
        named = [src] if isinstance(src, (str, os.PathLike)) else list(src)
        raise GradingSetupError(f"no notebooks (*.ipynb) found in {', '.join(str(item) for item in named)}.")
    student_dir = out / STUDENT_DIR
    if any(p.resolve().parent == student_dir.resolve() for p in sources):
        raise GradingSetupError(f"refusing to write the student copies over the instructor notebooks in {src}.")
    notebooks, answers = {}, {}
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
        notebooks[path.name] = tuple(_canonical_check(spec, str(path)) for spec in specs)
        answers[path.name] = tuple(answer_cells(nb))
        released.append((path.name, nbformat.writes(student) + "\n"))
    manifest = Manifest(notebooks, answers)
    student_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in released:
        _write_atomic(student_dir / name, text.encode("utf-8"))
        paths.append(student_dir / name)
    manifest_path = out / MANIFEST_NAME
    manifest_text = json.dumps(manifest.to_json(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    _write_atomic(manifest_path, manifest_text.encode("utf-8"), mode=0o600)  # the answers: keep private
    all_specs = [s for specs in notebooks.values() for s in specs]
    return ReleaseResult(tuple(paths), manifest_path, len(all_specs), sum(s.hidden for s in all_specs))


# --------------------------------------------------------------------------------------------- reading nbval's report


@dataclass(frozen=True)
class CellResult:
    """nbval's verdict on one code cell: ``outcome`` is passed, failed, error, timeout or skipped."""

    outcome: str
    message: str = ""


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


# ------------------------------------------------------------------------------------------- the pure grading plan


@dataclass(frozen=True)
class Row:
    """One gradebook row (``GRADEBOOK_HEADER``); ``points`` is None for a written answer not scored yet."""

    student: str
    notebook: str
    check: str
    points: int | None
    max_points: int
    status: str
    message: str = ""

    def as_tuple(self) -> tuple:
        points = "" if self.points is None else self.points
        return (self.student, self.notebook, self.check, points, self.max_points, self.status, self.message)


@dataclass(frozen=True)
class SubmittedFile:
    """One entry under SUBMISSIONS, as the edge read it: ``kind`` is file, symlink, too large or unreadable."""

    parts: tuple[str, ...]
    kind: str = "file"
    data: bytes | None = None
    detail: str = ""


@dataclass(frozen=True)
class Task:
    """One submitted notebook to execute: everything :func:`run_task` needs, as plain data (it travels to Dask)."""

    student: str
    notebook: str
    specs: tuple[CheckSpec, ...]
    source: str
    graded: dict
    missing: tuple
    seed: int
    note: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.student, self.notebook)


@dataclass(frozen=True)
class Plan:
    """What :func:`plan` decided: notebooks to execute, and rows already known (invalid, missing, manual, extra)."""

    tasks: tuple[Task, ...]
    rows: dict


_NEAR_MISS = (re.compile(r"^copy of (.+)$", re.I), re.compile(r"^(.+?) ?\(\d+\)(\.ipynb)$"),
              re.compile(r"^(.+?) - copy(\.ipynb)$", re.I))


def near_miss(name: str, notebooks) -> str | None:
    """The release notebook a misnamed file stands for (``00_welcome (1).ipynb``, ``Copy of 00_welcome.ipynb``)."""
    for pattern in _NEAR_MISS:
        match = pattern.match(name)
        if match and "".join(match.groups()) in notebooks:
            return "".join(match.groups())
    return None


def one_student(files: list[SubmittedFile], students: list[str], student: str):
    """The files and student list of :func:`plan` narrowed to one student's folder (``grade --student NAME``)."""
    if student not in students or student in ("", ".", "..") or Path(student).name != student:
        raise ValueError(f"no folder {student!r} for that student")
    return [f for f in files if len(f.parts) > 1 and f.parts[0] == student], [student]


def task_seed(master: int, student: str, notebook: str) -> int:
    """The probes' seed of one submission, derived from the grading's secret ``master`` seed."""
    digest = hashlib.sha256(f"{master}\0{student}\0{notebook}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def invalid_rows(student: str, notebook: str, specs, message: str) -> list[Row]:
    """Rows for a submission that cannot be graded: one per expected check, or one with an empty check."""
    if not specs:
        return [Row(student, notebook, "", 0, 0, "invalid", message)]
    return [Row(student, notebook, spec.id, 0, spec.points, "invalid", message) for spec in specs]


def missing_rows(student: str, notebook: str, specs) -> list[Row]:
    """Rows for a release notebook the student did not hand in."""
    return [Row(student, notebook, spec.id, 0, spec.points, "missing", "notebook not submitted") for spec in specs]


def manual_rows(student: str, notebook: str, answers) -> list[Row]:
    """Rows for written answers: scored by a person (``--manual``), so no points yet."""
    return [Row(student, notebook, a["id"], None, a["points"], "manual", a.get("rubric", "")) for a in answers]


def read_submission(data: bytes, notebook: str, manifest: Manifest):
    """Parse a submitted notebook; returns ``(NotebookNode, "")`` or ``(None, reason it is invalid)``."""
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as some Windows editors write
        data = data[3:]
    if not data.strip():
        return None, "empty file"
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not a notebook: the file is not UTF-8 text"
    except (ValueError, RecursionError) as error:
        return None, f"not a notebook: not valid JSON ({str(error)[:120]})"
    if not isinstance(raw, dict) or "cells" not in raw:
        return None, "not a notebook: JSON without a 'cells' list"
    version = raw.get("nbformat")
    if version != 4:
        return None, f"unsupported notebook format nbformat={version!r}; expected 4 (save it with Jupyter 4 or later)"
    try:
        nb = nbformat.from_dict(raw)
        nbformat.validate(nb)
        for cell in nb.cells:  # on disk a source may be a list of lines; the transforms work on text
            if isinstance(cell.get("source"), list):
                cell.source = "".join(cell.source)
    except Exception as error:  # nbformat raises several types; any means "not a notebook we can run"
        return None, f"not a valid notebook: {str(error).strip().splitlines()[0][:200]}"
    specs = list(manifest[notebook])
    expected = {spec.id for spec in specs if not spec.hidden}
    foreign = foreign_check_ids(nb, specs)
    present = {check_id(cell) for cell in nb.cells}
    if foreign and not (expected & present):
        owner = next((name for name, s in manifest.items() if any(x.id == foreign[0] for x in s)), "another notebook")
        return None, f"wrong notebook: its check cells ({', '.join(foreign)}) belong to {owner}, not {notebook}"
    return nb, ""


def plan(manifest: Manifest, files: list[SubmittedFile], students: list[str], master_seed: int) -> Plan:
    """Sort every submitted file into a task to execute or rows known without running anything.

    Pure: no file is read and no code is run. Rules (each a row of ``tests/test_grading.py``'s table):
    a file directly in SUBMISSIONS, an extra file, a notebook not in the release, a release notebook in a
    sub-folder, a symlink, a file too large → ``invalid`` row with a reason; a release notebook that does not parse
    → one ``invalid`` row per check; a notebook with no check → its written answers only, never executed; a
    near-miss name → graded with a warning unless the exact name is there too; a release notebook not handed in
    → ``missing`` rows; every written answer → a ``manual`` row.
    """
    rows: dict[tuple[str, str], list[Row]] = {}
    tasks: list[Task] = []
    exact = {(f.parts[0], f.parts[1]) for f in files if len(f.parts) == 2}
    claimed: set[tuple[str, str]] = set()
    for f in sorted(files, key=lambda f: f.parts):
        parts = f.parts
        if any(part.startswith(".") for part in parts):
            continue  # .ipynb_checkpoints, .DS_Store: editor state, not submissions
        if len(parts) == 1:
            rows[("", parts[0])] = invalid_rows(
                "", parts[0], None, "file outside a student folder: expected SUBMISSIONS/<student>/<notebook>.ipynb")
            continue
        student, name = parts[0], "/".join(parts[1:])
        target, note = name, ""
        if name not in manifest and len(parts) == 2 and (alias := near_miss(name, manifest)):
            if (student, alias) in exact or (student, alias) in claimed:
                rows[(student, name)] = invalid_rows(student, name, None, f"another copy of {alias}, not graded")
                continue
            target, note = alias, f"graded as {alias} (file was named {name!r})"
        if f.kind == "symlink":
            rows[(student, name)] = invalid_rows(student, name, None, f"a symlink ({f.detail}): hand in the file "
                                                                      "itself")
            continue
        if target not in manifest:
            if Path(name).name in manifest:
                message = f"in a sub-folder: put it directly in the student folder as {student}/{Path(name).name}"
            elif name.endswith(".ipynb"):
                message = "not a notebook of this release (expected one of: " + ", ".join(manifest) + ")"
            else:
                message = "extra file, not graded"
            rows[(student, name)] = invalid_rows(student, name, None, message)
            continue
        claimed.add((student, target))
        specs = manifest[target]
        answers = manifest.answers.get(target, ())
        if f.kind != "file" or f.data is None:
            rows[(student, target)] = invalid_rows(student, target, specs, f.detail or f.kind) + \
                manual_rows(student, target, answers)
            continue
        if not specs:
            rows[(student, target)] = manual_rows(student, target, answers) or invalid_rows(
                student, target, None, "this notebook has no graded checks")
            continue
        try:
            nb, problem = read_submission(f.data, target, manifest)
            restored = restore_checks(nb, list(specs)) if nb is not None else None
        except Exception as error:  # a notebook nbformat accepts but we cannot restore must not stop the class
            restored, problem = None, f"could not prepare this notebook for grading: {error!r}"[:300]
        if restored is None:
            rows[(student, target)] = invalid_rows(student, target, specs, problem) + \
                manual_rows(student, target, answers)
            continue
        tasks.append(Task(student, target, tuple(specs), nbformat.writes(restored.notebook), dict(restored.graded),
                          tuple(restored.missing), task_seed(master_seed, student, target), note))
    queued = {task.key for task in tasks}
    for student in students:
        for name, specs in manifest.items():
            if (student, name) not in rows and (student, name) not in queued and (specs or manifest.answers.get(name)):
                rows[(student, name)] = missing_rows(student, name, specs) + [
                    Row(student, name, a["id"], 0, a["points"], "missing", "notebook not submitted")
                    for a in manifest.answers.get(name, ())]
    return Plan(tuple(tasks), rows)


@dataclass
class TaskResult:
    """What executing one task left behind, as plain data: evidence files, nbval's report, how the run ended."""

    evidence: dict = field(default_factory=dict)
    junit: bytes | None = None
    killed: bool = False
    problem: str = ""
    seconds: float = 0.0
    cpu_s: float = 0.0
    mode: str = ""


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def clean(text: str, limit: int = 300) -> str:
    """One line of text safe for a terminal and a CSV reader: no escape codes or control characters, capped."""
    text = sandbox_ansi(text)
    return _CONTROL.sub("", text.replace("\r", " ").replace("\n", " / ").replace("\t", " "))[:limit]


def sandbox_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def score(task: Task, result: TaskResult, answers=()) -> list[Row]:
    """Gradebook rows for one executed submission, one per check in instructor order, then its written answers.

    A check earns its points only when the evidence its cell wrote passes :func:`sustainlab.checks.judge` here.
    Without evidence, nbval's report says why (an exception, a timeout, a dead kernel); a check cell that ran but
    wrote nothing is an ``error`` too. The report never makes a check pass.
    """
    try:
        cells = parse_junit(result.junit) if result.junit else None
    except ET.ParseError:
        cells = None
    rows = []
    note = f" ({task.note})" if task.note else ""
    for spec in task.specs:
        def row(status, message="", points=0):
            return Row(task.student, task.notebook, spec.id, points, spec.points, status, clean(message + note))

        if spec.id in task.missing:
            rows.append(row("missing", "check cell deleted from the notebook"))
            continue
        data, reason = result.evidence.get(spec.id, (None, "missing"))
        if data is not None:
            try:
                evidence = json.loads(data)
            except (ValueError, RecursionError):
                rows.append(row("error", "evidence rejected: not JSON"))
                continue
            verdict = judge(get_exercise(spec.id), evidence, task.seed)
            if verdict.passed:
                rows.append(row("passed", "", spec.points))
            else:
                rows.append(row(verdict.status, f"✘ {spec.id}: {verdict.hint}" if verdict.status == "failed"
                                else verdict.hint))
            continue
        index = task.graded.get(spec.id)
        cell = cells.get(index) if cells is not None and index is not None else None
        if reason != "missing":
            rows.append(row("error", f"evidence rejected: {reason}"))
        elif result.killed:
            rows.append(row("timeout", result.problem))
        elif cell is None:
            rows.append(row("error", result.problem or "check cell was not executed"))
        elif cell.outcome in ("error", "timeout"):
            hint = _first_error_before(cells, set(task.graded.values()), index)
            rows.append(row(cell.outcome, cell.message + (f" ({hint})" if hint else "")))
        else:
            rows.append(row("error", "the check cell wrote no evidence (was `check` replaced or the kernel changed?)"))
    rows.extend(manual_rows(task.student, task.notebook, answers))
    return rows


def _first_error_before(cells: dict, check_cells: set, index: int) -> str:
    for cell in sorted(cells):
        if cell >= index:
            break
        result = cells[cell]
        if cell not in check_cells and result.outcome in ("error", "timeout"):
            return f"first failing cell before it: code cell {cell}: {result.message}"
    return ""


def student_totals(rows: list[Row]) -> list[tuple]:
    """Per-student totals: points, max points, percent and the count of each status (manual rows: their max counts)."""
    by_student: dict[str, list[Row]] = {}
    for row in rows:
        by_student.setdefault(row.student, []).append(row)
    totals = []
    for student in sorted(by_student):
        mine = by_student[student]
        points, maximum = sum(r.points or 0 for r in mine), sum(r.max_points for r in mine)
        percent = f"{100 * points / maximum:.1f}" if maximum else "0.0"
        totals.append((student, points, maximum, percent) + tuple(sum(r.status == s for r in mine) for s in STATUSES))
    return totals


def merge_manual(rows: list[Row], scores: list[dict]) -> list[Row]:
    """Fill ``manual`` rows from a filled-in scores table (dicts with student, notebook, check, points).

    Raises
    ------
    ValueError
        On points that are not an integer between 0 and the row's maximum, or a row that matches no written answer.
    """
    given = {}
    for entry in scores:
        key = (entry.get("student", ""), entry.get("notebook", ""), entry.get("check", ""))
        value = str(entry.get("points", "")).strip()
        if value:
            given[key] = value
    merged, used = [], set()
    for row in rows:
        key = (row.student, row.notebook, row.check)
        if row.status == "manual" and key in given:
            try:
                points = int(given[key])
            except ValueError:
                raise ValueError(f"manual score {key}: points {given[key]!r} is not an integer") from None
            if not 0 <= points <= row.max_points:
                raise ValueError(f"manual score {key}: points {points} outside 0..{row.max_points}")
            merged.append(Row(row.student, row.notebook, row.check, points, row.max_points, "passed" if points
                              == row.max_points else "failed", "scored by hand"))
            used.add(key)
        else:
            merged.append(row)
    unknown = sorted(set(given) - used)
    if unknown:
        raise ValueError(f"manual scores for rows that are not written answers: {unknown[:3]}")
    return merged


def csv_cell(value):
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or a tab/CR) gets a leading quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def display_name(name: str) -> str:
    """A folder name as text: bytes that are not UTF-8 (``surrogateescape``) shown as ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def csv_bytes(header, rows) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([csv_cell(display_name(c)) if isinstance(c, str) else c for c in row] for row in rows)
    return buffer.getvalue().encode("utf-8")


def gradebook_bytes(rows: list[Row]) -> bytes:
    """The gradebook CSV: ``GRADEBOOK_HEADER`` then one row per (student, notebook, check), sorted."""
    return csv_bytes(GRADEBOOK_HEADER, [r.as_tuple() for r in sorted(rows, key=_row_order)])


def _row_order(row: Row):
    return (row.student, row.notebook)


# ------------------------------------------------------------------------------------------------- the edge: files


@dataclass(frozen=True)
class Entry:
    """A snapshot entry: a folder, a symlink (``target``) or a file (``data`` when small enough, always its digest)."""

    kind: str
    mode: int
    target: str = ""
    data: bytes | None = None
    digest: bytes = b""
    size: int = 0


def _read_entry(path: Path, cap: int) -> Entry:
    info = os.lstat(path)
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return Entry("symlink", mode, target=os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return Entry("dir", mode)
    if not stat.S_ISREG(info.st_mode):
        return Entry("other", mode)
    if info.st_size > cap:  # hashed as far as the cap, never read whole (a 200 GB sparse file costs nothing)
        return Entry("large", mode, size=info.st_size, digest=f"{info.st_size}:{info.st_mtime_ns}".encode())
    data, problem = sandbox.read_capped(path, cap)
    if data is None:
        return Entry("other", mode)
    return Entry("file", mode, data=data, digest=hashlib.sha256(data).digest(), size=len(data))


def snapshot(root: Path, cap: int = MAX_SUBMISSION_BYTES) -> dict[Path, Entry]:
    """Everything under ``root`` (symlinks not followed), with modes; files over ``cap`` by size and time only."""
    entries: dict[Path, Entry] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in sorted(dirs) + sorted(files):
            path = Path(folder) / name
            try:
                entries[path] = _read_entry(path, cap)
            except OSError:
                continue
    return dict(sorted(entries.items()))


def restore_snapshot(root: Path, entries: dict[Path, Entry]) -> list[str]:
    """Make the tree under ``root`` exactly ``entries`` again (extra paths removed, modes kept); what was repaired.

    Never follows a symlink: a folder swapped for a link is removed and rebuilt, so nothing outside ``root`` is
    touched.
    """
    repaired = []
    current = snapshot(root)
    for path in sorted(current, key=lambda p: len(p.parts), reverse=True):
        old, now = entries.get(path), current[path]
        if old is not None and old.kind == now.kind and (old.kind == "dir" or old.digest == now.digest
                                                         and old.target == now.target):
            if old.mode != now.mode and old.kind != "symlink":
                os.chmod(path, old.mode)
                repaired.append(f"restored mode of {path}")
            continue
        if old is not None and old.kind == "dir" and now.kind == "dir":
            continue
        if now.kind == "dir":
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                path.unlink()
            except OSError:
                pass
        if old is None:
            repaired.append(f"removed {path}")
    for path, old in entries.items():
        if path in current and current[path].kind == old.kind and (old.kind == "dir" or (
                current[path].digest == old.digest and current[path].target == old.target)):
            continue
        try:
            if old.kind == "dir":
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, old.mode)
            elif old.kind == "symlink":
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(old.target, path)
            elif old.kind == "file" and old.data is not None:
                _write_atomic(path, old.data, mode=old.mode)
            else:
                repaired.append(f"could not restore {path} (too large or not a regular file)")
                continue
        except OSError as error:
            repaired.append(f"could not restore {path}: {error}")
            continue
        repaired.append(f"restored {path}")
    return repaired


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


def submitted_files(entries: dict[Path, Entry], submissions: Path) -> tuple[list[SubmittedFile], list[str]]:
    """The snapshot of SUBMISSIONS as :func:`plan`'s input: files (with their bytes) and the student folders."""
    files = []
    for path, entry in entries.items():
        parts = path.relative_to(submissions).parts
        if entry.kind == "dir":
            continue
        if entry.kind == "symlink":
            files.append(SubmittedFile(parts, "symlink", detail=f"points to {entry.target[:100]}"))
        elif entry.kind == "large":
            files.append(SubmittedFile(parts, "too large", detail=f"file of {entry.size} bytes, over the "
                                                                   f"{MAX_SUBMISSION_BYTES // 2**20} MiB limit"))
        elif entry.kind == "file":
            files.append(SubmittedFile(parts, "file", data=entry.data))
        else:
            files.append(SubmittedFile(parts, "unreadable", detail="not a regular file"))
    students = sorted(p.relative_to(submissions).parts[0] for p, e in entries.items()
                      if e.kind == "dir" and len(p.relative_to(submissions).parts) == 1
                      and not p.name.startswith("."))
    return files, students


# ------------------------------------------------------------------------------------------ the edge: one task


@dataclass(frozen=True)
class Settings:
    """How tasks run (plain data, shared by the local pool and Dask workers)."""

    mode: str
    package: str
    limits: sandbox.Limits
    cell_timeout_s: float
    threads: int = 1


def _kernel_environment(settings: Settings, scratch: Path, package: Path, seed: int) -> dict:
    """The whole environment of a submission's processes (nothing of the grader's own environment leaks in)."""
    from .checks._core import EVIDENCE_ENV, SEED_ENV
    from .runner import quiet_variables

    def at(path: Path) -> str:
        return sandbox.inside(settings.mode, scratch, path)

    home = scratch / "home"
    env = {
        "PATH": f"{Path(sandbox._interpreter()).parent}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": at(home),
        "IPYTHONDIR": at(home / ".ipython"), "JUPYTER_CONFIG_DIR": at(home / ".jupyter"),
        "JUPYTER_DATA_DIR": at(home / ".local"), "JUPYTER_RUNTIME_DIR": at(home / ".runtime"),
        "MPLCONFIGDIR": at(home / ".matplotlib"), "XDG_CACHE_HOME": at(home / ".cache"),
        "TMPDIR": "/tmp" if settings.mode == "bubblewrap" else at(scratch / "tmp"),
        "PYTHONPATH": sandbox.package_path(settings.mode, package), "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Only nbval: other installed plugins (benchmark, playwright) would slow every run and could change behaviour.
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        EVIDENCE_ENV: at(scratch / _EVIDENCE_DIR), SEED_ENV: str(seed),
    }
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(settings.threads)
    return quiet_variables(env)


_IPYTHON_CONFIG = "c.HistoryManager.enabled = False\nc.InteractiveShellApp.exec_files = []\n"


def run_task(task: Task, settings: Settings) -> TaskResult:
    """Execute one restored notebook under nbval in a fresh scratch folder, contained; collect what it left.

    The same function runs in the local pool and on Dask workers. It never judges anything: it returns the evidence
    files and nbval's junit report as bytes (read with size caps, regular files only) for :func:`score`.
    """
    scratch = Path(tempfile.mkdtemp(prefix="sustainlab-grade-"))
    try:
        home = scratch / "home"
        for sub in ("tmp", _EVIDENCE_DIR, "home/.ipython/profile_default", "home/.jupyter", "home/.runtime"):
            (scratch / sub).mkdir(parents=True, exist_ok=True)
        for name in ("ipython_config.py", "ipython_kernel_config.py"):
            (home / ".ipython" / "profile_default" / name).write_text(_IPYTHON_CONFIG)
        (scratch / "pytest.ini").write_text("[pytest]\n")
        notebook = scratch / "submission.ipynb"
        notebook.write_text(task.source, encoding="utf-8")
        package = Path(settings.package)
        if not package.is_dir():  # a Dask worker on another host: its own installation, copied before running
            package = _package_copy(scratch / "package-source")
        if settings.mode != "bubblewrap":  # the submission could write to it: a fresh copy that only it can spoil
            shutil.copytree(package, scratch / "package")
            package = scratch / "package"
        at = lambda p: sandbox.inside(settings.mode, scratch, p)  # noqa: E731
        argv = [
            sandbox._interpreter(), "-m", "pytest", "-c", at(scratch / "pytest.ini"), "--rootdir", at(scratch),
            "-p", "no:cacheprovider", "-p", "nbval.plugin", "-p", "sustainlab.nbval_hooks", "--nbval-lax",
            "--nbval-current-env", "--nbval-cell-timeout",
            str(max(1, int(min(settings.cell_timeout_s, settings.limits.wall_s or settings.cell_timeout_s)))),
            "--junitxml", at(scratch / "junit.xml"), "--color=no", "-q", "-p", "no:warnings", at(notebook),
        ]
        env = _kernel_environment(settings, scratch, package, task.seed)
        run = sandbox.run_contained(argv, scratch=scratch, env=env, limits=settings.limits, mode=settings.mode,
                                    package=package)
        # Every process of the submission is dead now: what it left cannot change while it is read.
        evidence = {}
        for spec in task.specs:
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", spec.id)
            evidence[spec.id] = sandbox.read_capped(scratch / _EVIDENCE_DIR / f"{safe}.json", MAX_EVIDENCE_BYTES)
        junit, junit_problem = sandbox.read_capped(scratch / "junit.xml", MAX_JUNIT_BYTES)
        problem = ""
        died, _ = sandbox.read_capped(scratch / "kernel-died", 200)
        if died is not None:
            problem = f"the kernel died (out of memory, killed or exited) while running {died.decode('utf-8', 'replace')}"
            junit = None  # pytest was stopped at once: no report
        elif run.killed:
            problem = f"notebook ran longer than {settings.limits.wall_s:g} s and was stopped"
        elif junit is None:
            tail = _last_line(run.output_tail) or f"pytest exited with code {run.returncode}"
            problem = f"nbval produced no report ({junit_problem}): {tail[:200]}"
        return TaskResult(evidence, junit, run.killed, clean(problem), run.seconds, run.cpu_s, run.mode)
    finally:
        _remove_tree(scratch)


# ------------------------------------------------------------------------------------------ the edge: the class


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
    cpu_seconds: list[float] = field(default_factory=list)
    mode: str = ""

    def summary(self) -> str:
        """A short text summary for the terminal (student names and messages cleaned of control characters)."""
        counts = {status: sum(r.status == status for r in self.rows) for status in STATUSES}
        lines = [f"graded {len(self.totals)} student(s), {len(self.rows)} row(s) in {self.seconds:.1f} s "
                 f"(containment: {self.mode})"]
        lines.append("  " + ", ".join(f"{status} {n}" for status, n in counts.items() if n or status != "manual"))
        names = [clean(display_name(t[0]), 60) for t in self.totals]
        width = max([len(n) for n in names] + [7])
        for name, t in zip(names, self.totals):
            lines.append(f"  {name:<{width}}  {t[1]:>4}/{t[2]:<4} {t[3]:>6}%")
        if self.repaired:
            lines.append(f"  WARNING: submissions tampered with files; repaired {len(self.repaired)}:")
            lines.extend(f"    {clean(display_name(item), 200)}" for item in self.repaired[:20])
        lines.append(f"gradebook: {self.gradebook}   totals: {self.totals_path}")
        return "\n".join(lines)


def totals_path_for(gradebook: Path) -> Path:
    """Where the per-student totals go: ``<gradebook stem>_totals.csv`` beside the gradebook."""
    return gradebook.with_name(gradebook.stem + "_totals.csv")


def _trust_exercises(manifest: Manifest) -> None:
    # Runs every reference through its own check here, before any student code: it proves no check is impossible,
    # and it imports everything judging needs while the package on disk is still the one the grader started with.
    for specs in manifest.notebooks.values():
        for spec in specs:
            try:
                exercise = get_exercise(spec.id)
            except ValueError as error:
                raise GradingSetupError(f"the release uses {error}") from None
            passed, hint = run_check(exercise, exercise.reference(), seed=1)
            if not passed:
                raise GradingSetupError(f"the reference answer of {spec.id} fails its own check: {hint}")


def _remove_tree(folder: Path) -> None:
    # The package copies are read-only on purpose; without root, their folders must be writable to be emptied.
    for path in [folder, *folder.rglob("*")] if folder.exists() else []:
        try:
            if path.is_dir() and not path.is_symlink():
                os.chmod(path, 0o700)
        except OSError:
            pass
    shutil.rmtree(folder, ignore_errors=True)


def _package_copy(folder: Path) -> Path:
    """A copy of the grader's own package, taken before any student code runs; kernels import only this."""
    import sustainlab

    target = folder / "sustainlab"
    shutil.copytree(Path(sustainlab.__file__).resolve().parent, target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
    return folder


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
    sandbox_mode: str | None = None,
    seed: int | None = None,
    manual: str | Path | None = None,
    feedback: str | Path | None = None,
    dask: str | None = None,
    student: str | None = None,
) -> GradeResult:
    """Grade every submission in ``submissions/<student>/<notebook>.ipynb`` against the release manifest.

    Parameters
    ----------
    release_dir : path-like
        The folder written by :func:`release` (it holds ``release.json``); not a symlink.
    submissions : path-like
        One folder per student; the folder name is the student's name (any characters, spaces, non-ASCII and
        bytes that are not UTF-8 included).
    out : path-like
        The gradebook CSV; the per-student totals go to ``<stem>_totals.csv`` beside it. Rows are appended to
        ``<out>.partial`` as they are produced, so a crash never loses the class.
    timeout_s, cell_timeout_s : float
        Longest run of a whole notebook and of one cell.
    memory_mb : int
        Memory of each submission's process tree (0: none).
    jobs : int, optional
        Parallel submissions (default: the number of CPU cores).
    junit_dir : path-like, optional
        Where to keep nbval's junit XML per submission, for audit.
    progress : bool
        Draw a progress bar on stderr.
    sandbox_mode : {"bubblewrap", "namespaces", "processes"}, optional
        The strongest containment to try (default: the best this machine offers; see :mod:`sustainlab.sandbox`).
    seed : int, optional
        The probes' master seed (default: a fresh secret one; give one only to reproduce a grading).
    manual : path-like, optional
        A filled-in CSV of written-answer scores (columns student, notebook, check, points) to merge.
    feedback : path-like, optional
        Write one HTML page per student and notebook there (:mod:`sustainlab.feedback`).
    dask : str, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``): run the tasks there instead of a local pool.
        Workers need this package and its dependencies, and see the machine they run on (use a sandbox there too).
    student : str, optional
        Grade only ``submissions/<student>/`` (the gradebook then holds that student's rows alone; see
        :func:`sustainlab.gradebook.update_rows` to merge them into a class gradebook).

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
    try:  # bad options are a set-up error (exit 2); any other exception below is a grader bug and propagates
        timeout_s = check_scalar(timeout_s, "timeout_s", min_value=0, include_min=False)
        cell_timeout_s = check_scalar(cell_timeout_s, "cell_timeout_s", min_value=0, include_min=False)
        memory_mb = check_scalar(memory_mb, "memory_mb", min_value=0, integer=True)
        if jobs is not None:
            jobs = check_scalar(jobs, "jobs", min_value=1, integer=True)
    except (TypeError, ValueError) as error:
        raise GradingSetupError(str(error)) from None
    if sandbox_mode is not None and sandbox_mode not in sandbox.MODES:
        raise GradingSetupError(f"sandbox_mode must be one of {', '.join(sandbox.MODES)}, got {sandbox_mode!r}.")
    manifest = load_manifest(release_dir)
    manual_scores = _read_manual(manual) if manual is not None else None
    if not submissions.is_dir() or submissions.is_symlink():
        raise GradingSetupError(f"submissions folder {submissions} does not exist (or is a symlink).")
    # Everything student code could touch is read (capped) before any of it runs.
    try:
        release_files = snapshot(release_dir)
        submission_files = snapshot(submissions)
    except OSError as error:
        raise GradingSetupError(f"cannot read the files to grade: {error}") from None
    files, students = submitted_files(submission_files, submissions)
    if student is not None:
        try:
            files, students = one_student(files, students, student)
        except ValueError as error:
            raise GradingSetupError(f"{error} (in {submissions})") from None
    master = secrets.randbits(63) if seed is None else int(seed)
    the_plan = plan(manifest, files, students, master)
    _trust_exercises(manifest)
    mode = sandbox.detect_mode(sandbox_mode)
    jobs = max(1, int(jobs or os.cpu_count() or 1))
    rows_by_key: dict[tuple, list[Row]] = dict(the_plan.rows)
    run_seconds, cpu_seconds, junits = [], [], {}
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="sustainlab-package-"))
    bar = progress_bar(None, desc="grading", total=len(the_plan.tasks), unit="nb", file=sys.stderr,
                       disable=not progress)
    sandbox.become_subreaper()  # last line of defence where no cgroup or PID namespace holds a submission
    already_running = sandbox.descendants()
    try:
        settings = Settings(mode, str(_package_copy(workdir / "pkg")),
                            sandbox.Limits(memory_mb=memory_mb, cpu_s=2 * timeout_s, wall_s=timeout_s),
                            cell_timeout_s, threads=max(1, (os.cpu_count() or 1) // jobs))
        with open(partial, "w", encoding="utf-8", newline="", errors="backslashreplace") as log:
            writer = csv.writer(log, lineterminator="\n")
            writer.writerow(GRADEBOOK_HEADER)
            for key in sorted(rows_by_key):
                writer.writerows([csv_cell(display_name(c)) if isinstance(c, str) else c for c in r.as_tuple()]
                                 for r in rows_by_key[key])
            log.flush()
            for task, result in _execute(the_plan.tasks, settings, jobs, dask):
                run_seconds.append(result.seconds)
                cpu_seconds.append(result.cpu_s)
                junits[task.key] = result.junit
                rows = score(task, result, manifest.answers.get(task.notebook, ()))
                rows_by_key[task.key] = rows
                writer.writerows([csv_cell(display_name(c)) if isinstance(c, str) else c for c in r.as_tuple()]
                                 for r in rows)
                log.flush()
                bar.update(1)
    finally:
        bar.close()
        if dask is None:
            sandbox.kill_new_descendants(already_running)
        _remove_tree(workdir)

    # All student code has stopped: put back anything it changed, then write the results.
    repaired = restore_snapshot(release_dir, release_files) + restore_snapshot(submissions, submission_files)
    rows = [row for key in sorted(rows_by_key) for row in rows_by_key[key]]
    if manual_scores is not None:
        try:
            rows = merge_manual(rows, manual_scores)
        except ValueError as error:
            raise GradingSetupError(f"{manual}: {error}") from None
    totals = student_totals(rows)
    _write_atomic(out, gradebook_bytes(rows))
    totals_path = totals_path_for(out)
    _write_atomic(totals_path, csv_bytes(TOTALS_HEADER, totals))
    partial.unlink(missing_ok=True)
    if feedback is not None:
        from .feedback import feedback_html, feedback_path

        for task in the_plan.tasks:
            _write_atomic(feedback_path(Path(feedback), task.student, task.notebook),
                          feedback_html(task.source, rows_by_key.get(task.key, [])).encode("utf-8"))
    if junit_dir is not None:
        for (student, name), report in sorted(junits.items()):
            if report:
                _write_atomic(Path(junit_dir) / display_name(student) / (Path(name).stem + ".junit.xml"), report)
    return GradeResult(rows, totals, out, totals_path, repaired, time.perf_counter() - started, run_seconds,
                       cpu_seconds, mode)


def _execute(tasks, settings: Settings, jobs: int, dask_address: str | None):
    """Yield ``(task, TaskResult)`` as each task finishes: a local thread pool, or a Dask cluster (same function)."""

    def failed(error):  # the grader must survive anything one submission does
        return TaskResult(problem=clean(f"grader could not run this notebook: {error!r}"))

    if dask_address is None:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_task, task, settings): task for task in tasks}
            for future in as_completed(futures):
                try:
                    yield futures[future], future.result()
                except Exception as error:
                    yield futures[future], failed(error)
        return
    try:
        from distributed import Client, as_completed as dask_completed

        client = Client(dask_address, timeout=30)
    except ImportError:
        raise GradingSetupError("--dask needs dask and distributed: pip install -e .[scale]") from None
    except (OSError, TimeoutError, ValueError) as error:
        raise GradingSetupError(f"cannot reach the Dask scheduler at {dask_address}: {error}") from None
    with client:
        # pure=False: two identical submissions are still two runs; retries=0: a submission is never run twice.
        futures = {client.submit(run_task, task, settings, pure=False, key=f"grade-{i}"): task
                   for i, task in enumerate(tasks)}
        for future in dask_completed(list(futures)):
            try:
                yield futures[future], future.result()
            except Exception as error:
                yield futures[future], failed(error)


def _read_manual(path) -> list[dict]:
    data, problem = sandbox.read_capped(Path(path), 64 * 2**20)
    if data is None:
        raise GradingSetupError(f"cannot read the manual scores {path}: {problem}")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig", "replace"))))
    if rows and not {"student", "notebook", "check", "points"} <= set(rows[0]):
        raise GradingSetupError(f"{path}: needs the columns student, notebook, check, points")
    # The gradebook escapes formula-like cells with a leading quote: undo it so the keys match.
    return [{k: (v[1:] if isinstance(v, str) and v[:2] in ("'=", "'+", "'-", "'@") else v) for k, v in r.items()}
            for r in rows]
