"""Gradebook tools for instructors: regrade one student, mark late submissions, and a one-page class report.

They work on the rows ``sustainlab grade`` writes (one per student, notebook and check; the columns of
:data:`sustainlab.grading.GRADEBOOK_HEADER`, plus an optional ``late`` column) as plain dicts, so they serve the
CLI, a notebook and a spreadsheet export alike:

- :func:`update_rows` replaces one student's rows in an existing gradebook (``sustainlab grade --student NAME``);
- :func:`submission_times`, :func:`lateness` and :func:`mark_late` fill the ``late`` column from each submission's
  file time against a deadline, and take points off only when asked (``--deadline``, ``--late-penalty``);
- :func:`class_report` renders per-check pass rates, the score histogram and the students who need attention as one
  self-contained HTML page (figures embedded as PNG; nothing fetched from the network) (``--report``).
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

from .grading import (
    GRADEBOOK_HEADER, STATUSES, TOTALS_HEADER, _write_atomic, csv_bytes, student_totals, totals_path_for,
)

__all__ = [
    "row_dict",
    "read_gradebook",
    "update_rows",
    "write_gradebook",
    "totals",
    "parse_deadline",
    "submission_times",
    "lateness",
    "mark_late",
    "finish",
    "report_path_for",
    "check_pass_rates",
    "needs_attention",
    "class_report",
    "write_report",
]

LATE_COLUMN = "late"
#: Below this percentage a student is listed under "needs attention" in the class report.
ATTENTION_PERCENT = 50.0
#: Statuses that mean the grader could not score work the student may have done: always worth a look.
TROUBLE_STATUSES = ("error", "timeout", "invalid", "missing")


# -------------------------------------------------------------------------------------------------------- rows


def row_dict(row) -> dict:
    """A gradebook row as a dict with the gradebook's columns; accepts a dict, a ``grading.Row`` or a tuple."""
    if isinstance(row, Mapping):
        data = dict(row)
    elif hasattr(row, "as_tuple"):
        data = dict(zip(GRADEBOOK_HEADER, row.as_tuple()))
    else:
        data = dict(zip(GRADEBOOK_HEADER, row))
    missing = [name for name in GRADEBOOK_HEADER if name not in data]
    if missing:
        raise ValueError(f"a gradebook row lacks the column(s) {', '.join(missing)}: {row!r}")
    # A written answer not yet scored by a person (status "manual") has no points yet: empty, not zero.
    unscored = data["status"] == "manual" and data["points"] in (None, "")
    data["points"] = None if unscored else _number(data["points"], "points")
    data["max_points"] = _number(data["max_points"], "max_points")
    return data


def _number(value, name: str):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"gradebook column {name!r} must be a number, got {value!r}") from None
    return int(number) if number.is_integer() else number


