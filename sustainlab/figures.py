"""Readable figures, checked: every figure a notebook draws is labelled, legible and honest about noise.

:func:`figure_problems` lists what makes one figure hard to read: an axes without x label, y label or title, tick
labels that overlap once drawn, a legend placed by hand on top of the data, noisy values drawn without error bars.

**Noisy values.** An axes plots noisy values when it says so, with :func:`mark_noisy` (which sets the axes' ``gid``
to ``"noisy"``: plain matplotlib, so any code can do it), or when one of its axis labels names a measured cost
(time, seconds, energy, joules, watt-hours, …), unless it says its values are computed, with :func:`mark_exact`
(``gid`` ``"exact"``). A noisy axes must show its spread: an ``errorbar`` (also through
``bar(..., yerr=...)``) or a shaded band (``fill_between``).

**Under the test suite.** ``tests`` run every notebook under nbval; the plugin :mod:`sustainlab.figure_hooks` sets
:data:`LOG_ENV` for the kernels, and ``import sustainlab`` in a kernel then calls :func:`record_problems`, which checks
each figure as it is rendered (``FigureCanvasBase.print_figure``: what ``plt.show()``, the inline backend and
``savefig`` all go through) and appends one JSON line per figure to that file. The plugin fails the notebook cell
that drew a figure with problems. Nothing is re-executed, so the check costs one extra draw per figure.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import matplotlib.pyplot as plt
>>> fig, ax = plt.subplots()
>>> _ = ax.plot([1, 2, 3], [2, 1, 3])
>>> figure_problems(fig)
['axes 1: no x label', 'axes 1: no y label', 'axes 1: no title (axes or figure)']
>>> plt.close(fig)
"""

from __future__ import annotations

import json
import os
import re
from itertools import combinations

__all__ = ["EXACT_GID", "LOG_ENV", "NOISY_GID", "figure_problems", "mark_exact", "mark_noisy", "record_problems"]

#: Environment variable naming the JSON-lines file that kernels append their figure checks to.
LOG_ENV = "SUSTAINLAB_FIGURE_LOG"
#: The ``gid`` an axes carries when its plotted values are noisy (see :func:`mark_noisy`).
NOISY_GID = "noisy"
#: The ``gid`` of an axes whose values are computed, not measured, although a label names a cost (:func:`mark_exact`).
EXACT_GID = "exact"
# Axis labels that name a measured, hence noisy, cost.
_NOISY_LABEL = re.compile(
    r"\b(time|seconds?|energy|joules?|watts?|power)\b|\((?:[^)]*\s)?(s|ms|µs|J|mJ|kJ|Wh|mWh|kWh|W)\)",
    re.IGNORECASE)
# Pixels two tick labels may share before they count as overlapping (anti-aliased glyph edges touch).
_TOLERANCE_PX = 1.0


def mark_noisy(ax):
    """Declare that ``ax`` plots noisy values (measured times, energies, CV scores): it must then show error bars.

    Returns ``ax``, so that it chains: ``mark_noisy(ax).errorbar(x, y, yerr=...)``.
    """
    ax.set_gid(NOISY_GID)
    return ax


def mark_exact(ax):
    """Declare that ``ax`` plots computed values (e.g. a formula such as energy = power × time), not measurements:
    no error bars are asked for even if an axis label names a time or an energy. Returns ``ax``."""
    ax.set_gid(EXACT_GID)
    return ax


def _is_noisy(ax) -> bool:
    if ax.get_gid() in (NOISY_GID, EXACT_GID):
        return ax.get_gid() == NOISY_GID
    return any(_NOISY_LABEL.search(label or "") for label in (ax.get_xlabel(), ax.get_ylabel()))


def _shows_spread(ax) -> bool:
    from matplotlib.collections import PolyCollection
    from matplotlib.container import BarContainer, ErrorbarContainer

    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            return True
        if isinstance(container, BarContainer) and getattr(container, "errorbar", None) is not None:
            return True
    return any(isinstance(collection, PolyCollection) for collection in ax.collections)


def _is_colorbar(ax) -> bool:
    return getattr(ax, "_colorbar", None) is not None or ax.get_label() == "<colorbar>"


def _visible_tick_labels(axis, renderer):
    """Window extents of the tick labels actually drawn on ``axis`` (inside the view, non-empty, visible)."""
    low, high = sorted(axis.get_view_interval())
    extents = []
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        loc = tick.get_loc()
        if loc is None or not (low - 1e-12 * abs(low) <= loc <= high + 1e-12 * abs(high)):
            continue
        for label in (tick.label1, tick.label2):
            if label.get_visible() and label.get_text().strip():
                extents.append((label.get_text(), label.get_window_extent(renderer)))
    return extents


def _overlapping(extents) -> list[tuple[str, str]]:
    pairs = []
    for (text_a, a), (text_b, b) in combinations(extents, 2):
        width = min(a.x1, b.x1) - max(a.x0, b.x0)
        height = min(a.y1, b.y1) - max(a.y0, b.y0)
        if width > _TOLERANCE_PX and height > _TOLERANCE_PX:
            pairs.append((text_a, text_b))
    return pairs


def _data_points(ax):
    """Display coordinates of the data an axes draws: line vertices, scatter offsets, bar corners."""
    import numpy as np
    from matplotlib.patches import Rectangle

    points = []
    for line in ax.get_lines():
        xy = np.column_stack([np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)])
        if len(xy):
            points.append(line.get_transform().transform(xy))
    for collection in ax.collections:
        offsets = np.asarray(collection.get_offsets(), float)
        if offsets.size:
            points.append(collection.get_offset_transform().transform(offsets))
    boxes = [patch.get_window_extent() for patch in ax.patches if isinstance(patch, Rectangle)]
    points = np.vstack([p for p in points if len(p)]) if points else np.empty((0, 2))
    frame = ax.get_window_extent()
    shown = (np.all(np.isfinite(points), axis=1) & (points[:, 0] >= frame.x0) & (points[:, 0] <= frame.x1)
             & (points[:, 1] >= frame.y0) & (points[:, 1] <= frame.y1))
    return points[shown], boxes


