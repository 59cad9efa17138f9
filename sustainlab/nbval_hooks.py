"""pytest hooks for running notebooks under nbval, shared by the test suite (``conftest.py``) and the grader (``-p``).

Warnings on stderr change with library versions and carry per-run paths, so notebooks are compared on what they
print and display (stdout and rich outputs), not on stderr.

While grading (``SUSTAINLAB_EVIDENCE_DIR`` set), a watchdog also notices a kernel that dies inside a cell: nbval
would wait for the whole cell timeout; the watchdog leaves a ``kernel-died`` marker beside the notebook and ends
pytest at once, and the grader reports "the kernel died" for the checks that had not run yet.
"""

import os
import threading
import time

import pytest

KERNEL_DIED_MARKER = "kernel-died"

__all__ = ["KERNEL_DIED_MARKER", "pytest_collectstart", "pytest_runtest_call"]


def pytest_collectstart(collector):
    if hasattr(collector, "skip_compare"):
        collector.skip_compare = tuple(collector.skip_compare) + ("stderr",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    kernel = getattr(getattr(item, "parent", None), "kernel", None)
    if not os.environ.get("SUSTAINLAB_EVIDENCE_DIR") or kernel is None:
        yield
        return
    done = threading.Event()

    def watch():
        while not done.wait(0.25):
            try:
                alive = kernel.is_alive()
            except Exception:  # the kernel manager is being torn down
                return
            if not alive and not done.is_set():
                time.sleep(0.5)  # let a cell that finished just now report first
                if done.is_set():
                    return
                with open(KERNEL_DIED_MARKER, "w") as stream:
                    stream.write(item.name)
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()
    try:
        yield
    finally:
        done.set()
