"""Tests for sustainlab.gradebook (regrade one student, late submissions, class report) and their `grade` options."""

from __future__ import annotations

import base64
import csv
import os
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest

from sustainlab import cli
from sustainlab import gradebook as gb
from sustainlab.grading import GRADEBOOK_HEADER, Row

from test_grading import TINY, make_release


def _row(student, check, status="passed", points=None, max_points=1, notebook="01_x.ipynb", **extra):
    points = (max_points if status == "passed" else 0) if points is None else points
    return dict(student=student, notebook=notebook, check=check, points=points, max_points=max_points,
                status=status, message="" if status == "passed" else "why", **extra)


def _class():
    return [
        _row("ada", "x-1"), _row("ada", "x-2", max_points=2),
        _row("bo", "x-1", "failed"), _row("bo", "x-2", "error", max_points=2),
        _row("cy", "x-1"), _row("cy", "x-2", "failed", max_points=2),
    ]


# ---------------------------------------------------------------------------------------------------------- rows


def test_update_rows_replaces_only_that_students_rows():
    existing = [dict(r, late="") for r in _class()]
    existing[0]["late"] = "3.0"
    new = [Row("bo", "01_x.ipynb", "x-1", 1, 1, "passed"), Row("bo", "01_x.ipynb", "x-2", 2, 2, "passed")]
    updated = gb.update_rows(existing, new, "bo")
    assert [(r["student"], r["check"], r["status"]) for r in updated] == [
        ("ada", "x-1", "passed"), ("ada", "x-2", "passed"),
        ("bo", "x-1", "passed"), ("bo", "x-2", "passed"),
        ("cy", "x-1", "passed"), ("cy", "x-2", "failed"),
    ]
    assert updated[0]["late"] == "3.0", "other students keep their columns"
    with pytest.raises(ValueError, match="rows of other students: ada"):
        gb.update_rows(existing, [_row("ada", "x-1")], "bo")


def test_gradebook_round_trip_with_late_column_and_totals(tmp_path):
    rows = gb.mark_late(_class(), {("bo", "01_x.ipynb"): 2.26})
    path, totals_path = gb.write_gradebook(tmp_path / "gradebook.csv", rows)
    with path.open(newline="") as stream:
        header = next(csv.reader(stream))
    assert tuple(header) == GRADEBOOK_HEADER + ("late",)
    back = gb.read_gradebook(path)
    assert back == rows and [r["late"] for r in back if r["student"] == "bo"] == ["2.3", "2.3"]
    with totals_path.open(newline="") as stream:
        totals = {r["student"]: r for r in csv.DictReader(stream)}
    assert totals["ada"]["points"] == "3" and totals["bo"]["percent"] == "0.0" and totals["cy"]["percent"] == "33.3"


def test_read_gradebook_rejects_another_csv(tmp_path):
    (tmp_path / "other.csv").write_text("name,score\nada,3\n")
    with pytest.raises(ValueError, match="not a sustainlab gradebook: no column"):
        gb.read_gradebook(tmp_path / "other.csv")


# ---------------------------------------------------------------------------------------------------- lateness


def test_deadline_parsing():
    assert gb.parse_deadline("2026-12-01T23:59+01:00").utcoffset() == timedelta(hours=1)
    naive = gb.parse_deadline("2026-12-01T23:59")
    assert naive.tzinfo is not None and (naive.hour, naive.minute) == (23, 59)
    assert (gb.parse_deadline("2026-12-01").hour, gb.parse_deadline("2026-12-01").minute) == (23, 59)
    with pytest.raises(ValueError, match="ISO date or date-time"):
        gb.parse_deadline("next friday")


def test_submission_times_and_lateness_from_file_times(tmp_path):
    deadline = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    for student, offset_h in (("early", -1), ("late", 2.5)):
        (tmp_path / student).mkdir()
        path = tmp_path / student / "01_x.ipynb"
        path.write_text("{}")
        stamp = (deadline + timedelta(hours=offset_h)).timestamp()
        os.utime(path, (stamp, stamp))
    (tmp_path / ".hidden").mkdir()
    times = gb.submission_times(tmp_path)
    assert set(times) == {("early", "01_x.ipynb"), ("late", "01_x.ipynb")}
    assert gb.lateness(times, deadline) == {("late", "01_x.ipynb"): pytest.approx(2.5)}
    assert set(gb.submission_times(tmp_path, "late")) == {("late", "01_x.ipynb")}


def test_mark_late_changes_points_only_with_a_penalty():
    late = {("ada", "01_x.ipynb"): 1.0}
    plain = gb.mark_late(_class(), late)
    assert [r["points"] for r in plain] == [r["points"] for r in _class()]
    assert [r["late"] for r in plain if r["student"] == "ada"] == ["1.0", "1.0"]
    assert all(r["late"] == "" for r in plain if r["student"] != "ada")
    halved = gb.mark_late(_class(), late, penalty=0.5)
    assert [r["points"] for r in halved if r["student"] == "ada"] == [0.5, 1]
    assert [r["points"] for r in halved if r["student"] != "ada"] == [r["points"] for r in _class()[2:]]
    only_cy = gb.mark_late(plain, {}, students=["cy"])
    assert [r["late"] for r in only_cy if r["student"] == "ada"] == ["1.0", "1.0"], "others keep their mark"
    for bad in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match="between 0 and 1"):
            gb.mark_late(_class(), late, penalty=bad)


