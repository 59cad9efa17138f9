"""Tests for sustainlab.grading and the ``release`` / ``grade`` commands.

The pure part (plan, score, totals, CSV, manual scores) is tested in memory with tables. One session-scoped fixture
releases a small course (the real 00_welcome notebook plus a tiny instructor notebook built on registry exercises,
with a hidden check), builds a class from that release — honest students, every broken-file case, and students who
attack the grader — grades it once through the CLI in parallel, and each case is one assertion on the gradebook:
every submission scores exactly what its genuine answers earn.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from sustainlab import cli, grading, sandbox
from sustainlab.checks import collect, get_exercise
from sustainlab.grading import (
    GRADEBOOK_HEADER,
    CellResult,
    GradingSetupError,
    Manifest,
    Row,
    SubmittedFile,
    Task,
    TaskResult,
    clean,
    csv_bytes,
    display_name,
    load_manifest,
    merge_manual,
    near_miss,
    parse_junit,
    plan,
    read_submission,
    release,
    restore_snapshot,
    score,
    snapshot,
    student_totals,
)
from sustainlab.notebook import CheckSpec, check_id

ROOT = Path(__file__).resolve().parents[1]
WELCOME = ROOT / "notebooks" / "00_welcome.ipynb"
TINY = "90_tiny.ipynb"
GD = "import numpy as np\n\ndef gd_step(theta, grad, lr):\n    ### BEGIN SOLUTION\n    return theta - lr * grad\n    ### END SOLUTION"
FOOT = ("def footprint_kg(phases, n_gpus, pue, grid_g_per_kwh):\n    ### BEGIN SOLUTION\n"
        "    return sum(h * w for h, w in phases) / 1000 * n_gpus * pue * grid_g_per_kwh / 1000\n    ### END SOLUTION")


def _check(cid, answer, points=1, hidden=False, count=2):
    meta = {"check": cid, "points": points}
    if hidden:
        meta["hidden"] = True
    return new_code_cell(
        f'from sustainlab.checks import check\n\ncheck("{cid}", {answer})',
        metadata={"sustainlab": meta},
        execution_count=count,
        outputs=[new_output("stream", name="stdout", text=f"✔ {cid} passed\n")],
    )


def tiny_instructor():
    """Two exercises of the registry (gd-1 with its hidden check, energy-1) and one written answer."""
    return new_notebook(
        cells=[
            new_markdown_cell("# Tiny chapter"),
            new_code_cell(GD, execution_count=1),
            _check("gd-1", "gd_step"),
            _check("gd-1-hidden", "gd_step", points=2, hidden=True, count=3),
            new_code_cell(FOOT, execution_count=4),
            _check("energy-1", "footprint_kg", count=5),
            new_markdown_cell("Why does the PUE matter? *Your answer here.*",
                              metadata={"sustainlab": {"answer": "tiny-essay", "points": 3, "rubric": "names cooling"}}),
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


def specs_of(nb=None):
    return load_manifest_from(nb or tiny_instructor())


def load_manifest_from(nb) -> tuple[CheckSpec, ...]:
    from sustainlab.notebook import check_specs

    return tuple(grading._canonical_check(s, "test") for s in check_specs(nb))


# ------------------------------------------------------------------------------------------------ release


def test_release_is_reproducible_and_private(tmp_path):
    """Does a second release write byte-identical files, keep answers out of the student copies, hide the manifest?"""
    out = make_release(tmp_path)
    first = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert cli.main(["release", str(tmp_path / "instructor"), str(out)]) == 0
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == first
    student = (out / "student" / TINY).read_text()
    assert "lr * grad" not in student and "gd-1-hidden" not in student and "NotImplementedError" in student
    assert "tiny-essay" in student  # written-answer cells stay for the student to fill in ...
    assert "names cooling" not in student  # ... without the marking rubric, which only the manifest keeps
    manifest = load_manifest(out)
    assert [s.id for s in manifest[TINY]] == ["gd-1", "gd-1-hidden", "energy-1"]
    assert [s.id for s in manifest[WELCOME.name]] == ["wel-1"]
    # The hidden check's cell is written from the registry: the instructor's report(...) cell is not needed.
    assert manifest[TINY][1].source.endswith('check("gd-1-hidden", gd_step)')
    assert manifest.answers[TINY] == ({"id": "tiny-essay", "points": 3, "rubric": "names cooling"},)
    assert (out / "release.json").stat().st_mode & 0o077 == 0


def test_release_accepts_one_notebook_and_the_manifest_lists_only_it(tmp_path):
    """`sustainlab release notebooks/00_welcome.ipynb OUT` releases that assignment alone."""
    assert cli.main(["release", str(WELCOME), str(tmp_path / "out")]) == 0
    assert list(load_manifest(tmp_path / "out")) == [WELCOME.name]
    assert [p.name for p in (tmp_path / "out" / "student").iterdir()] == [WELCOME.name]
    assert cli.main(["release", str(ROOT / "notebooks" / "00_*.ipynb"), str(tmp_path / "glob")]) == 0
    assert list(load_manifest(tmp_path / "glob")) == [WELCOME.name]


def test_release_rejects_bad_sources(tmp_path):
    """Does release fail clearly on an empty folder, a check never run, or a check the registry does not know?"""
    with pytest.raises(GradingSetupError, match="no notebooks"):
        release(tmp_path, tmp_path / "out")
    nb = tiny_instructor()
    nb.cells[2].outputs = []
    nbformat.write(nb, tmp_path / TINY)
    with pytest.raises(GradingSetupError, match="no stored output"):
        release(tmp_path, tmp_path / "out")
    nb = tiny_instructor()
    nb.cells[2].metadata["sustainlab"]["check"] = "zz-1"
    nbformat.write(nb, tmp_path / TINY)
    with pytest.raises(GradingSetupError, match="not an exercise of sustainlab.checks"):
        release(tmp_path, tmp_path / "out")


@pytest.mark.parametrize(
    "args, message",
    [
        (["grade", "{tmp}/nowhere", "{tmp}"], "no release manifest"),
        (["grade", "{tmp}/bad", "{tmp}"], "cannot read the release manifest"),
        (["grade", "{tmp}/old", "{tmp}"], "release the notebooks again"),
        (["grade", "{tmp}/link", "{tmp}"], "symlink"),
        (["grade", "{tmp}/release", "{tmp}/nowhere"], "does not exist"),
        (["grade", "{tmp}/release", "{tmp}", "--timeout", "0"], "timeout_s must be > 0"),
    ],
)
def test_grade_exits_2_when_the_grader_cannot_run(tmp_path, capsys, args, message):
    """Is a broken setup (not a bad submission) the only thing that gives a non-zero exit?"""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "release.json").write_text("{not json")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "release.json").write_text(json.dumps({"format": 1, "notebooks": {}}))
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "release.json").write_text(json.dumps({"format": 2, "notebooks": {}}))
    (tmp_path / "link").symlink_to(tmp_path / "release")
    assert cli.main([a.format(tmp=tmp_path) for a in args]) == 2
    assert message in capsys.readouterr().err


def test_a_grader_bug_is_not_reported_as_a_setup_error(tmp_path, monkeypatch):
    """A ValueError inside the grader propagates (a traceback), instead of reading as exit 2 'could not run'."""
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "release.json").write_text(json.dumps({"format": 2, "notebooks": {}}))

    def broken(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(grading, "plan", broken)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["grade", str(tmp_path / "release"), str(tmp_path), "--no-progress"])


def test_grading_environment_leaves_the_callers_environment_alone(monkeypatch):
    """Building the kernels' environment must not set SUSTAINLAB_PROGRESS=0 in the caller's os.environ."""
    monkeypatch.delenv("SUSTAINLAB_PROGRESS", raising=False)
    settings = grading.Settings("processes", "/nowhere", sandbox.Limits(), 10)
    env = grading._kernel_environment(settings, Path("/tmp/x"), Path("/tmp/x/package"), 5)
    assert env["SUSTAINLAB_PROGRESS"] == "0" and env["SUSTAINLAB_GRADING_SEED"] == "5"
    assert "SUSTAINLAB_PROGRESS" not in os.environ
    assert not any(name.startswith(("AWS", "GITHUB_TOKEN")) for name in env)  # nothing of the grader's leaks in


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


# ----------------------------------------------------------------------------------- the pure plan, as tables


def _manifest() -> Manifest:
    return Manifest({TINY: specs_of(), "00_welcome.ipynb": (), "80_empty.ipynb": ()},
                    {TINY: ({"id": "tiny-essay", "points": 3, "rubric": ""},), "00_welcome.ipynb": (),
                     "80_empty.ipynb": ()})


def _student_copy() -> bytes:
    from sustainlab.notebook import student_version

    return nbformat.writes(student_version(tiny_instructor())).encode()


@pytest.mark.parametrize(
    "parts, kind, data, expected",
    [
        (("stray.ipynb",), "file", b"{}", [("", "stray.ipynb", "", "invalid", "outside a student folder")]),
        (("ann", "notes.txt"), "file", b"x", [("ann", "notes.txt", "", "invalid", "extra file")]),
        (("ann", "99_x.ipynb"), "file", b"{}", [("ann", "99_x.ipynb", "", "invalid", "not a notebook of this")]),
        (("ann", "zip", TINY), "file", b"{}", [("ann", f"zip/{TINY}", "", "invalid", "sub-folder")]),
        (("ann", TINY), "symlink", None, [("ann", TINY, "", "invalid", "symlink")]),
        (("ann", TINY), "too large", None, [("ann", TINY, "gd-1", "invalid", "too large")]),
        (("ann", TINY), "file", b"{not json", [("ann", TINY, "gd-1", "invalid", "not valid JSON")]),
        (("ann", "80_empty.ipynb"), "file", b"{}", [("ann", "80_empty.ipynb", "", "invalid", "no graded checks")]),
        (("ann", ".ipynb_checkpoints", TINY), "file", b"{}", []),
        (("ann", TINY), "file", "student", "task"),
        (("ann", f"Copy of {TINY}"), "file", "student", "task"),
        (("ann", "90_tiny (1).ipynb"), "file", "student", "task"),
        (("ann", TINY), "file", b"\xef\xbb\xbf" + b"student", "task"),
    ],
)
def test_plan_sorts_every_file_into_a_task_or_rows(parts, kind, data, expected):
    """The plan's rules, without kernels: each submitted file becomes rows with a reason, or one task."""
    if isinstance(data, bytes) and data.endswith(b"student"):
        data = data[:-7] + _student_copy()
    elif data == "student":
        data = _student_copy()
    kinds = {"too large": "file of 10 bytes, too large", "symlink": "points to /etc/passwd"}
    result = plan(_manifest(), [SubmittedFile(parts, kind, data, kinds.get(kind, ""))], ["ann"], master_seed=1)
    if expected == "task":
        assert len(result.tasks) == 1 and result.tasks[0].notebook == TINY
        assert [s.id for s in result.tasks[0].specs] == ["gd-1", "gd-1-hidden", "energy-1"]
        assert ("graded as" in result.tasks[0].note) == (parts[1] != TINY)
        return
    assert not result.tasks
    produced = [r for rs in result.rows.values() for r in rs if r.status not in ("missing", "manual")]
    assert len(produced) >= len(expected) and (expected or not produced)
    for student, notebook, check, status, fragment in expected:
        assert any((r.student, r.notebook, r.check, r.status) == (student, notebook, check, status)
                   and fragment in r.message for r in produced), (expected, produced)


