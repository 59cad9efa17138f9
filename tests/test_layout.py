"""The course layout: every chapter in sustainlab.chapters has its notebook, module, checks and tests, and every
notebook follows the conventions that testing and grading rely on (shared/README.md)."""

import inspect
import re
from importlib import import_module
from pathlib import Path

import nbformat
import pytest

from sustainlab.chapters import CHAPTERS, KERNEL_CHECK_CELL
from sustainlab.checks import passed_line, registry
from sustainlab.notebook import check_metadata, is_check, is_hidden_check

ROOT = Path(__file__).resolve().parents[1]


def _notebook(chapter):
    return nbformat.read(ROOT / chapter.notebook, as_version=4)


def _check_cells(notebook):
    return [cell for cell in notebook.cells if is_check(cell)]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.slug for c in CHAPTERS])
def test_chapter_has_all_its_artefacts(chapter):
    assert (ROOT / chapter.notebook).is_file(), f"missing {chapter.notebook}"
    if chapter.module:
        import_module(f"sustainlab.{chapter.module}")
        assert (ROOT / "tests" / f"test_{chapter.module}.py").is_file()
        assert (ROOT / "benchmarks" / f"bench_{chapter.module}.py").is_file()
    assert (ROOT / "sustainlab" / "checks" / f"{chapter.checks}.py").is_file()


def test_every_notebook_is_a_listed_chapter():
    listed = {Path(c.notebook).name for c in CHAPTERS}
    present = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert present <= listed, f"notebooks not in sustainlab/chapters.py: {sorted(present - listed)}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.slug for c in CHAPTERS])
def test_notebook_follows_the_conventions(chapter):
    notebook = _notebook(chapter)
    assert notebook.metadata.get("kernelspec", {}).get("name") == "sustainlab"
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    if code_cells[0].source == KERNEL_CHECK_CELL:
        code_cells = code_cells[1:]
    assert "seed_everything(" in code_cells[0].source, "the first code cell (after the kernel check) must seed everything"
    for cell in code_cells:
        assert cell.execution_count is not None, "every code cell must have been executed and saved (make notebooks)"
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", f"a stored output is an error: {cell.source[:60]!r}"
            text = output.get("text", "")
            assert "it/s]" not in text and "s/it]" not in text, "a progress bar leaked into the stored outputs"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.slug for c in CHAPTERS])
def test_first_code_cell_checks_the_kernel(chapter):
    """A kernel without the course's packages stops at the first cell with 'switch the kernel to Python (sustainlab)'."""
    first = next(c for c in _notebook(chapter).cells if c.cell_type == "code")
    assert first.source == KERNEL_CHECK_CELL, f"{chapter.notebook} must start with sustainlab.chapters.KERNEL_CHECK_CELL"
    assert not first.get("outputs"), "the kernel check prints nothing in the right kernel"


def test_the_kernel_check_says_to_switch_the_kernel_where_the_package_is_missing(tmp_path):
    """Run the cell in a Python that cannot import sustainlab (no site-packages, no PYTHONPATH): one clear line."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-I", "-S", "-c", KERNEL_CHECK_CELL], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: This notebook needs the course's packages: switch the kernel to "
                           "Python (sustainlab)")
    assert "No module named" not in result.stderr, "the original error must not be chained in"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.slug for c in CHAPTERS])
def test_check_cells_store_their_pass_line(chapter):
    """Each check cell's stored output is exactly its pass line: that is what grading compares against."""
    notebook = _notebook(chapter)
    check_cells = _check_cells(notebook)
    if chapter.module:
        assert len(check_cells) >= 2, f"{chapter.notebook} needs graded exercises with check cells"
    known = registry()
    for cell in check_cells:
        meta = check_metadata(cell)
        assert isinstance(meta.get("points"), int) and meta["points"] > 0
        if not is_hidden_check(cell):
            assert meta["check"] in known, f"check id {meta['check']!r} is not registered in sustainlab.checks"
            assert f'check("{meta["check"]}"' in cell.source
        texts = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
        assert texts == passed_line(meta["check"]) + "\n"


# --- Docstring links into the notebooks ----------------------------------------------------------------------------

#: ``notebooks/NN_name.ipynb`` followed by a section in asterisks, as in "Taught in ``notebooks/…`` (*Section*)" or
#: "``notebooks/…``, *Section*"; the section may wrap over docstring lines.
_LINK = re.compile(r"``(notebooks/[\w.-]+\.ipynb)``\s*[,(]?\s*\*([^*]+)\*")


def _headings(path: Path) -> set[str]:
    notebook = nbformat.read(path, as_version=4)
    lines = (line for cell in notebook.cells if cell.cell_type == "markdown" for line in cell.source.splitlines())
    return {m.group(1).strip() for m in map(re.compile(r"#{1,6}\s+(.*)").match, lines) if m}


def _docstring_links():
    links = []
    for path in sorted((ROOT / "sustainlab").rglob("*.py")):
        for m in _LINK.finditer(path.read_text(encoding="utf-8")):
            links.append((path.relative_to(ROOT).as_posix(), m.group(1), " ".join(m.group(2).split())))
    return links


LINKS = _docstring_links()


def test_docstrings_link_into_the_notebooks():
    assert len(LINKS) >= 20, "the link pattern no longer finds the package's 'Taught in' links"


@pytest.mark.parametrize("source, notebook, section", LINKS, ids=[f"{s}:{sec[:30]}" for s, _, sec in LINKS])
def test_every_docstring_link_names_an_existing_heading(source, notebook, section):
    """Every "Taught in ``notebooks/…`` (*Section*)" in sustainlab/ names a markdown heading of that notebook."""
    assert (ROOT / notebook).is_file(), f"{source} links to a missing notebook {notebook}"
    headings = _headings(ROOT / notebook)
    assert section in headings, f"{source}: {notebook} has no heading {section!r}; its headings: {sorted(headings)}"


# --- Package surface -----------------------------------------------------------------------------------------------

MODULES = sorted(
    "sustainlab." + p.relative_to(ROOT / "sustainlab").with_suffix("").as_posix().replace("/", ".")
    for p in (ROOT / "sustainlab").rglob("*.py") if p.name != "__init__.py"
)


@pytest.mark.parametrize("name", MODULES)
def test_every_module_declares_its_public_names(name):
    """Each module has an ``__all__`` that lists every public function and class it defines, and only real names."""
    module = import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    missing = [attr for attr in module.__all__ if not hasattr(module, attr)]
    assert not missing, f"{name}.__all__ names what the module does not define: {missing}"
    defined = [attr for attr, obj in vars(module).items()
               if not attr.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
               and obj.__module__ == name]
    unlisted = sorted(set(defined) - set(module.__all__))
    assert not unlisted, f"{name} defines public names missing from __all__: {unlisted}"


def test_checks_modules_come_from_the_chapter_table():
    """The exercise registry reads one checks file per chapter, named by sustainlab.chapters (no second list)."""
    from sustainlab.checks import CHAPTER_CHECK_MODULES

    assert CHAPTER_CHECK_MODULES == tuple(chapter.checks for chapter in CHAPTERS)
    assert CHAPTERS[0].checks == "welcome"
    files = {p.stem for p in (ROOT / "sustainlab" / "checks").glob("*.py") if not p.stem.startswith("_")}
    assert files == set(CHAPTER_CHECK_MODULES), "every checks file belongs to exactly one chapter of the table"
    by_chapter = {exercise.id.split("-")[0] for exercise in registry().values()}  # "gd-1-hidden" → "gd"
    assert len(by_chapter) == len(CHAPTERS), "each chapter contributes exercises with its own id prefix"
