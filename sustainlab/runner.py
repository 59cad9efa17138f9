"""Run notebooks headless, each in a fresh kernel, and measure their time and peak memory against a budget.

Backs ``sustainlab run-all`` (and ``make course`` / ``make notebooks``). The budget comes from the course conventions:
every notebook runs top to bottom on a Binder-sized machine (2 cores, 2 GB) in 90 s.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .utils import PROGRESS_ENV, progress

__all__ = [
    "DEFAULT_BUDGET_S",
    "DEFAULT_BUDGET_MB",
    "KERNEL_NAME",
    "NotebookRun",
    "quiet_environment",
    "execute_notebook",
    "course_notebooks",
    "format_table",
    "run_all",
    "quiet_variables",
    "kernel_config",
]

DEFAULT_BUDGET_S = 90.0
DEFAULT_BUDGET_MB = 2048.0
#: The kernel of the interpreter running this code, so notebooks see the same environment as the runner.
KERNEL_NAME = "python3"


@dataclass
class NotebookRun:
    """Outcome of executing one notebook."""

    path: Path
    seconds: float
    peak_mb: float
    error: str | None = None
    over_budget: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.over_budget

    @property
    def status(self) -> str:
        if self.error is not None:
            return "FAIL"
        return "OVER BUDGET" if self.over_budget else "pass"


class _PeakMemory:
    """Polls the resident memory of a process tree in a background thread and keeps the maximum."""

    def __init__(self, get_pid, interval_s: float = 0.05):
        self._get_pid = get_pid
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.peak_bytes = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False

    def _run(self):
        import psutil

        while not self._stop.is_set():
            pid = self._get_pid()
            if pid:
                try:
                    process = psutil.Process(pid)
                    total = process.memory_info().rss
                    for child in process.children(recursive=True):
                        try:
                            total += child.memory_info().rss
                        except psutil.Error:
                            pass
                    self.peak_bytes = max(self.peak_bytes, total)
                except psutil.Error:
                    pass
            self._stop.wait(self._interval_s)


def quiet_variables(base: dict | None = None) -> dict:
    """A copy of ``base`` (default: ``os.environ``) with what the project's runners give a notebook kernel: no
    progress bars, no GUI backend, quiet codecarbon. The caller's environment is left as it is."""
    env = dict(os.environ if base is None else base)
    env[PROGRESS_ENV] = "0"
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    env.setdefault("CODECARBON_LOG_LEVEL", "error")
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    # No rows in the learner's carbon ledger from runner or test kernels, unless a ledger file is named explicitly.
    env.setdefault("SUSTAINLAB_LEDGER", "off")
    return env


def quiet_environment() -> None:
    """Apply :func:`quiet_variables` to ``os.environ`` (for kernels started by this process, as ``run-all`` does)."""
    os.environ.update(quiet_variables())


def kernel_config():
    """Configuration for one of the course's own local kernels (run-all, grading): talk to it over IPC.

    Over TCP every kernel start prints ipykernel's warning that traffic is unencrypted; these kernels never leave
    the machine, so on POSIX systems they use Unix-domain sockets (IPC) instead. Each call names a fresh socket path
    in Jupyter's runtime folder: an IPC path is relative to each process's working folder unless made absolute (the
    kernel runs in the notebook's folder), and two kernels started at once must never pick the same path. Windows
    has no ZeroMQ IPC, and a runtime folder too deep for a Unix socket path (about 100 bytes) cannot hold one: both
    keep TCP. ``jupyter-config/jupyter_server_config.py`` sets the same transport for ``make lab``.

    Returns
    -------
    traitlets.config.Config
        For *one* kernel: pass it as ``config=`` to an ``nbclient.NotebookClient`` or a
        ``jupyter_client.KernelManager``.
    """
    import uuid

    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets.config import Config

    config = Config()
    prefix = Path(jupyter_runtime_dir()).resolve() / f"sustainlab-{uuid.uuid4().hex[:12]}-ipc"
    if os.name == "posix" and len(str(prefix)) + len("-99") < 100:
        prefix.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = str(prefix)
    return config


