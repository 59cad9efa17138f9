"""Pure notebook transforms for releasing and grading: each takes a notebook and returns a new one.

Nothing here reads or writes files or runs code; :mod:`sustainlab.grading` and the CLI do that. The vocabulary is
the one in the course conventions (``notebooks/00_welcome.ipynb``, *Power × time = energy*, shows each piece):

- solution regions between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` marker lines;
- check cells, whose metadata is ``{"sustainlab": {"check": "<id>", "points": <int>}}``, plus ``"hidden": true`` for
  hidden checks that only exist at grading time;
- restored check cells carry no stored output and no nbval marker: under ``pytest --nbval-lax`` they only run and
  write evidence, which the grader judges (nbval's output comparison never decides a check).

The release is :data:`RELEASE_PIPELINE`, an ordered tuple of these functions.
"""

from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass
from typing import Any, Callable

import nbformat

__all__ = [
    "BEGIN_SOLUTION",
    "END_SOLUTION",
    "STUB_LINES",
    "NBVAL_CHECK_MARKER",
    "NBVAL_CHECK_TAG",
    "METADATA_KEY",
    "CheckSpec",
    "check_metadata",
    "is_check",
    "is_hidden_check",
    "check_id",
    "has_solution",
    "replace_solution_regions",
    "strip_solutions",
    "strip_hidden",
    "clear_check_outputs",
    "strip_rubrics",
    "RELEASE_PIPELINE",
    "student_version",
    "check_specs",
    "Restored",
    "foreign_check_ids",
    "restore_checks",
    "defined_names",
]

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
#: What a solution region becomes in the student copy (one line each, at the region's indentation).
STUB_LINES = ("# YOUR CODE HERE", "raise NotImplementedError()")
#: nbval's comment marker that makes ``--nbval-lax`` compare a cell's output.
NBVAL_CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
NBVAL_CHECK_TAG = "nbval-check-output"
METADATA_KEY = "sustainlab"

_MARKER_RE = re.compile(r"^(\s*)(### (?:BEGIN|END) SOLUTION)\s*$")


@dataclass(frozen=True)
class CheckSpec:
    """One check cell of an instructor notebook, as stored in the release manifest.

    Attributes
    ----------
    id : str
        The check id, e.g. ``"wel-1"``.
    points : int
        Points awarded when the check cell's output equals the reference.
    hidden : bool
        Hidden checks are absent from the student copy and inserted back when grading.
    source : str
        The instructor's cell source (restored over whatever the student's cell holds).
    outputs : list of dict
        The instructor's stored outputs: the reference nbval compares against.
    anchor : str or None
        For a hidden check, the id of the nearest visible check before it in the instructor notebook; the hidden
        check is re-inserted right after that cell (or at the end when there is none or the student deleted it).
    answer : str or None
        The notebook variable the check passes to ``check`` (e.g. ``"gd_step"``): grading runs the check after the
        last cell that defines it.
    """

    id: str
    points: int
    hidden: bool
    source: str
    outputs: list
    anchor: str | None = None
    answer: str | None = None

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "answer": self.answer,
            "points": self.points,
            "hidden": self.hidden,
            "anchor": self.anchor,
            "source": self.source,
            "outputs": self.outputs,
        }

    @classmethod
    def from_json(cls, data: dict) -> "CheckSpec":
        try:
            return cls(
                id=str(data["id"]),
                points=int(data["points"]),
                hidden=bool(data["hidden"]),
                source=str(data["source"]),
                outputs=list(data["outputs"]),
                anchor=data.get("anchor"),
                answer=data.get("answer"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"malformed check entry in the manifest: {error!r}") from None


# ----------------------------------------------------------------------------------------------------- predicates


def check_metadata(cell) -> dict | None:
    """The cell's ``sustainlab`` check metadata (``{"check": id, "points": n, ...}``), or None for other cells."""
    if cell.get("cell_type") != "code":
        return None
    meta = cell.get("metadata", {}).get(METADATA_KEY)
    if isinstance(meta, dict) and isinstance(meta.get("check"), str) and meta["check"]:
        return meta
    return None


def is_check(cell) -> bool:
    """Whether the cell is a check cell (visible or hidden)."""
    return check_metadata(cell) is not None


def is_hidden_check(cell) -> bool:
    """Whether the cell is a hidden check cell (``"hidden": true`` in its check metadata)."""
    meta = check_metadata(cell)
    return meta is not None and meta.get("hidden") is True


def check_id(cell) -> str | None:
    """The check id of a check cell, None for any other cell."""
    meta = check_metadata(cell)
    return meta["check"] if meta else None


def has_solution(cell) -> bool:
    """Whether a code cell holds at least one ``### BEGIN SOLUTION`` marker line."""
    return cell.get("cell_type") == "code" and any(
        (m := _MARKER_RE.match(line)) and m.group(2) == BEGIN_SOLUTION for line in cell.source.splitlines()
    )


# ------------------------------------------------------------------------------------------------ release steps


def replace_solution_regions(source: str) -> str:
    """Replace each marked solution region (markers included) by the stub lines at the marker's indentation.

    Raises
    ------
    ValueError
        On a nested ``BEGIN``, an ``END`` without ``BEGIN``, or a region left open.

    Examples
    --------
    >>> print(replace_solution_regions("def f():\\n    ### BEGIN SOLUTION\\n    return 1\\n    ### END SOLUTION"))
    def f():
        # YOUR CODE HERE
        raise NotImplementedError()
    """
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        match = _MARKER_RE.match(line)
        if match and match.group(2) == BEGIN_SOLUTION:
            if inside:
                raise ValueError(f"line {number}: nested '{BEGIN_SOLUTION}' (the previous region is not closed).")
            inside = True
            out.extend(match.group(1) + stub for stub in STUB_LINES)
        elif match and match.group(2) == END_SOLUTION:
            if not inside:
                raise ValueError(f"line {number}: '{END_SOLUTION}' without a matching '{BEGIN_SOLUTION}'.")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"'{BEGIN_SOLUTION}' is never closed by '{END_SOLUTION}'.")
    return "\n".join(out)


