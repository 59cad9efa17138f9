"""The notebook harness can fail: nbval catches a changed output, honours ignore tags and the sanitize file."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"

pytestmark = pytest.mark.slow


def _cell(source, stored_text, tags=()):
    cell = new_code_cell(source, execution_count=1)
    cell.outputs = [new_output("stream", name="stdout", text=stored_text)]
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def _run_nbval(tmp_path, cells, *plugins):
    path = tmp_path / "probe.ipynb"
    nbformat.write(new_notebook(cells=cells), path)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # keep the repo's own addopts out of this inner run
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(tmp_path / "pytest.ini"), "-p", "no:cacheprovider", "--nbval",
         "--nbval-current-env", f"--nbval-sanitize-with={SANITIZE}", *plugins, str(path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    return result


def test_matching_outputs_pass(tmp_path):
    result = _run_nbval(tmp_path, [_cell("print(6 * 7)", "42\n")])
    assert result.returncode == 0, result.stdout


def test_changed_output_fails(tmp_path):
    """If a notebook's checked output changes, nbval must fail (otherwise the harness proves nothing)."""
    result = _run_nbval(tmp_path, [_cell("print(6 * 7)", "43\n")])
    assert result.returncode == 1
    assert "1 failed" in result.stdout


def test_ignore_tag_and_sanitize_file(tmp_path):
    cells = [
        _cell("import time; print(time.time())", "12345.6\n", tags=["nbval-ignore-output"]),
        _cell("print(object())", "<object object at 0x7f00deadbeef>\n"),
    ]
    result = _run_nbval(tmp_path, cells)
    assert result.returncode == 0, result.stdout


def test_stderr_is_not_compared_through_the_shared_hook(tmp_path):
    """Warnings differ between library versions: the course's hook (conftest.py, the grader) leaves stderr out."""
    cell = new_code_cell("import sys; print('ok'); print('a new warning', file=sys.stderr)", execution_count=1)
    cell.outputs = [new_output("stream", name="stdout", text="ok\n"),
                    new_output("stream", name="stderr", text="an old warning\n")]
    assert _run_nbval(tmp_path, [cell]).returncode == 1, "without the hook nbval compares stderr"
    assert _run_nbval(tmp_path, [cell], "-p", "sustainlab.nbval_hooks").returncode == 0
