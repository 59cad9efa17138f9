"""A self-learner's own exercise copies: the student version of each notebook, written once, never overwritten.

Backs ``sustainlab exercises``, which ``make lab`` runs before opening JupyterLab on ``exercises/00_welcome.ipynb``.
The copies come from the same transform as an instructor's release (:func:`sustainlab.notebook.student_version`):
solution regions become ``raise NotImplementedError()`` stubs, hidden checks are removed. The solutions stay in
``notebooks/``, one folder away; ``exercises/`` is git-ignored and outside the folders pytest collects.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .notebook import student_version

__all__ = [
    "ExercisesResult",
    "write_exercises",
]

DEFAULT_SRC = "notebooks"
DEFAULT_DEST = "exercises"


@dataclass(frozen=True)
class ExercisesResult:
    """What :func:`write_exercises` did: the copies it wrote and the ones it left alone (the learner's)."""

    dest: Path
    written: tuple[Path, ...]
    kept: tuple[Path, ...]

    def summary(self) -> str:
        if not self.written:
            return f"your exercises in {self.dest}/ are up to date ({len(self.kept)} notebook(s), none overwritten)"
        kept = f"; kept your {len(self.kept)} existing one(s) untouched" if self.kept else ""
        return f"wrote {len(self.written)} new exercise notebook(s) to {self.dest}/{kept}"


def write_exercises(src: str | Path = DEFAULT_SRC, dest: str | Path = DEFAULT_DEST) -> ExercisesResult:
    """Write the student version of every ``src/*.ipynb`` to ``dest/`` unless ``dest`` already has that notebook.

    A file already in ``dest`` is never read or written, whatever it holds (it is the learner's work); a notebook
    added to ``src`` later is added on the next call.

    Parameters
    ----------
    src : path-like
        Folder of instructor notebooks (with solutions).
    dest : path-like
        The learner's exercise folder; created when missing.

    Returns
    -------
    ExercisesResult

    Raises
    ------
    FileNotFoundError
        When ``src`` does not exist or holds no notebook.
    NotADirectoryError
        When ``src`` or ``dest`` is a file.
    ValueError
        When a notebook cannot be turned into its student version (unbalanced solution markers, unreadable file).
    """
    src, dest = Path(src), Path(dest)
    if not src.exists():
        raise FileNotFoundError(f"the notebooks folder {src} does not exist.")
    if not src.is_dir():
        raise NotADirectoryError(f"{src} is a file: pass the folder holding the course notebooks.")
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"{dest} is a file: the exercises need a folder.")
    sources = sorted(src.glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no notebooks (*.ipynb) in {src}.")
    if dest.resolve() == src.resolve():
        raise ValueError(f"refusing to write exercise copies over the notebooks in {src}.")
    dest.mkdir(parents=True, exist_ok=True)
    written, kept = [], []
    for path in sources:
        target = dest / path.name
        if target.exists() or target.is_symlink():
            kept.append(target)
            continue
        try:
            text = nbformat.writes(student_version(nbformat.read(path, as_version=4))) + "\n"
        except Exception as error:  # nbformat raises several types for a broken file; all mean "cannot copy it"
            raise ValueError(f"{path}: cannot make its exercise copy: {error}") from None
        if _create_only(target, text.encode("utf-8")):
            written.append(target)
        else:
            kept.append(target)
    return ExercisesResult(dest, tuple(written), tuple(kept))


def _create_only(target: Path, data: bytes) -> bool:
    """Write ``target`` whole, only if it does not exist; False when it does (the learner's file wins).

    Written to a temporary file and hard-linked into place, so an interrupted run never leaves a half-written
    notebook that later runs would then keep as the learner's.
    """
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # what open() would give; mkstemp's 0600 is for private files
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.link(tmp, target)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