def read_gradebook(path: str | Path) -> list[dict]:
    """The rows of a gradebook CSV written by ``sustainlab grade`` (points as numbers).

    Raises
    ------
    FileNotFoundError
        When there is no file at ``path``.
    ValueError
        When the file's header lacks a gradebook column or a points value is not a number.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        missing = [name for name in GRADEBOOK_HEADER if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} is not a sustainlab gradebook: no column(s) {', '.join(missing)}")
        return [row_dict(row) for row in reader]


def update_rows(existing: Iterable, new: Iterable, student: str) -> list[dict]:
    """``existing`` with every row of ``student`` replaced by ``new`` (that student's fresh grading).

    Other students' rows are kept as they are, extra columns (``late``) included. Rows are ordered by student and
    notebook, each notebook's checks in the order given.

    Raises
    ------
    ValueError
        When ``new`` holds a row of another student (a regrade must not touch anyone else).
    """
    fresh = [row_dict(row) for row in new]
    others = sorted({row["student"] for row in fresh} - {student})
    if others:
        raise ValueError(f"update_rows for {student!r} got rows of other students: {', '.join(others)}")
    kept = [row for row in map(row_dict, existing) if row["student"] != student]
    # sorted() is stable: within a (student, notebook) the check order is kept.
    return sorted(kept + fresh, key=lambda row: (row["student"], row["notebook"]))


def write_gradebook(path: str | Path, rows: Iterable) -> tuple[Path, Path]:
    """Write the gradebook CSV and its per-student totals beside it (``<stem>_totals.csv``); returns both paths.

    The ``late`` column is written when any row has one.
    """
    path = Path(path)
    rows = [row_dict(row) for row in rows]
    header = GRADEBOOK_HEADER + ((LATE_COLUMN,) if any(LATE_COLUMN in row for row in rows) else ())
    _write_atomic(path, csv_bytes(header, [[row.get(name, "") for name in header] for row in rows]))
    totals_path = totals_path_for(path)
    _write_atomic(totals_path, csv_bytes(TOTALS_HEADER, totals(rows)))
    return path, totals_path


def totals(rows: Iterable) -> list[tuple]:
    """Per-student totals (the columns of :data:`sustainlab.grading.TOTALS_HEADER`) of gradebook rows."""
    return student_totals([SimpleNamespace(**row_dict(row)) for row in rows])


# -------------------------------------------------------------------------------------------------- lateness


def parse_deadline(text: str) -> datetime:
    """An ISO 8601 date or date-time (``2026-12-01T23:59``, optionally with ``+01:00``); local time when naive.

    A date alone means the end of that day (23:59:59 local time).

    Raises
    ------
    ValueError
        When ``text`` is not such a date.
    """
    try:
        when = datetime.fromisoformat(text.strip())
    except (AttributeError, ValueError):
        raise ValueError(f"deadline must be an ISO date or date-time such as 2026-12-01T23:59, got {text!r}") from None
    if len(text.strip()) == 10:  # a date: the whole day counts
        when = when.replace(hour=23, minute=59, second=59)
    return when if when.tzinfo is not None else when.astimezone()


def submission_times(submissions: str | Path, student: str | None = None) -> dict[tuple[str, str], datetime]:
    """``{(student, notebook): modification time}`` of every ``SUBMISSIONS/<student>/<notebook>.ipynb``.

    Read these *before* grading runs any student code, which could touch the files.
    """
    root = Path(submissions)
    times = {}
    folders = [root / student] if student is not None else sorted(p for p in root.iterdir() if p.is_dir())
    for folder in folders:
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.ipynb")):
            if path.is_file() and not path.is_symlink():
                times[(folder.name, path.name)] = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    return times


def lateness(times: Mapping[tuple[str, str], datetime], deadline: datetime) -> dict[tuple[str, str], float]:
    """Hours past ``deadline`` of each late submission in ``times`` (on-time submissions are left out)."""
    if deadline.tzinfo is None:
        deadline = deadline.astimezone()
    late = {}
    for key, when in times.items():
        hours = (when - deadline).total_seconds() / 3600
        if hours > 0:
            late[key] = hours
    return late


def mark_late(rows: Iterable, late_hours: Mapping[tuple[str, str], float], penalty: float = 0.0,
              students: Iterable[str] | None = None) -> list[dict]:
    """Rows with the ``late`` column set: hours late (one decimal) for late submissions, empty for the others.

    Parameters
    ----------
    rows : iterable of rows
        Gradebook rows.
    late_hours : mapping
        ``{(student, notebook): hours late}``, as :func:`lateness` returns.
    penalty : float, default 0
        Fraction of each late check's points to take off (0 marks lateness only, 1 takes all points).
    students : iterable of str, optional
        Only these students' rows are (re)marked; the others keep their ``late`` value. Default: everyone.

    Raises
    ------
    ValueError
        When ``penalty`` is not between 0 and 1.
    """
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not 0 <= penalty <= 1:
        raise ValueError(f"late penalty must be a fraction between 0 and 1, got {penalty!r}")
    chosen = None if students is None else set(students)
    marked = []
    for row in map(row_dict, rows):
        if chosen is None or row["student"] in chosen:
            hours = late_hours.get((row["student"], row["notebook"]))
            row[LATE_COLUMN] = "" if hours is None else f"{max(hours, 0.05):.1f}"
            if hours is not None and penalty and row["points"] is not None:
                points = round(row["points"] * (1 - penalty), 2)
                row["points"] = int(points) if float(points).is_integer() else points
        else:
            row.setdefault(LATE_COLUMN, "")
        marked.append(row)
    return marked


def finish(rows: Iterable, out: str | Path, *, student: str | None = None, existing: Iterable = (),
           deadline: datetime | None = None, times: Mapping | None = None, penalty: float = 0.0,
           report: bool = False) -> list[str]:
    """After grading: merge one student's regrade, mark lateness, rewrite the gradebook, write the class report.

    What ``sustainlab grade --student/--deadline/--late-penalty/--report`` does with the rows grading produced.

    Parameters
    ----------
    rows : iterable of rows
        The rows just graded (one student's with ``student``, else the class's).
    out : path-like
        The gradebook CSV to (re)write; its totals and report go beside it.
    student : str, optional
        The one student regraded: their rows replace theirs in ``existing``; other rows are kept.
    existing : iterable of rows
        The gradebook before this regrade (with ``student``).
    deadline : datetime, optional
        With ``times`` (:func:`submission_times`, read before grading ran any code): fill the ``late`` column.
    penalty : float
        Fraction of a late submission's points to take off.
    report : bool
        Write the class report to :func:`report_path_for` ``(out)``.

    Returns
    -------
    list of str
        One line per thing done, for the terminal.
    """
    out = Path(out)
    rows = [row_dict(row) for row in rows]
    existing = [row_dict(row) for row in existing]
    notes = []
    if student is not None:
        rows = update_rows(existing, rows, student)
    if deadline is not None:
        late = lateness(times or {}, deadline)
        rows = mark_late(rows, late, penalty, students=None if student is None else [student])
        cost = f", {penalty:.0%} of their points taken off" if penalty else " (points unchanged)"
        notes.append(f"late: {len(late)} submission(s) after {deadline.isoformat(timespec='minutes')}{cost}")
    if student is not None or deadline is not None:
        write_gradebook(out, rows)
    if student is not None:
        notes.append(f"updated {student}'s rows in {out} ({len(existing)} row(s) before, {len(rows)} now)")
    if report:
        notes.append(f"class report: {write_report(rows, report_path_for(out), title=f'Class report: {out.stem}')}")
    return notes


# ----------------------------------------------------------------------------------------------- class report


def report_path_for(gradebook: str | Path) -> Path:
    """Where the class report goes: ``<gradebook stem>_report.html`` beside the gradebook."""
    gradebook = Path(gradebook)
    return gradebook.with_name(gradebook.stem + "_report.html")


def check_pass_rates(rows: Iterable) -> list[tuple[str, str, int, int]]:
    """``(notebook, check, passed, graded)`` per check, in gradebook order (rows without a check, and written answers,
    which people score rather than pass, are skipped)."""
    counts: dict[tuple[str, str], list[int]] = {}
    for row in map(row_dict, rows):
        if row["check"] and row["status"] != "manual":
            count = counts.setdefault((row["notebook"], row["check"]), [0, 0])
            count[0] += row["status"] == "passed"
            count[1] += 1
    return [(notebook, check, passed, graded) for (notebook, check), (passed, graded) in counts.items()]


def needs_attention(rows: Iterable, threshold: float = ATTENTION_PERCENT) -> list[tuple[str, float, str]]:
    """``(student, percent, reasons)`` for each student below ``threshold`` percent, with work the grader could
    not score (error, timeout, invalid, missing) or with a late submission; lowest score first."""
    rows = [row_dict(row) for row in rows]
    found = []
    for total in totals(rows):
        student, percent = total[0], float(total[3])
        mine = [row for row in rows if row["student"] == student]
        reasons = []
        if percent < threshold:
            reasons.append(f"score below {threshold:g} %")
        for status in TROUBLE_STATUSES:
            count = sum(row["status"] == status for row in mine)
            if count:
                reasons.append(f"{count} {status}")
        late = sorted({f"{row['notebook']} ({row[LATE_COLUMN]} h)" for row in mine if row.get(LATE_COLUMN)})
        if late:
            reasons.append("late: " + ", ".join(late))
        if reasons:
            found.append((student, percent, "; ".join(reasons)))
    return sorted(found, key=lambda item: (item[1], item[0]))


def class_report(rows: Iterable, title: str = "Class report", threshold: float = ATTENTION_PERCENT) -> str:
    """The one-page HTML class report of gradebook rows: pass rate per check, score histogram, who needs attention.

    Self-contained: the two figures are PNG images embedded as base64 ``data:`` URLs and the style is inline, so
    the file opens offline and can be mailed as it is.
    """
    rows = [row_dict(row) for row in rows]
    student_totals_ = totals(rows)
    rates = check_pass_rates(rows)
    attention = needs_attention(rows, threshold)
    percents = [float(t[3]) for t in student_totals_]
    counts = {status: sum(row["status"] == status for row in rows) for status in STATUSES}
    mean = sum(percents) / len(percents) if percents else 0.0
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:1.5rem auto;padding:0 1rem;color:#222}"
        "h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:1.5rem}table{border-collapse:collapse}"
        "td,th{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:left}td.num{text-align:right}"
        ".figures{display:flex;flex-wrap:wrap;gap:1rem}.figures img{max-width:100%;border:1px solid #eee}"
        ".muted{color:#666}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p>{len(student_totals_)} student(s), {len(rows)} gradebook row(s); mean score {mean:.1f} %. '
        + ", ".join(f"{status} {n}" for status, n in counts.items())
        + ".</p>",
        '<div class="figures">',
        f'<figure><img id="pass-rates" alt="pass rate per check" src="{_png(_pass_rate_figure(rates))}">'
        "<figcaption>Share of students whose check passed, per check.</figcaption></figure>",
        f'<figure><img id="scores" alt="score histogram" src="{_png(_score_figure(percents, threshold))}">'
        "<figcaption>Students per total score.</figcaption></figure>",
        "</div>",
        f"<h2>Students who need attention ({len(attention)})</h2>",
    ]
    if attention:
        parts.append('<table id="attention"><tr><th>student</th><th>score</th><th>why</th></tr>')
        parts += [f'<tr><td>{esc(s)}</td><td class="num">{p:.1f} %</td><td>{esc(r)}</td></tr>' for s, p, r in attention]
        parts.append("</table>")
    else:
        parts.append('<p id="attention" class="muted">Nobody: every student is above the threshold, on time, and '
                     "every submission could be graded.</p>")
    parts.append("<h2>Pass rate per check</h2>")
    parts.append('<table id="checks"><tr><th>notebook</th><th>check</th><th>passed</th></tr>')
    parts += [
        f'<tr><td>{esc(nb)}</td><td>{esc(check)}</td><td class="num">{passed}/{graded} '
        f"({100 * passed / graded:.0f} %)</td></tr>"
        for nb, check, passed, graded in rates
    ]
    parts += ["</table>", "</body></html>", ""]
    return "\n".join(parts)


def write_report(rows: Iterable, path: str | Path, title: str = "Class report") -> Path:
    """Write :func:`class_report` to ``path``; returns the path."""
    path = Path(path)
    _write_atomic(path, class_report(rows, title=title).encode("utf-8"))
    return path


def _pass_rate_figure(rates):
    from matplotlib.figure import Figure

    labels = [f"{check}  ({Path(nb).stem})" for nb, check, _, _ in rates] or ["(no checks)"]
    values = [100 * passed / graded for _, _, passed, graded in rates] or [0]
    fig = Figure(figsize=(6, 0.5 + 0.32 * len(labels)), layout="constrained")
    ax = fig.subplots()
    positions = range(len(labels))
    ax.barh(positions, values, color=["#c0392b" if v < ATTENTION_PERCENT else "#2e86c1" for v in values])
    ax.set_yticks(list(positions), labels, fontsize=8)
    ax.invert_yaxis()  # first check on top, as in the notebooks
    ax.set_xlim(0, 100)
    ax.set_xlabel("students who passed (%)")
    ax.set_title("Pass rate per check")
    return fig


def _score_figure(percents, threshold):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3), layout="constrained")
    ax = fig.subplots()
    ax.hist(percents, bins=[10 * i for i in range(11)], color="#2e86c1", edgecolor="white")
    ax.axvline(threshold, color="#c0392b", linestyle="--", label=f"attention below {threshold:g} %")
    ax.set_xlim(0, 100)
    ax.set_xlabel("total score (%)")
    ax.set_ylabel("students")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Score distribution")
    ax.legend(fontsize=8)
    return fig


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
