"""pytest configuration shared by the package tests and the notebooks under nbval."""

import os
import sys

import pytest

from sustainlab.nbval_hooks import pytest_collectstart  # noqa: F401  (stderr is not compared)
from sustainlab.figure_hooks import (  # noqa: F401  (every notebook figure is checked)
    pytest_configure, pytest_runtest_makereport, pytest_unconfigure)
from sustainlab.runner import quiet_environment

# Kernels started by nbval inherit this process's environment: no progress bars, quiet codecarbon.
quiet_environment()
# The test suite never writes the learner's carbon ledger (in the home directory), whatever the shell says.
os.environ["SUSTAINLAB_LEDGER"] = "off"


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test that lowers torch's thread count (tiny models run faster on one) must not lower it for later tests."""
    torch = sys.modules.get("torch")  # not imported here: tests that never use torch stay fast
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)
