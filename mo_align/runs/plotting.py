"""The weight plot of a run (``mo_weights.png`` of the model card, ``weights.png`` of the report) and the figure
helpers every mo_align plot shares: :func:`figure` (panels on matplotlib's Agg canvas, no pyplot, no global backend
switch), :func:`save`, :class:`Style`, :func:`draw_series` (one line per objective that no other can hide).

The run report (:mod:`mo_align.runs.report.plots`) and the lab's figures draw with the same helpers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mo_align.runs.summary import normalize_summary


__all__ = [
    "MARKERS",
    "OBJECTIVE_LINES",
    "Style",
    "draw_series",
    "figure",
    "plot_run_weights",
    "plot_weights",
    "save",
    "weight_limits",
    "weights_figure",
]

OBJECTIVE_LINES = ("-", "--", "-.", (0, (6, 2, 1, 2, 1, 2)))  # dotted is left to targets (CTWA's c_k)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass
class Style:
    """How one run is drawn: its colour, line style and marker."""

    color: Any
    linestyle: str
    marker: str


def figure(n_panels: int, ncols_max: int = 3, panel: tuple[float, float] = (4.4, 3.3)):
    """(figure, axes): ``n_panels`` panels of size ``panel`` (inches) on a grid at most ``ncols_max`` wide, on
    matplotlib's Agg canvas (no pyplot); the unused cells of the grid are hidden."""
    # lazy: matplotlib loads when a figure is drawn, not when the trainer (which imports this module) starts
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols_max, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def save(fig, path: Path, legend_handles: dict[str, Any] | None = None) -> None:
    """Write ``fig`` as a PNG to ``path`` (100 dpi), with one legend below the panels when ``legend_handles``."""
    if legend_handles:
        fig.legend(
            list(legend_handles.values()),
            list(legend_handles.keys()),
            loc="outside lower center",
            ncols=max(1, min(len(legend_handles), 6, int(fig.get_figwidth() // 2))),
            fontsize="small",
        )
    fig.savefig(path, dpi=100, format="png")


def draw_series(ax, series: Sequence[Mapping[str, Any]], key: str, objectives, handles: dict[str, Any]) -> None:
    """One line per objective of ``series`` (``[{"step": s, key: {objective: value}}]``) that no other can hide:
    objective k has its own colour, line style and marker, and each later line is thinner with smaller markers
    drawn above the earlier ones, so equal values show as nested lines and markers (never offset)."""
    from matplotlib import colormaps  # lazy: as in figure()

    palette = colormaps["tab10"].colors
    for k, name in enumerate(objectives):
        pts = [(e["step"], e[key][name]) for e in series if name in e[key] and math.isfinite(e[key][name])]
        if pts:
            steps, values = zip(*pts)
            (line,) = ax.plot(
                steps,
                values,
                color=palette[k % len(palette)],
                linestyle=OBJECTIVE_LINES[k % len(OBJECTIVE_LINES)],
                linewidth=max(0.8, 2.8 - 0.8 * k),
                marker=MARKERS[k % len(MARKERS)],
                markersize=max(2.5, 8.0 - 2.0 * k),
                markevery=max(1, len(pts) // 12),
                zorder=2 + k,
            )
            handles.setdefault(name, line)


def weight_limits(ax, values: Sequence[float]) -> None:
    """The y-range of a weight panel: from 0 (or the smallest weight, if negative) to at least 0.1 above it, so
    weights that differ by 0.001 do not look far apart; the spread of the weights is written in the panel."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return
    low, high = min(0.0, min(values)), max(values)
    top = max(high + 0.08 * (high - low), low + 0.1)
    ax.set_ylim(low, top)
    spread = max(values) - min(values)
    ax.text(
        0.02, 0.03, f"weights {min(values):.3f} to {max(values):.3f} (spread {spread:.3f})", transform=ax.transAxes,
        fontsize="x-small", color="0.3",
    )  # fmt: skip


def plot_weights(
    runs, objectives, path: Path, notes: list[str] | None = None, *, eval_panel: bool = False
) -> str | None:
    """``weights.png`` of the report (:func:`weights_figure`); the reason when there is nothing to plot."""
    with_weights = [r for r in runs if r["weights"]]
    if not with_weights:
        return "no run recorded a weight trajectory"
    if notes is not None:
        notes += [f"{r['run_name']}: no weight trajectory recorded" for r in runs if not r["weights"]]
    fig, handles = weights_figure(with_weights, objectives, eval_panel=eval_panel)
    save(fig, path, handles)
    return None


def weights_figure(runs, objectives, *, eval_panel: bool = False) -> tuple[Any, dict[str, Any]]:
    """(figure, legend handles): one panel per run with a weight trajectory, one line per objective
    (:func:`draw_series`), on :func:`weight_limits`. ``eval_panel`` (the model card's single run) adds a panel of
    each run's eval means per objective when it has two evaluations or more."""
    with_weights = [r for r in runs if r["weights"]]
    with_evals = [r for r in with_weights if len(r["eval"]) >= 2] if eval_panel else []
    fig, axes = figure(len(with_weights) + len(with_evals))
    handles: dict[str, Any] = {}
    for ax, r in zip(axes, with_weights):
        draw_series(ax, r["weights"], "weights", objectives, handles)
        weight_limits(ax, [v for e in r["weights"] for v in e["weights"].values()])
        ax.set_title(f"{r['run_name']} ({r['algorithm']})", fontsize="medium")
        ax.set_ylabel("weight")
    for ax, r in zip(axes[len(with_weights) :], with_evals):
        draw_series(ax, r["eval"], "means", objectives, handles)
        ax.set_title(f"{r['run_name']}: evaluation mean per objective", fontsize="medium")
        ax.set_ylabel("eval mean")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return fig, handles


def plot_run_weights(summary: Mapping[str, Any], path: str | os.PathLike) -> bool:
    """The model card's ``mo_weights.png``: :func:`plot_weights` of the one run of ``summary`` (a ``mo_summary.json``
    dict), with its eval panel. Returns False, and writes nothing, when the run has no weight trajectory."""
    run = normalize_summary(summary)
    objectives = list(run["objectives"])
    for entry in run["weights"]:
        objectives += [name for name in entry["weights"] if name not in objectives]
    return plot_weights([run], objectives, Path(path), eval_panel=True) is None