def test_plan_marks_unsubmitted_notebooks_missing_and_lists_written_answers():
    """A release notebook not handed in → its checks and answers missing; a handed-in one → manual rows later."""
    result = plan(_manifest(), [], ["ann"], master_seed=1)
    rows = result.rows[("ann", TINY)]
    assert [(r.check, r.status) for r in rows] == [("gd-1", "missing"), ("gd-1-hidden", "missing"),
                                                   ("energy-1", "missing"), ("tiny-essay", "missing")]
    assert ("ann", "00_welcome.ipynb") not in result.rows  # nothing to grade there: not "missing"


def test_plan_gives_each_submission_its_own_secret_seed():
    files = [SubmittedFile(("ann", TINY), "file", _student_copy()), SubmittedFile(("bob", TINY), "file",
                                                                                  _student_copy())]
    seeds = {t.student: t.seed for t in plan(_manifest(), files, ["ann", "bob"], master_seed=1).tasks}
    again = {t.student: t.seed for t in plan(_manifest(), files, ["ann", "bob"], master_seed=1).tasks}
    other = {t.student: t.seed for t in plan(_manifest(), files, ["ann", "bob"], master_seed=2).tasks}
    assert seeds == again and seeds["ann"] != seeds["bob"] and seeds["ann"] != other["ann"]


def _task(missing=()):
    return Task("ann", TINY, specs_of(), "", {"gd-1": 1, "gd-1-hidden": 2, "energy-1": 4}, missing, seed=3)


def _ev(cid, answer, seed=3):
    return json.dumps(collect(get_exercise(cid), answer, seed)).encode(), ""


RIGHT = get_exercise("gd-1").reference()
UPHILL = get_exercise("gd-1").wrong[0]()
FOOT_REFERENCE = get_exercise("energy-1").reference()
ERROR_JUNIT = b"""<testsuites><testsuite><testcase name="Cell 0"><failure>Cell execution caused an exception
RuntimeError: oops</failure></testcase><testcase name="Cell 1"><failure>Cell execution caused an exception
NameError: name 'gd_step' is not defined</failure></testcase><testcase name="Cell 4"/></testsuite></testsuites>"""


