"""Support for ``tests/test_browser.py``: a throw-away JupyterLab server and a headless Chromium driven by Playwright.

Kept apart from the test so the test reads like what a learner does (open, run all, read, edit, re-run) while the
plumbing (installing Chromium, starting and stopping the server, waiting on JupyterLab's UI) lives here.

Environment switch ``SUSTAINLAB_BROWSER``:

- ``auto`` (default on a workstation): install Chromium with apt-get when missing and allowed (root, apt reachable);
  skip otherwise.
- ``require`` (default where ``CI=true``, as CI sets it): the same, but fail instead of skipping, so a broken set-up
  cannot hide behind a skip.
- ``off``: skip the browser test.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sustainlab.utils import PROGRESS_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO_ROOT / "notebooks"
#: Screenshots, the server log and a timing log of the last run; build/ is git-ignored.
ARTEFACTS = REPO_ROOT / "build" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# Without the networking flags Chromium stalls on a closed network (component updates, sync, field trials).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
BROWSER_ENV = "SUSTAINLAB_BROWSER"
KERNEL_NAME = "sustainlab"

#: The course's JupyterLab server settings, as `make lab` and Binder use them (one kernel, IPC, no news pop-up).
COURSE_CONFIG = REPO_ROOT / "jupyter-config"


def browser_mode() -> str:
    default = "require" if os.environ.get("CI", "").strip().lower() in ("true", "1") else "auto"
    mode = os.environ.get(BROWSER_ENV, default).strip().lower() or default
    if mode not in ("auto", "require", "off"):
        raise ValueError(f"{BROWSER_ENV} must be auto, require or off, got {mode!r}")
    return mode


def unavailable(reason: str):
    """Skip (or, with ``SUSTAINLAB_BROWSER=require``, fail) because the browser test cannot run here."""
    if browser_mode() == "require":
        pytest.fail(f"browser test required ({BROWSER_ENV}=require) but cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------------------------------------- Chromium


def ensure_chromium(timeout_s: float = 300) -> Path:
    """Path of Debian's Chromium, installing the ``chromium`` package with apt-get when it is missing and allowed.

    Calls :func:`unavailable` (skip, or fail under ``require``) when it cannot be provided: not Linux with apt-get,
    not root, or apt-get failing (e.g. no route to the Debian mirror).
    """
    if CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if shutil.which("apt-get") is None:
        unavailable(f"{CHROMIUM} is missing and there is no apt-get to install Debian's chromium package")
    if os.geteuid() != 0:
        unavailable(f"{CHROMIUM} is missing and installing it needs root: run `sudo apt-get install -y chromium`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Wait for a concurrent apt/dpkg run instead of failing on its lock.
    lock = ["-o", "DPkg::Lock::Timeout=120"]
    deadline = time.monotonic() + timeout_s
    for command in (["apt-get", *lock, "update", "-qq"], ["apt-get", *lock, "install", "-y", "-qq", "chromium"]):
        try:
            subprocess.run(
                command, env=env, check=True, capture_output=True, text=True,
                timeout=max(1.0, deadline - time.monotonic()),
            )
        except subprocess.TimeoutExpired:
            unavailable(f"`{' '.join(command)}` did not finish within {timeout_s:.0f} s")
        except subprocess.CalledProcessError as error:
            tail = (error.stderr or error.stdout or "").strip().splitlines()[-3:]
            unavailable(f"`{' '.join(command)}` failed (exit {error.returncode}): {' | '.join(tail)}")
    if not CHROMIUM.exists():
        unavailable(f"apt-get installed chromium but {CHROMIUM} does not exist")
    return CHROMIUM


def launch_chromium(playwright, executable: Path, profile_dir: Path, viewport=(1400, 1000)):
    """A headless Chromium with a fresh profile; Playwright never downloads a browser of its own here."""
    context = playwright.chromium.launch_persistent_context(
        str(profile_dir),
        executable_path=str(executable),
        headless=True,
        args=list(CHROMIUM_ARGS),
        viewport={"width": viewport[0], "height": viewport[1]},
    )
    context.set_default_timeout(30_000)
    return context


# ------------------------------------------------------------------------------------------------------------ timing


class Deadline:
    """One time budget shared by every wait of the browser test, so a hang fails in bounded time."""

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def seconds(self, cap_s: float) -> float:
        """Time allowed for the next wait: at most ``cap_s``, never past the budget."""
        remaining = self.remaining()
        if remaining <= 0:
            raise AssertionError(f"the browser test used up its {self.budget_s:.0f} s budget")
        return min(cap_s, remaining)

    def ms(self, cap_s: float) -> float:
        return 1000 * self.seconds(cap_s)


class Log:
    """Timestamped progress lines, printed (pytest shows them on failure or with -s) and kept in the artefacts."""

    def __init__(self, path: Path):
        self.path = path
        self.start = time.monotonic()
        path.write_text("")

    def __call__(self, message: str) -> None:
        line = f"[{time.monotonic() - self.start:6.1f} s] {message}"
        print(line, flush=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def reset_artefacts() -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTEFACTS.iterdir():
        if old.is_file() and old.suffix in (".png", ".log", ".txt"):
            old.unlink()
    return ARTEFACTS


# ----------------------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def learner_environment(scratch: Path) -> dict[str, str]:
    """The environment a learner's ``make lab`` has, with Jupyter's per-user folders moved into ``scratch``.

    conftest.py turns progress bars off for nbval (``SUSTAINLAB_PROGRESS=0``); a learner sees them, so this
    environment does not inherit that. The user-level Jupyter folders are replaced by empty ones so neither the
    developer's own settings nor a user-level kernel of the same name can change what the test sees: the only
    ``sustainlab`` kernel left is the one registered in this interpreter's prefix.
    """
    env = dict(os.environ)
    env.pop(PROGRESS_ENV, None)
    folders = {
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
    }
    for variable, name in folders.items():
        (scratch / name).mkdir(parents=True, exist_ok=True)
        env[variable] = str(scratch / name)
    env["JUPYTER_CONFIG_PATH"] = str(COURSE_CONFIG)  # what `make lab` sets, and nothing else
    return env


@dataclass
class LabServer:
    """A running JupyterLab serving a scratch copy of ``notebooks/``."""

    process: subprocess.Popen
    port: int
    token: str
    root: Path
    log_path: Path
    log_file: object = field(repr=False, default=None)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lab_url(self, notebook: str, workspace: str) -> str:
        # A workspace of its own, reset, so the page shows exactly this notebook and nothing restored from before.
        return f"{self.base_url}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"

    def api(self, path: str, method: str = "GET", timeout_s: float = 10):
        request = urllib.request.Request(
            f"{self.base_url}/api/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
        return json.loads(body) if body else None

    def sessions_for(self, notebook: str) -> list[dict]:
        return [s for s in self.api("sessions") if s.get("path") == notebook]

    def kernel_state(self, notebook: str) -> str | None:
        """``execution_state`` of the notebook's kernel as the server sees it (None before it has one)."""
        sessions = self.sessions_for(notebook)
        if not sessions:
            return None
        return self.api(f"kernels/{sessions[0]['kernel']['id']}").get("execution_state")

    def shut_down_kernels_of(self, notebook: str) -> None:
        for session in self.sessions_for(notebook):
            try:
                self.api(f"sessions/{session['id']}", method="DELETE", timeout_s=30)
            except (OSError, urllib.error.HTTPError):
                pass

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