def _copy(nb):
    return copy.deepcopy(nb)


def _clear(cell) -> None:
    cell.outputs = []
    cell.execution_count = None


def strip_solutions(nb):
    """A copy of ``nb`` whose solution regions are replaced by stubs and whose solution cells have no outputs.

    Raises
    ------
    ValueError
        When markers are unbalanced, or when a cell is no longer valid Python once its region is replaced (the
        markers must sit inside a block, e.g. a function body, so the stub still parses).
    """
    new = _copy(nb)
    for index, cell in enumerate(new.cells):
        if cell.cell_type != "code" or not any(_MARKER_RE.match(line) for line in cell.source.splitlines()):
            continue
        try:
            cell.source = replace_solution_regions(cell.source)
        except ValueError as error:
            raise ValueError(f"code cell {index}: {error}") from None
        _ensure_parses(cell.source, f"cell {index} once its solution is replaced")
        _clear(cell)
    return new


def strip_hidden(nb):
    """A copy of ``nb`` without its hidden check cells."""
    new = _copy(nb)
    new.cells = [cell for cell in new.cells if not is_hidden_check(cell)]
    return new


def clear_check_outputs(nb):
    """A copy of ``nb`` whose visible check cells show no output (an unsolved copy must not say "passed")."""
    new = _copy(nb)
    for cell in new.cells:
        if is_check(cell):
            _clear(cell)
    return new


def strip_rubrics(nb):
    """A copy of ``nb`` whose written-answer cells keep their id and points but not the marking rubric (the release
    manifest keeps it for the people who grade)."""
    new = _copy(nb)
    for cell in new.cells:
        meta = cell.get("metadata", {}).get("sustainlab")
        if isinstance(meta, dict) and "answer" in meta:
            meta.pop("rubric", None)
    return new


#: The release, in order. ``check_specs`` must read the instructor notebook *before* this runs (it needs the hidden
#: cells and the stored reference outputs that these steps remove); ``strip_hidden`` runs first so that a hidden
#: check never reaches the later steps.
RELEASE_PIPELINE: tuple[Callable[[Any], Any], ...] = (strip_hidden, strip_solutions, clear_check_outputs, strip_rubrics)


def student_version(nb):
    """The student copy of an instructor notebook: :data:`RELEASE_PIPELINE` applied in order."""
    for step in RELEASE_PIPELINE:
        nb = step(nb)
    return nb