@pytest.mark.parametrize(
    "evidence, junit, killed, expected",
    [
        ({"gd-1": _ev("gd-1", RIGHT), "gd-1-hidden": _ev("gd-1-hidden", RIGHT),
          "energy-1": _ev("energy-1", FOOT_REFERENCE)},
         None, False, [("passed", 1), ("passed", 2), ("passed", 1)]),
        ({"gd-1": _ev("gd-1", UPHILL), "gd-1-hidden": _ev("gd-1-hidden", UPHILL)}, ERROR_JUNIT, False,
         [("failed", 0), ("failed", 0), ("passed", 0)]),
        ({"gd-1": _ev("gd-1", RIGHT, seed=0)}, None, True, [("failed", 0), ("timeout", 0), ("timeout", 0)]),
        ({"gd-1": (b"{not json", "")}, ERROR_JUNIT, False, [("error", 0), ("error", 0), ("error", 0)]),
        ({"gd-1": (None, "not a regular file")}, None, False, [("error", 0), ("error", 0), ("error", 0)]),
        ({}, b"<testsuites><testcase name='Cell 1'/></testsuites>", False, [("error", 0), ("error", 0),
                                                                           ("error", 0)]),
    ],
    ids=["all right", "uphill and a crash", "public-seed evidence, then killed", "forged", "fifo", "no evidence"],
)
def test_score_decides_only_from_evidence(evidence, junit, killed, expected):
    """Points only for evidence the grader judged right; nbval's report explains the rest and never passes a check."""
    rows = score(_task(), TaskResult(evidence, junit, killed, "too long" if killed else ""),
                 answers=({"id": "tiny-essay", "points": 3, "rubric": ""},))
    got = [(r.status, r.points) for r in rows[:3]]
    if expected[2] == ("passed", 0):  # energy-1's cell ran without writing evidence
        expected = expected[:2] + [("error", 0)]
    assert got == expected
    assert rows[3] == Row("ann", TINY, "tiny-essay", None, 3, "manual", "")
    if junit == ERROR_JUNIT and "gd-1" not in evidence:
        assert "RuntimeError" in rows[0].message


def test_score_says_what_the_hidden_check_caught_and_the_first_failing_cell():
    rows = score(_task(("energy-1",)), TaskResult({"gd-1-hidden": _ev("gd-1-hidden", UPHILL)}, ERROR_JUNIT))
    assert rows[0].status == "error" and "NameError" in rows[0].message and "RuntimeError" in rows[0].message
    assert "uphill" in rows[1].message and rows[2].status == "missing"


def test_totals_and_manual_scores_merge():
    rows = [Row("ann", TINY, "gd-1", 1, 1, "passed"), Row("ann", TINY, "tiny-essay", None, 3, "manual", "")]
    assert student_totals(rows)[0][:4] == ("ann", 1, 4, "25.0")
    merged = merge_manual(rows, [{"student": "ann", "notebook": TINY, "check": "tiny-essay", "points": "2"}])
    assert merged[1].points == 2 and student_totals(merged)[0][:4] == ("ann", 3, 4, "75.0")
    with pytest.raises(ValueError, match="outside"):
        merge_manual(rows, [{"student": "ann", "notebook": TINY, "check": "tiny-essay", "points": "9"}])
    with pytest.raises(ValueError, match="not written answers"):
        merge_manual(rows, [{"student": "ann", "notebook": TINY, "check": "gd-1", "points": "1"}])


def test_feedback_page_shows_verdicts_at_their_cells_and_nothing_private():
    """Each visible check's verdict and hint under its cell, points on top; hidden checks only as a verdict; text
    from the grading escaped; no reference answer."""
    from sustainlab.feedback import feedback_html, feedback_notebook
    from sustainlab.notebook import restore_checks, student_version

    restored = restore_checks(student_version(tiny_instructor()), list(specs_of())).notebook
    rows = [Row("ann", TINY, "gd-1", 0, 1, "failed", "✘ gd-1: <script>alert(1)</script> move against the gradient"),
            Row("ann", TINY, "gd-1-hidden", 0, 2, "failed", "✘ gd-1-hidden: shape (3, 4) and lr = 0.37"),
            Row("ann", TINY, "energy-1", 1, 1, "passed", ""), Row("ann", TINY, "tiny-essay", None, 3, "manual", "")]
    nb = feedback_notebook(nbformat.writes(restored), rows)
    sources = [c.source for c in nb.cells]
    assert "1 / 7 points" in sources[0] and "gd-1-hidden (hidden check)" in sources[0]
    at = next(i for i, c in enumerate(nb.cells) if check_id(c) == "gd-1")
    assert "move against the gradient" in sources[at + 1] and "<script>" not in sources[at + 1]
    assert not any(check_id(c) == "gd-1-hidden" for c in nb.cells)
    page = feedback_html(nbformat.writes(restored), rows)
    assert "move against the gradient" in page and "lr = 0.37" not in page and "lr * grad" not in page
    assert "<script>alert(1)" not in page


def test_csv_escapes_formulas_and_keeps_undecodable_names():
    """Cells starting with = + - @ cannot run in a spreadsheet; a non-UTF-8 folder name is written, not a crash."""
    name = os.fsdecode(b"caf\xe9")
    data = csv_bytes(("a", "b"), [("=HYPERLINK(\"x\")", name), ("@SUM(1)", "-2+3")]).decode("utf-8")
    rows = list(csv.reader(data.splitlines()))
    assert rows[1] == ["'=HYPERLINK(\"x\")", "caf\\xe9"] and rows[2] == ["'@SUM(1)", "'-2+3"]
    assert display_name(name) == "caf\\xe9"
    assert clean("\x1b[31mred\x1b[0m\x07 and\nmore") == "red and / more"


@pytest.mark.parametrize("name, expected", [("Copy of 90_tiny.ipynb", TINY), ("90_tiny (1).ipynb", TINY),
                                            ("90_tiny (12).ipynb", TINY), ("90_tiny - Copy.ipynb", TINY),
                                            ("91_tiny (1).ipynb", None), ("90_tiny.ipynb.bak", None)])
def test_near_miss_names(name, expected):
    assert near_miss(name, {TINY}) == expected


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
        (b"[" * 100000, "not valid JSON"),
    ],
)
def test_read_submission_explains_invalid_files(data, message):
    """Is every kind of unreadable submission reported with a clear reason instead of crashing the grader?"""
    nb, problem = read_submission(data, TINY, _manifest())
    assert nb is None and message in problem


