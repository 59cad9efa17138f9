"""pytest hooks for running notebooks under nbval, shared by the test suite (``conftest.py``) and the grader (``-p``).

Warnings on stderr change with library versions and carry per-run paths, so notebooks are compared on what they
print and display (stdout and rich outputs), not on stderr.
"""

__all__ = ["pytest_collectstart"]


def pytest_collectstart(collector):
    if hasattr(collector, "skip_compare"):
        collector.skip_compare = tuple(collector.skip_compare) + ("stderr",)
