"""Tests for sustainlab.grading and the ``release`` / ``grade`` commands.

The unit tests run in memory. One session-scoped fixture releases a small course (the real 00_welcome notebook plus
a tiny instructor notebook with a hidden check), builds a synthetic class covering every submission case from that
release, and grades it once through the CLI in parallel; each case is then one assertion on the gradebook.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from sustainlab import cli
from sustainlab.grading import (
    GRADEBOOK_HEADER,
    CellResult,
    GradingSetupError,
    RunResult,
    load_manifest,
    parse_junit,
    read_submission,
    release,
    restore_snapshot,
    run_nbval,
    score,
    snapshot,
)
from sustainlab.notebook import check_id, check_specs, restore_checks

ROOT = Path(__file__).resolve().parents[1]
WELCOME = ROOT / "notebooks" / "00_welcome.ipynb"
TINY = "90_tiny.ipynb"


def _check(cid, expr, points=1, hidden=False, count=2):
    meta = {"check": cid, "points": points}
    if hidden:
        meta["hidden"] = True
    return new_code_cell(
        f'from sustainlab.checks import report\nreport("{cid}", {expr})',
        metadata={"sustainlab": meta},
        execution_count=count,
        outputs=[new_output("stream", name="stdout", text=f"✔ {cid} passed\n")],
    )


def tiny_instructor():
    """Two exercises; the first has a hidden check that catches an answer hard-coded for the visible one."""
    return new_notebook(
        cells=[
            new_markdown_cell("# Tiny chapter"),
            new_code_cell("def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION",
                          execution_count=1),
            _check("tiny-1", "square(3) == 9"),
            _check("tiny-1h", "square(-4) == 16 and square(0.5) == 0.25", points=2, hidden=True, count=3),
            new_code_cell("def cube(x):\n    ### BEGIN SOLUTION\n    return x ** 3\n    ### END SOLUTION",
                          execution_count=4),
            _check("tiny-2", "cube(2) == 8", count=5),
        ]
    )


def make_release(tmp: Path) -> Path:
    src = tmp / "instructor"
    src.mkdir()
    shutil.copy(WELCOME, src / WELCOME.name)
    nbformat.write(tiny_instructor(), src / TINY)
    out = tmp / "release"
    assert cli.main(["release", str(src), str(out)]) == 0
    return out


# ------------------------------------------------------------------------------------------------- unit tests


def test_release_is_reproducible_and_private(tmp_path):
    """Does a second release write byte-identical files, keep answers out of the student copies, hide the manifest?"""
    out = make_release(tmp_path)
    first = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert cli.main(["release", str(tmp_path / "instructor"), str(out)]) == 0
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == first
    student = (out / "student" / TINY).read_text()
    assert "x * x" not in student and "tiny-1h" not in student and "NotImplementedError" in student
    manifest = load_manifest(out)
    assert [s.id for s in manifest[TINY]] == ["tiny-1", "tiny-1h", "tiny-2"]
    assert [s.id for s in manifest[WELCOME.name]] == ["wel-1"]
    assert manifest[WELCOME.name][0].outputs[0]["text"] == "✔ wel-1 passed\n"
    assert (out / "release.json").stat().st_mode & 0o077 == 0


def test_release_rejects_bad_sources(tmp_path):
    """Does release fail with a clear message on an empty folder or a check cell that was never run?"""
    with pytest.raises(GradingSetupError, match="no notebooks"):
        release(tmp_path, tmp_path / "out")
    nb = tiny_instructor()
    nb.cells[2].outputs = []
    nbformat.write(nb, tmp_path / TINY)
    with pytest.raises(GradingSetupError, match="no stored output"):
        release(tmp_path, tmp_path / "out")


@pytest.mark.parametrize(
    "args, message",
    [
        (["grade", "{tmp}/nowhere", "{tmp}"], "no release manifest"),
        (["grade", "{tmp}/bad", "{tmp}"], "cannot read the release manifest"),
        (["grade", "{tmp}/release", "{tmp}/nowhere"], "does not exist"),
        (["grade", "{tmp}/release", "{tmp}", "--timeout", "0"], "timeout_s must be > 0"),
    ],
)
def test_grade_exits_2_when_the_grader_cannot_run(tmp_path, capsys, args, message):
    """Is a broken setup (not a bad submission) the only thing that gives a non-zero exit?"""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "release.json").write_text("{not json")
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "release.json").write_text(json.dumps({"format": 1, "notebooks": {}}))
    assert cli.main([a.format(tmp=tmp_path) for a in args]) == 2
    assert message in capsys.readouterr().err


JUNIT = """<?xml version="1.0"?><testsuites><testsuite>
<testcase classname="t.ipynb" name="Cell 0"/>
<testcase classname="t.ipynb" name="Cell 1"><failure message="x">Cell 1: Cell outputs differ
 assert reference_output == test_output failed:
  - ✘ t-1: try again
  + ✔ t-1 passed
