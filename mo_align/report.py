"""Compare finished training runs: per-objective tables, hypervolume, Pareto fronts, interference, plots.

``mo-align report RUN_DIR [RUN_DIR ...] --out DIR`` (see :func:`write_report`) reads each run's
``mo_summary.json`` (written in every ``output_dir``), or, for runs without one, rebuilds the same summary from
transformers' ``trainer_state.json`` (in the run directory, else in its latest ``checkpoint-*`` subdirectory), and
writes ``report.md``, a self-contained ``report.html``, ``report.json`` and the PNG plots into ``--out``.

Conventions (every one of them is also stated in the written report):

* Every objective is **maximised**; a run's point in objective space is its **final** eval mean per objective.
* **Hypervolume** (HV) is the volume dominated by a set of points and bounded below by a reference point, computed
  by ``moocore`` (which minimises) on the negated points. Points that are not strictly better than the reference
  in every objective add nothing; a run with a missing final value has no HV (``None``).
* **Default reference point**, per objective: ``0`` (the origin) when every run's final value of that objective is
  within [0, 1]; otherwise the worst (smallest) *start* value of that objective across the runs (the smallest final
  if no run recorded a start). ``reference=`` / ``--reference x,y,z`` overrides it.
* **Seeds aggregate by algorithm** (the summary's ``algorithm``). Per objective: the median and the range
  (min–max) of the seeds' final values and of their deltas (final − start). Two hypervolumes per algorithm:
  ``hv_of_median_final`` — the HV of the single point made of the per-objective medians of the seeds' finals
  (the console's ``HV(med)``), and ``median_run_hv`` — the median of the seeds' per-run HVs, with their range
  (the console's ``med HV``). They differ when the seeds trade objectives differently.
* **Non-dominated runs**: runs whose final point no other run's final point dominates (>= everywhere and > somewhere);
  duplicates do not dominate each other, so both copies stay non-dominated.
* **Interference**: a run shows interference if it recorded any event (``negative_covariance``, ``eval_drop``, …),
  or if some objective's final eval mean is more than ``tolerance`` below its start while another objective
  improved (final > start). The objectives reported are the ones that fell and the ones named by events.

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend switch). A plot whose data is empty in every
run is skipped and the report says why.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from mo_align.runs.summary import (
    TRAIN_FALLBACK,
    SummaryError,
    _num,
    _unique_names,
    normalize_summary,
)


DEFAULT_TOLERANCE = 0.02
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ReportError = SummaryError  # a run cannot be read or the report cannot be built (the message names path or value)


# ---------------------------------------------------------------------------------------------------------------
# Pareto dominance and hypervolume (maximisation)
# ---------------------------------------------------------------------------------------------------------------
def non_dominated(points: Any) -> np.ndarray:
    """Boolean mask of the rows of ``points`` (n × m) that no other row dominates, every objective maximised.

    Row a dominates row b when a >= b in every objective and a > b in at least one; equal rows (duplicates) do not
    dominate each other, so all copies of a non-dominated point are kept. A row with a NaN is never non-dominated
    (and dominates nothing).
    """
    p = np.asarray(points, dtype=float)
    if p.ndim == 1:
        p = p.reshape(1, -1)
    if p.ndim != 2:
        raise ValueError(f"points must be an (n, m) array, got shape {p.shape}")
    if p.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    finite = np.isfinite(p).all(axis=1)
    at_least = (p[:, None, :] >= p[None, :, :]).all(axis=2)  # [i, j]: row i >= row j everywhere
    better = (p[:, None, :] > p[None, :, :]).any(axis=2)  # [i, j]: row i > row j somewhere
    dominates = at_least & better & finite[:, None]
    return finite & ~dominates.any(axis=0)


def hypervolume(points: Any, reference: Any) -> float:
    """Hypervolume of ``points`` (n × m, maximised) above ``reference`` (m,), via moocore on negated values.

    Rows with a NaN, and rows not strictly better than the reference in every objective, add no volume. An empty
    set has hypervolume 0.
    """
    ref = np.asarray(reference, dtype=float).ravel()
    p = np.asarray(points, dtype=float)
    if p.size == 0:
        return 0.0
    if p.ndim == 1:
        p = p.reshape(1, -1)
    if p.ndim != 2 or p.shape[1] != ref.size:
        raise ValueError(f"points of shape {p.shape} do not match a reference point of {ref.size} objectives")
    if not np.isfinite(ref).all():
        raise ValueError(f"the reference point must be finite, got {ref.tolist()}")
    p = p[np.isfinite(p).all(axis=1)]
    p = p[(p > ref).all(axis=1)]
    if p.shape[0] == 0:
        return 0.0
    import moocore

    return float(moocore.hypervolume(-p, ref=-ref))


# ---------------------------------------------------------------------------------------------------------------
# analysis
# ---------------------------------------------------------------------------------------------------------------
def parse_reference(text: str | Sequence[float] | None, objectives: Sequence[str]) -> list[float] | None:
    """``"x,y,z"`` (or a sequence) -> floats, one per objective; ``None`` stays ``None`` (use the default)."""
    if text is None:
        return None
    parts = [p for p in text.replace(" ", "").split(",") if p] if isinstance(text, str) else list(text)
    try:
        values = [float(v) for v in parts]
    except (TypeError, ValueError) as e:
        raise ReportError(f"--reference {text!r}: expected comma-separated numbers, e.g. 0,0,0") from e
    if len(values) != len(objectives):
        raise ReportError(
            f"--reference {text!r} has {len(values)} values but the runs have {len(objectives)} objectives "
            f"({', '.join(objectives)})"
        )
    if not all(math.isfinite(v) for v in values):
        raise ReportError(f"--reference {text!r}: every value must be finite")
    return values


def default_reference(runs: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> tuple[list[float], list[str]]:
    """Per objective: 0 when every final is within [0, 1], else the worst start across runs (worst final if no run
    recorded a start). Returns the point and a one-line reason per objective."""
    point, reasons = [], []
    for name in objectives:
        finals = [v for r in runs if not math.isnan(v := r["final"].get(name, math.nan))]
        starts = [v for r in runs if not math.isnan(v := r["start"].get(name, math.nan))]
        if finals and all(0.0 <= v <= 1.0 for v in finals):
            point.append(0.0)
            reasons.append("origin: every run's final value is within [0, 1]")
        elif starts:
            point.append(min(starts))
            reasons.append("worst start across runs: some final value lies outside [0, 1]")
        elif finals:
            point.append(min(finals))
            reasons.append("worst final across runs: outside [0, 1] and no run recorded a start")
        else:
            point.append(0.0)
            reasons.append("no run has a final value: 0")
    return point, reasons


def interference(run: Mapping[str, Any], tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Whether ``run`` shows cross-objective interference: any recorded event, or an objective whose final eval mean
    is more than ``tolerance`` below its start while another objective improved (final > start).

    Returns ``{"interference": bool, "objectives": [...], "reasons": [...]}``.
    """
    objectives: list[str] = []
    reasons: list[str] = []
    for ev in run.get("events") or []:
        obj = ev.get("objective")
        if obj and obj not in objectives:
            objectives.append(obj)
        reasons.append(f"step {ev['step']}: {ev['kind']}" + (f" on {obj}" if obj else "") + _suffix(ev.get("message")))
    start, final = run.get("start") or {}, run.get("final") or {}
    delta = {k: final[k] - start[k] for k in final if k in start}
    delta = {k: v for k, v in delta.items() if not math.isnan(v)}
    improved = [k for k, v in delta.items() if v > 0]
    for name, change in delta.items():
        others = [k for k in improved if k != name]
        if change < -tolerance and others:
            if name not in objectives:
                objectives.append(name)
            reasons.append(
                f"{name} fell by {-change:.3f} (start {start[name]:.3f} -> final {final[name]:.3f}, beyond the "
                f"tolerance {tolerance:g}) while {', '.join(others)} improved"
            )
    return {"interference": bool(reasons), "objectives": objectives, "reasons": reasons}


