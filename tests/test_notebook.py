"""Tests for sustainlab.notebook: the pure release and grading transforms (in memory, no kernels)."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from sustainlab.notebook import (
    CheckSpec,
    check_id,
    check_specs,
    foreign_check_ids,
    has_solution,
    is_check,
    is_hidden_check,
    replace_solution_regions,
    restore_checks,
    strip_hidden,
    strip_solutions,
    student_version,
)

SOLUTION = "def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION"


def passed(cid):
    return [new_output("stream", name="stdout", text=f"✔ {cid} passed\n")]


def check_cell(cid, points=1, hidden=False, source=None):
    meta = {"check": cid, "points": points}
    if hidden:
        meta["hidden"] = True
    return new_code_cell(
        source or f'from sustainlab.checks import report\nreport("{cid}", square(3) == 9)',
        metadata={"sustainlab": meta},
        execution_count=2,
        outputs=passed(cid),
    )


def instructor():
    """A tiny instructor notebook: solution, visible check, hidden check, second solution and check."""
    return new_notebook(
        cells=[
            new_markdown_cell("# Tiny\nThe markers `### BEGIN SOLUTION` are explained in prose here."),
            new_code_cell(SOLUTION, execution_count=1, outputs=[]),
            check_cell("t-1"),
            check_cell("t-1h", points=2, hidden=True),
            new_code_cell("def cube(x):\n    ### BEGIN SOLUTION\n    return x ** 3\n    ### END SOLUTION",
                          execution_count=3),
            check_cell("t-2"),
        ]
    )


def specs():
    return check_specs(instructor())


def ids(nb):
    return [check_id(cell) for cell in nb.cells if is_check(cell)]


# ------------------------------------------------------------------------------------------------ release


def test_replace_solution_regions_keeps_indentation_and_code_outside():
    """Is the region replaced by the stub at the marker's indentation, and the rest kept?"""
    source = "import math\ndef f(x):\n    ### BEGIN SOLUTION\n    y = x\n    return y\n    ### END SOLUTION\nprint(1)"
    assert replace_solution_regions(source) == (
        "import math\ndef f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\nprint(1)"
    )


def test_replace_solution_regions_handles_several_regions():
    """Are two regions in one cell both replaced?"""
    source = SOLUTION + "\n" + SOLUTION.replace("square", "twice")
    assert replace_solution_regions(source).count("raise NotImplementedError()") == 2


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1", "never closed"),
        ("x = 1\n### END SOLUTION", "without a matching"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "nested"),
    ],
)
def test_replace_solution_regions_rejects_bad_markers(source, message):
    """Do unbalanced or nested markers fail loudly instead of leaking a solution?"""
    with pytest.raises(ValueError, match=message):
        replace_solution_regions(source)


def test_strip_solutions_clears_outputs_and_does_not_mutate():
    """Does the student copy lose the solution and its outputs while the instructor notebook stays intact?"""
    nb = instructor()
    nb.cells[1].outputs = passed("x")
    before = nbformat.writes(nb)
    student = strip_solutions(nb)
    assert "return x * x" not in student.cells[1].source
    assert student.cells[1].outputs == [] and student.cells[1].execution_count is None
    assert nbformat.writes(nb) == before
    # prose that mentions the markers is left alone
    assert student.cells[0].source == nb.cells[0].source


def test_strip_solutions_rejects_stub_that_does_not_parse():
    """Is a solution region placed so that the stub breaks the cell reported at release time?"""
    nb = new_notebook(cells=[new_code_cell("x = (\n### BEGIN SOLUTION\n1)\n### END SOLUTION")])
    with pytest.raises(ValueError, match="not valid Python"):
        strip_solutions(nb)


def test_student_version_removes_hidden_and_check_outputs():
    """Does the release drop hidden checks, keep visible ones, and clear their outputs?"""
    student = student_version(instructor())
    assert ids(student) == ["t-1", "t-2"]
    assert not any(is_hidden_check(cell) for cell in student.cells)
    assert all(cell.outputs == [] for cell in student.cells if is_check(cell))
    assert not any(has_solution(cell) for cell in student.cells)
    nbformat.validate(student)


def test_strip_hidden_only_removes_hidden():
    """Are exactly the hidden check cells removed?"""
    assert len(strip_hidden(instructor()).cells) == len(instructor().cells) - 1


def test_check_specs_reads_points_outputs_and_anchor():
    """Does the manifest entry carry points, reference output, hidden flag and the anchor of a hidden check?"""
    found = {spec.id: spec for spec in specs()}
    assert list(found) == ["t-1", "t-1h", "t-2"]
    assert found["t-1h"].hidden and found["t-1h"].points == 2 and found["t-1h"].anchor == "t-1"
    assert found["t-1"].outputs == [{"name": "stdout", "output_type": "stream", "text": "✔ t-1 passed\n"}]
    assert CheckSpec.from_json(found["t-1h"].to_json()) == found["t-1h"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda nb: nb.cells.append(check_cell("t-1")), "used by two"),
        (lambda nb: nb.cells[2].metadata["sustainlab"].update(points=-1), "non-negative integer"),
        (lambda nb: nb.cells[2].metadata["sustainlab"].update(points="3"), "non-negative integer"),
        (lambda nb: nb.cells[2].metadata["sustainlab"].update(hidden="yes"), "true or false"),
        (lambda nb: nb.cells[2].update(outputs=[]), "no stored output"),
        (lambda nb: nb.cells[2].update(execution_count=None), "no stored output"),
        (lambda nb: nb.cells[2].update(source="check(("), "not valid Python"),
    ],
)
def test_check_specs_rejects_bad_check_cells(change, message):
    """Does a malformed instructor check cell fail the release with a message naming the problem?"""
    nb = instructor()
    change(nb)
    with pytest.raises(ValueError, match=message):
        check_specs(nb)