</failure></testcase>
<testcase classname="t.ipynb" name="Cell 2"><failure message="x">Cell 2: Cell execution caused an exception
Traceback:
#x1B[31mNameError#x1B[39m: name 'square' is not defined
</failure></testcase>
<testcase classname="t.ipynb" name="Cell 3"><failure message="x">Cell 3: Timeout of 5 seconds exceeded executing cell
</failure></testcase>
<testcase classname="t.ipynb" name="Cell 4">
<skipped type="pytest.xfail" message="Previous cell timed out, expected cell to fail"/></testcase>
</testsuite></testsuites>"""


def test_parse_junit_classifies_each_outcome():
    """Are mismatch, exception, timeout and after-timeout told apart, with useful messages?"""
    cells = parse_junit(JUNIT.encode())
    assert cells[0] == CellResult("passed")
    assert cells[1] == CellResult("failed", "✘ t-1: try again")
    assert cells[2] == CellResult("error", "NameError: name 'square' is not defined")
    assert cells[3].outcome == "timeout" and "5 seconds" in cells[3].message
    assert cells[4].outcome == "timeout"


def test_score_turns_results_into_rows():
    """Points only for passed checks; missing, killed and unexecuted checks score zero with their status."""
    specs = check_specs(tiny_instructor())
    restored = restore_checks(tiny_instructor(), specs)
    graded = restored.graded  # tiny-1 → 1, tiny-1h → 2, tiny-2 → 4
    run = RunResult({0: CellResult("error", "RuntimeError: x"), 1: CellResult("passed"),
                     2: CellResult("error", "NameError"), 4: CellResult("failed", "✘ tiny-2: no")})
    rows = score("ann", TINY, specs, graded, (), run)
    assert [(r.check, r.status, r.points, r.max_points) for r in rows] == [
        ("tiny-1", "passed", 1, 1), ("tiny-1h", "error", 0, 2), ("tiny-2", "failed", 0, 1)]
    assert "code cell 0" in rows[1].message  # points at the earlier failing cell
    killed = score("ann", TINY, specs, graded, ("tiny-2",), RunResult(None, killed=True, problem="too long"))
    assert [r.status for r in killed] == ["timeout", "timeout", "missing"]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"   \n", "empty file"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "without a 'cells'"),
        (json.dumps({"nbformat": 3, "cells": []}).encode(), "nbformat=3"),
        (json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                     "cells": [{"cell_type": "bogus", "id": "a"}]}).encode(), "not a valid notebook"),
    ],
)
def test_read_submission_explains_invalid_files(data, message):
    """Is every kind of unreadable submission reported with a clear reason instead of crashing the grader?"""
    manifest = {TINY: check_specs(tiny_instructor())}
    nb, problem = read_submission(data, TINY, manifest)
    assert nb is None and message in problem


def test_read_submission_detects_notebook_of_another_chapter():
    """A notebook whose check ids belong to another release notebook is invalid, naming that notebook."""
    other = new_notebook(cells=[_check("wel-1", "True")])
    manifest = {TINY: check_specs(tiny_instructor()), "00_welcome.ipynb": check_specs(other)}
    nb, problem = read_submission(nbformat.writes(other).encode(), TINY, manifest)
    assert nb is None and "belong to 00_welcome.ipynb" in problem


def test_restore_snapshot_repairs_changed_deleted_and_new_files(tmp_path):
    """After tampering, is the tree put back byte for byte and are new files removed?"""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.ipynb").write_bytes(b"original")
    (tmp_path / "keep.txt").write_bytes(b"keep")
    (tmp_path / "link").symlink_to("keep.txt")
    saved = snapshot(tmp_path)
    (tmp_path / "a" / "x.ipynb").write_bytes(b"changed")
    (tmp_path / "keep.txt").unlink()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "evil.txt").write_text("x")
    (tmp_path / "link").unlink()
    (tmp_path / "link").write_text("not a link any more")
    repaired = restore_snapshot(tmp_path, saved)
    assert snapshot(tmp_path) == saved and len(repaired) == 5  # evil.txt, new/, x.ipynb, keep.txt, link
    assert (tmp_path / "link").is_symlink()
    assert restore_snapshot(tmp_path, saved) == []


@pytest.mark.slow
def test_run_nbval_kills_a_notebook_over_its_timeout():
    """Is a notebook that outlives --timeout stopped, with its whole process tree (kernel included)?"""
    import psutil

    nb = new_notebook(cells=[new_code_cell("import time\ntime.sleep(120)")])
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    run = run_nbval(nbformat.writes(nb), "sleepy.ipynb", timeout_s=3, cell_timeout_s=100)
    assert run.killed and run.cells is None and run.seconds < 20
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


# ------------------------------------------------------------------------------------------ the synthetic class

STRANGE = 'Zoë van Dijk, "the 2nd"'


def _nb(path: Path):
    return nbformat.read(path, as_version=4)


def _set_source(nb, startswith, source):
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(startswith))
    cell.source = source
    return nb


def build_class(tmp: Path, release_dir: Path) -> dict[str, dict[str, object]]:
    """One folder per case, built from the release (student copies) or the instructor notebooks."""
    student_tiny = release_dir / "student" / TINY
    student_welcome = release_dir / "student" / WELCOME.name
    solved_tiny = tiny_instructor()
    sub = tmp / "submissions"

    def tiny_with(**changes):
        nb = _nb(student_tiny)
        for start, source in changes.items():
            _set_source(nb, start, source)
        return nb

    square = "def square(x):\n    return x * x"
    cube = "def cube(x):\n    return x ** 3"
    cases: dict[str, dict[str, object]] = {
        "correct": {WELCOME.name: WELCOME.read_bytes(), TINY: tiny_with(**{"def square": square, "def cube": cube})},
        "untouched": {WELCOME.name: student_welcome.read_bytes(), TINY: student_tiny.read_bytes()},
        "one wrong": {TINY: tiny_with(**{"def square": square, "def cube": "def cube(x):\n    return x ** 2"})},
        "hardcoded": {TINY: tiny_with(**{"def square": "def square(x):\n    return 9", "def cube": cube})},
        "deleted checks": {TINY: tiny_with(**{"def square": square, "def cube": cube})},
        "duplicated": {TINY: tiny_with(**{"def square": square, "def cube": cube})},
        "early exception": {TINY: tiny_with(**{"def square": "raise RuntimeError('oops')\n" + square,
                                                "def cube": cube})},
        "infinite loop": {TINY: tiny_with(**{"def square": "while True:\n    pass\n" + square, "def cube": cube})},
        "memory bomb": {TINY: tiny_with(**{"def square": "big = bytearray(64 * 2**30)\n" + square,
                                            "def cube": cube})},
        "broken": {TINY: b"{this is not json", WELCOME.name: b""},
        "old format": {TINY: json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [],
                                         "cells": []}).encode(),
                       WELCOME.name: nbformat.writes(solved_tiny).encode()},
        STRANGE: {TINY: tiny_with(**{"def square": square, "def cube": cube}), "notes.txt": b"my notes",
                  "99_other.ipynb": student_tiny.read_bytes(),
                  ".ipynb_checkpoints/90_tiny-checkpoint.ipynb": b"{}", "unzipped/90_tiny.ipynb": b"{}"},
    }
    # Edited stored outputs and edited check cells: the grader must ignore both.
    edited = _nb(student_tiny)
    for cell in edited.cells:
        if check_id(cell):
            cid = check_id(cell)
            cell.source = f'print("✔ {cid} passed")'
            cell.outputs = [new_output("stream", name="stdout", text=f"✔ {cid} passed\n")]
            cell.metadata["sustainlab"]["points"] = 100
    cases["edited checks"] = {TINY: edited}
    deleted = cases["deleted checks"][TINY]
    deleted.cells = [c for c in deleted.cells if not check_id(c)]
    dup = cases["duplicated"][TINY]
    t1 = next(c for c in dup.cells if check_id(c) == "tiny-1")
    cube_at = next(i for i, c in enumerate(dup.cells) if c.source.startswith("def cube"))
    copies = [nbformat.from_dict({**t1, "id": f"copy-{n}"}) for n in range(2)]
    dup.cells = dup.cells[cube_at:] + dup.cells[:cube_at] + copies  # cube and tiny-2 moved to the top
    # Student code that tries to overwrite the release, its own and another submission, and the gradebook.
    targets = [release_dir / "release.json", sub / "tamper" / TINY, sub / "correct" / TINY, tmp / "gradebook.csv"]
    attack = "\n".join(f"open({str(t)!r}, 'w').write('pwned')" for t in targets)
    attack += f"\nopen({str(sub / 'planted.ipynb')!r}, 'w').write('x')"
    tamper = tiny_with(**{"def square": attack + "\n" + square, "def cube": cube})
    cases["tamper"] = {TINY: tamper}
    for student, files in cases.items():
        for name, content in files.items():
            path = sub / student / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if not isinstance(content, bytes):
                content = nbformat.writes(content).encode()
            path.write_bytes(content)
    (sub / "stray.ipynb").write_bytes(student_tiny.read_bytes())
    return cases


@pytest.fixture(scope="session")
def graded_class(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("class")
    release_dir = make_release(tmp)
    build_class(tmp, release_dir)
    before_release = snapshot(release_dir)
    before_submissions = snapshot(tmp / "submissions")
    gradebook = tmp / "gradebook.csv"
    code = cli.main(["grade", str(release_dir), str(tmp / "submissions"), "--out", str(gradebook),
                     "--timeout", "120", "--cell-timeout", "15", "--jobs", "2", "--no-progress",
                     "--junit-dir", str(tmp / "junit")])
    with gradebook.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    return {"code": code, "rows": rows, "tmp": tmp, "release": release_dir,
            "before": (before_release, before_submissions)}


def statuses(graded, student, notebook=TINY):
    return {r[2]: (r[5], int(r[3])) for r in graded["rows"][1:] if r[0] == student and r[1] == notebook}


@pytest.mark.slow
def test_class_grading_completes_with_exit_0_and_a_well_formed_gradebook(graded_class):
    """Exit 0 whatever the scores; header as specified; every row has a known status and 0 <= points <= max."""
    assert graded_class["code"] == 0
    header, *rows = graded_class["rows"]
    assert tuple(header) == GRADEBOOK_HEADER
    for row in rows:
        assert row[5] in ("passed", "failed", "error", "timeout", "missing", "invalid")
        assert 0 <= int(row[3]) <= int(row[4])


@pytest.mark.slow
def test_class_fully_correct_gets_full_marks(graded_class):
    """Fully correct → every check passed with all its points (hidden included)."""
    assert statuses(graded_class, "correct", WELCOME.name) == {"wel-1": ("passed", 1)}
    assert statuses(graded_class, "correct") == {"tiny-1": ("passed", 1), "tiny-1h": ("passed", 2),
                                                 "tiny-2": ("passed", 1)}


@pytest.mark.slow
def test_class_untouched_release_scores_zero(graded_class):
    """Untouched release → 0 for every graded check."""
    for notebook in (WELCOME.name, TINY):
        result = statuses(graded_class, "untouched", notebook)
        assert result and all(points == 0 and status in ("failed", "error") for status, points in result.values())
    assert statuses(graded_class, "untouched", WELCOME.name)["wel-1"][0] == "failed"


@pytest.mark.slow
def test_class_one_wrong_answer_loses_only_that_check(graded_class):
    """One wrong answer → only that check lost; a notebook not handed in → its checks missing."""
    assert statuses(graded_class, "one wrong") == {"tiny-1": ("passed", 1), "tiny-1h": ("passed", 2),
                                                   "tiny-2": ("failed", 0)}
    assert statuses(graded_class, "one wrong", WELCOME.name) == {"wel-1": ("missing", 0)}
    message = next(r[6] for r in graded_class["rows"] if r[0] == "one wrong" and r[2] == "tiny-2")
    assert "✘ tiny-2" in message


@pytest.mark.slow
def test_class_hidden_check_catches_hard_coded_answer(graded_class):
    """An answer hard-coded for the visible check passes it but fails the hidden one."""
    result = statuses(graded_class, "hardcoded")
    assert result["tiny-1"] == ("passed", 1) and result["tiny-1h"] == ("failed", 0)


@pytest.mark.slow
def test_class_edited_outputs_and_checks_have_no_effect(graded_class):
    """Edited stored outputs, check sources and points → scored exactly like the untouched release."""
    result = statuses(graded_class, "edited checks")
    assert all(points == 0 for _, points in result.values()) and set(result) == {"tiny-1", "tiny-1h", "tiny-2"}
    assert all(int(r[4]) < 100 for r in graded_class["rows"][1:] if r[0] == "edited checks")


@pytest.mark.slow
def test_class_deleted_check_cells_are_missing_hidden_still_graded(graded_class):
    """Deleted check cells → missing; the hidden check (anchor gone) is appended at the end and still graded."""
    assert statuses(graded_class, "deleted checks") == {"tiny-1": ("missing", 0), "tiny-1h": ("passed", 2),
                                                        "tiny-2": ("missing", 0)}


@pytest.mark.slow
def test_class_duplicated_and_reordered_checks_count_once(graded_class):
    """Duplicated and reordered check cells → exactly one row per id."""
    ids = [r[2] for r in graded_class["rows"][1:] if r[0] == "duplicated" and r[1] == TINY]
    assert sorted(ids) == ["tiny-1", "tiny-1h", "tiny-2"]
    assert statuses(graded_class, "duplicated")["tiny-1"] == ("passed", 1)


@pytest.mark.slow
def test_class_exception_in_early_cell_gives_error_not_crash(graded_class):
    """A cell that raises → checks depending on it are `error` with the reason; independent checks still pass."""
    result = statuses(graded_class, "early exception")
    assert result["tiny-1"][0] == "error" and result["tiny-1h"][0] == "error" and result["tiny-2"] == ("passed", 1)
    message = next(r[6] for r in graded_class["rows"] if r[0] == "early exception" and r[2] == "tiny-1")
    assert "NameError" in message and "RuntimeError" in message
    assert statuses(graded_class, "untouched")["tiny-1"] == ("error", 0)
    assert any(r[6] == "NotImplementedError" for r in graded_class["rows"] if r[0] == "untouched")


@pytest.mark.slow
def test_class_infinite_loop_times_out_and_memory_bomb_errors(graded_class):
    """Infinite loop → timeout; huge allocation → error (MemoryError under the limit); the class is still graded."""
    loop = statuses(graded_class, "infinite loop")
    assert loop["tiny-1"][0] == "timeout" and loop["tiny-1h"][0] == "timeout"
    bomb = statuses(graded_class, "memory bomb")
    assert bomb["tiny-1"][0] == "error" and bomb["tiny-2"] == ("passed", 1)
    assert any("MemoryError" in r[6] for r in graded_class["rows"] if r[0] == "memory bomb")


@pytest.mark.slow
def test_class_invalid_files_are_reported_with_reasons(graded_class):
    """Not JSON, empty, wrong nbformat, another chapter's notebook → invalid, one row per expected check."""
    rows = {(r[0], r[1], r[2]): r for r in graded_class["rows"][1:]}
    assert rows[("broken", TINY, "tiny-1")][5] == "invalid" and "JSON" in rows[("broken", TINY, "tiny-1")][6]
    assert rows[("broken", WELCOME.name, "wel-1")][6] == "empty file"
    assert "nbformat=3" in rows[("old format", TINY, "tiny-2")][6]
    assert "belong to 90_tiny.ipynb" in rows[("old format", WELCOME.name, "wel-1")][6]
    assert {r[2] for r in graded_class["rows"][1:] if r[0] == "broken" and r[1] == TINY} == {"tiny-1", "tiny-1h",
                                                                                         "tiny-2"}


