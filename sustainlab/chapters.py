"""The one table that maps each chapter to its notebook, module and exercise checks.

``tests/test_layout.py`` walks this table and checks that every artefact exists, and the ``run-all`` command
uses it to order the notebooks.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Chapter", "CHAPTERS"]


@dataclass(frozen=True)
class Chapter:
    number: int
    slug: str
    title: str
    module: str | None  # sustainlab.<module>; None for the welcome notebook

    @property
    def notebook(self) -> str:
        """Notebook path relative to the repository root."""
        return f"notebooks/{self.number:02d}_{self.slug}.ipynb"

    @property
    def checks(self) -> str:
        """Name of the file in ``sustainlab/checks/`` that declares this chapter's exercises: the chapter's module,
        or its slug for a chapter without a module (``welcome``)."""
        return self.module or self.slug


CHAPTERS: tuple[Chapter, ...] = (
    Chapter(0, "welcome", "Welcome and set-up check", None),
    Chapter(1, "gradient_descent", "Gradient descent, optimizers and what they cost", "optim"),
    Chapter(2, "attention", "Transformer attention on CPU and GPU", "attention"),
    Chapter(3, "smote", "Class imbalance and SMOTE, without leakage", "imbalance"),
    Chapter(4, "fairness", "Measuring and mitigating group unfairness", "fairness"),
    Chapter(5, "energy", "Measuring the energy and carbon of training", "energy"),
    Chapter(6, "privacy", "Privacy, measured: encryption, anonymisation, differential privacy, federated learning",
            "privacy"),
)

#: The first code cell of every notebook. Plain Python: in a kernel without the course's packages (the generic
#: "Python 3" of another installation) it stops Run All with one line that says what to do, instead of
#: ``No module named 'sustainlab'`` at the first import. ``tests/test_layout.py`` checks every notebook starts with it.
KERNEL_CHECK_CELL = """\
# Is this notebook running in the course's kernel? (If not, this cell says what to do.)
try:
    import sustainlab  # noqa: F401
except ModuleNotFoundError:
    raise ModuleNotFoundError(
        "This notebook needs the course's packages: switch the kernel to Python (sustainlab) "
        "(Kernel → Change Kernel…), then run the notebook again from the top."
    ) from None"""
