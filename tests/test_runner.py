"""Tests for the headless course runner behind `sustainlab run-all`."""

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from sustainlab.chapters import CHAPTERS
from sustainlab.cli import main
from sustainlab.runner import course_notebooks, execute_notebook

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _write(path, *sources):
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), path)
    return path


def test_execute_notebook_saves_outputs_and_measures(tmp_path):
    path = _write(tmp_path / "ok.ipynb", "import os\nprint(os.environ['SUSTAINLAB_PROGRESS'])", "x = bytearray(50 * 2**20)")
    run = execute_notebook(path, save=True)
    assert run.ok and run.error is None
    assert run.seconds > 0 and run.peak_mb > 50, "peak memory should include the kernel's 50 MB allocation"
    saved = nbformat.read(path, as_version=4)
    assert saved.cells[0].outputs[0]["text"] == "0\n", "kernels must run with progress bars off"


def test_run_all_reports_failures_and_budget_overruns(tmp_path, capsys):
    good = _write(tmp_path / "good.ipynb", "print('hi')")
    bad = _write(tmp_path / "bad.ipynb", "raise ValueError('broken on purpose')")
    assert main(["run-all", str(good)]) == 0
    assert main(["run-all", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "bad.ipynb" in out and "FAIL" in out and "broken on purpose" in out
    assert main(["run-all", str(good), "--budget-seconds", "0.001"]) == 1
    assert "OVER BUDGET" in capsys.readouterr().out


def test_run_all_missing_notebook_is_a_clear_error(tmp_path, capsys):
    assert main(["run-all", str(tmp_path / "nope.ipynb")]) == 2
    assert "no such notebook" in capsys.readouterr().err


def test_unreadable_notebook_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable notebook"):
        execute_notebook(path)


def test_course_notebooks_in_chapter_order():
    names = [p.name for p in course_notebooks(ROOT)]
    assert names[0] == "00_welcome.ipynb"
    assert names == [Path(chapter.notebook).name for chapter in CHAPTERS]


TCP_WARNING = "Kernel is running over TCP without encryption"


@pytest.mark.skipif(__import__("os").name != "posix", reason="ZeroMQ IPC exists on POSIX systems only")
def test_run_all_kernels_start_without_the_tcp_warning(tmp_path, capfd):
    """The kernel's stderr is the terminal's (make course, make notebooks): its start must not warn about TCP."""
    path = _write(tmp_path / "quiet.ipynb", "import ipykernel.kernelapp as k\nprint(k.IPKernelApp.instance().transport)")
    run = execute_notebook(path, save=True)
    assert run.ok, run.error
    assert nbformat.read(path, as_version=4).cells[0].outputs[0]["text"] == "ipc\n"
    captured = capfd.readouterr()
    assert TCP_WARNING not in captured.err + captured.out


def test_course_notebooks_follow_the_chapter_table_not_the_file_names(tmp_path, monkeypatch):
    """The table decides the order (here reversed), missing chapters are skipped, unlisted notebooks come last."""
    import sustainlab.chapters

    (tmp_path / "notebooks").mkdir()
    table = tuple(reversed(CHAPTERS))
    for chapter in table[1:]:  # the first chapter of the reversed table has no notebook here
        _write(tmp_path / chapter.notebook, "pass")
    for extra in ("zz_extra.ipynb", "aa_extra.ipynb"):
        _write(tmp_path / "notebooks" / extra, "pass")
    monkeypatch.setattr(sustainlab.chapters, "CHAPTERS", table)
    names = [p.name for p in course_notebooks(tmp_path)]
    assert names == [Path(c.notebook).name for c in table[1:]] + ["aa_extra.ipynb", "zz_extra.ipynb"]
