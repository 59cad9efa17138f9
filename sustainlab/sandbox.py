"""Run one untrusted command per submission, contained: the edge of the grader that talks to the operating system.

Three modes, best first (:func:`detect_mode` picks the best this machine allows; ``sustainlab grade`` names it):

``bubblewrap``
    Debian's ``bwrap``: own PID, network (loopback only), IPC, UTS, cgroup and user namespaces; a new session; a
    private ``/tmp``; only the scratch folder writable; the interpreter, the environment and a copy of the package
    taken before grading mounted read-only; nothing else of the host file system visible (no release, manifest,
    instructor notebooks, other submissions, home directory or ``/etc``). The sandbox's init dies with its parent,
    and with it every process of the submission.
``namespaces``
    ``unshare`` (root): own PID and IPC namespaces, so killing the namespace's init kills everything the submission
    started, and the grader is not visible through ``/proc``. The file system is shared: the guarantees of the
    evidence split still hold, but the submission could read other files.
``processes``
    A new session and process-tree kill only.

In every mode: resource limits (address space, CPU time, file size, no core files; processes, memory and CPU
accounting of the whole tree through a cgroup when one is writable), a wall-clock limit after which everything is killed, output sent
to a file capped by the file-size limit (never an unbounded pipe into the grader), and reads of what the submission
left behind through :func:`read_capped` (regular files only, no symlinks, no FIFOs, size-capped).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = [
    "Limits",
    "Contained",
    "inside",
    "package_path",
    "run_contained",
    "become_subreaper",
    "descendants",
    "kill_new_descendants",
    "read_capped",
]

MODES = ("bubblewrap", "namespaces", "processes")
#: Where the scratch folder and the package copy appear inside the bubblewrap sandbox.
SANDBOX_SCRATCH = "/scratch"
SANDBOX_PACKAGE = "/opt/sustainlab-package"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one submission's whole process tree (0: no limit)."""

    memory_mb: int = 4096
    processes: int = 256
    cpu_s: float = 600.0
    file_mb: int = 256
    wall_s: float = 300.0


@dataclass
class Contained:
    """What happened to one contained run."""

    returncode: int | None
    killed: bool
    seconds: float
    cpu_s: float
    output_tail: str
    mode: str


# The first process inside the containment: sets the limits, joins the cgroups, then becomes the command. (A
# preexec_fn is unsafe in a threaded grader, so this is a separate interpreter.)
_LAUNCHER = r"""
import json, os, resource, sys
spec = json.loads(sys.argv[1])
for name, value in spec["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
for procs in spec["cgroups"]:
    with open(procs, "w") as stream:
        stream.write(str(os.getpid()))
os.execvp(spec["argv"][0], spec["argv"])
"""


