"""End to end in a real browser: a learner opens the course in JupyterLab, runs it, gets an exercise wrong.

A headless Chromium (Debian's package, installed here when missing and allowed; see tests/browser_support.py)
drives JupyterLab served from this environment's interpreter, over a scratch copy of notebooks/, with the
``sustainlab`` kernel. For the welcome notebook and one chapter notebook: clear the outputs, Run → Run All Cells,
wait for the kernel to go idle, then assert no cell shows an error, every check cell shows its pass line and at
least one figure is drawn. Then, in the welcome notebook, type a wrong answer into the exercise through the editor,
re-run it and its check cell, and assert the learner sees the failure hint.

Screenshots (whole notebook, viewport stretched to fit) and the server log go to build/screenshots/ (git-ignored);
a failure names them. The whole module is bounded by BUDGET_S; the server and browser stop even on failure.
"""

from __future__ import annotations

import contextlib
import re

import nbformat

import pytest

import browser_support as bs
from sustainlab.checks import FAIL_MARK, failed_line, get_exercise, passed_line, run_check

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Upper bound for everything after Chromium is available: server start, both notebooks, shutdown.
BUDGET_S = 180
WELCOME = "00_welcome.ipynb"
#: The chapter notebook to drive: 01 when it exists, else the first chapter notebook there is.
_CHAPTERS = sorted(p.name for p in bs.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb") if not p.name.startswith("00_"))
CHAPTER = (["01_gradient_descent.ipynb"] if "01_gradient_descent.ipynb" in _CHAPTERS else _CHAPTERS)[:1] or [
    pytest.param(None, marks=pytest.mark.skip(reason="no chapter notebook in notebooks/ yet"))
]


@pytest.fixture(scope="module")
def chromium():
    if bs.browser_mode() == "off":
        pytest.skip(f"{bs.BROWSER_ENV}=off")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        bs.unavailable("the playwright package is not installed: run `make setup` (binder/requirements.txt pins it)")
    return bs.ensure_chromium()


@pytest.fixture(scope="module")
def artefacts(chromium):
    folder = bs.reset_artefacts()
    return bs.Log(folder / "browser-test.log")


@pytest.fixture(scope="module")
def deadline(chromium):
    return bs.Deadline(BUDGET_S)


@pytest.fixture(scope="module")
def lab(chromium, artefacts, deadline, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("lab")
    with bs.jupyterlab(scratch, bs.ARTEFACTS / "jupyterlab-server.log", deadline) as server:
        artefacts(f"JupyterLab serving {server.root} on port {server.port}")
        specs = server.api("kernelspecs")["kernelspecs"]
        assert bs.KERNEL_NAME in specs, (
            f"no {bs.KERNEL_NAME!r} kernel registered in this environment (found {sorted(specs)}): run `make setup`"
        )
        yield server
    artefacts("JupyterLab stopped")


@pytest.fixture(scope="module")
def browser(chromium, lab, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = bs.launch_chromium(playwright, chromium, tmp_path_factory.mktemp("chromium-profile"))
        try:
            yield context
        finally:
            context.close()


def open_notebook(browser, lab, notebook, deadline, log) -> bs.NotebookPage:
    return bs.NotebookPage(browser.new_page(), lab, notebook, deadline, log)


def run_everything_and_assert_clean(nb: bs.NotebookPage, run_cap_s: float) -> None:
    """Clear outputs, Run All, then the three promises: no error, every check passes, a figure is drawn."""
    nb.open(workspace=nb.path.stem)
    session = nb.server.sessions_for(nb.notebook)
    assert session and session[0]["kernel"]["name"] == bs.KERNEL_NAME, f"kernel sessions: {session}"
    kernel_label = nb.panel.locator(".jp-KernelName").text_content().strip()
    assert kernel_label == "Python (sustainlab)", f"toolbar kernel is {kernel_label!r}"
    nb.log(f"{nb.notebook}: open with kernel {kernel_label}")

    nb.clear_all_outputs()
    seconds = nb.run_all(run_cap_s)
    nb.log(f"{nb.notebook}: Run All Cells finished in {seconds:.1f} s")
    nb.screenshot(f"{nb.path.stem}-run-all")
    # The course's server settings (jupyter-config/) answer JupyterLab's first-start news question; nothing here
    # hides it for the test.
    news = nb.page.get_by_text(re.compile("Jupyter news", re.IGNORECASE))
    assert news.count() == 0, "JupyterLab asks learners about Jupyter news"

    saved = nb.save()
    code_cells = [(i, c) for i, c in enumerate(saved["cells"]) if c["cell_type"] == "code"]
    errors = [
        f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
        for i, c in code_cells for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors, f"{nb.notebook}: cells show errors: {errors}"
    # Warnings on stderr are not errors, but the learner sees them (pink): log them so they get noticed.
    for i, c in code_cells:
        for o in c.get("outputs", []):
            text = bs.source_of({"source": o.get("text", "")}).strip()
            if o.get("name") == "stderr" and text:
                nb.log(f"{nb.notebook}: cell {i} shows on stderr: {text.splitlines()[0][:200]}")
    not_run = [i for i, c in code_cells if bs.source_of(c).strip() and c.get("execution_count") is None]
    assert not not_run, f"{nb.notebook}: cells {not_run} did not run"
    assert nb.executed_count() == sum(1 for _, c in code_cells if bs.source_of(c).strip())

    checks = [(i, bs.check_id(c)) for i, c in enumerate(nb.cells) if bs.check_id(c)]
    for index, exercise_id in checks:
        shown = nb.output_text(index)
        assert passed_line(exercise_id) in shown, f"{nb.notebook} check {exercise_id} (cell {index}) shows {shown!r}"
    nb.log(f"{nb.notebook}: {len(checks)} check cell(s) passed: {[e for _, e in checks]}")

    images = nb.panel.locator(".jp-OutputArea-output img")
    assert images.count() >= 1, f"{nb.notebook}: no figure was drawn"
    sizes = images.evaluate_all("imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
    assert all(w > 0 and h > 0 for w, h in sizes), f"{nb.notebook}: an image did not render: {sizes}"
    nb.log(f"{nb.notebook}: {len(sizes)} figure(s) drawn, sizes {sizes}")


def test_welcome_runs_clean_and_a_wrong_answer_shows_the_hint(browser, lab, deadline, artefacts):
    nb = open_notebook(browser, lab, WELCOME, deadline, artefacts)
    with bs.artefacts_on_failure(nb, "00_welcome"):
        run_everything_and_assert_clean(nb, run_cap_s=60)

        # The learner's loop: a wrong answer (the /1000 forgotten), run it, run its check, read the hint.
        solution = nb.index_where(lambda c: c["cell_type"] == "code" and "def kwh(" in bs.source_of(c))
        check_cell = solution + 1
        exercise_id = bs.check_id(nb.cells[check_cell])
        assert exercise_id == "wel-1"
        nb.replace_line(solution, "return watts * hours / 1000", "return watts * hours")
        nb.run_cell_and_next()
        _, hint = run_check(get_exercise(exercise_id), lambda watts, hours: watts * hours)
        expected = failed_line(exercise_id, hint)
        output = nb.cell(check_cell).locator(".jp-OutputArea-output", has_text=f"{FAIL_MARK} {exercise_id}:")
        output.wait_for(timeout=deadline.ms(30))
        nb.wait_until_run_finished(30)
        nb.screenshot("00_welcome-wrong-answer")
        shown = nb.output_text(check_cell).strip()
        assert shown == expected, f"the learner sees {shown!r}, expected {expected!r}"
        nb.log(f"{WELCOME}: wrong answer shows {shown!r}")


@pytest.mark.parametrize("notebook", CHAPTER)
def test_chapter_notebook_runs_clean(browser, lab, deadline, artefacts, notebook):
    nb = open_notebook(browser, lab, notebook, deadline, artefacts)
    with bs.artefacts_on_failure(nb, notebook.removesuffix(".ipynb")):
        run_everything_and_assert_clean(nb, run_cap_s=150)


@contextlib.contextmanager
def offline_page(browser, path, deadline, what):
    """Open the local HTML file ``path`` in a new page; on leaving, assert it fetched nothing from the network."""
    page = browser.new_page()
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(path.as_uri(), timeout=deadline.ms(30))
        yield page
        fetched = [url for url in requests if not url.startswith(("file:", "data:"))]
        assert not fetched, f"the {what} fetched {fetched}"
    finally:
        page.close()


def test_class_report_renders_offline(browser, deadline, artefacts):
    """The instructor's class report (sustainlab grade --report) opens as one page, figures drawn, nothing fetched."""
    from sustainlab.gradebook import mark_late, write_report

    rows = []
    for n, student in enumerate(["Ada", "Bo", "Chen", "Dara", "Émile", "Fatou", "Gus", "Hana"]):
        for k, check in enumerate(["wel-1", "gd-1", "gd-2", "gd-3h", "att-1"]):
            passed = (n + k) % 4 != 0 and not (student == "Bo" and k > 0)
            status = "passed" if passed else ("error" if student == "Gus" and k == 2 else "failed")
            notebook = "00_welcome.ipynb" if check == "wel-1" else (
                "02_attention.ipynb" if check == "att-1" else "01_gradient_descent.ipynb")
            rows.append(dict(student=student, notebook=notebook, check=check, points=2 if passed else 0,
                             max_points=2, status=status, message="" if passed else "hint"))
    rows = mark_late(rows, {("Hana", "01_gradient_descent.ipynb"): 5.2})
    report = write_report(rows, bs.ARTEFACTS / "class-report.html", title="Class report: demo class")
    with offline_page(browser, report, deadline, "class report") as page:
        images = page.locator("img")
        images.nth(1).wait_for(timeout=deadline.ms(15))
        sizes = images.evaluate_all("imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(sizes) == 2 and all(done and w > 100 and h > 100 for done, w, h in sizes), sizes
        attention = page.locator("#attention").inner_text()
        assert "Bo" in attention and "Gus" in attention and "Hana" in attention and "Ada" not in attention
        path = bs.ARTEFACTS / "class-report.png"
        page.screenshot(path=str(path), full_page=True)
        artefacts(f"class report rendered: figures {sizes}; screenshot {path.relative_to(bs.REPO_ROOT)}")


def test_feedback_page_renders_offline_without_hidden_inputs(browser, deadline, artefacts):
    """A student's feedback page (sustainlab grade --feedback) opens offline, verdicts at their cells, nothing hidden."""
    from sustainlab.feedback import feedback_html
    from sustainlab.grading import Row

    instructor = bs.REPO_ROOT / "notebooks" / WELCOME
    nb = nbformat.read(instructor, as_version=4)
    secret = "HIDDEN-PROBE-INPUTS-7731"
    hidden = nbformat.v4.new_code_cell(f"check('wel-1-hidden', kwh)  # {secret}",
                                       metadata={"sustainlab": {"check": "wel-1-hidden", "points": 1, "hidden": True}})
    nb.cells.append(hidden)
    rows = [Row("Zoë", WELCOME, "wel-1", 0, 1, "failed", "1000 W for 1 hour should be exactly 1 kWh <script>x</script>"),
            Row("Zoë", WELCOME, "wel-1-hidden", 0, 1, "failed", "")]
    page_html = feedback_html(nbformat.writes(nb), rows)
    assert secret not in page_html and "<script>x</script>" not in page_html
    path = bs.ARTEFACTS / "feedback-00_welcome.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page_html, encoding="utf-8")
    with offline_page(browser, path, deadline, "feedback page") as page:
        verdict = page.locator(".sustainlab-verdict").first
        verdict.wait_for(timeout=deadline.ms(15))
        assert "wel-1: failed" in verdict.inner_text() and "exactly 1 kWh" in verdict.inner_text()
        assert "0 / 2 points" in page.locator("body").inner_text()
        shot = bs.ARTEFACTS / "feedback-00_welcome.png"
        page.screenshot(path=str(shot), full_page=False)
        artefacts(f"feedback page rendered; screenshot {shot.relative_to(bs.REPO_ROOT)}")
