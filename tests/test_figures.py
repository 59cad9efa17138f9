"""Figure readability: the checker finds unlabelled axes, overlapping labels, covering legends, missing error bars,
and the nbval hook fails a notebook cell that draws such a figure (also when its output is not compared)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from nbformat.v4 import new_code_cell, new_notebook, new_output  # noqa: E402

from sustainlab.figures import LOG_ENV, figure_problems, mark_exact, mark_noisy, record_problems  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fig_ax():
    fig, ax = plt.subplots(figsize=(5, 3.5))
    yield fig, ax
    plt.close(fig)


def _label(ax, ylabel="value"):
    ax.set(xlabel="x", ylabel=ylabel, title="a title")


def test_a_labelled_figure_has_no_problems(fig_ax):
    fig, ax = fig_ax
    ax.plot([0, 1, 2], [1, 3, 2], label="data")
    ax.legend(loc="best")
    _label(ax)
    assert figure_problems(fig) == []


def test_missing_labels_and_title(fig_ax):
    fig, ax = fig_ax
    ax.plot([0, 1], [0, 1])
    assert figure_problems(fig) == ["axes 1: no x label", "axes 1: no y label", "axes 1: no title (axes or figure)"]


def test_figure_level_labels_count_for_every_axes():
    fig, axes = plt.subplots(1, 2)
    for ax in axes:
        ax.plot([0, 1], [0, 1])
    fig.suptitle("shared"), fig.supxlabel("x"), fig.supylabel("y")
    try:
        assert figure_problems(fig) == []
    finally:
        plt.close(fig)


def test_a_shared_axis_label_counts_for_its_siblings():
    fig, axes = plt.subplots(1, 2, sharey=True)
    for ax in axes:
        ax.plot([0, 1], [0, 1])
        ax.set(xlabel="x", title="panel")
        ax.label_outer()
    axes[0].set_ylabel("y")
    try:
        assert figure_problems(fig) == []
        axes[0].set_ylabel("")
        assert figure_problems(fig) == ["axes 1 ('panel'): no y label", "axes 2 ('panel'): no y label"]
    finally:
        plt.close(fig)


def test_overlapping_tick_labels_are_found(fig_ax):
    fig, ax = fig_ax
    fig.set_size_inches(2.5, 2.5)
    ax.bar([f"a long category name {i}" for i in range(5)], range(5))
    _label(ax)
    problems = figure_problems(fig)
    assert len(problems) == 1 and "x tick labels overlap" in problems[0]
    ax.tick_params(axis="x", labelrotation=90)
    assert figure_problems(fig) == []


def test_log_axis_minor_labels_that_collide(fig_ax):
    """The chapter-3 sweep plot as it was: minor tick labels of a log axis between 0.02 and 0.3 collide."""
    fig, ax = fig_ax
    fig.set_size_inches(5.5, 3.5)
    ax.plot([0.02, 0.05, 0.1, 0.3], [0.57, 0.59, 0.65, 0.66], "o-")
    ax.set_xscale("log")
    _label(ax)
    assert any("x tick labels overlap" in p for p in figure_problems(fig))


def test_overlapping_annotations_are_found(fig_ax):
    fig, ax = fig_ax
    ax.scatter([0.010, 0.012], [0.5, 0.5])
    for x, name in [(0.010, "first long label"), (0.012, "second long label")]:
        ax.annotate(name, (x, 0.5), textcoords="offset points", xytext=(6, 4))
    ax.set_xlim(0, 0.1)
    _label(ax)
    assert any("text labels overlap" in p for p in figure_problems(fig))


def test_a_legend_placed_on_the_data_is_found_unless_matplotlib_placed_it(fig_ax):
    fig, ax = fig_ax
    ax.bar(["a", "b"], [0.4, 0.64], label="bars")
    ax.axhline(0.5, label="overall")
    ax.legend(loc="lower right")
    _label(ax)
    assert any("legend covers data" in p for p in figure_problems(fig))
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1))  # outside the axes
    assert figure_problems(fig) == []
    ax.legend(loc="best")
    assert figure_problems(fig) == []


def test_noisy_values_need_error_bars(fig_ax):
    fig, ax = fig_ax
    ax.plot([1, 2, 3], [0.1, 0.2, 0.4])
    _label(ax, ylabel="time per call (ms)")  # a measured cost: noisy by name
    assert any("noisy values without error bars" in p for p in figure_problems(fig))
    ax.errorbar([1, 2, 3], [0.1, 0.2, 0.4], yerr=0.05)
    assert figure_problems(fig) == []


def test_mark_exact_opts_a_computed_curve_out(fig_ax):
    fig, ax = fig_ax
    ax.plot([1, 2, 3], [10, 20, 30])
    _label(ax, ylabel="energy (Wh)")  # energy = power × time: a formula, not a measurement
    assert any("noisy values" in p for p in figure_problems(fig))
    assert mark_exact(ax) is ax
    assert figure_problems(fig) == []


def test_mark_noisy_declares_noise_and_a_band_shows_it(fig_ax):
    fig, ax = fig_ax
    ax.plot([1, 2, 3], [0.8, 0.82, 0.81])
    _label(ax, ylabel="balanced accuracy")
    assert figure_problems(fig) == []
    assert mark_noisy(ax) is ax and ax.get_gid() == "noisy"
    assert any("noisy values" in p for p in figure_problems(fig))
    ax.fill_between([1, 2, 3], [0.78, 0.8, 0.79], [0.82, 0.84, 0.83], alpha=0.3)
    assert figure_problems(fig) == []


def test_bars_with_yerr_count_as_error_bars(fig_ax):
    fig, ax = fig_ax
    ax.bar(["a", "b"], [1.0, 2.0], yerr=[0.1, 0.2])
    _label(ax, ylabel="energy (J)")
    assert figure_problems(fig) == []


def test_colorbars_and_hidden_axes_are_not_checked(fig_ax):
    fig, ax = fig_ax
    image = ax.imshow(np.eye(3))
    fig.colorbar(image)
    _label(ax)
    fig.add_axes([0, 0, 0.1, 0.1]).set_axis_off()
    assert figure_problems(fig) == []


def test_figure_problems_rejects_non_figures():
    with pytest.raises(TypeError, match="fig must be a matplotlib Figure"):
        figure_problems("not a figure")


def test_recorder_logs_every_rendered_figure(tmp_path, fig_ax):
    fig, ax = fig_ax
    log = tmp_path / "figures.jsonl"
    record_problems(log)
    ax.plot([0, 1], [0, 1])
    fig.savefig(tmp_path / "out.png")
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries[-1]["problems"][0] == "axes 1: no x label"


# ----------------------------------------------------------------------------------------------------------------------
# The nbval hook, end to end: a notebook whose figure is unreadable fails, even in an nbval-ignore-output cell
# ----------------------------------------------------------------------------------------------------------------------


def _run_nbval(tmp_path, source, tags=()):
    cell = new_code_cell(source, execution_count=1)
    cell.outputs = [new_output("stream", name="stdout", text="ok\n")]
    if tags:
        cell.metadata["tags"] = list(tags)
    path = tmp_path / "probe.ipynb"
    nbformat.write(new_notebook(cells=[cell]), path)
    (tmp_path / "conftest.py").write_text(
        "from sustainlab.figure_hooks import pytest_configure, pytest_runtest_makereport, pytest_unconfigure  # noqa\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    env.pop(LOG_ENV, None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(tmp_path / "pytest.ini"), "-p", "no:cacheprovider", "--nbval",
         "--nbval-current-env", str(path)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)


FIGURE = ("import sustainlab, matplotlib.pyplot as plt\n"
          "fig, ax = plt.subplots()\nax.plot([0, 1], [0, 1])\n{labels}plt.show()\nprint('ok')")


@pytest.mark.slow
def test_hook_fails_a_cell_with_an_unreadable_figure_even_if_its_output_is_ignored(tmp_path):
    result = _run_nbval(tmp_path, FIGURE.format(labels=""), tags=["nbval-ignore-output"])
    assert result.returncode == 1, result.stdout
    assert "no x label" in result.stdout


@pytest.mark.slow
def test_hook_passes_a_readable_figure(tmp_path):
    labels = "ax.set(xlabel='x', ylabel='y', title='t')\n"
    result = _run_nbval(tmp_path, FIGURE.format(labels=labels), tags=["nbval-ignore-output"])
    assert result.returncode == 0, result.stdout