@lru_cache(maxsize=None)
def detect_mode(preferred: str | None = None) -> str:
    """The best containment mode that works here (``preferred`` caps it, e.g. ``"processes"`` to disable sandboxing)."""
    order = MODES[MODES.index(preferred):] if preferred in MODES else MODES
    for mode in order:
        if mode == "processes":
            return mode
        try:
            probe = subprocess.run(
                _wrap(mode, [_interpreter(), "-c", "print('ok')"], Path(tempfile.gettempdir()), None),
                capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0 and probe.stdout.strip() == b"ok":
            return mode
    return "processes"


def _interpreter() -> str:
    # The venv's own interpreter path (inside the resolved prefix), so the sandbox needs only the prefixes bound.
    return str(Path(sys.prefix).resolve() / "bin" / Path(sys.executable).name)


def _wrap(mode: str, argv: list[str], scratch: Path, package: Path | None) -> list[str]:
    if mode == "bubblewrap":
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise OSError("bwrap not found")
        binds: list[str] = []
        for system in ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin"):
            binds += ["--ro-bind-try", system, system]
        for prefix in sorted({Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
                              Path(sys.exec_prefix).resolve()}):
            binds += ["--ro-bind", str(prefix), str(prefix)]
        if package is not None:
            binds += ["--ro-bind", str(package), SANDBOX_PACKAGE]
        return [
            bwrap, "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--die-with-parent",
            "--new-session", *binds, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--bind", str(scratch), SANDBOX_SCRATCH, "--chdir", SANDBOX_SCRATCH, "--", *argv,
        ]
    if mode == "namespaces":
        unshare = shutil.which("unshare")
        if unshare is None or os.geteuid() != 0:
            raise OSError("unshare needs root here")
        return [unshare, "--pid", "--fork", "--kill-child", "--mount-proc", "--ipc", "--", *argv]
    return list(argv)


def inside(mode: str, scratch: Path, path: Path) -> str:
    """``path`` (under ``scratch``) as the contained process sees it."""
    if mode == "bubblewrap":
        return str(Path(SANDBOX_SCRATCH) / path.relative_to(scratch))
    return str(path)


def package_path(mode: str, package: Path) -> str:
    """Where the contained process finds the package copy."""
    return SANDBOX_PACKAGE if mode == "bubblewrap" else str(package)


# ------------------------------------------------------------------------------------------------------ cgroups


def _cgroup_roots() -> list[tuple[str, Path]]:
    """Writable cgroup folders this process may create children in: ``[(controller, folder)]``."""
    base = Path("/sys/fs/cgroup")
    roots = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "" and (base / "cgroup.controllers").exists():  # pure v2
            folder = base / path.lstrip("/")
            wanted = {"memory", "pids", "cpu"} & set((folder / "cgroup.controllers").read_text().split()) \
                if (folder / "cgroup.controllers").exists() else set()
            if wanted and os.access(folder, os.W_OK):
                roots.append(("v2", folder))
        for controller in ("memory", "pids", "cpuacct"):
            if controller in controllers.split(","):
                folder = base / controller / path.lstrip("/")
                if os.access(folder, os.W_OK):
                    roots.append((controller, folder))
    return roots


class _Cgroups:
    """One cgroup per submission (memory and process count of the whole tree), removed when it ends."""

    def __init__(self, limits: Limits):
        self.folders: list[Path] = []
        self.cpu: float | None = None
        name = f"sustainlab-{uuid.uuid4().hex[:12]}"
        for controller, root in _cgroup_roots():
            folder = root / name
            try:
                folder.mkdir()
                if controller in ("memory", "v2") and limits.memory_mb:
                    limit = str(int(limits.memory_mb) * 2**20)
                    target = "memory.max" if controller == "v2" else "memory.limit_in_bytes"
                    (folder / target).write_text(limit)
                if controller in ("pids", "v2") and limits.processes:
                    (folder / "pids.max").write_text(str(int(limits.processes)))
                self.folders.append(folder)
            except OSError:
                _remove_cgroup(folder)

    def cpu_seconds(self) -> float | None:
        """CPU time of everything that ran in the group (None without a CPU-accounting controller)."""
        for folder in self.folders:
            try:
                if (folder / "cpuacct.usage").exists():
                    return int((folder / "cpuacct.usage").read_text()) / 1e9
                if (folder / "cpu.stat").exists():
                    stats = dict(line.split() for line in (folder / "cpu.stat").read_text().splitlines())
                    return int(stats["usage_usec"]) / 1e6
            except (OSError, ValueError, KeyError):
                continue
        return None

    @property
    def procs_files(self) -> list[str]:
        return [str(folder / "cgroup.procs") for folder in self.folders]

    def kill_all(self) -> None:
        for _ in range(50):
            alive = False
            for folder in self.folders:
                try:
                    pids = [int(p) for p in (folder / "cgroup.procs").read_text().split()]
                except OSError:
                    continue
                for pid in pids:
                    alive = True
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            if not alive:
                break
            time.sleep(0.05)
        self.cpu = self.cpu_seconds()  # read before the groups go
        for folder in self.folders:
            _remove_cgroup(folder)


def _remove_cgroup(folder: Path) -> None:
    for _ in range(20):
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


# ------------------------------------------------------------------------------------------------------ running


def run_contained(argv: list[str], *, scratch: Path, env: dict, limits: Limits, mode: str,
                  package: Path | None = None, output_cap_bytes: int = 64 * 2**10) -> Contained:
    """Run ``argv`` contained in ``mode`` with ``scratch`` as its working folder; kill everything it started.

    The output goes to a grader-private file (capped by the file-size limit) of which only the last
    ``output_cap_bytes`` are read back.
    """
    rlimits = {"RLIMIT_CORE": 0}
    if limits.memory_mb:
        rlimits["RLIMIT_AS"] = int(limits.memory_mb) * 2**20
    if limits.cpu_s:
        rlimits["RLIMIT_CPU"] = max(1, int(limits.cpu_s))
    if limits.file_mb:
        rlimits["RLIMIT_FSIZE"] = int(limits.file_mb) * 2**20
    cgroups = _Cgroups(limits)
    spec = {"rlimits": rlimits, "cgroups": cgroups.procs_files, "argv": _wrap(mode, argv, scratch, package)}
    command = [sys.executable, "-c", _LAUNCHER, json.dumps(spec)]
    log_dir = Path(tempfile.mkdtemp(prefix="sustainlab-log-"))
    killed = False
    start = time.perf_counter()
    cpu, code, process = 0.0, None, None
    try:
        with open(log_dir / "output", "wb") as log:
            process = subprocess.Popen(command, cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        deadline = start + limits.wall_s if limits.wall_s else float("inf")
        # WNOWAIT: the finished process stays a zombie, so its pid (and group id) cannot be reused by an unrelated
        # process before everything it started has been killed; only then is it reaped.
        while os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if time.perf_counter() > deadline and not killed:
                killed = True
                _kill_group(process.pid)
            time.sleep(0.05)
        seconds = time.perf_counter() - start
    finally:
        if process is not None:
            _kill_group(process.pid)
        cgroups.kill_all()
        if process is not None:
            _, status, usage = os.wait4(process.pid, 0)
            code = os.waitstatus_to_exitcode(status)
            process.returncode = code
            cpu = usage.ru_utime + usage.ru_stime
        # wait4 misses processes nobody waited for (a PID namespace's orphans): the group's accounting does not.
        cpu = max(cpu, cgroups.cpu or 0.0)
        output = _tail(log_dir / "output", output_cap_bytes) if (log_dir / "output").exists() else ""
        shutil.rmtree(log_dir, ignore_errors=True)
    return Contained(code, killed, seconds, cpu, output, mode)


def _kill_group(pid: int) -> None:
    """Kill a process's session/group and every descendant still attached to it."""
    import psutil

    try:
        family = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        family = []
    for target in (pid, *[p.pid for p in family]):
        try:
            os.kill(target, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def become_subreaper() -> bool:
    """Make orphans of this process's descendants re-parent to it (Linux), so :func:`kill_new_descendants` finds
    what a submission detached even where no cgroup or PID namespace caught it."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def descendants() -> set[tuple[int, float]]:
    """(pid, start time) of every process below this one."""
    import psutil

    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            found.add((proc.pid, proc.create_time()))
        except psutil.Error:
            pass
    return found


def kill_new_descendants(before: set[tuple[int, float]]) -> None:
    """Kill every process below this one that is not in ``before`` (the caller's own children are left alone)."""
    import psutil

    for pid, created in descendants() - before:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created:
                proc.kill()
                proc.wait(timeout=5)
        except (psutil.Error, OSError):
            pass


def _tail(path: Path, cap: int) -> str:
    with open(path, "rb") as stream:
        size = stream.seek(0, os.SEEK_END)
        stream.seek(max(0, size - cap))
        return stream.read().decode("utf-8", "replace")


def read_capped(path: Path, cap: int) -> tuple[bytes | None, str]:
    """Read a file a submission may have tampered with: ``(data, "")`` or ``(None, why it was refused)``.

    Only a regular file, not a symlink, at most ``cap`` bytes; a FIFO or device is never opened for blocking reads.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, "missing"
    except OSError as error:
        return None, f"unreadable ({error.strerror or error})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, "not a regular file"
        if info.st_size > cap:
            return None, f"larger than {cap} bytes"
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                return None, f"larger than {cap} bytes"
        return b"".join(chunks), ""
    finally:
        os.close(fd)
