"""Command 1 (`make lab`) serves the course, and set-up is not repeated when nothing changed.

These run `make` for real (and so need its venv); tests/test_lab_config.py checks the recipe and its pieces without.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAMP = ROOT / ".venv" / ".sustainlab-installed"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("make") is None or not STAMP.exists(), reason="needs make and a `make setup` venv"),
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_setup_is_not_repeated_when_nothing_changed():
    """A second `make lab` / `make test` must not reinstall: the install stamp is up to date."""
    result = subprocess.run(["make", "-q", str(STAMP.relative_to(ROOT))], cwd=ROOT)
    assert result.returncode == 0, "make considers the environment out of date right after set-up"
    dry_run = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "pip install" not in dry_run


def test_make_lab_serves_the_welcome_notebook(tmp_path):
    port, token = _free_port(), "sustainlab-test-token"
    args = f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --IdentityProvider.token={token}"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    server = subprocess.Popen(
        ["make", "lab", f"LAB_ARGS={args}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        # make lab serves the repository with the learner's exercises/ (written on first use) next to notebooks/.
        url = f"http://127.0.0.1:{port}/api/contents/exercises/00_welcome.ipynb?token={token}"
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    model = json.load(response)
                break
            except OSError:
                assert server.poll() is None, "make lab exited early"
                assert time.monotonic() < deadline, "JupyterLab did not answer within 90 s"
                time.sleep(0.5)
        assert model["type"] == "notebook"
        assert model["content"]["metadata"]["kernelspec"]["name"] == "sustainlab"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs?token={token}", timeout=5) as response:
            assert "sustainlab" in json.load(response)["kernelspecs"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as response:
            assert response.status == 200
    finally:
        _stop(server)


def _stop(process):
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
