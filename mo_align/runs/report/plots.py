"""The report's PNG plots; the weight plot (``weights.png``, :func:`plot_weights`) is the model card's, in
:mod:`mo_align.runs.plotting` with the figure helpers every plot shares (re-exported here).

Every plot draws on matplotlib's Agg canvas directly (no pyplot, no global backend switch). Each ``_plot_*``
function returns ``None`` when it wrote its PNG, else the reason it did not (the report prints it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.lines import Line2D

from mo_align.runs.jsonfile import finite_float
from mo_align.runs.plotting import MARKERS as _MARKERS
from mo_align.runs.plotting import Style as _Style
from mo_align.runs.plotting import figure as _figure
from mo_align.runs.plotting import plot_run_weights, plot_weights, weight_limits, weights_figure
from mo_align.runs.plotting import save as _save
from mo_align.runs.report.pareto import non_dominated


__all__ = [
    "COV_EMA_PNG",
    "EVAL_CURVES_PNG",
    "PNG_SIGNATURE",
    "WEIGHTS_PNG",
    "Plots",
    "cov_ema_figure",
    "cov_targets",
    "draw_eval_curve",
    "make_plots",
    "plot_run_weights",
    "plot_weights",
    "weight_limits",
    "weights_figure",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVAL_CURVES_PNG, WEIGHTS_PNG, COV_EMA_PNG = "eval_curves.png", "weights.png", "cov_ema.png"  # titled by render
_LINESTYLES = ("-", "--", ":", "-.")
_EVENT_MARKERS = {"negative_covariance": "X", "eval_drop": "v"}


@dataclass
class Plots:
    """What :func:`make_plots` did: PNGs written (name -> path), skipped (name -> reason), notes per plot."""

    written: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)


def _styles(runs: Sequence[Mapping[str, Any]]) -> dict[str, _Style]:
    palette = colormaps["tab10"].colors
    algorithms = list(dict.fromkeys(r["algorithm"] for r in runs))
    count: dict[str, int] = {}
    out = {}
    for r in runs:
        k = count[r["algorithm"]] = count.get(r["algorithm"], -1) + 1
        color = palette[algorithms.index(r["algorithm"]) % len(palette)]
        out[r["run_name"]] = _Style(color, _LINESTYLES[k % len(_LINESTYLES)], _MARKERS[k % len(_MARKERS)])
    return out


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


def cov_targets(run: Mapping[str, Any], objectives: Sequence[str]) -> dict[str, float]:
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
                target = cov_targets(r, objectives).get(name)
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
        (EVAL_CURVES_PNG, lambda p, notes: _plot_eval_curves(runs, objectives, styles, p)),
        (WEIGHTS_PNG, lambda p, notes: plot_weights(runs, objectives, p, notes)),
        (COV_EMA_PNG, lambda p, notes: _plot_cov_ema(runs, objectives, styles, p, notes)),
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
