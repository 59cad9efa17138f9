"""Helpers every chapter uses: seeding, device choice, timing and progress bars.

Taught in ``notebooks/00_welcome.ipynb`` (*Checking your set-up*); every later notebook starts with
``seed_everything`` and ``pick_device``.
"""

from __future__ import annotations

import os
import platform
import random
import sys
import time
from contextlib import ContextDecorator
from typing import Iterable, TypeVar

import numpy as np

from .validation import check_scalar

__all__ = [
    "PROGRESS_ENV",
    "seed_everything",
    "available_devices",
    "pick_device",
    "synchronize",
    "Timer",
    "progress_enabled",
    "progress",
    "check_shape",
    "environment_report",
    "torch_build",
]

T = TypeVar("T")

#: Environment variable that turns progress bars off. The project's own notebook runners (``sustainlab run-all``,
#: nbval through ``conftest.py``, grading) set it, so stored outputs never contain a progress bar.
PROGRESS_ENV = "SUSTAINLAB_PROGRESS"

#: Environment variable that forces a device for a whole session (read by :func:`pick_device`).
DEVICE_ENV = "SUSTAINLAB_DEVICE"

_KNOWN_DEVICES = ("cpu", "cuda", "mps")


def seed_everything(seed: int = 0) -> int:
    """Seed Python's ``random``, NumPy and PyTorch so that a notebook gives the same numbers on every run.

    Also asks PyTorch for deterministic algorithms where they exist (warning, not failing, where they don't).

    Parameters
    ----------
    seed : int, default 0
        Any non-negative integer.

    Returns
    -------
    int
        The seed, so a notebook can print which one it used.

    Raises
    ------
    TypeError
        If ``seed`` is not an integer (``numbers.Integral``, not ``bool``: the package's one integer rule).
    ValueError
        If ``seed`` is negative.

    Examples
    --------
    >>> import torch
    >>> _ = seed_everything(0); a = torch.rand(2)
    >>> _ = seed_everything(0); b = torch.rand(2)
    >>> bool((a == b).all())
    True
    """
    seed = check_scalar(seed, "seed", min_value=0, integer=True)
    import torch

    # cuBLAS needs this set before its first use to be deterministic.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return seed


def available_devices() -> list[str]:
    """Names of the torch devices usable on this machine, best first (always ends with ``"cpu"``)."""
    import torch

    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    found.append("cpu")
    return found


def pick_device(prefer: str | None = None):
    """Choose the torch device to compute on: CUDA, then Apple's MPS, then the CPU.

    Parameters
    ----------
    prefer : {"cuda", "mps", "cpu"} or str like "cuda:1", optional
        Ask for one device explicitly. The ``SUSTAINLAB_DEVICE`` environment variable does the same for a whole
        session (handy to force the CPU on a GPU machine).

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If ``prefer`` is not a device name torch knows.
    RuntimeError
        If the requested device is not available here; the message lists what is.

    Examples
    --------
    >>> pick_device("cpu")
    device(type='cpu')
    """
    import torch

    from_env = prefer is None
    requested = prefer if not from_env else os.environ.get(DEVICE_ENV) or None
    available = available_devices()
    if requested is None:
        return torch.device(available[0])
    asked = f"{DEVICE_ENV}={requested}" if from_env else f"pick_device({requested!r})"
    if not isinstance(requested, str):
        raise ValueError(f"prefer must be a device name such as 'cuda' or 'cpu', got {requested!r}.")
    kind, _, index = requested.strip().lower().partition(":")
    if kind not in _KNOWN_DEVICES or (index and not index.isdigit()):
        raise ValueError(
            f"Unknown device {requested!r} ({asked}): expected one of {', '.join(_KNOWN_DEVICES)} (optionally with an "
            f"index, e.g. 'cuda:0')."
        )
    fix = f"unset {DEVICE_ENV} (or set it to cpu)" if from_env else "call pick_device() without an argument"
    if kind not in available:
        why, build_lacks_it = _why_unavailable(kind)
        remedy = f"install a build of PyTorch with {kind.upper()} into .venv" if build_lacks_it else "check the driver"
        raise RuntimeError(
            f"{asked} asks for {kind!r}, but {why} Available here: {', '.join(available)}. "
            f"Fix: {fix} to use {available[0]}, or {remedy} (README, *Running on a GPU*)."
        )
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise RuntimeError(
            f"{asked} asks for {requested!r}, but this machine has {torch.cuda.device_count()} CUDA device(s) "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}). Fix: {fix}, or ask for an index that exists."
        )
    return torch.device(requested.strip().lower())


