"""Exercise checks for the chapter module `sustainlab.optim` (filled in with the chapter)."""

from ._core import Exercise

EXERCISES: tuple[Exercise, ...] = ()
