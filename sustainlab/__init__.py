"""sustainlab: the helpers behind the *Sustainable and Responsible AI* notebooks.

Each chapter's ideas live in one module, imported explicitly so that ``import sustainlab`` stays fast:

- ``sustainlab.utils``       seeding, device choice, timing, progress bars (every chapter)
- ``sustainlab.evidence``    interleaved repeats, spread and verdicts for noisy costs; ``say`` for prose numbers
- ``sustainlab.checks``      the exercise checks used by the notebooks' check cells
- ``sustainlab.optim``       chapter 1, gradient descent and optimizers
- ``sustainlab.attention``   chapter 2, attention and a tiny Transformer
- ``sustainlab.imbalance``   chapter 3, SMOTE and evaluation under class imbalance
- ``sustainlab.fairness``    chapter 4, group fairness metrics
- ``sustainlab.energy``      chapter 5, measuring energy and carbon; ``sustainlab.ledger`` the learner's carbon ledger
- ``sustainlab.privacy``     chapter 6, attacks and defences: encryption, k-anonymity, DP-SGD, federated averaging
- ``sustainlab.datasets``    offline loaders for the course's datasets
- ``sustainlab.chapters``    the table mapping chapter → notebook → module
- ``sustainlab.figures``     readability checks for the figures the notebooks draw; ``sustainlab.prose`` the
  numerals-in-prose scanner
- ``sustainlab.notebook``, ``sustainlab.grading``, ``sustainlab.sandbox``, ``sustainlab.feedback``,
  ``sustainlab.gradebook``, ``sustainlab.exercises``   release, grading and the learner's exercise copies
"""

import os as _os

__version__ = "0.1.0"

__all__ = ["__version__"]

# Under the test suite, notebook kernels check every figure they render (sustainlab.figures, figure_hooks).
if _os.environ.get("SUSTAINLAB_FIGURE_LOG"):
    from .figures import record_problems as _record_problems

    _record_problems(_os.environ["SUSTAINLAB_FIGURE_LOG"])