def _why_unavailable(kind: str) -> tuple[str, bool]:
    """Why ``kind`` is missing, as a sentence, and whether the installed PyTorch build lacks it altogether."""
    import torch

    if kind == "cuda":
        if torch.version.cuda is None:
            return f"the installed PyTorch {torch.__version__} is a CPU-only build.", True
        return f"PyTorch {torch.__version__} is built for CUDA {torch.version.cuda} yet sees no NVIDIA GPU.", False
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_built():
        return f"the installed PyTorch {torch.__version__} was built without Apple MPS support.", True
    return "MPS needs an Apple-silicon Mac with macOS 12.3 or later.", False


def torch_build() -> str:
    """What the installed PyTorch can compute on, e.g. ``"2.4.0, CPU-only build"`` or ``"2.4.0, CUDA 12.1"``."""
    import torch

    if torch.version.cuda is not None:
        return f"{torch.__version__}, CUDA {torch.version.cuda}"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_built():
        return f"{torch.__version__}, with Apple MPS"
    return f"{torch.__version__}, CPU-only build"


def synchronize(device=None) -> None:
    """Wait until queued GPU work on ``device`` has finished (a no-op on the CPU).

    GPU kernels run asynchronously: reading the clock without this measures only how long it took to *queue* them.
    """
    import torch

    kind = torch.device(device).type if device is not None else None
    if kind in (None, "cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()
    elif kind == "mps" and hasattr(torch, "mps"):
        torch.mps.synchronize()


class Timer(ContextDecorator):
    """Wall-clock timer that synchronises the GPU before reading the clock.

    Use as a context manager; ``elapsed_s`` holds the seconds once the block ends.

    Parameters
    ----------
    device : torch.device or str, optional
        Device whose queued work must finish before the clock is read. ``None`` synchronises CUDA if present.

    Examples
    --------
    >>> with Timer() as t:
    ...     _ = sum(range(1000))
    >>> t.elapsed_s >= 0
    True
    """

    def __init__(self, device=None):
        self.device = device
        self.elapsed_s: float | None = None
        self._start: float | None = None

    def __enter__(self) -> "Timer":
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> bool:
        synchronize(self.device)
        self.elapsed_s = time.perf_counter() - self._start
        return False

    def __repr__(self) -> str:
        if self.elapsed_s is None:
            return "Timer(running)"
        return f"Timer({self.elapsed_s:.3f} s)"


def progress_enabled() -> bool:
    """Whether progress bars should be drawn (off when ``SUSTAINLAB_PROGRESS=0``, as under the test runners)."""
    return os.environ.get(PROGRESS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def progress(iterable: Iterable[T], desc: str | None = None, total: int | None = None, **kwargs) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm progress bar that stays quiet under the course's test and grading runners.

    In JupyterLab it draws a notebook bar; in a terminal a text bar. Extra keyword arguments go to tqdm.

    Examples
    --------
    >>> sum(progress(range(3), desc="demo", disable=True))
    3
    """
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("leave", False)
    return tqdm(iterable, desc=desc, total=total, **kwargs)


def check_shape(tensor, expected: tuple) -> None:
    """Assert that ``tensor.shape`` equals ``expected``; ``None`` in ``expected`` matches any size.

    A one-line guard for notebooks (the d2l habit): a wrong shape stops the cell with a message that says both shapes.

    Examples
    --------
    >>> import numpy as np
    >>> check_shape(np.zeros((2, 3)), (2, None))
    """
    shape = tuple(tensor.shape)
    ok = len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected))
    if not ok:
        raise ValueError(f"Expected shape {tuple(expected)}, got {shape}.")


def environment_report() -> dict[str, str]:
    """Versions and hardware a learner should know about, as an ordered ``{name: value}`` dict.

    Used by the welcome notebook's set-up check and ``sustainlab env``. Values vary by machine, so notebooks show it
    in a cell whose output is not compared. Never raises for a device problem: ``device`` is the automatic choice,
    and a ``SUSTAINLAB_DEVICE`` that cannot be honoured is reported in its own entry.
    """
    from importlib import metadata

    report = {"python": platform.python_version(), "platform": f"{sys.platform} {platform.machine()}"}
    for package in ("torch", "numpy", "scikit-learn", "imbalanced-learn", "fairlearn", "codecarbon", "matplotlib"):
        try:
            report[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            report[package] = "not installed"
    try:
        report["torch build"] = torch_build()
        report["device"] = available_devices()[0]
    except Exception as error:  # a broken torch install is exactly what this report must show, not crash on
        report["device"] = f"none: {type(error).__name__}: {error}"
    if os.environ.get(DEVICE_ENV):
        try:
            report[DEVICE_ENV] = f"{os.environ[DEVICE_ENV]} (usable: {pick_device()})"
        except (ValueError, RuntimeError) as error:
            report[DEVICE_ENV] = f"{os.environ[DEVICE_ENV]} NOT USABLE: {error}"
    report["cpu cores"] = str(os.cpu_count())
    return report
