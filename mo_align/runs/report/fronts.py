"""Each algorithm's empirical Pareto front over preference points (a sweep), with CIs over seeds and its hypervolume.

A **point** of an algorithm is its runs that differ only in the seed: run names equal after removing a trailing
``-seed<N>`` (``mo-align sweep`` names its points ``<label>-w<preference>...-seed<s>``, the lab ``<algo>-seed<s>``),
or, for runs named otherwise, equal weighting hyperparameters (``mo-align soup``'s points ``soup-a<α>`` record their
α there, ``mo-align evaluate-preferences``'s points ``<run>-pref-w<w>`` of a preference-conditioned model their
preference: algorithm ``<weighting>-conditioned``). Per point and objective, the value is the **mean over seeds** of the final eval means; its 95 % CI is
the Student-t interval over seeds, m ± t_{0.975, n−1} · s / √n, when the point has n ≥ 2 seeds, else the run's own
final-evaluation CI over prompts (percentile bootstrap, ``mo_align.stats``), labelled by what it is over. An
algorithm's **front** is its non-dominated points (every objective maximised, ``moocore``) and its **hypervolume** the
HV of all its points' means above the report's reference point (dominated points add nothing). The report shows the
fronts side by side: one table and ``fronts.png`` (one panel per pair of objectives).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mo_align.runs.report.pareto import hypervolume, non_dominated
from mo_align.runs.report.render import _Table
from mo_align.runs.summary import json_safe


__all__ = ["FRONTS_PNG", "empirical_fronts", "format_fronts", "front_blocks", "plot_fronts"]

FRONTS_PNG = "fronts.png"
_SEED = re.compile(r"-seed\d+(#\d+)?$")
# Student-t 0.975 quantiles for 1..30 degrees of freedom (beyond: the normal 1.96)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145)
_T975 += (2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045)
_T975 += (2.042,)


def point_key(run_name: str, hyperparameters: Mapping[str, Any] | None = None) -> str:
    """The run's point: its name without ``-seed<N>``; a name without one, its hyperparameters (seeds of one
    configuration share them), shown as the first such run's name."""
    if _SEED.search(run_name) or hyperparameters is None:
        return _SEED.sub("", run_name)
    return json.dumps(json_safe(dict(hyperparameters)), sort_keys=True)


def _t975(df: int) -> float:
    return _T975[df - 1] if df <= len(_T975) else 1.96


