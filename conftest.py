"""pytest configuration shared by the package tests and the notebooks under nbval."""

from sustainlab.runner import quiet_environment

# Kernels started by nbval inherit this process's environment: no progress bars, quiet codecarbon.
quiet_environment()


def pytest_collectstart(collector):
    # Warnings on stderr change with library versions and carry per-run paths; notebooks are compared on what they
    # print and display, not on warnings.
    if hasattr(collector, "skip_compare"):
        collector.skip_compare = tuple(collector.skip_compare) + ("stderr",)
