"""Feedback to hand back: one HTML page per student and notebook (``sustainlab grade --feedback DIR``).

The page is the student's own notebook (check cells as graded) rendered with nbconvert, with each visible check's
verdict, hint and points right below its cell, and a summary of points at the top. Safe to hand back: no reference
answer appears (the grader's expected values never leave it), hidden checks show only their verdict and points (not
their inputs or hints), all text from the grading is HTML-escaped, the student's own cells are made inert (raw HTML
shown as text, only plain-text and image outputs kept), and nothing is loaded from the network.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat

from .notebook import check_id, is_hidden_check

__all__ = [
    "feedback_notebook",
    "feedback_html",
    "feedback_path",
]

_MARK = {"passed": "✔", "manual": "✎"}


def _line(row) -> str:
    points = "—" if row.points is None else row.points
    return f"{points} / {row.max_points} point(s)"


#: Outputs kept on the page: plain text and images. HTML, SVG and JavaScript a submission produced could script the
#: page an instructor opens, so they are dropped (a DataFrame still shows as its text).
_SAFE_OUTPUTS = ("text/plain", "image/png", "image/jpeg")


def _inert(cell):
    """The student's cell with nothing that could run in a browser: raw HTML in markdown shown as text, only plain
    outputs kept. (nbconvert's own sanitizer, 7.17, escapes ordinary rendered markdown too, so it is not used.)"""
    cell = nbformat.from_dict(cell)
    if cell.cell_type == "markdown":
        cell.source = html.escape(cell.source, quote=False)
        cell.pop("attachments", None)
    elif cell.cell_type == "code":
        for output in cell.get("outputs", []):
            if "data" in output:
                output["data"] = {k: v for k, v in output["data"].items() if k in _SAFE_OUTPUTS}
    else:
        cell.source = html.escape(cell.source, quote=False)
        cell.cell_type = "markdown"
    return cell


def feedback_notebook(source: str, rows: list) -> "nbformat.NotebookNode":
    """The graded notebook with a verdict under each visible check cell and a summary on top (pure)."""
    nb = nbformat.reads(source, as_version=4)
    by_check = {row.check: row for row in rows}
    hidden = set()
    cells = []
    for cell in nb.cells:
        cid = check_id(cell)
        if cid is not None and is_hidden_check(cell):
            hidden.add(cid)
            continue  # a hidden check's cell and inputs stay private
        cells.append(_inert(cell))
        row = by_check.get(cid) if cid else None
        if row is not None:
            mark = _MARK.get(row.status, "✘")
            hint = html.escape(row.message) if row.message else ""
            cells.append(nbformat.v4.new_markdown_cell(
                f"<div class='sustainlab-verdict'><b>{mark} {html.escape(cid)}: {row.status}</b> — {_line(row)}"
                + (f"<br>{hint}" if hint else "") + "</div>"))
    total = sum(r.points or 0 for r in rows)
    maximum = sum(r.max_points for r in rows)
    lines = [f"# Feedback: {html.escape(rows[0].notebook) if rows else ''}", "",
             f"**{total} / {maximum} points**", "", "| check | status | points |", "|---|---|---|"]
    for row in rows:
        label = f"{row.check} (hidden check)" if row.check in hidden else row.check
        lines.append(f"| {html.escape(label)} | {row.status} | {_line(row)} |")
    nb.cells = [nbformat.v4.new_markdown_cell("\n".join(lines))] + cells
    return nb


def feedback_html(source: str, rows: list) -> str:
    """:func:`feedback_notebook` rendered to a standalone HTML page."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(sanitize_html=False)  # the cells were made inert by feedback_notebook
    body, _ = exporter.from_notebook_node(feedback_notebook(source, rows))
    return _offline(body)


def _offline(page: str) -> str:
    """``page`` without the scripts nbconvert's template loads from a CDN (require.js, MathJax, mermaid).

    Feedback is opened where there may be no network (and, where there is one, a page handed to a student should not
    call third parties): without them the notebook still reads, with formulas shown as their TeX source.
    """
    return re.sub(r"<script\b[^>]*>.*?</script>\s*",
                  lambda match: "" if re.search(r"https?://", match.group(0)) else match.group(0), page, flags=re.S)


def feedback_path(folder: Path, student: str, notebook: str) -> Path:
    """``FOLDER/<student>/<notebook stem>.html`` with path separators and dots made harmless."""
    from .grading import display_name

    safe = display_name(student).replace("/", "_").replace("\\", "_").lstrip(".") or "_"
    return Path(folder) / safe / (Path(notebook).stem + ".html")