def check_specs(nb) -> list[CheckSpec]:
    """Every check cell of an instructor notebook, in order, with its points, source and reference output.

    Raises
    ------
    ValueError
        On a duplicated id, points that are not a non-negative integer, a ``hidden`` flag that is not a boolean, a
        check cell with no stored output (the instructor notebook was not executed and saved), or a check cell
        that does not parse.
    """
    specs: list[CheckSpec] = []
    last_visible: str | None = None
    for index, cell in enumerate(nb.cells):
        meta = check_metadata(cell)
        if meta is None:
            continue
        cid = meta["check"]
        where = f"check cell {cid!r} (cell {index})"
        if any(spec.id == cid for spec in specs):
            raise ValueError(f"{where}: the id {cid!r} is used by two check cells.")
        points = meta.get("points")
        if isinstance(points, bool) or not isinstance(points, int) or points < 0:
            raise ValueError(f"{where}: 'points' must be a non-negative integer, got {points!r}.")
        hidden = meta.get("hidden", False)
        if not isinstance(hidden, bool):
            raise ValueError(f"{where}: 'hidden' must be true or false, got {hidden!r}.")
        outputs = [_plain(out) for out in cell.get("outputs", []) if not _is_stderr(out)]
        if not outputs or cell.get("execution_count") is None:
            raise ValueError(
                f"{where} has no stored output: execute and save the instructor notebook first "
                "(sustainlab run-all --save NOTEBOOK)."
            )
        _ensure_parses(cell.source, where)
        specs.append(
            CheckSpec(
                id=cid,
                points=points,
                hidden=hidden,
                source=cell.source,
                outputs=outputs,
                anchor=last_visible if hidden else None,
            )
        )
        if not hidden:
            last_visible = cid
    return specs


def _is_stderr(output) -> bool:
    return output.get("output_type") == "stream" and output.get("name") == "stderr"


def _plain(output) -> dict:
    """An output as plain JSON data without run-specific fields (``execution_count`` of an execute_result)."""
    data = _to_builtin(output)
    data.pop("execution_count", None)
    return data


