"""Run All on every student copy: the first thing a learner does with a fresh exercise notebook.

Each notebook in notebooks/ goes through the release transform (solutions become ``raise NotImplementedError()``)
and is executed top to bottom in a fresh kernel, errors allowed so that every cell runs. A learner must see no
traceback anywhere: a check cell prints its one ``✘ <id>: <hint>`` line, and a cell that uses an unfinished
answer says so instead of raising (00_welcome's plot shows the pattern).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from sustainlab.checks import FAIL_MARK, PASS_MARK
from sustainlab.notebook import check_id, student_version
from sustainlab.runner import KERNEL_NAME, kernel_config, quiet_environment

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300

pytestmark = pytest.mark.slow


def run_student_copy(path: Path, folder: Path):
    """The executed student copy of ``path`` (written to ``folder``, run there), every cell run."""
    from nbclient import NotebookClient

    quiet_environment()
    student = student_version(nbformat.read(path, as_version=4))
    copy = folder / path.name
    nbformat.write(student, copy)
    client = NotebookClient(
        student, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME, allow_errors=True, record_timing=False,
        resources={"metadata": {"path": str(folder)}}, config=kernel_config(),
    )
    client.execute()
    return student


def tracebacks(notebook) -> list[str]:
    """One line per problem a learner would see: an error output anywhere, or a check cell without its one line."""
    problems = []
    code_index = -1
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        code_index += 1
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        first_line = cell.source.strip().splitlines()[0][:70] if cell.source.strip() else ""
        for error in errors:
            problems.append(f"code cell {code_index} ({first_line!r}): {error.get('ename')}: {error.get('evalue')}")
        cid = check_id(cell)
        if cid is not None and not errors:
            text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout").strip()
            if not text.startswith((f"{FAIL_MARK} {cid}", f"{PASS_MARK} {cid}")):
                problems.append(f"code cell {code_index}: check {cid} printed {text[:120]!r}, not its one line")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_run_all_on_the_student_copy_shows_no_traceback(path, tmp_path):
    executed = run_student_copy(path, tmp_path)
    problems = tracebacks(executed)
    assert not problems, f"{path.name}, student copy, Run All:\n" + "\n".join(problems)