def _legend_covers_data(ax, renderer) -> bool:
    legend = ax.get_legend()
    if legend is None or not legend.get_visible() or legend._loc in (0, "best"):  # "best": matplotlib chose it
        return False
    box = legend.get_window_extent(renderer)
    if not box.overlaps(ax.get_window_extent(renderer)):
        return False  # placed outside the axes
    points, bars = _data_points(ax)
    inside = ((points[:, 0] > box.x0) & (points[:, 0] < box.x1) & (points[:, 1] > box.y0) & (points[:, 1] < box.y1))
    return bool(inside.any()) or any(bar.overlaps(box) and bar.width > 0 and bar.height > 0 for bar in bars)


def _labelled(ax, which: str) -> bool:
    """An axis label on ``ax``, or on an axes sharing that axis (``sharey=True`` with ``label_outer()``)."""
    siblings = (ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()).get_siblings(ax)
    return any((other.get_xlabel() if which == "x" else other.get_ylabel()).strip() for other in siblings)


def _renderer(fig):
    fig.draw_without_rendering()
    canvas = fig.canvas
    return canvas.get_renderer() if hasattr(canvas, "get_renderer") else fig._get_renderer()


def figure_problems(fig) -> list[str]:
    """What makes ``fig`` hard to read, one sentence per problem; an empty list for a readable figure.

    Checks every axes except colorbars and axes turned off: a non-empty x label, y label and title (the figure's
    ``supxlabel``/``supylabel``/``suptitle`` count for all its axes, and a label on an axes sharing that axis counts
    for its siblings), tick labels and text annotations that do not
    overlap once drawn, a
    legend that does not cover data unless matplotlib placed it (``loc="best"``) or it sits outside the axes, and
    error bars or a band on axes whose values are noisy (see the module).

    Parameters
    ----------
    fig : matplotlib.figure.Figure

    Returns
    -------
    list of str
    """
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}.")
    renderer = _renderer(fig)
    shared = {kind: bool(getattr(fig, f"_sup{kind}", None) and getattr(fig, f"_sup{kind}").get_text().strip())
              for kind in ("title", "xlabel", "ylabel")}
    problems = []
    axes = [ax for ax in fig.get_axes() if ax.axison and ax.get_visible() and not _is_colorbar(ax)]
    for number, ax in enumerate(axes, start=1):
        name = f"axes {number}" + (f" ({ax.get_title()!r})" if ax.get_title() else "")
        if not _labelled(ax, "x") and not shared["xlabel"]:
            problems.append(f"{name}: no x label")
        if not _labelled(ax, "y") and not shared["ylabel"]:
            problems.append(f"{name}: no y label")
        titles = [ax.get_title(loc) for loc in ("center", "left", "right")]
        if not any(t.strip() for t in titles) and not shared["title"]:
            problems.append(f"{name}: no title (axes or figure)")
        for axis_name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            pairs = _overlapping(_visible_tick_labels(axis, renderer))
            if pairs:
                shown = ", ".join(f"{a!r}/{b!r}" for a, b in pairs[:3])
                problems.append(f"{name}: {axis_name} tick labels overlap ({shown})")
        texts = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts
                 if t.get_visible() and t.get_text().strip()]
        pairs = _overlapping(texts)
        if pairs:
            shown = ", ".join(f"{a!r}/{b!r}" for a, b in pairs[:3])
            problems.append(f"{name}: text labels overlap ({shown})")
        if _legend_covers_data(ax, renderer):
            problems.append(f"{name}: the legend covers data; use loc='best' or place it outside the axes")
        if _is_noisy(ax) and not _shows_spread(ax):
            problems.append(f"{name}: plots noisy values without error bars or a band (errorbar, fill_between)")
    return problems


def _describe(fig) -> str:
    suptitle = getattr(fig, "_suptitle", None)
    if suptitle is not None and suptitle.get_text():
        return suptitle.get_text()
    titles = [ax.get_title() for ax in fig.get_axes() if ax.get_title()]
    return titles[0] if titles else f"figure {fig.number}" if hasattr(fig, "number") else "figure"


def record_problems(path: str | os.PathLike) -> None:
    """Check every figure as it is rendered, appending ``{"figure": ..., "problems": [...]}`` lines to ``path``.

    Installed once per process (a second call only changes the path). Used in notebook kernels under the test suite
    (see the module); a figure's own rendering is never changed, and a failing check is recorded, not raised.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    global _LOG_PATH
    _LOG_PATH = os.fspath(path)
    if getattr(FigureCanvasBase.print_figure, "_sustainlab_checked", False):
        return
    original = FigureCanvasBase.print_figure

    def print_figure(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        try:
            entry = {"figure": _describe(self.figure), "problems": figure_problems(self.figure)}
        except Exception as error:  # a checker bug must not break the notebook; the test reads it as a problem
            entry = {"figure": "?", "problems": [f"the figure check itself failed: {error!r}"]}
        with open(_LOG_PATH, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry, ensure_ascii=False) + "\n")
        return result

    print_figure._sustainlab_checked = True
    FigureCanvasBase.print_figure = print_figure


_LOG_PATH: str | None = None