def test_read_submission_accepts_a_byte_order_mark_and_detects_another_chapter():
    nb, problem = read_submission(b"\xef\xbb\xbf" + _student_copy(), TINY, _manifest())
    assert nb is not None and problem == ""
    other = new_notebook(cells=[_check("wel-1", "kwh")])
    manifest = Manifest({TINY: specs_of(), "00_welcome.ipynb": (grading._canonical_check(
        CheckSpec("wel-1", 1, False, 'check("wel-1", kwh)', []), "t"),)})
    nb, problem = read_submission(nbformat.writes(other).encode(), TINY, manifest)
    assert nb is None and "belong to 00_welcome.ipynb" in problem


def test_restore_snapshot_repairs_content_modes_links_and_never_follows_a_swapped_folder(tmp_path):
    """After tampering, is the tree put back byte for byte with its modes, without touching anything outside?"""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    (root / "a" / "x.ipynb").write_bytes(b"original")
    (root / "secret.json").write_bytes(b"{}")
    os.chmod(root / "secret.json", 0o600)
    (root / "link").symlink_to("secret.json")
    saved = snapshot(root)
    (root / "a" / "x.ipynb").write_bytes(b"changed")
    os.chmod(root / "secret.json", 0o644)
    (root / "new").mkdir()
    (root / "new" / "evil.txt").write_text("x")
    shutil.rmtree(root / "a")
    (root / "a").symlink_to(outside)  # a folder swapped for a link to elsewhere
    repaired = restore_snapshot(root, saved)
    assert snapshot(root) == saved and repaired
    assert (root / "secret.json").stat().st_mode & 0o777 == 0o600
    assert (outside / "precious.txt").read_text() == "keep me" and not (root / "a").is_symlink()
    assert restore_snapshot(root, saved) == []


def test_snapshot_does_not_read_a_huge_sparse_file(tmp_path):
    """A 200 GB sparse file is listed by size (reported too large), never read into memory."""
    with open(tmp_path / "huge.ipynb", "wb") as stream:
        stream.truncate(200 * 2**30)
    entry = snapshot(tmp_path)[tmp_path / "huge.ipynb"]
    assert entry.kind == "large" and entry.data is None


def test_read_capped_refuses_fifos_links_and_big_files(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"x" * 100)
    (tmp_path / "link").symlink_to(tmp_path / "big")
    assert sandbox.read_capped(tmp_path / "fifo", 10) == (None, "not a regular file")
    assert sandbox.read_capped(tmp_path / "big", 10)[0] is None
    assert sandbox.read_capped(tmp_path / "link", 1000)[0] is None
    assert sandbox.read_capped(tmp_path / "big", 1000) == (b"x" * 100, "")


@pytest.mark.slow
def test_run_task_kills_a_notebook_over_its_timeout_with_everything_it_started():
    """Is a notebook that outlives its wall clock stopped with its whole process tree, detached children included?"""
    import psutil

    nb = new_notebook(cells=[new_code_cell(
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True)\n"
        "time.sleep(120)")])
    task = Task("ann", "sleepy.ipynb", (), nbformat.writes(nb), {}, (), seed=1)
    mode = sandbox.detect_mode()
    settings = grading.Settings(mode, str(grading._package_copy(Path(__import__("tempfile").mkdtemp()) / "p")),
                                sandbox.Limits(wall_s=8), 100)
    before = {p.pid for p in psutil.process_iter()}
    result = grading.run_task(task, settings)
    assert result.killed and result.seconds < 30
    survivors = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before
                 and "time.sleep(300)" in " ".join(p.info["cmdline"] or [])]
    assert not survivors


# ------------------------------------------------------------------------------------------ the class, end to end

STRANGE = 'Zoë van Dijk, "the 2nd"'
NOT_UTF8 = os.fsdecode(b"stud\xe9nt")
FORMULA = '=HYPERLINK("evil")'
GD_OK = "import numpy as np\n\ndef gd_step(theta, grad, lr):\n    return theta - lr * grad"
FOOT_OK = ("def footprint_kg(phases, n_gpus, pue, grid_g_per_kwh):\n"
           "    return sum(h * w for h, w in phases) / 1000 * n_gpus * pue * grid_g_per_kwh / 1000")
SOLVED = {"import numpy": GD_OK, "def footprint_kg": FOOT_OK}
FULL = {"gd-1": ("passed", 1), "gd-1-hidden": ("passed", 2), "energy-1": ("passed", 1)}
ZERO = None  # every check scored 0, none passed


def _nb(path: Path):
    return nbformat.read(path, as_version=4)


def _set_source(nb, startswith, source):
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(startswith))
    cell.source = source
    return nb


def _insert_after(nb, startswith, source):
    at = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.startswith(startswith))
    nb.cells.insert(at + 1, new_code_cell(source))
    return nb


# Attacks run in a cell right after the imports; the answers stay unsolved, so each must score exactly 0.
ATTACKS = {
    "patch check": 'import sustainlab.checks as c, sustainlab.checks._core as k\n'
                   'f = lambda i, a, *x, **y: print(f"✔ {i} passed")\nc.check = f; k.check = f',
    "rebind print": 'import builtins\n_p = builtins.print\n'
                    'builtins.print = lambda *a, **k: _p(*[str(x).replace("✘", "✔") for x in a], **k)',
    "replace stdout": 'import sys\nclass W:\n    def __init__(s, w): s.w = w\n'
                      '    def write(s, t): return s.w.write(t.replace("✘", "✔"))\n'
                      '    def flush(s): s.w.flush()\nsys.stdout = W(sys.stdout)',
    "input transformer": 'def t(lines):\n    if any("check(" in l for l in lines):\n'
                         '        return ["print(\'✔ passed\')\\n"]\n    return lines\n'
                         'get_ipython().input_transformers_cleanup.append(t)',
    "pre_run hook": 'get_ipython().events.register("pre_run_cell", lambda info: print("✔ gd-1 passed"))',
    "forged evidence": 'import json, os\nfrom sustainlab.checks import collect, get_exercise\n'
                       'folder = os.environ.get("SUSTAINLAB_EVIDENCE_DIR", ".")\n'
                       'for cid in ("gd-1", "gd-1-hidden", "energy-1"):\n'
                       '    e = collect(get_exercise(cid), get_exercise(cid).reference(), 0)  # the public seed\n'
                       '    json.dump(e, open(os.path.join(folder, cid + ".json"), "w"))\n'
                       'import sustainlab.checks as c\nc.check = lambda *a: None',
    "always equal": 'class Yes(float):\n    def __eq__(s, o): return True\n    __ne__ = lambda s, o: False\n'
                    '    def __array__(s, *a, **k): raise TypeError\n'
                    'def gd_step(theta, grad, lr): return Yes(1)\n'
                    'def footprint_kg(*a): return Yes(1)',
    "patched numpy": 'import numpy as np, math\nnp.allclose = lambda *a, **k: True\n'
                     'np.array_equal = lambda *a, **k: True\nnp.isclose = lambda *a, **k: True\n'
                     'math.isclose = lambda *a, **k: True\n'
                     'import sustainlab.checks._core as k\nk.expect = lambda *a, **kw: None\n'
                     'k.expect_close = lambda *a, **kw: None',
    "edit package": 'import sustainlab.checks._core as k, pathlib\n'
                    'try:\n    p = pathlib.Path(k.__file__)\n'
                    '    p.write_text(p.read_text() + "\\ndef judge(*a, **k):\\n    return Verdict(\\"passed\\")\\n")\n'
                    'except OSError as e:\n    print("read-only:", e)',
    "startup file": 'import os\nd = os.path.expanduser("~/.ipython/profile_default/startup")\n'
                    'os.makedirs(d, exist_ok=True)\n'
                    'open(os.path.join(d, "00-cheat.py"), "w").write("import sustainlab.checks as c\\n'
                    'c.check = lambda *a: print(\'✔ passed\')\\n")',
}