def _suffix(message: Any) -> str:
    return f" ({message})" if message else ""


def _clean(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _stats(values: Sequence[float]) -> dict[str, Any]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": float(np.median(vals)), "min": float(min(vals)), "max": float(max(vals)), "n": len(vals)}


def analyse(
    runs: Sequence[Mapping[str, Any]],
    reference: str | Sequence[float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Every number of the report (JSON-serialisable; missing values are ``None``), without writing anything."""
    if not runs:
        raise ReportError("no runs to report on")
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
        raise ReportError(f"--tolerance must be a finite number >= 0, got {tolerance!r}")
    runs = _unique_names([normalize_summary(r) for r in runs])
    objectives: list[str] = []
    for r in runs:
        objectives += [o for o in r["objectives"] if o not in objectives]
    if not objectives:
        raise ReportError("the runs record no objectives (no eval, weights or reward curves)")
    ref = parse_reference(reference, objectives)
    if ref is None:
        ref, reasons = default_reference(runs, objectives)
        ref_source = "default"
    else:
        reasons = ["given with --reference"] * len(objectives)
        ref_source = "given"
    finals = np.array([[r["final"].get(o, math.nan) for o in objectives] for r in runs], dtype=float)
    complete = np.isfinite(finals).all(axis=1)
    front = non_dominated(finals)

    per_run: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(runs):
        flags = interference(r, tolerance)
        hv = hypervolume(finals[i : i + 1], ref) if complete[i] else None
        per_run[r["run_name"]] = {
            "algorithm": r["algorithm"],
            "seed": r["seed"],
            "output_dir": r["output_dir"],
            "values_from": r.get("values_from", "eval"),
            "final": {o: _clean(r["final"].get(o)) for o in objectives},
            "best": {o: _clean(r["best"].get(o)) for o in objectives},
            "start": {o: _clean(r["start"].get(o)) for o in objectives},
            "delta": {o: _clean(r["delta"].get(o)) for o in objectives},
            "hypervolume": hv,
            "non_dominated": bool(front[i]),
            "interference": flags["interference"],
            "interference_objectives": flags["objectives"],
            "interference_reasons": flags["reasons"],
            "num_events": len(r["events"]),
        }

    per_algorithm: dict[str, dict[str, Any]] = {}
    for r in runs:
        per_algorithm.setdefault(r["algorithm"], {"runs": []})["runs"].append(r["run_name"])
    for algorithm, agg in per_algorithm.items():
        members = [per_run[n] for n in agg["runs"]]
        agg["final"] = {o: _stats([_num(m["final"][o]) for m in members]) for o in objectives}
        agg["delta"] = {o: _stats([_num(m["delta"][o]) for m in members]) for o in objectives}
        median_final = [agg["final"][o]["median"] for o in objectives]
        agg["median_final"] = dict(zip(objectives, median_final))
        agg["hv_of_median_final"] = None if None in median_final else hypervolume([median_final], ref)
        run_hvs = [m["hypervolume"] for m in members if m["hypervolume"] is not None]
        agg["median_run_hv"] = float(np.median(run_hvs)) if run_hvs else None
        agg["run_hv_range"] = [min(run_hvs), max(run_hvs)] if run_hvs else None
        seed_points = [[_num(m["final"][o]) for o in objectives] for m in members]
        agg["hv_of_all_seeds"] = hypervolume(seed_points, ref) if run_hvs else None
        agg["interference_runs"] = [n for n in agg["runs"] if per_run[n]["interference"]]
        per_algorithm[algorithm] = agg

    return {
        "objectives": objectives,
        "reference": [float(v) for v in ref],
        "reference_source": ref_source,
        "reference_reasons": dict(zip(objectives, reasons)),
        "tolerance": float(tolerance),
        "runs": per_run,
        "algorithms": per_algorithm,
        "hypervolume": {n: v["hypervolume"] for n, v in per_run.items()},
        "non_dominated": [r["run_name"] for i, r in enumerate(runs) if front[i]],
        "interference": {n: v["interference"] for n, v in per_run.items()},
        "_runs": runs,  # the normalised summaries, for the plots; dropped from what write_report returns
    }


# ---------------------------------------------------------------------------------------------------------------
# plots (matplotlib's Agg canvas, no pyplot)
# ---------------------------------------------------------------------------------------------------------------
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_EVENT_MARKERS = {"negative_covariance": "X", "eval_drop": "v"}


@dataclass
class _Style:
    color: Any
    linestyle: str
    marker: str


@dataclass
class _Plots:
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


def _plot_eval_curves(runs, objectives, styles, path: Path) -> str | None:
    if not any(r["eval"] for r in runs):
        return "no run has eval data (eval curve is empty in every run)"
    fig, axes = _figure(len(objectives))
    handles = {}
    for ax, name in zip(axes, objectives):
        for r in runs:
            pts = [(e["step"], e["means"][name]) for e in r["eval"] if not math.isnan(e["means"].get(name, math.nan))]
            if not pts:
                continue
            s = styles[r["run_name"]]
            steps, values = zip(*pts)
            (line,) = ax.plot(steps, values, color=s.color, linestyle=s.linestyle, marker=s.marker, markersize=4)
            handles.setdefault(r["run_name"], line)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("eval mean")
        ax.grid(alpha=0.3)
    _save(fig, path, handles)
    return None


def _plot_weights(runs, objectives, path: Path, notes: list[str]) -> str | None:
    with_weights = [r for r in runs if r["weights"]]
    if not with_weights:
        return "no run recorded a weight trajectory"
    notes += [f"{r['run_name']}: no weight trajectory recorded" for r in runs if not r["weights"]]
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    fig, axes = _figure(len(with_weights))
    handles = {}
    for ax, r in zip(axes, with_weights):
        for k, name in enumerate(objectives):
            pts = [(e["step"], e["weights"][name]) for e in r["weights"] if name in e["weights"]]
            if pts:
                steps, values = zip(*pts)
                (line,) = ax.plot(steps, values, color=palette[k % len(palette)])
                handles.setdefault(name, line)
        ax.set_title(f"{r['run_name']} ({r['algorithm']})", fontsize="medium")
        ax.set_xlabel("step")
        ax.set_ylabel("weight")
        ax.grid(alpha=0.3)
    _save(fig, path, handles)
    return None


def _cov_targets(run: Mapping[str, Any], objectives: Sequence[str]) -> dict[str, float]:
    targets = run["weighting_hyperparameters"].get("cov_targets")
    names = run["objectives"] or list(objectives)
    if isinstance(targets, int | float) and not isinstance(targets, bool):
        return dict.fromkeys(names, float(targets))
    if isinstance(targets, list | tuple) and len(targets) == len(names):
        return {n: _num(t) for n, t in zip(names, targets)}
    return {}


def _plot_cov_ema(runs, objectives, styles, path: Path, notes: list[str]) -> str | None:
    if not any(r["cov_ema"] for r in runs):
        return "no run recorded a covariance-law EMA"
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
                    ax.axhline(target, color=s.color, linestyle=":", linewidth=0.8)
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
    _save(fig, path, handles)
    return None


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


def _make_plots(analysis: dict[str, Any], out: Path) -> _Plots:
    runs, objectives = analysis["_runs"], analysis["objectives"]
    styles = _styles(runs)
    plots = _Plots()
    jobs: list[tuple[str, Any]] = [
        ("eval_curves.png", lambda p, notes: _plot_eval_curves(runs, objectives, styles, p)),
        ("weights.png", lambda p, notes: _plot_weights(runs, objectives, p, notes)),
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


# ---------------------------------------------------------------------------------------------------------------
# the documents (one block list, rendered to markdown and to html)
# ---------------------------------------------------------------------------------------------------------------
def _fmt(value: float | None, signed: bool = False, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _fmt_stats(stats: Mapping[str, Any], signed: bool = False) -> str:
    if stats["median"] is None:
        return "—"
    return f"{_fmt(stats['median'], signed)} [{_fmt(stats['min'], signed)}, {_fmt(stats['max'], signed)}]"


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]


def _algorithm_table(analysis: dict[str, Any]) -> _Table:
    objs = analysis["objectives"]
    headers = ["algorithm", "seeds"]
    headers += [f"{o} final median [min, max]" for o in objs] + [f"{o} Δ median [min, max]" for o in objs]
    headers += ["HV(median final)", "median run HV [min, max]", "HV(all seeds)", "runs with interference"]
    rows = []
    for algorithm, agg in analysis["algorithms"].items():
        hv_range = agg["run_hv_range"]
        run_hv = (
            "—"
            if hv_range is None
            else f"{_fmt(agg['median_run_hv'], digits=4)} [{_fmt(hv_range[0], digits=4)}, {_fmt(hv_range[1], digits=4)}]"
        )
        flagged = agg["interference_runs"]
        rows.append(
            [algorithm, str(len(agg["runs"]))]
            + [_fmt_stats(agg["final"][o]) for o in objs]
            + [_fmt_stats(agg["delta"][o], signed=True) for o in objs]
            + [_fmt(agg["hv_of_median_final"], digits=4), run_hv, _fmt(agg["hv_of_all_seeds"], digits=4)]
            + [f"{len(flagged)}/{len(agg['runs'])}" + (f": {', '.join(flagged)}" if flagged else "")]
        )
    return _Table(headers, rows)


def _run_table(analysis: dict[str, Any]) -> _Table:
    objs = analysis["objectives"]
    headers = ["run", "algorithm", "seed"]
    for o in objs:
        headers += [f"{o} final", f"{o} best", f"{o} Δ"]
    headers += ["HV", "non-dominated", "interference", "values from"]
    rows = []
    for name, r in analysis["runs"].items():
        row = [name, r["algorithm"], "—" if r["seed"] is None else str(r["seed"])]
        for o in objs:
            row += [_fmt(r["final"][o]), _fmt(r["best"][o]), _fmt(r["delta"][o], signed=True)]
        flag = ("yes: " + ", ".join(r["interference_objectives"])) if r["interference"] else "no"
        if r["interference"] and not r["interference_objectives"]:
            flag = "yes"
        nd = "yes" if r["non_dominated"] else "no"
        rows.append([*row, _fmt(r["hypervolume"], digits=4), nd, flag, r["values_from"]])
    return _Table(headers, rows)


def _fallback_note(analysis: Mapping[str, Any]) -> str:
    names = [n for n, r in analysis["runs"].items() if r["values_from"] == TRAIN_FALLBACK]
    if not names:
        return ""
    return (
        f" Runs without evaluation ({', '.join(names)}) show their training-batch reward means instead (final = "
        "last batch, best = highest batch, Δ = last − first batch): sampled at the training temperature on training "
        "prompts, not comparable with eval means."
    )


def _blocks(analysis: dict[str, Any], plots: _Plots) -> list[tuple]:
    objs = analysis["objectives"]
    runs = analysis["_runs"]
    ref = ", ".join(f"{v:g}" for v in analysis["reference"])
    b: list[tuple] = [("h", 1, "Multi-objective alignment report")]
    b.append(
        (
            "p",
            f"{len(runs)} runs, {len(analysis['algorithms'])} algorithms; objectives (all maximised): "
            f"{', '.join(objs)}. Values are per-objective eval means: final = last evaluation, best = highest "
            "evaluation, Δ = final − start (first evaluation)." + _fallback_note(analysis),
        )
    )
    b.append(("h", 2, "Hypervolume reference point"))
    b.append(("p", f"Reference point ({', '.join(objs)}) = ({ref}) — {analysis['reference_source']}."))
    b.append(
        ("list", [f"{o} = {v:g}: {analysis['reference_reasons'][o]}" for o, v in zip(objs, analysis["reference"])])
    )
    b.append(
        (
            "p",
            "Hypervolume (HV) = volume of objective space dominated by the final points and bounded below by the "
            "reference point (maximisation; moocore on negated values; a point not strictly above the reference in "
            "every objective adds nothing). Per run: the HV of the run's final point. Per algorithm: HV(median final) "
            "is the HV of the point made of the per-objective medians of the seeds' finals; median run HV is the median "
            "of the seeds' per-run HVs (with their range); HV(all seeds) is the HV of the seeds' final points together.",
        )
    )
    b.append(("h", 2, "Per algorithm (seeds aggregated)"))
    b.append(("table", _algorithm_table(analysis)))
    b.append(("h", 2, "Per run"))
    b.append(("table", _run_table(analysis)))
    nd = analysis["non_dominated"]
    b.append(("h", 2, "Pareto front"))
    b.append(
        (
            "p",
            "Non-dominated runs (final points over all objectives; no other run is >= everywhere and > somewhere): "
            + (", ".join(nd) if nd else "none (no run has final values for every objective)")
            + ".",
        )
    )
    b.append(("h", 2, "Interference"))
    b.append(
        (
            "p",
            "A run shows interference if it recorded an event, or if an objective's final eval mean is more than "
            f"the tolerance ({analysis['tolerance']:g}) below its start while another objective improved.",
        )
    )
    items = []
    for name, r in analysis["runs"].items():
        if r["interference"]:
            shown = r["interference_reasons"][:12]
            more = len(r["interference_reasons"]) - len(shown)
            items.append(f"{name}: " + "; ".join(shown) + (f"; … and {more} more" if more > 0 else ""))
        else:
            items.append(f"{name}: none")
    b.append(("list", items))
    b.append(("h", 2, "Runs"))
    rows = []
    for r in runs:
        hp = json.dumps(r["weighting_hyperparameters"], sort_keys=True) if r["weighting_hyperparameters"] else "—"
        seed = "—" if r["seed"] is None else str(r["seed"])
        command, source = r["launch_command"] or "—", r.get("source") or "—"
        rows.append([r["run_name"], r["algorithm"], seed, r["output_dir"] or "—", hp, command, source])
    b.append(
        (
            "table",
            _Table(
                ["run", "algorithm", "seed", "output_dir", "weighting hyperparameters", "launch command", "read from"],
                rows,
            ),
        )
    )
    b.append(("h", 2, "Plots"))
    titles = {
        "eval_curves.png": "Eval curves",
        "weights.png": "Weight trajectories",
        "cov_ema.png": "Covariance-law EMA",
    }
    for name in [*plots.written, *plots.skipped]:
        title = titles.get(name, name.removesuffix(".png").replace("__", " vs ").replace("pareto_", "Pareto: "))
        b.append(("h", 3, title))
        if name in plots.written:
            b.append(("img", name, plots.written[name], title))
        else:
            b.append(("p", f"Skipped: {plots.skipped[name]}."))
        for note in plots.notes.get(name, []):
            b.append(("p", f"Note: {note}."))
    return b


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _to_markdown(blocks: list[tuple]) -> str:
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            table: _Table = block[1]
            lines.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
            lines.append("|" + "---|" * len(table.headers))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{block[3]}]({block[1]})", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def _to_html(blocks: list[tuple]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Multi-objective alignment report</title>',
        f"<style>{_CSS}</style></head><body>",
    ]
    esc = html.escape
    for block in blocks:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{esc(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{esc(block[1])}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            table: _Table = block[1]
            head = "".join(f"<th>{esc(h)}</th>" for h in table.headers)
            body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(Path(block[2]).read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{esc(block[3])}" src="data:image/png;base64,{data}"></figure>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------------------------
def write_report(
    runs: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    reference: str | Sequence[float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Write ``report.md``, ``report.html`` (self-contained), ``report.json`` and the PNG plots into ``out_dir``.

    ``runs`` are summary dicts (:func:`load_runs`); ``reference`` is one value per objective (or ``"x,y,z"``),
    ``None`` for the default (see the module docstring). Returns the numbers of :func:`analyse` plus
    ``out_dir``, ``report_md``, ``report_html``, ``report_json``, ``plots`` (name -> path) and ``skipped_plots``
    (name -> reason).
    """
    analysis = analyse(runs, reference=reference, tolerance=tolerance)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"{out}: cannot create the output directory ({e})") from e
    plots = _make_plots(analysis, out)
    blocks = _blocks(analysis, plots)
    md, page, js = out / "report.md", out / "report.html", out / "report.json"
    md.write_text(_to_markdown(blocks), encoding="utf-8")
    page.write_text(_to_html(blocks), encoding="utf-8")
    result = {k: v for k, v in analysis.items() if not k.startswith("_")}
    result.update(
        out_dir=str(out),
        report_md=str(md),
        report_html=str(page),
        report_json=str(js),
        plots={name: str(p) for name, p in plots.written.items()},
        skipped_plots=dict(plots.skipped),
    )
    js.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return result


def format_console_table(result: Mapping[str, Any]) -> str:
    """The compact per-algorithm table the CLI prints: median final (median Δ) per objective, both HVs, interference."""
    objs = result["objectives"]
    headers = ["algorithm", "n", *objs, "HV(med)", "med HV", "interference"]
    rows = []
    for algorithm, agg in result["algorithms"].items():
        cells = [algorithm, str(len(agg["runs"]))]
        for o in objs:
            cells.append(f"{_fmt(agg['final'][o]['median'])} ({_fmt(agg['delta'][o]['median'], signed=True)})")
        flagged = agg["interference_runs"]
        cells += [_fmt(agg["hv_of_median_final"], digits=4), _fmt(agg["median_run_hv"], digits=4)]
        cells.append(f"{len(flagged)}/{len(agg['runs'])}" + (f" {','.join(flagged)}" if flagged else ""))
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()
    out = [
        "per algorithm: median final eval (median Δ vs start); HV(med) = HV of the median final point, "
        "med HV = median of per-run HVs",
        line,
        "-" * len(line),
    ]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    ref = ", ".join(f"{v:g}" for v in result["reference"])
    out.append(f"HV reference ({', '.join(objs)}) = ({ref}) [{result['reference_source']}]")
    nd = result["non_dominated"]
    out.append("non-dominated runs: " + (", ".join(nd) if nd else "none"))
    fallback = [n for n, r in result["runs"].items() if r["values_from"] == TRAIN_FALLBACK]
    if fallback:
        out.append(f"no evaluation, values are training-batch means: {', '.join(fallback)}")
    return "\n".join(out)