@contextmanager
def jupyterlab(scratch: Path, log_path: Path, deadline: Deadline, startup_cap_s: float = 60, root: Path | None = None,
               extra_args: tuple[str, ...] = ()):
    """Start ``python -m jupyter lab`` of this interpreter on a free loopback port with a token; always stop it.

    It serves ``root``, by default a scratch copy of ``notebooks/``, with the course's server settings
    (:data:`COURSE_CONFIG`) and nothing from the user's own Jupyter folders.
    """
    if root is None:
        root = scratch / "notebooks"
        shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    env = learner_environment(scratch)
    port, token = free_port(), secrets.token_urlsafe(24)
    command = [
        sys.executable, "-m", "jupyter", "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        *extra_args,
    ]
    if os.geteuid() == 0:  # CI containers run as root; JupyterLab refuses that without the flag.
        command.append("--allow-root")
    log_file = log_path.open("w", encoding="utf-8")
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = LabServer(process=process, port=port, token=token, root=root, log_path=log_path, log_file=log_file)
    try:
        wait_until_serving(server, deadline.seconds(startup_cap_s))
        yield server
    finally:
        stop(server)


def wait_until_serving(server: LabServer, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while True:
        if server.process.poll() is not None:
            raise AssertionError(
                f"JupyterLab exited with code {server.process.returncode} while starting:\n{server.log_tail()}"
            )
        try:
            server.api("status", timeout_s=5)
            return
        except (OSError, urllib.error.HTTPError):
            pass
        if time.monotonic() > end:
            raise AssertionError(f"JupyterLab did not answer within {timeout_s:.0f} s:\n{server.log_tail()}")
        time.sleep(0.25)


def stop(server: LabServer) -> None:
    """Shut the server down cleanly (it stops its kernels), escalating to signals on its own process group."""
    process = server.process
    if process.poll() is None:
        try:
            server.api("shutdown", method="POST", timeout_s=5)
        except (OSError, urllib.error.HTTPError):
            pass
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)  # the group of the server this test started (start_new_session=True)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass
    if server.log_file is not None:
        server.log_file.close()