def _point(runs: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> dict[str, Any]:
    finals = np.array([[r["final"].get(o, math.nan) for o in objectives] for r in runs], dtype=float)
    mean = finals.mean(axis=0)
    n = len(runs)
    if n >= 2:
        half = _t975(n - 1) * finals.std(axis=0, ddof=1) / math.sqrt(n)
        ci = {o: [float(mean[k] - half[k]), float(mean[k] + half[k])] for k, o in enumerate(objectives)}
        over = f"{n} seeds (t)"
    else:
        last = (runs[0].get("eval") or [{}])[-1].get("ci") or {}
        ci = {o: [float(x) for x in last[o]] if o in last else None for o in objectives}
        over = "prompts (bootstrap)" if last else "none"
    return {
        "runs": [r["run_name"] for r in runs],
        "seeds": n,
        "mean": {o: float(mean[k]) for k, o in enumerate(objectives)},
        "ci": ci,
        "ci_over": over,
    }


def empirical_fronts(
    runs: Sequence[Mapping[str, Any]], objectives: Sequence[str], reference: Sequence[float]
) -> dict[str, dict[str, Any]]:
    """algorithm -> {"points": {point: {...}}, "front": [points], "hypervolume": HV of the point means}."""
    grouped: dict[str, dict[str, list]] = {}
    for r in runs:
        key = point_key(r["run_name"], r.get("weighting_hyperparameters"))
        grouped.setdefault(r["algorithm"], {}).setdefault(key, []).append(r)
    out = {}
    for algorithm, points in grouped.items():
        summary = {}
        for key, members in points.items():
            summary[key if _SEED.sub("", members[0]["run_name"]) == key else members[0]["run_name"]] = _point(
                members, objectives
            )
        means = np.array([[p["mean"][o] for o in objectives] for p in summary.values()], dtype=float)
        mask = non_dominated(means)
        for p, nd in zip(summary.values(), mask, strict=True):
            p["non_dominated"] = bool(nd)
        out[algorithm] = {
            "points": summary,
            "front": [n for n, p in summary.items() if p["non_dominated"]],
            "hypervolume": hypervolume(means, reference),
        }
    return out


def plot_fronts(fronts: Mapping[str, Any], objectives: Sequence[str], path: Path) -> bool:
    """Per pair of objectives: every algorithm's points (filled: non-dominated over all objectives, hollow:
    dominated), 95 % CI bars, and a line through the points non-dominated in that pair; False when there are fewer
    than two objectives."""
    pairs = list(combinations(range(len(objectives)), 2))
    if not pairs:
        return False
    fig = Figure(figsize=(4.6 * len(pairs), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    palette = colormaps["tab10"].colors
    for ax, (i, j) in zip(axes, pairs, strict=True):
        x_name, y_name = objectives[i], objectives[j]
        for c, (algorithm, front) in enumerate(fronts.items()):
            color = palette[c % len(palette)]
            pts = list(front["points"].values())
            xs = np.array([p["mean"][x_name] for p in pts])
            ys = np.array([p["mean"][y_name] for p in pts])
            nd = np.array([p["non_dominated"] for p in pts])
            ax.scatter(xs[~nd], ys[~nd], facecolors="none", edgecolors=[color], s=28)
            for p, x, y in zip(pts, xs, ys, strict=True):
                cx, cy = p["ci"].get(x_name), p["ci"].get(y_name)
                if cx and cy:
                    err = [[x - cx[0]], [cx[1] - x]], [[y - cy[0]], [cy[1] - y]]
                    ax.errorbar([x], [y], xerr=err[0], yerr=err[1], color=color, alpha=0.35, lw=0.8)
            ax.scatter(xs[nd], ys[nd], color=color, s=28)
            pair = non_dominated(np.stack([xs, ys], axis=1))  # the line: this panel's 2-objective front
            order = np.argsort(xs[pair])
            label = f"{algorithm} (HV {front['hypervolume']:.3f})"
            ax.plot(xs[pair][order], ys[pair][order], "-", color=color, label=label)
        ax.set_xlabel(x_name)
        ax.set_ylabel(y_name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(
        "Empirical fronts: final eval means per point (filled: non-dominated in all objectives; line: in this pair)",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    return True


def _fmt_point(p: Mapping[str, Any], objectives: Sequence[str]) -> str:
    def one(o: str) -> str:
        ci = p["ci"].get(o)
        return f"{p['mean'][o]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    return ", ".join(one(o) for o in objectives)


def front_blocks(analysis: Mapping[str, Any], out: Path) -> tuple[list[tuple], dict[str, Any]]:
    """The report's "Fronts" section (blocks for ``render``) and its numbers; empty when no algorithm has two
    points (no sweep among the runs)."""
    objectives, reference = analysis["objectives"], analysis["reference"]
    fronts = empirical_fronts(analysis["_runs"], objectives, reference)
    if all(len(f["points"]) < 2 for f in fronts.values()):
        return [], {}
    rows = []
    for algorithm, f in fronts.items():
        seeds = sorted({p["seeds"] for p in f["points"].values()})
        front = "; ".join(f"{n}: {_fmt_point(f['points'][n], objectives)}" for n in f["front"])
        counts = [str(len(f["points"])), "/".join(map(str, seeds)), str(len(f["front"]))]
        rows.append([algorithm, *counts, f"{f['hypervolume']:.4f}", front])
    headers = ["algorithm", "points", "seeds per point", "non-dominated", "HV", f"front: {', '.join(objectives)}"]
    blocks: list[tuple] = [
        ("h", 2, "Fronts (preference sweeps)"),
        ("p", __doc__.split("\n\n")[0].replace("\n", " ") + f" Reference point {reference}."),
        ("table", _Table(headers, rows)),
    ]
    if plot_fronts(fronts, objectives, out / FRONTS_PNG):
        blocks.append(("img", FRONTS_PNG, out / FRONTS_PNG, "Empirical fronts"))
    return blocks, json_safe(fronts)


def format_fronts(fronts: Mapping[str, Any]) -> str:
    """The console's lines: per algorithm, its points, non-dominated points and hypervolume."""
    lines = ["fronts (mean over seeds per preference point):"]
    for algorithm, f in fronts.items():
        hv = "n/a" if f["hypervolume"] is None else f"{f['hypervolume']:.4f}"
        lines.append(f"  {algorithm:<20} {len(f['points']):>3} points  {len(f['front']):>3} non-dominated  HV {hv}")
    return "\n".join(lines)