def build_class(tmp: Path, release_dir: Path, mode: str) -> dict[str, dict]:
    """One folder per case, built from the release (student copies) or the instructor notebooks."""
    student_tiny = release_dir / "student" / TINY
    student_welcome = release_dir / "student" / WELCOME.name
    sub = tmp / "submissions"

    def tiny_with(changes=None, **extra):
        nb = _nb(student_tiny)
        for start, source in {**SOLVED, **(changes or {})}.items() if changes is not False else ():
            _set_source(nb, start, source)
        return nb

    def unsolved():
        return _nb(student_tiny)

    cases: dict[str, dict[str, object]] = {
        "correct": {WELCOME.name: WELCOME.read_bytes(), TINY: tiny_with()},
        "untouched": {WELCOME.name: student_welcome.read_bytes(), TINY: student_tiny.read_bytes()},
        "one wrong": {TINY: tiny_with({"def footprint_kg": FOOT_OK.replace(" * pue", "")})},
        "hardcoded": {TINY: tiny_with({"import numpy": "import numpy as np\ndef gd_step(theta, grad, lr):\n"
                                                       "    return np.array([0.95, -2.4])"})},
        "vectors only": {TINY: tiny_with({"import numpy": "import numpy as np\ndef gd_step(theta, grad, lr):\n"
                                          "    return np.array([t - lr * g for t, g in zip(theta.tolist(), "
                                          "grad.tolist())])"})},
        "deleted checks": {TINY: tiny_with()},
        "duplicated": {TINY: tiny_with()},
        "early exception": {TINY: tiny_with({"import numpy": "raise RuntimeError('oops')\n" + GD_OK})},
        "infinite loop": {TINY: tiny_with({"import numpy": "while True:\n    pass\n" + GD_OK})},
        "memory bomb": {TINY: tiny_with({"import numpy": "big = bytearray(64 * 2**30)\n" + GD_OK})},
        "debug print": {TINY: tiny_with({"import numpy": GD_OK.replace("    return", "    print('debug', theta)\n"
                                                                               "    return")})},
        "check above solution": {TINY: tiny_with()},
        "metadata stripped": {TINY: tiny_with()},
        "copy of": {f"Copy of {TINY}": tiny_with()},
        "numbered": {"90_tiny (1).ipynb": tiny_with()},
        "bom": {TINY: b"\xef\xbb\xbf" + nbformat.writes(tiny_with()).encode()},
        NOT_UTF8: {TINY: tiny_with()},
        FORMULA: {TINY: tiny_with({"def footprint_kg": FOOT_OK.replace(" * pue", "")})},
        "kernel dies": {TINY: _insert_after(tiny_with(), "from sustainlab.checks import check",
                                            "import os\nos._exit(1)")},
        "detached daemon": {TINY: _insert_after(tiny_with(), "import numpy", (
            "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import os, time\\n"
            "for _ in range(600):\\n    time.sleep(0.1)', 'sustainlab-test-daemon'], start_new_session=True, "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"))},
        "junit symlink": {TINY: _insert_after(tiny_with(), "import numpy",
                                              "import os\nopen('other.xml', 'w').close()\n"
                                              "os.symlink('other.xml', 'junit.xml')")},
        "output flood": {TINY: _insert_after(tiny_with(), "import numpy", "import os\nos.write(1, b'x' * 20_000_000)")},
        "snoop": {TINY: _insert_after(tiny_with(), "import numpy", (
            "import glob, os\nseen = [p for p in ({paths!r}) if os.path.exists(p)]\n"
            "procs = [open(p, 'rb').read() for p in glob.glob('/proc/[0-9]*/cmdline')]\n"
            "seen += ['grader in /proc' for c in procs if {release!r}.encode() in c]\n"
            "assert not seen, seen").format(
                paths=[str(release_dir / "release.json"), str(sub / "correct"), str(tmp / "instructor"),
                       str(ROOT / "notebooks")], release=str(tmp)))},
        "broken": {TINY: b"{this is not json", WELCOME.name: b""},
        "old format": {TINY: json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [],
                                         "cells": []}).encode(),
                       WELCOME.name: nbformat.writes(tiny_instructor()).encode()},
        STRANGE: {TINY: tiny_with(), "notes.txt": b"my notes", "99_other.ipynb": student_tiny.read_bytes(),
                  ".ipynb_checkpoints/90_tiny-checkpoint.ipynb": b"{}", "unzipped/90_tiny.ipynb": b"{}"},
        "symlinked": {},
        "huge": {},
    }
    if mode != "processes":  # kill(-1) outside a PID namespace would reach every process of this user
        cases["killer"] = {TINY: tiny_with()}
        cases["killer"][TINY].cells.append(new_code_cell("import os, signal\nos.kill(-1, signal.SIGKILL)"))
    for name, attack in ATTACKS.items():
        cases[f"attack: {name}"] = {TINY: _insert_after(unsolved(), "import numpy", attack)}
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
    t1 = next(c for c in dup.cells if check_id(c) == "gd-1")
    foot_at = next(i for i, c in enumerate(dup.cells) if c.source.startswith("def footprint_kg"))
    copies = [nbformat.from_dict({**t1, "id": f"copy-{n}"}) for n in range(2)]
    dup.cells = dup.cells[foot_at:] + dup.cells[:foot_at] + copies  # footprint and energy-1 moved to the top
    above = cases["check above solution"][TINY]
    check_at = next(i for i, c in enumerate(above.cells) if check_id(c) == "gd-1")
    above.cells.insert(0, above.cells.pop(check_at))
    for cell in cases["metadata stripped"][TINY].cells:
        cell.metadata = {}
    # Student code that tries to overwrite the release, its own and another submission, and the gradebook.
    targets = [release_dir / "release.json", sub / "tamper" / TINY, sub / "correct" / TINY, tmp / "gradebook.csv"]
    attack = "\n".join(f"try:\n    open({str(t)!r}, 'w').write('pwned')\nexcept OSError:\n    pass" for t in targets)
    attack += f"\ntry:\n    open({str(sub / 'planted.ipynb')!r}, 'w').write('x')\nexcept OSError:\n    pass"
    cases["tamper"] = {TINY: tiny_with({"import numpy": attack + "\n" + GD_OK})}
    for student, files in cases.items():
        for name, content in files.items():
            path = sub / student / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if not isinstance(content, bytes):
                content = nbformat.writes(content).encode()
            path.write_bytes(content)
    (sub / "symlinked").mkdir()
    (sub / "symlinked" / TINY).symlink_to(sub / "correct" / TINY)
    (sub / "huge").mkdir()
    with open(sub / "huge" / TINY, "wb") as stream:
        stream.truncate(200 * 2**30)
    (sub / "stray.ipynb").write_bytes(student_tiny.read_bytes())
    return cases


def ensure_bubblewrap() -> None:
    """Install Debian's bubblewrap on CI when missing (as the browser test installs Chromium), so the sandbox is
    what CI tests; elsewhere, or when apt cannot, the grader falls back to a weaker mode and says so."""
    import subprocess

    if shutil.which("bwrap") or os.environ.get("CI") != "true" or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    lock = ["-o", "DPkg::Lock::Timeout=120"]
    for command in (["apt-get", *lock, "update", "-qq"], ["apt-get", *lock, "install", "-y", "-qq", "bubblewrap"]):
        if subprocess.run(command, capture_output=True, timeout=300).returncode != 0:
            return
    sandbox.detect_mode.cache_clear()


@pytest.fixture(scope="session")
def graded_class(tmp_path_factory):
    ensure_bubblewrap()
    tmp = tmp_path_factory.mktemp("class")
    release_dir = make_release(tmp)
    mode = sandbox.detect_mode()
    build_class(tmp, release_dir, mode)
    before_release = snapshot(release_dir)
    before_submissions = snapshot(tmp / "submissions")
    package = {p: p.read_bytes() for p in (ROOT / "sustainlab").rglob("*.py")}
    home_startup = Path.home() / ".ipython" / "profile_default" / "startup"
    startup_before = sorted(home_startup.glob("*")) if home_startup.exists() else []
    progress_before = os.environ.get("SUSTAINLAB_PROGRESS")
    gradebook = tmp / "gradebook.csv"
    code = cli.main(["grade", str(release_dir), str(tmp / "submissions"), "--out", str(gradebook),
                     "--timeout", "120", "--cell-timeout", "15", "--jobs", "2", "--no-progress",
                     "--junit-dir", str(tmp / "junit"), "--feedback", str(tmp / "feedback")])
    with gradebook.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    import psutil

    daemons = [p for p in psutil.process_iter(["cmdline"]) if "sustainlab-test-daemon" in (p.info["cmdline"] or [])]
    return {"code": code, "rows": rows, "tmp": tmp, "release": release_dir, "mode": mode, "daemons": daemons,
            "before": (before_release, before_submissions), "package": package,
            "startup": (startup_before, sorted(home_startup.glob("*")) if home_startup.exists() else []),
            "progress": (progress_before, os.environ.get("SUSTAINLAB_PROGRESS"))}


def statuses(graded, student, notebook=TINY):
    return {r[2]: (r[5], int(r[3])) for r in graded["rows"][1:]
            if r[0] == student and r[1] == notebook and r[5] != "manual"}


def message(graded, student, check, notebook=TINY):
    return next(r[6] for r in graded["rows"] if r[0] == student and r[1] == notebook and r[2] == check)


@pytest.mark.slow
def test_class_grading_completes_with_exit_0_and_a_well_formed_gradebook(graded_class):
    """Exit 0 whatever the scores; header as specified; every row has a known status and 0 <= points <= max."""
    assert graded_class["code"] == 0
    header, *rows = graded_class["rows"]
    assert tuple(header) == GRADEBOOK_HEADER
    for row in rows:
        assert row[5] in grading.STATUSES
        assert (row[3] == "" and row[5] == "manual") or 0 <= int(row[3]) <= int(row[4])
    assert graded_class["progress"][0] == graded_class["progress"][1]  # the caller's environment is untouched


EXPECTED = {
    "correct": FULL,
    "one wrong": {**FULL, "energy-1": ("failed", 0)},
    "debug print": FULL,
    "check above solution": FULL,
    "metadata stripped": FULL,
    "copy of": FULL,
    "numbered": FULL,
    "bom": FULL,
    NOT_UTF8: FULL,
    "detached daemon": FULL,
    "junit symlink": FULL,
    "output flood": FULL,
    "duplicated": FULL,
    "tamper": FULL,
    STRANGE: FULL,
    "deleted checks": {"gd-1": ("missing", 0), "gd-1-hidden": ("passed", 2), "energy-1": ("missing", 0)},
    "vectors only": {**FULL, "gd-1-hidden": ("failed", 0)},
    "kernel dies": {"gd-1": ("passed", 1), "gd-1-hidden": ("passed", 2), "energy-1": ("error", 0)},
    "killer": FULL,
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_class_each_honest_case_scores_what_its_answers_earn(graded_class, case):
    """Honest students (debug prints, a check pasted above its solution, stripped metadata, a 'Copy of' name, a BOM,
    odd folder names, a stray daemon, a flooded stdout) and a partly wrong one score exactly what their answers earn."""
    if case == "killer" and graded_class["mode"] == "processes":
        pytest.skip("no PID namespace here")
    students = {r[0] for r in graded_class["rows"][1:]}
    student = case if case != NOT_UTF8 else display_name(NOT_UTF8)
    assert student in students
    notebook = {"copy of": f"Copy of {TINY}", "numbered": "90_tiny (1).ipynb"}.get(case, TINY)
    notebook = TINY if case in ("copy of", "numbered") else notebook
    assert statuses(graded_class, student, notebook) == EXPECTED[case]


@pytest.mark.slow
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_class_attacks_earn_nothing(graded_class, attack):
    """Code a student adds (patched check, print, stdout, input transformers, hooks, forged evidence, always-equal
    objects, patched numpy, an edited package, startup files) never raises a score: unsolved answers earn 0."""
    result = statuses(graded_class, f"attack: {attack}")
    assert set(result) == {"gd-1", "gd-1-hidden", "energy-1"}
    assert all(points == 0 and status != "passed" for status, points in result.values()), result


@pytest.mark.slow
def test_class_attacks_leave_no_trace_for_later_students(graded_class):
    """The checkout's package, the grader's IPython startup folder and later students are unaffected; no process of a
    submission outlives it."""
    assert {p: p.read_bytes() for p in (ROOT / "sustainlab").rglob("*.py")} == graded_class["package"]
    assert graded_class["startup"][0] == graded_class["startup"][1]
    assert graded_class["daemons"] == []
    assert statuses(graded_class, "correct") == FULL


@pytest.mark.slow
def test_class_sandbox_hides_the_release_and_classmates(graded_class):
    """In the bubblewrap sandbox a submission sees neither the release, classmates, instructor notebooks nor the
    grader's processes (the 'snoop' case asserts that, and its answers are right)."""
    if graded_class["mode"] != "bubblewrap":
        pytest.skip(f"sandbox not available here (mode {graded_class['mode']})")
    assert statuses(graded_class, "snoop") == FULL


@pytest.mark.slow
def test_class_untouched_release_scores_zero_with_what_each_check_caught(graded_class):
    result = statuses(graded_class, "untouched")
    assert all(points == 0 and status == "failed" for status, points in result.values())
    assert statuses(graded_class, "untouched", WELCOME.name)["wel-1"] == ("failed", 0)
    assert "not implemented yet" in message(graded_class, "untouched", "gd-1-hidden")
    assert "shape" in message(graded_class, "hardcoded", "gd-1-hidden")
    assert "TypeError" in message(graded_class, "vectors only", "gd-1-hidden")
    assert "graded as 90_tiny.ipynb" in message(graded_class, "copy of", "gd-1")


@pytest.mark.slow
def test_class_hardcoded_answer_fails_on_secret_probes(graded_class):
    """An answer hard-coded for the visible check's numbers fails both: the probes come from a secret seed."""
    result = statuses(graded_class, "hardcoded")
    assert result["gd-1"] == ("failed", 0) and result["gd-1-hidden"] == ("failed", 0)


@pytest.mark.slow
def test_class_edited_outputs_and_checks_have_no_effect(graded_class):
    result = statuses(graded_class, "edited checks")
    assert all(points == 0 for _, points in result.values()) and set(result) == {"gd-1", "gd-1-hidden", "energy-1"}
    assert all(int(r[4]) < 100 for r in graded_class["rows"][1:] if r[0] == "edited checks")


@pytest.mark.slow
def test_class_exception_timeout_and_memory_bomb(graded_class):
    """A cell that raises → dependent checks `error` with the reason; a loop → timeout; a huge allocation → error."""
    early = statuses(graded_class, "early exception")
    assert early["gd-1"][0] == "error" and early["energy-1"] == ("passed", 1)
    assert "NameError" in message(graded_class, "early exception", "gd-1")
    assert "RuntimeError" in message(graded_class, "early exception", "gd-1")
    loop = statuses(graded_class, "infinite loop")
    assert loop["gd-1"][0] == "timeout" and loop["gd-1-hidden"][0] == "timeout"
    bomb = statuses(graded_class, "memory bomb")
    assert bomb["gd-1"][0] == "error" and bomb["energy-1"] == ("passed", 1)
    assert "kernel" in message(graded_class, "kernel dies", "energy-1").lower()


@pytest.mark.slow
def test_class_invalid_files_are_reported_with_reasons(graded_class):
    rows = {(r[0], r[1], r[2]): r for r in graded_class["rows"][1:]}
    assert rows[("broken", TINY, "gd-1")][5] == "invalid" and "JSON" in rows[("broken", TINY, "gd-1")][6]
    assert rows[("broken", WELCOME.name, "wel-1")][6] == "empty file"
    assert "nbformat=3" in rows[("old format", TINY, "energy-1")][6]
    assert "belong to 90_tiny.ipynb" in rows[("old format", WELCOME.name, "wel-1")][6]
    assert "symlink" in rows[("symlinked", TINY, "")][6]
    assert "too large" in rows[("huge", TINY, "gd-1")][6] or "bytes" in rows[("huge", TINY, "gd-1")][6]


@pytest.mark.slow
def test_class_strange_names_extra_files_and_formula_names(graded_class):
    extra = {r[1]: r for r in graded_class["rows"][1:] if r[0] == STRANGE and r[2] == ""}
    assert set(extra) == {"notes.txt", "99_other.ipynb", "unzipped/90_tiny.ipynb"}  # checkpoints are skipped
    assert "sub-folder" in extra["unzipped/90_tiny.ipynb"][6]
    assert any(r[0] == "" and r[1] == "stray.ipynb" and r[5] == "invalid" for r in graded_class["rows"])
    assert any(r[0] == "'" + FORMULA for r in graded_class["rows"]) and not any(r[0] == FORMULA
                                                                               for r in graded_class["rows"])
    assert statuses(graded_class, "'" + FORMULA)["energy-1"] == ("failed", 0)


@pytest.mark.slow
def test_class_written_answers_are_listed_for_manual_scoring(graded_class):
    essay = [r for r in graded_class["rows"][1:] if r[0] == "correct" and r[2] == "tiny-essay"]
    assert essay == [["correct", TINY, "tiny-essay", "", "3", "manual", "names cooling"]]


@pytest.mark.slow
def test_class_every_submission_file_appears_in_the_gradebook(graded_class):
    sub = graded_class["tmp"] / "submissions"
    listed = {(r[0], r[1]) for r in graded_class["rows"][1:]}
    for path in sub.rglob("*"):
        parts = path.relative_to(sub).parts
        if (path.is_file() or path.is_symlink()) and not any(p.startswith(".") for p in parts):
            student = display_name(parts[0])
            student = "'" + student if student[:1] in "=+-@" else student
            name = "/".join(parts[1:])
            name = TINY if name in (f"Copy of {TINY}", "90_tiny (1).ipynb") else name
            key = ("", parts[0]) if len(parts) == 1 else (student, name)
            assert key in listed, key


@pytest.mark.slow
def test_class_tampering_is_undone_and_does_not_change_grades(graded_class):
    before_release, before_submissions = graded_class["before"]
    assert snapshot(graded_class["release"]) == before_release
    assert snapshot(graded_class["tmp"] / "submissions") == before_submissions
    assert graded_class["rows"][0] == list(GRADEBOOK_HEADER)
    totals = (graded_class["tmp"] / "gradebook_totals.csv").read_text(encoding="utf-8")
    assert totals.startswith("student,points,max_points,percent")
    assert any(p.name == "90_tiny.junit.xml" for p in (graded_class["tmp"] / "junit").rglob("*"))
    assert not (graded_class["tmp"] / "gradebook.csv.partial").exists()


@pytest.mark.slow
def test_class_feedback_pages_are_written_per_student_and_notebook(graded_class):
    page = (graded_class["tmp"] / "feedback" / "one wrong" / "90_tiny.html").read_text(encoding="utf-8")
    assert "✘ energy-1" in page and "3 / 7 points" in page
    assert (graded_class["tmp"] / "feedback" / "correct" / "00_welcome.html").exists()


@pytest.mark.slow
def test_dask_and_local_runs_give_byte_identical_gradebooks(tmp_path):
    """The same plan's tasks mapped over a 2-worker LocalCluster on loopback give the local pool's gradebook."""
    distributed = pytest.importorskip("distributed")
    release_dir = make_release(tmp_path)
    student_tiny = release_dir / "student" / TINY
    for name, changes in {"ann": SOLVED, "bob": {}, "cy": {"def footprint_kg": FOOT_OK.replace(" * pue", "")}}.items():
        nb = _nb(student_tiny)
        for start, source in changes.items():
            _set_source(nb, start, source)
        (tmp_path / "subs" / name).mkdir(parents=True)
        nbformat.write(nb, tmp_path / "subs" / name / TINY)
    local = grading.grade(release_dir, tmp_path / "subs", tmp_path / "local.csv", jobs=2, progress=False, seed=11)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  processes=True) as cluster:
        remote = grading.grade(release_dir, tmp_path / "subs", tmp_path / "dask.csv", progress=False, seed=11,
                               dask=cluster.scheduler_address)
    assert (tmp_path / "local.csv").read_bytes() == (tmp_path / "dask.csv").read_bytes()
    assert [r.points for r in local.rows if r.student == "ann" and r.notebook == TINY][:3] == [1, 2, 1]
    assert remote.rows == local.rows


def test_containment_limits_the_whole_tree_not_each_process(tmp_path):
    """4 forks × 300 MB under a 512 MB group limit die (memory of the tree), and a fork loop stops at the process
    limit; skipped where no cgroup is writable (the per-process limits still apply there)."""
    if not sandbox._cgroup_roots():
        pytest.skip("no writable cgroup here")
    forks = ("import os, time\npids = []\nfor _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
             "        block = bytearray(300 * 2**20)\n        for i in range(0, len(block), 4096):\n"
             "            block[i] = 1\n        time.sleep(5)\n        os._exit(0)\n    pids.append(pid)\n"
             "codes = [os.waitpid(p, 0)[1] for p in pids]\nprint('statuses', codes)\n"
             "raise SystemExit(0 if all(c == 0 for c in codes) else 9)")
    limits = sandbox.Limits(memory_mb=512, processes=64, wall_s=60)
    run = sandbox.run_contained([sandbox._interpreter(), "-c", forks], scratch=tmp_path, env={"PATH": "/usr/bin"},
                                limits=limits, mode="processes")
    assert run.returncode != 0, run.output_tail
    spawn = ("import subprocess, sys\nprocs = []\ntry:\n    for _ in range(100):\n"
             "        procs.append(subprocess.Popen(['sleep', '30']))\nexcept OSError as e:\n"
             "    print('stopped at', len(procs))\n    raise SystemExit(7)")
    run = sandbox.run_contained([sandbox._interpreter(), "-c", spawn], scratch=tmp_path, env={"PATH": "/usr/bin:/bin"},
                                limits=sandbox.Limits(processes=20, wall_s=60), mode="processes")
    assert run.returncode == 7 and "stopped at" in run.output_tail


def test_written_answers_are_never_executed_and_manual_scores_merge(tmp_path):
    """A notebook with only a written answer is not run; `grade --manual` fills its points into gradebook and totals."""
    nb = new_notebook(cells=[new_markdown_cell("Explain PUE.", metadata={"sustainlab": {
        "answer": "essay-1", "points": 4, "rubric": "cooling and power conversion"}}),
        new_code_cell("raise SystemExit('never run')", execution_count=1)])
    (tmp_path / "src").mkdir()
    nbformat.write(nb, tmp_path / "src" / "70_essay.ipynb")
    release(tmp_path / "src", tmp_path / "rel")
    (tmp_path / "subs" / "ann").mkdir(parents=True)
    (tmp_path / "subs" / "bob").mkdir(parents=True)
    shutil.copy(tmp_path / "rel" / "student" / "70_essay.ipynb", tmp_path / "subs" / "ann" / "70_essay.ipynb")
    first = grading.grade(tmp_path / "rel", tmp_path / "subs", tmp_path / "gb.csv", progress=False)
    assert [r.as_tuple() for r in first.rows] == [
        ("ann", "70_essay.ipynb", "essay-1", "", 4, "manual", "cooling and power conversion"),
        ("bob", "70_essay.ipynb", "essay-1", 0, 4, "missing", "notebook not submitted")]
    scores = tmp_path / "scores.csv"
    scores.write_text("student,notebook,check,points\nann,70_essay.ipynb,essay-1,3\n")
    assert cli.main(["grade", str(tmp_path / "rel"), str(tmp_path / "subs"), "--out", str(tmp_path / "gb.csv"),
                     "--manual", str(scores), "--no-progress"]) == 0
    rows = list(csv.reader((tmp_path / "gb.csv").read_text().splitlines()))
    assert rows[1][:6] == ["ann", "70_essay.ipynb", "essay-1", "3", "4", "failed"]
    assert (tmp_path / "gb_totals.csv").read_text().splitlines()[1].startswith("ann,3,4,75.0")


def test_feedback_page_loads_nothing_from_the_network():
    """nbconvert's template loads require.js and MathJax from a CDN: the page handed back must work offline."""
    import re

    from sustainlab.feedback import feedback_html

    rows = [grading.Row("Zoë", TINY, "gd-1", 0, 1, "failed", "move against the gradient")]
    page = feedback_html(nbformat.writes(tiny_instructor()), rows)
    assert "move against the gradient" in page
    scripts = re.findall(r"<script\b[^>]*>.*?</script>", page, flags=re.S)
    assert not [s for s in scripts if re.search(r"https?://", s)], "a script still loads from the network"
    assert not re.search(r"<(?:link|img)\b[^>]*(?:href|src)=[\"']https?://", page)


def test_feedback_page_renders_markdown_but_not_a_students_html():
    """Headings and tables of the notebook render as HTML; a <script> or an HTML output the student planted does not."""
    from sustainlab.feedback import feedback_html

    nb = tiny_instructor()
    nb.cells.append(nbformat.v4.new_markdown_cell("## My notes\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n<script>steal()</script>"))
    planted = nbformat.v4.new_code_cell("x", execution_count=9, outputs=[nbformat.v4.new_output(
        "display_data", data={"text/html": "<img src=x onerror=steal()>", "text/plain": "<IPython.core.display.HTML>"})])
    nb.cells.append(planted)
    page = feedback_html(nbformat.writes(nb), [grading.Row("ann", TINY, "gd-1", 1, 1, "passed", "")])
    assert '<h2 id="My-notes">' in page and "<td>1</td>" in page
    assert "<script>steal()" not in page and "onerror=steal()" not in page
    assert "&lt;script&gt;steal()" in page  # shown as text