# --------------------------------------------------------------------------------------------------------- notebook

_PROMPTS_JS = """
(panel) => {
  const prompts = [...panel.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
      .map(p => p.textContent.trim());
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  return {
    running: prompts.filter(p => p.includes('*')).length,
    numbered: prompts.filter(p => /^\\[\\d+\\]:$/.test(p)).length,
    status: indicator ? indicator.getAttribute('data-status') : null,
  };
}
"""


def read_notebook(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def source_of(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def check_id(cell: dict) -> str | None:
    return cell.get("metadata", {}).get("sustainlab", {}).get("check")


class NotebookPage:
    """One notebook open in JupyterLab, seen and driven the way a learner does it (menus, editor, keyboard)."""

    def __init__(self, page, server: LabServer, notebook: str, deadline: Deadline, log: Log):
        self.page = page
        self.server = server
        self.notebook = notebook
        self.deadline = deadline
        self.log = log
        self.path = server.root / notebook
        self.cells = read_notebook(self.path)["cells"]
        self.screenshots: list[Path] = []

    # ---- locating things
    @property
    def panel(self):
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first

    def cell(self, index: int):
        """The DOM cell for ``self.cells[index]`` (markdown and code cells alike, in notebook order)."""
        return self.panel.locator(".jp-Notebook .jp-Cell").nth(index)

    def output_text(self, index: int) -> str:
        outputs = self.cell(index).locator(".jp-OutputArea-output")
        return "\n".join(outputs.nth(i).text_content() or "" for i in range(outputs.count()))

    def index_where(self, predicate) -> int:
        for index, cell in enumerate(self.cells):
            if predicate(cell):
                return index
        raise AssertionError(f"{self.notebook}: no cell matches {predicate}")

    # ---- actions
    def open(self, workspace: str, cap_s: float = 60) -> None:
        self.page.goto(self.server.lab_url(self.notebook, workspace), timeout=self.deadline.ms(cap_s))
        cells = self.panel.locator(".jp-Notebook .jp-Cell")
        cells.nth(len(self.cells) - 1).wait_for(state="attached", timeout=self.deadline.ms(cap_s))
        shown = cells.count()
        assert shown == len(self.cells), f"JupyterLab shows {shown} cells, the file has {len(self.cells)}"
        self.log(f"{self.notebook}: JupyterLab shows its {shown} cells")
        self.wait_for_kernel_idle(cap_s)

    def wait_for_kernel_idle(self, cap_s: float) -> None:
        end = time.monotonic() + self.deadline.seconds(cap_s)
        while True:
            state = self._state()
            if state["status"] == "idle" and self.server.kernel_state(self.notebook) == "idle":
                return
            if time.monotonic() > end:
                raise AssertionError(f"{self.notebook}: kernel not idle in time (UI {state}, server log below)\n"
                                     + self.server.log_tail())
            self.page.wait_for_timeout(250)

    def menu(self, menu: str, item: str) -> None:
        """Click ``menu`` in the menu bar, then the entry labelled exactly ``item``."""
        self.page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(menu)}$")).click()
        self.page.locator(".lm-Menu .lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()

    def clear_all_outputs(self) -> None:
        self.menu("Edit", "Clear Outputs of All Cells")
        self.page.wait_for_function(
            "(panel) => panel.querySelectorAll('.jp-OutputArea-output').length === 0",
            arg=self.panel.element_handle(), timeout=self.deadline.ms(15),
        )

    def run_all(self, cap_s: float) -> float:
        """Run → Run All Cells, then wait until every cell has finished and the kernel is idle; returns seconds."""
        start = time.monotonic()
        self.menu("Run", "Run All Cells")
        self.wait_until_run_finished(cap_s)
        return time.monotonic() - start

    def wait_until_run_finished(self, cap_s: float) -> None:
        # Run All queues every cell at once (all prompts become [*]); when a cell raises, JupyterLab aborts the rest
        # and resets their prompts. "Finished" is therefore: the run has started (some prompt numbered), no prompt
        # shows [*], and the kernel is idle in the UI and on the server, twice in a row (the kernel flips to idle
        # for an instant between two queued cells).
        end = time.monotonic() + self.deadline.seconds(cap_s)
        settled = 0
        while True:
            state = self._state()
            done = state["numbered"] > 0 and state["running"] == 0 and state["status"] == "idle"
            if done and self.server.kernel_state(self.notebook) == "idle":
                settled += 1
                if settled >= 2:
                    return
            else:
                settled = 0
            if time.monotonic() > end:
                raise AssertionError(f"{self.notebook}: cells still running after {cap_s:.0f} s (UI state {state})")
            self.page.wait_for_timeout(300)

    def _state(self) -> dict:
        return self.panel.evaluate(_PROMPTS_JS)

    def executed_count(self) -> int:
        return self._state()["numbered"]

    def save(self, cap_s: float = 20) -> dict:
        """File → Save Notebook, wait until the file on disk is the saved one, and return its JSON."""
        before = self.path.stat().st_mtime_ns
        self.menu("File", "Save Notebook")
        end = time.monotonic() + self.deadline.seconds(cap_s)
        dirty_tab = self.page.locator(".lm-TabBar-tab.lm-mod-current.jp-mod-dirty")
        while self.path.stat().st_mtime_ns == before or dirty_tab.count():
            if time.monotonic() > end:
                raise AssertionError(f"{self.notebook}: not saved within {cap_s:.0f} s")
            self.page.wait_for_timeout(200)
        return read_notebook(self.path)

    def replace_line(self, index: int, old: str, new: str) -> None:
        """Edit cell ``index`` like a learner: click the line reading ``old``, select it, type ``new`` over it."""
        editor = self.cell(index).locator(".cm-content")
        line = editor.locator(".cm-line", has_text=re.compile(f"^\\s*{re.escape(old)}\\s*$"))
        line.click()
        self.page.keyboard.press("End")
        self.page.keyboard.press("Shift+Home")  # CodeMirror: to the first non-blank character, keeping the indentation
        self.page.keyboard.type(new)
        text = editor.text_content() or ""
        assert new in text and old not in text, f"the editor did not take the edit; it now reads:\n{text}"

    def run_cell_and_next(self) -> None:
        """Shift+Enter twice: run the cell being edited, then the one below it (its check cell)."""
        self.page.keyboard.press("Shift+Enter")
        self.page.keyboard.press("Shift+Enter")

    # ---- artefacts
    def screenshot(self, name: str) -> Path:
        """A full-page screenshot with the viewport stretched to the notebook's height, so every cell is in it."""
        path = ARTEFACTS / f"{name}.png"
        size = self.page.viewport_size
        try:
            # Height of the cells themselves: the scroller's scrollHeight also counts JupyterLab's scroll-past-end
            # padding, which grows with the viewport.
            needed = self.panel.evaluate(
                """(panel) => {
                     const scroller = panel.querySelector('.jp-WindowedPanel-outer');
                     const cells = panel.querySelectorAll('.jp-Notebook .jp-Cell');
                     if (!scroller || !cells.length) return 0;
                     const bottom = cells[cells.length - 1].getBoundingClientRect().bottom
                         - scroller.getBoundingClientRect().top + scroller.scrollTop;
                     return window.innerHeight - scroller.clientHeight + bottom;
                   }"""
            )
            if needed > size["height"]:
                self.page.set_viewport_size({"width": size["width"], "height": min(int(needed) + 40, 16000)})
            self.panel.evaluate(
                """(panel) => { const s = panel.querySelector('.jp-WindowedPanel-outer'); if (s) s.scrollTop = 0; }"""
            )
            self.page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            self.page.screenshot(path=str(path), full_page=True)
        finally:
            self.page.set_viewport_size(size)
        self.screenshots.append(path)
        self.log(f"screenshot {path.relative_to(REPO_ROOT)}")
        return path


@contextmanager
def artefacts_on_failure(notebook_page: NotebookPage, name: str):
    """On any failure, save a last screenshot and name every artefact in the error; always close the page and
    shut the notebook's kernel down (the next notebook must not compete with it for the CPU)."""
    try:
        yield notebook_page
    except BaseException as error:
        try:
            notebook_page.screenshot(f"{name}-FAILED")
        except Exception as screenshot_error:  # the page itself may be what failed
            notebook_page.log(f"no failure screenshot: {screenshot_error}")
        note = (
            f"browser test artefacts in {ARTEFACTS}: "
            + ", ".join(p.name for p in notebook_page.screenshots)
            + f"; server log {notebook_page.server.log_path.name}; step log browser-test.log"
        )
        print(note)
        if hasattr(error, "add_note"):
            error.add_note(note)
        raise
    finally:
        try:
            notebook_page.page.close()
        finally:
            notebook_page.server.shut_down_kernels_of(notebook_page.notebook)
