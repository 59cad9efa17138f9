"""What `make lab` opens: the learner's exercise copies, on the welcome exercise, with the course's server settings.

`make lab` itself would (re)install the environment, so these tests check its recipe with `make -n` and run its
pieces directly: `sustainlab exercises`, then JupyterLab with `jupyter-config/` (one kernel, IPC transport, no news
pop-up) on a scratch copy of the repository layout.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import tomllib
import urllib.request
from pathlib import Path

import nbformat
import pytest
from jupyter_client import BlockingKernelClient

import browser_support as bs
from sustainlab.cli import main
from sustainlab.exercises import write_exercises
from sustainlab.notebook import has_solution, is_hidden_check, student_version

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TCP_WARNING = "Kernel is running over TCP without encryption"


def _lab_recipe() -> list[str]:
    """The commands `make lab` runs once the environment is installed (set-up treated as done: ``-o STAMP``)."""
    # Under `make test` this runs as a sub-make: without the parent's variables it prints no "Entering directory".
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.sustainlab-installed", "lab"], cwd=ROOT,
        capture_output=True, text=True, check=True, env=env,
    )
    return [line.strip() for line in result.stdout.replace("\\\n", " ").splitlines() if line.strip()]


def _welcome_url() -> str:
    return re.search(r"^WELCOME\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)


# ------------------------------------------------------------------------------------------------ exercise copies


def test_exercises_are_the_student_versions_of_every_notebook(tmp_path):
    result = write_exercises(NOTEBOOKS, tmp_path / "exercises")
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert sorted(p.name for p in result.written) == names and not result.kept
    for name in names:
        copy = nbformat.read(tmp_path / "exercises" / name, as_version=4)
        assert copy == student_version(nbformat.read(NOTEBOOKS / name, as_version=4))
        assert not any(has_solution(cell) or is_hidden_check(cell) for cell in copy.cells)
    welcome = (tmp_path / "exercises" / "00_welcome.ipynb").read_text()
    assert "raise NotImplementedError()" in welcome and "watts * hours / 1000" not in welcome


def test_exercises_never_overwrite_a_learners_work_and_add_new_notebooks(tmp_path):
    src, dest = tmp_path / "notebooks", tmp_path / "exercises"
    src.mkdir()
    shutil.copy(NOTEBOOKS / "00_welcome.ipynb", src)
    write_exercises(src, dest)
    mine = dest / "00_welcome.ipynb"
    mine.write_text("my work, even if it is not a notebook any more")
    before = mine.stat().st_mtime_ns
    shutil.copy(NOTEBOOKS / "01_gradient_descent.ipynb", src)  # the course gains a chapter
    result = write_exercises(src, dest)
    assert [p.name for p in result.written] == ["01_gradient_descent.ipynb"]
    assert [p.name for p in result.kept] == ["00_welcome.ipynb"]
    assert mine.read_text() == "my work, even if it is not a notebook any more" and mine.stat().st_mtime_ns == before
    again = write_exercises(src, dest)
    assert not again.written and "up to date" in again.summary()
    assert not list(dest.glob(".*.tmp")), "a temporary file was left behind"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--src", "{tmp}/nope"], "the notebooks folder {tmp}/nope does not exist."),
        (["--src", "{tmp}/file.txt"], "{tmp}/file.txt is a file"),
        (["--src", "{tmp}/empty"], "no notebooks (*.ipynb) in {tmp}/empty."),
        (["--dest", "{tmp}/file.txt"], "{tmp}/file.txt is a file: the exercises need a folder."),
    ],
)
def test_exercises_command_errors_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    args = [a.format(tmp=tmp_path) for a in args]
    if "--src" not in args:
        args += ["--src", str(NOTEBOOKS)]
    if "--dest" not in args:
        args += ["--dest", str(tmp_path / "exercises")]
    assert main(["exercises", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(tmp=tmp_path) in err


def test_exercises_are_ignored_by_git_and_not_collected_by_pytest():
    if shutil.which("git") is None:
        pytest.skip("needs git")
    ignored = subprocess.run(["git", "check-ignore", "-q", "exercises/00_welcome.ipynb"], cwd=ROOT)
    assert ignored.returncode == 0, "exercises/ must be git-ignored"
    testpaths = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["testpaths"]
    assert all(not Path(path).parts or Path(path).parts[0] != "exercises" for path in testpaths)
    assert "." not in testpaths and "exercises" not in testpaths


# --------------------------------------------------------------------------------------------------- make lab


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_lab_writes_the_exercises_then_opens_the_welcome_exercise():
    exercises, lab = _lab_recipe()
    assert shlex.split(exercises) == [".venv/bin/sustainlab", "exercises", "--src", "notebooks", "--dest", "exercises"]
    words = shlex.split(lab)
    assert words[0] == f"JUPYTER_CONFIG_PATH={ROOT / 'jupyter-config'}" or words[0].startswith(
        f"JUPYTER_CONFIG_PATH={ROOT / 'jupyter-config'}"
    )
    assert words[1:3] == [".venv/bin/jupyter", "lab"]
    assert "--ServerApp.root_dir=." in words
    assert f"--LabApp.default_url=/lab/tree/{_welcome_url()}" in words
    assert _welcome_url() == "exercises/00_welcome.ipynb"


@pytest.mark.slow
def test_course_server_opens_the_welcome_exercise_with_one_kernel_no_news_and_no_tcp_warning(tmp_path, request):
    """The server `make lab` starts, on a scratch copy of the layout (notebooks/ and the exercises written from it)."""
    root = tmp_path / "course"
    shutil.copytree(NOTEBOOKS, root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    assert main(["exercises", "--src", str(root / "notebooks"), "--dest", str(root / "exercises")]) == 0
    log = tmp_path / "server.log"
    welcome = _welcome_url()
    # A short scratch folder: the kernels' IPC socket paths live in its runtime/ and must stay under ~100 bytes.
    scratch = Path(tempfile.mkdtemp(prefix="sl-lab-"))
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    with bs.jupyterlab(scratch, log, bs.Deadline(120), root=root,
                       extra_args=(f"--LabApp.default_url=/lab/tree/{welcome}",)) as server:
        # The page a browser is sent to: the welcome exercise, not the Launcher.
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(f"{server.base_url}/?token={server.token}", timeout=10)
        assert redirect.value.code in (301, 302)
        assert redirect.value.headers["Location"].split("?")[0].endswith(f"/lab/tree/{welcome}")
        assert server.api(f"contents/{welcome}")["type"] == "notebook"

        assert set(server.api("kernelspecs")["kernelspecs"]) == {bs.KERNEL_NAME}, "only Python (sustainlab)"
        settings = _get_json(server, "lab/api/settings/@jupyterlab/apputils-extension:notification")
        defaults = {name: spec.get("default") for name, spec in settings["schema"]["properties"].items()}
        assert defaults["fetchNews"] == "false" and defaults["checkForUpdates"] is False

        kernel = _get_json(server, "api/kernels", body={})  # no name: the server's default kernel
        try:
            assert kernel["name"] == bs.KERNEL_NAME
            connection_file = scratch / "runtime" / f"kernel-{kernel['id']}.json"
            assert json.loads(connection_file.read_text())["transport"] == "ipc"
            client = BlockingKernelClient(connection_file=str(connection_file))
            client.load_connection_file()
            client.start_channels()
            try:
                client.wait_for_ready(timeout=60)  # the kernel is past its socket set-up, where it would warn
            finally:
                client.stop_channels()
        finally:
            server.api(f"kernels/{kernel['id']}", method="DELETE", timeout_s=30)
    text = log.read_text()
    assert "Kernel started" in text and TCP_WARNING not in text


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _get_json(server, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.base_url}/{path}", data=data,
                                     headers={"Authorization": f"token {server.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)
