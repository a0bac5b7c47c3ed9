"""The report's PNG plots, and the weight plot of a model card (:func:`plot_run_weights`, one implementation).

Every plot draws on matplotlib's Agg canvas directly (no pyplot, no global backend switch). Each ``_plot_*``
function returns ``None`` when it wrote its PNG, else the reason it did not (the report prints it).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from mo_align.runs.jsonfile import finite_float
from mo_align.runs.report.pareto import non_dominated
from mo_align.runs.summary import normalize_summary


__all__ = [
    "PNG_SIGNATURE",
    "Plots",
    "cov_ema_figure",
    "draw_eval_curve",
    "make_plots",
    "plot_run_weights",
    "plot_weights",
    "weight_limits",
    "weights_figure",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_LINESTYLES = ("-", "--", ":", "-.")
_OBJECTIVE_LINES = ("-", "--", "-.", (0, (6, 2, 1, 2, 1, 2)))  # dotted is left to targets (CTWA's c_k)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_EVENT_MARKERS = {"negative_covariance": "X", "eval_drop": "v"}


@dataclass
class _Style:
    color: Any
    linestyle: str
    marker: str


@dataclass
class Plots:
    """What :func:`make_plots` did: PNGs written (name -> path), skipped (name -> reason), notes per plot."""

    written: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)


def _styles(runs: Sequence[Mapping[str, Any]]) -> dict[str, _Style]:
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    algorithms = list(dict.fromkeys(r["algorithm"] for r in runs))
    count: dict[str, int] = {}
    out = {}
    for r in runs:
        k = count[r["algorithm"]] = count.get(r["algorithm"], -1) + 1
        color = palette[algorithms.index(r["algorithm"]) % len(palette)]
        out[r["run_name"]] = _Style(color, _LINESTYLES[k % len(_LINESTYLES)], _MARKERS[k % len(_MARKERS)])
    return out


def _figure(n_panels: int, ncols_max: int = 3, panel: tuple[float, float] = (4.4, 3.3)):
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


def _save(fig, path: Path, legend_handles: dict[str, Any] | None = None) -> None:
    if legend_handles:
        fig.legend(
            list(legend_handles.values()),
            list(legend_handles.keys()),
            loc="outside lower center",
            ncols=max(1, min(len(legend_handles), 6, int(fig.get_figwidth() // 2))),
            fontsize="small",
        )
    fig.savefig(path, dpi=100, format="png")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "objective"


def draw_eval_curve(ax, run: Mapping[str, Any], name: str, style: _Style) -> Any:
    """One run's eval means of one objective against the step, with the 95 % CI band where the run recorded CIs
    (``eval[i]["ci"][name]``); returns the line, or None when the run has no value of ``name``."""
    pts = [e for e in run["eval"] if not math.isnan(e["means"].get(name, math.nan))]
    if not pts:
        return None
    steps, values = [e["step"] for e in pts], [e["means"][name] for e in pts]
    (line,) = ax.plot(steps, values, color=style.color, linestyle=style.linestyle, marker=style.marker, markersize=4)
    banded = [(e["step"], *e["ci"][name]) for e in pts if name in (e.get("ci") or {})]
    banded = [b for b in banded if math.isfinite(b[1]) and math.isfinite(b[2])]
    if len(banded) >= 2:
        x, low, high = zip(*banded)
        ax.fill_between(x, low, high, color=style.color, alpha=0.15, linewidth=0)
    return line


def _plot_eval_curves(runs, objectives, styles, path: Path) -> str | None:
    if not any(r["eval"] for r in runs):
        return "no run has eval data (eval curve is empty in every run)"
    fig, axes = _figure(len(objectives))
    handles = {}
    for ax, name in zip(axes, objectives):
        for r in runs:
            line = draw_eval_curve(ax, r, name, styles[r["run_name"]])
            if line is not None:
                handles.setdefault(r["run_name"], line)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("eval mean")
        ax.grid(alpha=0.3)
    _save(fig, path, handles)
    return None


def _draw_series(ax, series: Sequence[Mapping[str, Any]], key: str, objectives, handles: dict[str, Any]) -> None:
    """One line per objective of ``series`` (``[{"step": s, key: {objective: value}}]``) that no other can hide:
    objective k has its own colour, line style and marker, and each later line is thinner with smaller markers
    drawn above the earlier ones, so equal values show as nested lines and markers (never offset)."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    for k, name in enumerate(objectives):
        pts = [(e["step"], e[key][name]) for e in series if name in e[key] and math.isfinite(e[key][name])]
        if pts:
            steps, values = zip(*pts)
            (line,) = ax.plot(
                steps,
                values,
                color=palette[k % len(palette)],
                linestyle=_OBJECTIVE_LINES[k % len(_OBJECTIVE_LINES)],
                linewidth=max(0.8, 2.8 - 0.8 * k),
                marker=_MARKERS[k % len(_MARKERS)],
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
    _save(fig, path, handles)
    return None


def weights_figure(runs, objectives, *, eval_panel: bool = False) -> tuple[Any, dict[str, Any]]:
    """(figure, legend handles): one panel per run with a weight trajectory, one line per objective
    (:func:`_draw_series`), on :func:`weight_limits`. ``eval_panel`` (the model card's single run) adds a panel of
    each run's eval means per objective when it has two evaluations or more."""
    with_weights = [r for r in runs if r["weights"]]
    with_evals = [r for r in with_weights if len(r["eval"]) >= 2] if eval_panel else []
    fig, axes = _figure(len(with_weights) + len(with_evals))
    handles: dict[str, Any] = {}
    for ax, r in zip(axes, with_weights):
        _draw_series(ax, r["weights"], "weights", objectives, handles)
        weight_limits(ax, [v for e in r["weights"] for v in e["weights"].values()])
        ax.set_title(f"{r['run_name']} ({r['algorithm']})", fontsize="medium")
        ax.set_ylabel("weight")
    for ax, r in zip(axes[len(with_weights) :], with_evals):
        _draw_series(ax, r["eval"], "means", objectives, handles)
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


def _cov_targets(run: Mapping[str, Any], objectives: Sequence[str]) -> dict[str, float]:
    targets = run["weighting_hyperparameters"].get("cov_targets")
    names = run["objectives"] or list(objectives)
    if isinstance(targets, int | float) and not isinstance(targets, bool):
        return dict.fromkeys(names, float(targets))
    if isinstance(targets, list | tuple) and len(targets) == len(names):
        return {n: finite_float(t) for n, t in zip(names, targets)}
    return {}


def _plot_cov_ema(runs, objectives, styles, path: Path, notes: list[str]) -> str | None:
    if not any(r["cov_ema"] for r in runs):
        return "no run recorded a covariance-law EMA"
    fig, handles = cov_ema_figure(runs, objectives, styles, notes)
    _save(fig, path, handles)
    return None


def cov_ema_figure(runs, objectives, styles, notes: list[str]) -> tuple[Any, dict[str, Any]]:
    """(figure, legend handles) of ``cov_ema.png``: per objective, each run's covariance EMA, its target (dotted,
    in the legend as ``<run>: target c_k``) and its events."""
    fig, axes = _figure(len(objectives))
    handles: dict[str, Any] = {}
    event_kinds: dict[str, str] = {}
    for ax, name in zip(axes, objectives):
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        for r in runs:
            s = styles[r["run_name"]]
            pts = [
                (e["step"], e["values"][name]) for e in r["cov_ema"] if not math.isnan(e["values"].get(name, math.nan))
            ]
            if pts:
                steps, values = zip(*pts)
                (line,) = ax.plot(steps, values, color=s.color, linestyle=s.linestyle)
                handles.setdefault(r["run_name"], line)
                target = _cov_targets(r, objectives).get(name)
                if target is not None and not math.isnan(target):
                    line = ax.axhline(target, color=s.color, linestyle=":", linewidth=1.2)
                    handles.setdefault(f"{r['run_name']}: target c_k", line)
            for ev in r["events"]:
                if ev["objective"] not in (name, None):
                    continue
                marker = _EVENT_MARKERS.get(ev["kind"], "*")
                event_kinds[ev["kind"]] = marker
                if pts:
                    y = float(np.interp(ev["step"], steps, values))
                    ax.plot([ev["step"]], [y], marker=marker, color=s.color, markersize=9, markeredgecolor="k")
                else:
                    ax.axvline(ev["step"], color=s.color, linestyle="--", linewidth=0.8)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("covariance EMA")
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    for kind, marker in event_kinds.items():
        handles[f"event: {kind}"] = Line2D([], [], marker=marker, color="0.3", markeredgecolor="k", linestyle="")
    if event_kinds:
        notes.append("markers: events at the step they fired (dashed vertical line when the run has no EMA curve)")
    return fig, handles


def _plot_pareto(runs, pair, analysis, styles, path: Path) -> str | None:
    a, b = pair
    per_run = analysis["runs"]
    chosen = [
        r
        for r in runs
        if per_run[r["run_name"]]["final"][a] is not None and per_run[r["run_name"]]["final"][b] is not None
    ]
    if not chosen:
        return f"no run has final values of both {a} and {b}"
    pts = np.array([[per_run[r["run_name"]]["final"][a], per_run[r["run_name"]]["final"][b]] for r in chosen])
    front = non_dominated(pts)
    fig, (ax,) = _figure(1, panel=(6.0, 4.8))
    handles = {}
    for r, (x, y), on_front in zip(chosen, pts, front):
        s = styles[r["run_name"]]
        start = per_run[r["run_name"]]["start"]
        if start[a] is not None and start[b] is not None:
            ax.annotate(
                "",
                xy=(x, y),
                xytext=(start[a], start[b]),
                arrowprops={"arrowstyle": "->", "color": s.color, "alpha": 0.35},
            )
            ax.plot([start[a]], [start[b]], marker=s.marker, color=s.color, alpha=0.35, markerfacecolor="none")
        dot = ax.scatter(
            [x],
            [y],
            marker=s.marker,
            color=s.color,
            s=110 if on_front else 45,
            edgecolors="k" if on_front else "none",
            linewidths=1.6,
            zorder=3,
        )
        handles.setdefault(r["algorithm"], dot)
        ax.annotate(r["run_name"], (x, y), textcoords="offset points", xytext=(6, 5), fontsize="small")
    order = np.argsort(-pts[front, 0])
    fx, fy = pts[front, 0][order], pts[front, 1][order]
    (front_line,) = ax.step(fx, fy, where="post", color="k", linewidth=1.0, alpha=0.6, zorder=2)
    handles["non-dominated (this pair)"] = front_line
    from matplotlib.lines import Line2D

    handles["start (faint) -> final"] = Line2D([], [], marker="o", color="0.6", markerfacecolor="none", linestyle="")
    handles["HV reference"] = Line2D([], [], color="0.6", linestyle="--", linewidth=0.8)
    ref = dict(zip(analysis["objectives"], analysis["reference"]))
    ax.axvline(ref[a], color="0.6", linestyle="--", linewidth=0.8)
    ax.axhline(ref[b], color="0.6", linestyle="--", linewidth=0.8)
    ax.set_xlabel(f"{a} (final eval mean)")
    ax.set_ylabel(f"{b} (final eval mean)")
    ax.set_title(f"{a} vs {b}")
    ax.grid(alpha=0.3)
    _save(fig, path, handles)
    return None


def make_plots(analysis: dict[str, Any], out: Path) -> Plots:
    runs, objectives = analysis["_runs"], analysis["objectives"]
    styles = _styles(runs)
    plots = Plots()
    jobs: list[tuple[str, Any]] = [
        ("eval_curves.png", lambda p, notes: _plot_eval_curves(runs, objectives, styles, p)),
        ("weights.png", lambda p, notes: plot_weights(runs, objectives, p, notes)),
        ("cov_ema.png", lambda p, notes: _plot_cov_ema(runs, objectives, styles, p, notes)),
    ]
    for pair in combinations(objectives, 2):
        name = f"pareto_{_safe(pair[0])}__{_safe(pair[1])}.png"
        jobs.append((name, lambda p, notes, pair=pair: _plot_pareto(runs, pair, analysis, styles, p)))
    for name, job in jobs:
        path = out / name
        notes: list[str] = []
        reason = job(path, notes)
        plots.notes[name] = notes
        if reason is None:
            plots.written[name] = path
        else:
            plots.skipped[name] = reason
            path.unlink(missing_ok=True)  # never leave a stale plot from an earlier report behind
    if len(objectives) < 2:
        plots.skipped["pareto_*.png"] = "fewer than two objectives: no Pareto plots"
    return plots