def execute_notebook(
    path: str | Path,
    *,
    save: bool = False,
    cell_timeout_s: float | None = 600,
    budget_s: float = DEFAULT_BUDGET_S,
    budget_mb: float = DEFAULT_BUDGET_MB,
) -> NotebookRun:
    """Execute the notebook at ``path`` top to bottom in a fresh kernel, in its own folder.

    Parameters
    ----------
    path : path-like
        The ``.ipynb`` file.
    save : bool, default False
        Write the executed notebook (with its new outputs) back to ``path``; this is how the stored reference outputs
        that nbval compares are produced.
    cell_timeout_s : float or None
        Longest a single cell may run.
    budget_s, budget_mb : float
        Limits on wall time and on the kernel's peak resident memory; exceeding either is reported in
        ``over_budget``.

    Returns
    -------
    NotebookRun
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No notebook at {path}.")
    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as error:
        raise ValueError(f"{path} is not a readable notebook: {error}") from error

    client = NotebookClient(
        notebook,
        timeout=cell_timeout_s,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(path.parent.resolve())}},
        record_timing=False,
        config=kernel_config(),
    )

    def kernel_pid():
        provisioner = getattr(getattr(client, "km", None), "provisioner", None)
        return getattr(provisioner, "pid", None)

    error = None
    start = time.perf_counter()
    with _PeakMemory(kernel_pid) as memory:
        try:
            # The kernel's environment (the caller's is left alone); it learns its notebook's name as under
            # JupyterLab (the carbon ledger's chapter column).
            client.execute(env={**quiet_variables(), "JPY_SESSION_NAME": str(path.resolve())})
        except CellExecutionError as failure:
            error = _first_line_of_error(failure)
        except CellTimeoutError:
            error = f"a cell ran longer than {cell_timeout_s} s"
        except DeadKernelError:
            error = "the kernel died (out of memory?)"
    seconds = time.perf_counter() - start
    peak_mb = memory.peak_bytes / 2**20

    run = NotebookRun(path=path, seconds=seconds, peak_mb=peak_mb, error=error)
    if seconds > budget_s:
        run.over_budget.append(f"time {seconds:.0f} s > {budget_s:.0f} s")
    if peak_mb > budget_mb:
        run.over_budget.append(f"memory {peak_mb:.0f} MB > {budget_mb:.0f} MB")
    if save and error is None:
        nbformat.write(notebook, path)
    return run


def _first_line_of_error(failure: Exception) -> str:
    lines = [line for line in str(failure).splitlines() if line.strip()]
    # nbclient puts the exception name and message last.
    return lines[-1][:200] if lines else type(failure).__name__


def course_notebooks(root: str | Path = ".") -> list[Path]:
    """The course's notebooks in chapter order: the chapters table first, then any other ``notebooks/*.ipynb``."""
    from .chapters import CHAPTERS

    root = Path(root)
    listed = [root / chapter.notebook for chapter in CHAPTERS if (root / chapter.notebook).exists()]
    others = sorted(p for p in (root / "notebooks").glob("*.ipynb") if p not in listed)
    return listed + others


def format_table(runs: list[NotebookRun], budget_s: float, budget_mb: float) -> str:
    """The run-all summary as a plain-text table."""
    header = f"{'notebook':<32} {'seconds':>8} {'peak MB':>8}  status"
    lines = [header, "-" * len(header)]
    for run in runs:
        status = run.status
        detail = run.error or "; ".join(run.over_budget)
        lines.append(f"{run.path.name:<32} {run.seconds:>8.1f} {run.peak_mb:>8.0f}  {status}" + (f" ({detail})" if detail else ""))
    total = sum(run.seconds for run in runs)
    lines.append("-" * len(header))
    lines.append(f"{'total':<32} {total:>8.1f} {'':>8}  budget per notebook: {budget_s:.0f} s, {budget_mb:.0f} MB")
    return "\n".join(lines)


def run_all(
    paths: list[Path],
    *,
    save: bool = False,
    budget_s: float = DEFAULT_BUDGET_S,
    budget_mb: float = DEFAULT_BUDGET_MB,
) -> list[NotebookRun]:
    """Execute each notebook in ``paths`` in order, with a progress bar; returns one :class:`NotebookRun` each."""
    runs = []
    # Explicit `disable=False`: execute_notebook switches the course's progress bars off for the kernels it starts.
    with progress(paths, desc="notebooks", unit="nb", disable=False) as bar:
        for path in bar:
            bar.set_postfix_str(Path(path).name)
            runs.append(execute_notebook(path, save=save, budget_s=budget_s, budget_mb=budget_mb))
    return runs
