"""Every error of the `sustainlab` command is one line on stderr and exit status 2 (a usage error, not a crash)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sustainlab.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A scratch working folder holding a file, an empty folder and a copy of the welcome notebook."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file.txt").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "course").mkdir()
    shutil.copy(ROOT / "notebooks" / "00_welcome.ipynb", tmp_path / "course")
    return tmp_path


def run(argv) -> int:
    """The exit status `sustainlab ARGV` would have: argparse's usage errors exit through SystemExit."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run-all", "--budget-seconds", "-1"], "--budget-seconds: must be a positive number, got -1"),
        (["run-all", "--budget-seconds", "0"], "--budget-seconds: must be a positive number, got 0"),
        (["run-all", "--budget-mb", "lots"], "--budget-mb: expected a number, got 'lots'"),
        (["run-all", "--budget-mb", "nan"], "--budget-mb: must be a positive number, got nan"),
        (["run-all", "missing.ipynb"], "no such notebook: missing.ipynb"),
        (["run-all", "--root", "empty"], "no notebooks found under empty/notebooks"),
        (["release", "course", "a-file.txt"], "a-file.txt is a file: the release needs a folder"),
        (["release", "nonexistent", "out"], "the notebooks folder or file nonexistent does not exist."),
        (["release", "out"], "the notebooks folder or file notebooks does not exist (SRC defaults to notebooks/"),
        (["release", "empty", "out"], "no notebooks (*.ipynb) found in empty"),
        (["exercises", "--src", "nonexistent"], "the notebooks folder nonexistent does not exist."),
        (["exercises", "--src", "course", "--dest", "a-file.txt"], "a-file.txt is a file"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run-all", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
)
def test_cli_errors_are_one_line_with_exit_status_2(place, capsys, argv, expected):
    status = run(argv)
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.endswith("\n"), f"not one line: {err!r}"
    assert expected in err
    assert "Traceback" not in err
