"""Exercise checks for the chapter module `sustainlab.energy` (filled in with the chapter)."""

from ._core import Exercise

EXERCISES: tuple[Exercise, ...] = ()
