"""Every number a learner reads in a notebook's markdown is either computed by the notebook or on an allow-list.

The allow-list, with one reason per entry, is ``tests/prose_numbers_allowed.yaml``; what counts as a numeral is
:mod:`sustainlab.prose`. Measured figures belong in code cells (``sustainlab.evidence.say``), never in markdown.
"""

from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_markdown_cell

from sustainlab.chapters import CHAPTERS
from sustainlab.prose import markdown_numerals, numerals

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_FILE = ROOT / "tests" / "prose_numbers_allowed.yaml"
NOTEBOOKS = [chapter.notebook for chapter in CHAPTERS]
REASON_KINDS = ("chapter", "formula", "published", "year", "setting", "dataset", "example", "exercise")


def _allowed() -> dict:
    with open(ALLOWED_FILE, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def unexplained_numerals(notebook, allowed: dict) -> list[str]:
    """``"cell N: numeral"`` for each numeral in a markdown cell that ``allowed`` (numeral → reason) does not list."""
    return [f"cell {index}: {numeral}" for index, numeral in markdown_numerals(notebook) if numeral not in allowed]


def _notebook(path: str):
    full = ROOT / path
    if not full.exists():
        pytest.skip(f"{path} does not exist on this branch")
    return nbformat.read(full, as_version=4)


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_every_typed_numeral_is_allowed(path):
    notebook = _notebook(path)
    allowed = _allowed().get(path) or {}
    unexplained = unexplained_numerals(notebook, allowed)
    assert not unexplained, (
        f"{path}: numerals typed into markdown that are not on the allow-list ({ALLOWED_FILE.name}). A measured "
        f"number must come from a code cell (sustainlab.evidence.say) or be referred to, not restated; a published "
        f"figure, formula constant, year or setting goes on the list with its reason:\n  " + "\n  ".join(unexplained))


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_allow_list_has_no_stale_entries(path):
    notebook = _notebook(path)
    used = {numeral for _, numeral in markdown_numerals(notebook)}
    stale = sorted(set(_allowed().get(path) or {}) - used)
    assert not stale, f"{path}: allow-list entries no longer used in its markdown, remove them: {stale}"


def test_allow_list_entries_have_reasons_and_known_notebooks():
    allowed = _allowed()
    assert set(allowed) <= set(NOTEBOOKS), f"unknown notebooks in {ALLOWED_FILE.name}: {set(allowed) - set(NOTEBOOKS)}"
    for path, entries in allowed.items():
        for numeral, reason in (entries or {}).items():
            assert isinstance(numeral, str), f"{path}: quote the numeral {numeral!r} so YAML keeps it as typed"
            assert numerals(numeral) == [numeral], f"{path}: {numeral!r} is not one numeral as the scanner reads it"
            assert isinstance(reason, str) and reason.startswith(REASON_KINDS), (
                f"{path}: {numeral!r} needs a reason starting with one of {REASON_KINDS}, got {reason!r}")


def test_a_typed_measurement_makes_the_test_fail():
    """The promise of the issue: adding `accuracy 0.937` to a markdown cell is caught."""
    path = NOTEBOOKS[3]  # 03_smote, whose dummy classifier's accuracy this once restated
    notebook = _notebook(path)
    allowed = _allowed()[path]
    assert unexplained_numerals(notebook, allowed) == []
    tampered = nbformat.from_dict(notebook)  # an in-memory copy; the file is untouched
    tampered.cells.insert(1, new_markdown_cell("The baseline reaches accuracy 0.937 on the test set."))
    assert unexplained_numerals(tampered, allowed) == ["cell 1: 0.937"]


@pytest.mark.parametrize(("text", "expected"), [
    ("accuracy 0.937", ["0.937"]),
    ("4,177 rows and 17.5 years, 10¹² times", ["4,177", "17.5", "10¹²"]),
    ("94 % accuracy; $10^{-3}$", ["94", "10", "3"]),
    ("bf16 and fp32 are names, so are gd-1, GPT-3 and H200", []),
    ("code is skipped: `train(epochs=10)` and\n```python\nx = 0.5\n```\n", []),
    ("Sentence ends with 12.", ["12"]),
])
def test_what_counts_as_a_numeral(text, expected):
    assert numerals(text) == expected


def test_numerals_rejects_non_text():
    with pytest.raises(TypeError, match="markdown must be a str"):
        numerals(["0.5"])