# ------------------------------------------------------------------------------------------------ restore


def restored_cells(nb):
    result = restore_checks(nb, specs())
    return result, [(check_id(c), c) for c in result.notebook.cells if is_check(c)]


def test_restore_checks_overrides_source_outputs_and_points():
    """Can a student change what is checked, what is expected or the points? (No.)"""
    nb = student_version(instructor())
    cell = nb.cells[2]
    cell.source = 'print("✔ t-1 passed")'
    cell.outputs = passed("t-1")
    cell.metadata["sustainlab"]["points"] = 100
    result, cells = restored_cells(nb)
    restored = dict(cells)["t-1"]
    assert restored.source == specs()[0].source
    assert restored.metadata["sustainlab"]["points"] == 1
    # No stored output and no nbval marker: nbval only runs it; the evidence it writes is judged by the grader.
    assert restored.execution_count is None and restored.outputs == []
    assert "tags" not in restored.metadata


def test_restore_checks_finds_check_cells_whose_metadata_an_editor_stripped():
    """A cell still calling check("t-1", ...) without its metadata is that check, not a missing one."""
    spec = CheckSpec("t-1", 1, False, 'check("t-1", square)', [], answer="square")
    nb = new_notebook(cells=[new_code_cell(SOLUTION), new_code_cell('from sustainlab.checks import check\n'
                                                                    'check("t-1", square)')])
    result = restore_checks(nb, [spec])
    assert result.missing == () and result.graded == {"t-1": 1}


def test_restore_checks_runs_a_check_after_its_solution_cell():
    """A check pasted above the cell defining its answer is moved just after that cell."""
    spec = CheckSpec("t-1", 1, False, 'check("t-1", square)', [], answer="square")
    check = new_code_cell('check("t-1", square)', metadata={"sustainlab": {"check": "t-1", "points": 1}})
    nb = new_notebook(cells=[check, new_code_cell("x = 1"), new_code_cell(SOLUTION), new_code_cell("y = 2")])
    result = restore_checks(nb, [spec])
    sources = [c.source for c in result.notebook.cells]
    assert sources.index('check("t-1", square)') == sources.index(SOLUTION) + 1


def test_restore_checks_inserts_hidden_after_anchor():
    """Is a hidden check put back right after the visible check it followed?"""
    result, cells = restored_cells(student_version(instructor()))
    assert [cid for cid, _ in cells] == ["t-1", "t-1h", "t-2"]
    assert result.missing == ()
    assert list(result.graded) == ["t-1", "t-1h", "t-2"]


def test_restore_checks_hidden_goes_to_end_when_anchor_deleted():
    """When the student deleted the hidden check's anchor, is it appended at the end and the anchor missing?"""
    nb = student_version(instructor())
    nb.cells = [c for c in nb.cells if check_id(c) != "t-1"]
    result, cells = restored_cells(nb)
    assert [cid for cid, _ in cells] == ["t-2", "t-1h"]
    assert result.missing == ("t-1",)


def test_restore_checks_counts_duplicates_once_and_keeps_order_of_first():
    """Duplicated and reordered check cells: each id runs once, at its first position in the submission."""
    nb = student_version(instructor())
    t1 = [c for c in nb.cells if check_id(c) == "t-1"][0]
    t2 = [c for c in nb.cells if check_id(c) == "t-2"][0]
    nb.cells = [t2] + nb.cells + [t1, t1, t2]
    result, cells = restored_cells(nb)
    assert [cid for cid, _ in cells] == ["t-2", "t-1", "t-1h"]
    assert sorted(result.graded) == ["t-1", "t-1h", "t-2"]


def test_restore_checks_code_cell_indices_match_nbval_numbering():
    """Does ``graded`` give each check's index among code cells (nbval's 'Cell N')?"""
    result = restore_checks(student_version(instructor()), specs())
    code = [c for c in result.notebook.cells if c.cell_type == "code"]
    for cid, index in result.graded.items():
        assert check_id(code[index]) == cid


def test_restore_checks_drops_student_copies_of_hidden_and_unknown_metadata():
    """A student cell claiming a hidden id is dropped; check metadata with an unknown id is removed."""
    nb = student_version(instructor())
    nb.cells.insert(0, check_cell("t-1h", hidden=True, source="print('✔ t-1h passed')"))
    nb.cells.append(check_cell("zz-9"))
    result, cells = restored_cells(nb)
    assert [cid for cid, _ in cells] == ["t-1", "t-1h", "t-2"]
    assert dict(cells)["t-1h"].source.endswith(specs()[1].source)
    assert foreign_check_ids(nb, specs()) == ["zz-9"]


def test_restore_checks_gives_cell_ids_only_to_notebooks_that_use_them():
    """nbformat 4.5 requires cell ids and 4.4 forbids them: is the restored notebook valid either way?"""
    for minor in (4, 5):
        nb = student_version(instructor())
        nb.nbformat_minor = minor
        for cell in nb.cells:
            if minor < 5:
                cell.pop("id", None)
        result = restore_checks(nb, specs())
        nbformat.validate(result.notebook)
