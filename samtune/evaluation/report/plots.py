"""Figures of the reports: mIoU-vs-clicks curves and best/worst overlays (matplotlib, no pyplot)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from samtune.evaluation.report.gallery import Example
from samtune.evaluation.report.overlay import LEGEND, render, short_name
from samtune.io_atomic import atomic_write

LINE_STYLES = ("-", "--", ":", "-.")


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    FigureCanvasAgg(fig)
    path = Path(path)
    atomic_write(
        path, lambda tmp: fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png")
    )
    return path


def plot_click_curves(
    curves: dict[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    title: str = "mIoU vs clicks",
    groups: dict[str, str] | None = None,
    xlabel: str = "clicks",
    ylabel: str = "mIoU",
    x: dict[str, Sequence[int]] | None = None,
) -> Path:
    """One line per entry of ``curves`` (label -> mIoU after click 1..K), saved as a PNG.

    Args:
        curves: label -> mIoU after click 1..K.
        path: the PNG to write.
        title: the plot's title.
        groups: label -> group (e.g. model size); a group shares a colour, its members differ
            in line style. Without it every line has its own colour.
        xlabel: the x axis' title.
        ylabel: the y axis' title.
        x: label -> the x of each of its values (default 1, 2, ...).
    """
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    names = list(dict.fromkeys((groups or {}).get(k, k) for k in curves))
    seen: dict[str, int] = {}
    for label, values in curves.items():
        group = (groups or {}).get(label, label)
        style = LINE_STYLES[seen.get(group, 0) % len(LINE_STYLES)]
        seen[group] = seen.get(group, 0) + 1
        color = f"C{names.index(group) % 10}"
        xs = np.asarray((x or {}).get(label, range(1, len(values) + 1)))
        ax.plot(xs, values, style, color=color, marker="o", markersize=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if curves:
        ax.legend(fontsize="small")
    return _save(fig, path)


def _draw_example(ax, ex: Example) -> None:
    picture = render(
        ex.image, ex.gt, ex.pred, points=ex.points, labels=ex.labels, box=ex.box, display=192
    )
    ax.imshow(picture, interpolation="nearest")
    ax.set_title(
        f"IoU {ex.iou:.3f}, {int(ex.gt.sum())} px\n{short_name(ex.file)} #{ex.object_index}",
        fontsize=7,
    )
    ax.set_axis_off()


def plot_overlays(
    best: list[Example], worst: list[Example], path: str | os.PathLike, *, title: str
) -> Path:
    """A grid of overlays, each object in a crop around it: best objects on the top row, worst
    below (colours: :data:`samtune.evaluation.report.overlay.LEGEND`)."""
    cols = max(len(best), len(worst), 1)
    fig = Figure(figsize=(max(2.3 * cols, 6.0), 5.2), layout="constrained")
    fig.suptitle(f"{title}: best (top), worst (bottom)\n{LEGEND}", fontsize=8)
    axes = fig.subplots(2, cols, squeeze=False)
    for row, examples in enumerate((best, worst)):
        for col in range(cols):
            if col < len(examples):
                _draw_example(axes[row][col], examples[col])
            else:
                axes[row][col].set_axis_off()
    return _save(fig, path)
