"""Numbers in prose: find the numerals a learner reads in a notebook's markdown, so that a test can vet each one.

The course's rule (``README.md``, *Numbers in prose*): a measured number is produced by code, never typed. Typed
numerals are allowed only with a reason — a cited published figure, a formula constant, a year, a chapter number, a
setting the code uses — listed per notebook in ``tests/prose_numbers_allowed.yaml``; ``tests/test_prose_numbers.py``
fails on any other.

What counts as a numeral: a run of digits, with decimal points, thousands separators and superscript digits
(``0.937``, ``4,177``, ``10¹²``), not glued to a letter (``bf16``, ``fp32`` and ``H200`` are names). Code spans and
fenced code are skipped (they quote code, whose values the code itself computes), and so are names ending in a
hyphenated number, such as the exercise id ``gd-1`` or the model ``GPT-3``.

Examples
--------
>>> numerals("Accuracy 0.937 on 4,177 rows, $10^{12}$ times GPT-3; see `fit(n=5)` and exercise gd-1.")
['0.937', '4,177', '10', '12']
"""

from __future__ import annotations

import re

__all__ = ["numerals", "markdown_numerals"]

_FENCED = re.compile(r"```.*?```", re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_NAME_WITH_NUMBER = re.compile(r"\b[A-Za-z]\w*(?:-[A-Za-z]\w*)*-\d+\b")
_NUMERAL = re.compile(r"(?<![\w.,])\d+(?:[.,]\d+)*[⁰¹²³⁴⁵⁶⁷⁸⁹]*|(?<![\w])[⁰¹²³⁴⁵⁶⁷⁸⁹]+")


def numerals(markdown: str) -> list[str]:
    """Every numeral in ``markdown`` outside code, in order (see the module for what counts)."""
    if not isinstance(markdown, str):
        raise TypeError(f"markdown must be a str, got {type(markdown).__name__}.")
    text = _CODE_SPAN.sub(" ", _FENCED.sub(" ", markdown))
    text = _NAME_WITH_NUMBER.sub(" ", text)
    return [match.group().rstrip(".,") for match in _NUMERAL.finditer(text)]


def markdown_numerals(notebook) -> list[tuple[int, str]]:
    """``(cell index, numeral)`` for every numeral in the markdown cells of ``notebook`` (an nbformat node)."""
    found = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            found.extend((index, numeral) for numeral in numerals(cell.source))
    return found