# ------------------------------------------------------------------------------------------------ class report


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_class_report_is_one_self_contained_page():
    rows = _class() + [_row("<Zoë & co>", "x-1", "failed"), _row("<Zoë & co>", "x-2", "failed", max_points=2)]
    page = gb.class_report(gb.mark_late(rows, {("cy", "01_x.ipynb"): 26.0}))
    images = _images(page)
    assert len(images) == 2 and all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<script" not in page, "nothing from the network"
    assert "&lt;Zoë &amp; co&gt;" in page and "<Zoë" not in page
    attention = page[page.index('id="attention"'):page.index("Pass rate per check</h2>")]
    assert "bo" in attention and "1 error" in attention and "score below 50 %" in attention
    assert "cy" in attention and "late: 01_x.ipynb (26.0 h)" in attention
    assert "ada" not in attention and "&lt;Zoë &amp; co&gt;" in attention
    assert "2/4 (50 %)" in page and "1/4 (25 %)" in page, "per-check pass counts"


def test_pass_rates_and_attention_lists():
    assert gb.check_pass_rates(_class()) == [("01_x.ipynb", "x-1", 2, 3), ("01_x.ipynb", "x-2", 1, 3)]
    assert [s for s, _, _ in gb.needs_attention(_class())] == ["bo", "cy"]
    assert gb.report_path_for(Path("out/gradebook.csv")) == Path("out/gradebook_report.html")


# ------------------------------------------------------------------------------------------------------- CLI


def test_grade_options_are_checked_before_grading(tmp_path, capsys):
    release = make_release(tmp_path)
    (tmp_path / "subs").mkdir()
    for argv, message in (
        (["--deadline", "soon"], "--deadline: deadline must be an ISO date"),
        (["--late-penalty", "0.5"], "--late-penalty needs --deadline"),
        (["--student", "nobody"], "no folder 'nobody' for that student"),
        (["--student", "../etc"], "no folder '../etc' for that student"),
    ):
        assert cli.main(["grade", str(release), str(tmp_path / "subs"), "--out", str(tmp_path / "g.csv"),
                         "--no-progress", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    with pytest.raises(SystemExit):
        cli.main(["grade", str(release), str(tmp_path / "subs"), "--late-penalty", "2"])
    assert "must be a fraction between 0 and 1" in capsys.readouterr().err


@pytest.mark.slow
def test_regrade_one_student_with_a_deadline_and_a_report(tmp_path, capsys):
    """Grade a class of two, then regrade bob alone after he fixed his work late: only his rows change."""
    release = make_release(tmp_path)
    subs = tmp_path / "subs"
    student = nbformat.read(release / "student" / TINY, as_version=4)
    for name in ("alice", "bob"):
        (subs / name).mkdir(parents=True)
        nb = nbformat.from_dict(student)
        if name == "alice":
            for cell in nb.cells:  # the instructor's solutions of the release's tiny chapter
                answer = ("return theta - lr * grad" if "def gd_step" in cell.source else
                          "return sum(h * w for h, w in phases) / 1000 * n_gpus * pue * grid_g_per_kwh / 1000")
                cell.source = cell.source.replace("raise NotImplementedError()", answer)
        nbformat.write(nb, subs / name / TINY)
    out = tmp_path / "marks" / "gradebook.csv"
    out.parent.mkdir()
    base = ["grade", str(release), str(subs), "--out", str(out), "--no-progress", "--jobs", "1"]
    assert cli.main(base) == 0
    before = gb.read_gradebook(out)
    scored = [r for r in before if r["status"] != "manual"]  # written answers wait for a person
    assert all(r["points"] == 0 for r in scored if r["student"] == "bob")
    assert all(r["status"] == "passed" for r in scored if r["student"] == "alice" and r["notebook"] == TINY)

    shutil.copy(subs / "alice" / TINY, subs / "bob" / TINY)  # bob fixes his work ...
    deadline = datetime.now(timezone.utc) - timedelta(hours=2)  # ... two hours after the deadline
    capsys.readouterr()
    assert cli.main(base + ["--student", "bob", "--deadline", deadline.isoformat(), "--report"]) == 0
    shown = capsys.readouterr().out
    after = gb.read_gradebook(out)
    assert [r for r in after if r["student"] == "alice"] == [dict(r, late="") for r in before if r["student"] == "alice"]
    bob = [r for r in after if r["student"] == "bob" and r["notebook"] == TINY and r["status"] != "manual"]
    assert bob and all(r["status"] == "passed" and r["points"] == r["max_points"] for r in bob)
    assert all(float(r["late"]) >= 1.9 for r in bob), "bob's file is two hours past the deadline"
    assert f"updated bob's rows in {out}" in shown and "late: 1 submission(s)" in shown and "points unchanged" in shown
    assert str(out) in shown and "sustainlab-regrade" not in shown
    report = gb.report_path_for(out)
    assert report.is_file() and len(_images(report.read_text())) == 2
    with gb.totals_path_for(out).open(newline="") as stream:
        totals = {r["student"]: r for r in csv.DictReader(stream)}
    assert totals["bob"]["points"] == totals["alice"]["points"]