@pytest.mark.slow
def test_class_strange_student_names_and_extra_files(graded_class):
    """A folder name with spaces, non-ASCII, comma and quotes is a student like any other; extra files are listed."""
    assert statuses(graded_class, STRANGE)["tiny-1h"] == ("passed", 2)
    extra = {r[1]: r for r in graded_class["rows"][1:] if r[0] == STRANGE and r[2] == ""}
    assert set(extra) == {"notes.txt", "99_other.ipynb", "unzipped/90_tiny.ipynb"}  # checkpoints are skipped
    assert "sub-folder" in extra["unzipped/90_tiny.ipynb"][6]
    assert all(r[5] == "invalid" and r[4] == "0" for r in extra.values())
    assert any(r[0] == "" and r[1] == "stray.ipynb" and r[5] == "invalid" for r in graded_class["rows"])


@pytest.mark.slow
def test_class_every_submission_file_appears_in_the_gradebook(graded_class):
    """No submission is lost: every non-hidden file under SUBMISSIONS has at least one row."""
    sub = graded_class["tmp"] / "submissions"
    listed = {(r[0], r[1]) for r in graded_class["rows"][1:]}
    for path in sub.rglob("*"):
        parts = path.relative_to(sub).parts
        if path.is_file() and not any(p.startswith(".") for p in parts):
            key = ("", parts[0]) if len(parts) == 1 else (parts[0], "/".join(parts[1:]))
            assert key in listed, key


@pytest.mark.slow
def test_class_tampering_is_undone_and_does_not_change_grades(graded_class):
    """Student code overwriting the release, submissions and gradebook: files restored, gradebook intact."""
    before_release, before_submissions = graded_class["before"]
    assert snapshot(graded_class["release"]) == before_release
    assert snapshot(graded_class["tmp"] / "submissions") == before_submissions
    assert graded_class["rows"][0] == list(GRADEBOOK_HEADER)
    assert statuses(graded_class, "tamper")["tiny-1h"] == ("passed", 2)
    assert statuses(graded_class, "correct")["tiny-2"] == ("passed", 1)
    totals = (graded_class["tmp"] / "gradebook_totals.csv").read_text(encoding="utf-8")
    assert totals.startswith("student,points,max_points,percent")
    assert any(p.name == "90_tiny.junit.xml" for p in (graded_class["tmp"] / "junit").rglob("*"))
