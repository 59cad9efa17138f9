"""Issue 16's rules for every chapter's exercises, read from the instructor notebooks and the check registry.

- every chapter but the welcome has *build*, *measure* and *interpret* exercises, a hidden check and a written answer;
- an exercise's heading names its kind and points, and both agree with the registry and the check cell;
- each chapter ends with a questionnaire (5–10 questions, one model answer each, stripped in the release) and a
  "Further research" list;
- no hint (a string in ``sustainlab/checks/``) contains an expression of a solution.

(That reference answers pass, wrong ones fail and delegating ones fail: ``tests/test_checks.py``.)
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from sustainlab.chapters import CHAPTERS
from sustainlab.checks import registry
from sustainlab.checks._core import EXERCISE_KINDS

ROOT = Path(__file__).resolve().parents[1]
GRADED = [c for c in CHAPTERS if c.module is not None]  # the welcome notebook may stay at one exercise
HEADING = re.compile(r"^### Exercise (?P<id>[a-z]+-\d+) \((?P<kind>\w+), (?P<points>\d+) points?\)", re.M)
WRITTEN = re.compile(r"^### Written answer (?P<id>[a-z]+-w\d+) \(interpret, (?P<points>\d+) points?\)", re.M)
SOLUTION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)


def _cells(chapter):
    return nbformat.read(ROOT / chapter.notebook, as_version=4).cells


def _meta(cell) -> dict:
    return cell.metadata.get("sustainlab", {})


@pytest.mark.parametrize("chapter", GRADED, ids=[c.slug for c in GRADED])
def test_every_chapter_has_each_kind_a_hidden_check_and_a_written_answer(chapter):
    cells = _cells(chapter)
    visible = [_meta(c)["check"] for c in cells if "check" in _meta(c) and not _meta(c).get("hidden")]
    hidden = [_meta(c)["check"] for c in cells if _meta(c).get("hidden")]
    kinds = {registry()[i].kind for i in visible}
    assert kinds == set(EXERCISE_KINDS), f"{chapter.notebook} has only {sorted(kinds)} exercises"
    assert hidden and all(registry()[i].hidden for i in hidden), f"{chapter.notebook} has no hidden check"
    written = [c for c in cells if c.cell_type == "markdown" and "answer" in _meta(c)]
    assert written, f"{chapter.notebook} has no written answer"
    for cell in written:
        meta = _meta(cell)
        heading = WRITTEN.search(cell.source)
        assert heading and heading["id"] == meta["answer"], f"{meta['answer']}: heading '### Written answer <id> (...)'"
        assert int(heading["points"]) == meta["points"] > 0 and meta.get("rubric", "").strip()


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.slug for c in CHAPTERS])
def test_exercise_headings_name_the_registry_kind_and_the_check_cell_points(chapter):
    cells = _cells(chapter)
    points = {_meta(c)["check"]: _meta(c)["points"] for c in cells if "check" in _meta(c)}
    headings = {m["id"]: m for c in cells if c.cell_type == "markdown" for m in HEADING.finditer(c.source)}
    visible = [i for i in points if not registry()[i].hidden]
    assert sorted(headings) == sorted(visible), f"{chapter.notebook}: every visible check needs one heading"
    for exercise_id, heading in headings.items():
        assert heading["kind"] == registry()[exercise_id].kind, exercise_id
        assert int(heading["points"]) == points[exercise_id], exercise_id


def _bullets(source: str) -> int:
    return sum(1 for line in source.splitlines() if re.match(r"^\s*(-|\d+\.)\s", line))


def _section(source: str, heading: str) -> str | None:
    """The text under a ``## heading`` of a markdown cell, up to the next ``## `` heading."""
    match = re.search(rf"^## {heading}\n(.*?)(?=^## |\Z)", source, re.M | re.S)
    return match[1] if match else None


@pytest.mark.parametrize("chapter", GRADED, ids=[c.slug for c in GRADED])
def test_every_chapter_ends_with_a_questionnaire_and_further_research(chapter):
    cells = _cells(chapter)
    at = next((i for i, c in enumerate(cells) if c.cell_type == "markdown" and _section(c.source, "Questionnaire")),
              None)
    assert at is not None, f"{chapter.notebook} has no '## Questionnaire'"
    questions = _bullets(_section(cells[at].source, "Questionnaire"))
    assert 5 <= questions <= 10, f"{chapter.notebook}: {questions} questions"
    answers_cell = cells[at + 1]
    assert answers_cell.cell_type == "code" and "def questionnaire_answers" in answers_cell.source
    body = SOLUTION.search(answers_cell.source)
    assert body, "the model answers must sit between solution markers, so the release strips them"
    answers = ast.literal_eval(ast.parse(_dedent(body[1])).body[0].value)
    answers = list(answers.values()) if isinstance(answers, dict) else answers
    assert len(answers) == questions and all(isinstance(a, str) and a.strip() for a in answers)
    further = [_section(c.source, "Further research") for c in cells[at:] if c.cell_type == "markdown"]
    assert any(f and _bullets(f) >= 2 for f in further), f"{chapter.notebook}: no 'Further research' list"


def _solution_expressions(chapter) -> set[str]:
    """The expressions a learner must write (right-hand sides and return values), without spaces."""
    found = set()
    for cell in _cells(chapter):
        for block in SOLUTION.findall(cell.source) if cell.cell_type == "code" else ():
            try:
                tree = ast.parse(_dedent(block))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Return, ast.Assign, ast.AugAssign)) and node.value is not None:
                    if isinstance(node.value, ast.Constant) or "questionnaire" in cell.source:
                        continue
                    text = re.sub(r"\s", "", ast.unparse(node.value))
                    if len(text) >= 8:
                        found.add(text)
    return found


def _dedent(block: str) -> str:
    lines = block.splitlines()
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return "\n".join(line[indent:] for line in lines)


def _hint_strings(module: str) -> list[str]:
    tree = ast.parse((ROOT / "sustainlab" / "checks" / f"{module}.py").read_text(encoding="utf-8"))
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    # f-strings: their literal parts are Constant nodes too, so ast.walk has them already.
    return [re.sub(r"\s", "", s) for s in strings]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.slug for c in CHAPTERS])
def test_no_hint_contains_a_solution_expression(chapter):
    expressions = _solution_expressions(chapter)
    hints = _hint_strings(chapter.checks)
    leaks = sorted(e for e in expressions for h in hints if e in h)
    assert not leaks, f"hints in sustainlab/checks/{chapter.checks}.py give away {leaks}"


def test_the_hint_rule_would_catch_a_leak():
    """Not vacuous: chapter 01's solutions have expressions, and one of them is found in a hint made of it."""
    expressions = _solution_expressions(CHAPTERS[1])
    assert "theta-lr*grad" in expressions
    assert any(e in re.sub(r"\s", "", "step to theta - lr * grad") for e in expressions)