def _to_builtin(value):
    if isinstance(value, dict):
        return {key: _to_builtin(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_builtin(item) for item in value]
    return value


def _ensure_parses(source: str, where: str) -> None:
    # IPython magics and shell escapes are not Python; blank them out so the rest can still be checked.
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        ast.parse(code)
    except SyntaxError as error:
        raise ValueError(f"{where} is not valid Python (line {error.lineno}: {error.msg}).") from None


# ------------------------------------------------------------------------------------------------------ grading


@dataclass(frozen=True)
class Restored:
    """Result of :func:`restore_checks`.

    Attributes
    ----------
    notebook : NotebookNode
        The notebook to execute: instructor check cells at the student's positions, hidden checks inserted.
    graded : dict
        Check id → index of its cell among the notebook's *code* cells (nbval's ``Cell N``), for every check
        that will run.
    missing : tuple of str
        Ids of visible checks whose cell the student deleted (never run, scored ``missing``).
    """

    notebook: Any
    graded: dict
    missing: tuple


def foreign_check_ids(nb, specs: list[CheckSpec]) -> list[str]:
    """Check ids present in ``nb`` that ``specs`` does not know (a sign of a notebook from another chapter)."""
    known = {spec.id for spec in specs}
    return [cid for cell in nb.cells if (cid := check_id(cell)) and cid not in known]


def restore_checks(submitted, specs: list[CheckSpec]) -> Restored:
    """Put the instructor's check cells back into a student notebook, ready for ``pytest --nbval-lax``.

    - Each visible check id keeps the position of its *first* cell in the submission; later duplicates are
      dropped. Its source and outputs are replaced by the instructor's, whatever the student changed.
    - A visible check whose cell was deleted is reported in ``missing`` and not run.
    - Each hidden check is inserted right after its anchor (the visible check before it in the instructor
      notebook), or at the end when it has no anchor or the anchor is missing. Cells in the submission that claim
      a hidden id are dropped.
    - Check metadata on cells with unknown ids is removed, and only restored cells carry nbval's check marker.

    Parameters
    ----------
    submitted : NotebookNode
        The student's notebook (not modified).
    specs : list of CheckSpec
        The notebook's checks from the release manifest.

    Returns
    -------
    Restored
    """
    by_id = {spec.id: spec for spec in specs}
    cells = []
    seen: set[str] = set()
    for cell in _copy(submitted).cells:
        cid = check_id(cell) or _check_id_from_source(cell, by_id)
        if cid is None:
            cells.append(cell)
            continue
        spec = by_id.get(cid)
        if spec is None:
            cell.metadata.pop(METADATA_KEY, None)
            cells.append(cell)
        elif spec.hidden or cid in seen:
            continue
        else:
            seen.add(cid)
            cells.append(_check_cell(spec))
    with_ids = (submitted.get("nbformat"), submitted.get("nbformat_minor", 0)) >= (4, 5)
    cells = [_with_id(cell, with_ids) if check_id(cell) in by_id else cell for cell in cells]
    for spec in specs:
        if not spec.hidden:
            continue
        anchor_at = None
        if spec.anchor is not None:
            anchor_at = next((i for i, c in enumerate(cells) if check_id(c) == spec.anchor), None)
        hidden_cell = _with_id(_check_cell(spec), with_ids)
        if anchor_at is None:
            cells.append(hidden_cell)
        else:
            # After the anchor and after any hidden checks already placed behind it, keeping instructor order.
            at = anchor_at + 1
            while at < len(cells) and is_hidden_check(cells[at]):
                at += 1
            cells.insert(at, hidden_cell)
    cells = _after_answers(cells, by_id)
    new = _copy(submitted)
    new.cells = cells
    graded = {}
    code_index = 0
    for cell in cells:
        if cell.cell_type == "code":
            cid = check_id(cell)
            if cid is not None:
                graded[cid] = code_index
            code_index += 1
    missing = tuple(spec.id for spec in specs if not spec.hidden and spec.id not in seen)
    return Restored(notebook=new, graded=graded, missing=missing)


_CHECK_CALL_RE = re.compile(r"""\bcheck\(\s*["']([\w.-]+)["']""")


def _check_id_from_source(cell, by_id: dict) -> str | None:
    """The visible check a code cell holds when an editor stripped its metadata (found by its restored source)."""
    if cell.get("cell_type") != "code":
        return None
    found = {m.group(1) for m in _CHECK_CALL_RE.finditer(cell.source)}
    known = [cid for cid in found if cid in by_id and not by_id[cid].hidden]
    return known[0] if len(known) == 1 and len(found) == 1 else None


def defined_names(source: str) -> set[str]:
    """Top-level names a code cell defines (functions, classes, assignments); empty when it does not parse."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def _after_answers(cells: list, by_id: dict) -> list:
    """Move each restored check that sits above the last cell defining its answer to just after that cell.

    A check pasted above its solution would otherwise fail with ``NameError`` though the answer is right.
    """
    cells = list(cells)
    for spec in by_id.values():
        if not spec.answer:
            continue
        at = next((i for i, c in enumerate(cells) if check_id(c) == spec.id), None)
        if at is None:
            continue
        last = max((i for i, c in enumerate(cells) if c.get("cell_type") == "code" and check_id(c) is None
                    and spec.answer in defined_names(c.source)), default=None)
        if last is not None and last > at:
            cell = cells.pop(at)
            cells.insert(last, cell)  # `last` shifted down by one with the pop: this lands just after it
    return cells


def _check_cell(spec: CheckSpec):
    """A fresh code cell carrying the instructor's check: no stored output, so nbval runs it without comparing.

    Its only effect while grading is the evidence it writes; the grader judges that evidence.
    """
    meta = {"check": spec.id, "points": spec.points}
    if spec.hidden:
        meta["hidden"] = True
    cell = nbformat.v4.new_code_cell(
        source=spec.source,
        execution_count=None,
        outputs=[],
        metadata={METADATA_KEY: meta},
    )
    cell.pop("id", None)
    return cell


def _with_id(cell, with_ids: bool):
    # nbformat 4.5 requires cell ids (and earlier minors forbid them); a restored cell gets a stable one.
    cell.pop("id", None)
    if with_ids:
        cell["id"] = "sustainlab-" + re.sub(r"[^A-Za-z0-9_-]", "_", check_id(cell))[:50]
    return cell
