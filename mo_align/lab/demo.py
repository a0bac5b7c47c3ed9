"""What ``make demo`` adds to the lab's tables: one figure and what the monitor says about CTWA's targets.

* ``demo.png`` (:func:`demo_figure`): the eval curves of every run, one panel per objective, with the 95 % CI band
  of each evaluation (bootstrap over prompts), beside each run's weight trajectory and the monitor's covariance EMA
  of the first CTWA run against its targets.
* :func:`ctwa_targets`: whether CTWA's covariance targets ``c_k`` bound. CTWA raises ``ℓ_k`` only while its EMA of
  the covariance sits below ``c_k`` (:mod:`mo_align.weightings.ctwa`). The monitor's EMA (``mo/cov_ema/<k>``, the
  covariance of ``r_k`` with the optimised advantage, in every run's summary) is compared with ``c_k`` batch by
  batch; CTWA's own statistic uses the induced update weights ``w̃`` (post-update ratios, clipping), so the two can
  differ a little, and the weight factors ``w_k(T) / w_k(0) = exp(ℓ_k(T) − ℓ_k(0))`` (base linear) show what CTWA
  itself did: a factor above 1 means it saw a deficit for ``k``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib import colormaps

from mo_align.runs.plotting import Style, draw_series, figure, save, weight_limits
from mo_align.runs.report.plots import cov_targets, draw_eval_curve
from mo_align.runs.summary import load_runs


DEMO_FIGURE = "demo.png"


def ctwa_targets(run: Mapping[str, Any]) -> str | None:
    """One paragraph on a CTWA run's targets from its summary; None for a run without ``cov_targets`` or EMA."""
    targets = cov_targets(run, run["objectives"])
    emas = run["cov_ema"]
    if not targets or not emas:
        return None
    parts, bound = [], []
    for name, target in targets.items():
        values = [e["values"][name] for e in emas if math.isfinite(e["values"].get(name, math.nan))]
        if not values:
            continue
        below = sum(v < target for v in values)
        bound += [name] if below else []
        parts.append(
            f"{name} {min(values):+.3f}..{max(values):+.3f} vs target {target:g} (below on {below} of {len(values)})"
        )
    w = run["weights"]
    factors = ", ".join(
        f"{n} ×{w[-1]['weights'][n] / w[0]['weights'][n]:.3f}" for n in targets if w and w[0]["weights"].get(n)
    )
    verdict = (
        "never bound: the monitor's covariance EMA stayed above every target on every batch"
        if not bound
        else f"bound for {', '.join(bound)}: the monitor's covariance EMA fell below the target"
    )
    return (
        f"{run['run_name']}: CTWA's covariance targets {verdict} ({'; '.join(parts)}); CTWA's weight factors "
        f"w(end)/w(start): {factors or 'no weights recorded'}"
    )


def demo_figure(runs: Sequence[Mapping[str, Any]], path: str) -> None:
    """One PNG: eval curves with CI bands (a panel per objective), each run's weights, a CTWA run's covariance EMA."""
    fig, handles = demo_fig(runs)
    save(fig, path, handles)


def demo_fig(runs: Sequence[Mapping[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """(figure, legend handles) of :func:`demo_figure`. Weights share one y-range from 0
    (:func:`~mo_align.runs.plotting.weight_limits`), drawn so that equal weights cannot hide one another; the
    CTWA panel's dotted targets are in the legend."""
    objectives = list(runs[0]["objectives"])
    ctwa = [r for r in runs if cov_targets(r, objectives) and r["cov_ema"]]
    weighted = [r for r in runs if r["weights"]]
    fig, axes = figure(len(objectives) + len(weighted) + bool(ctwa), ncols_max=len(objectives))
    palette = colormaps["tab10"].colors  # objectives take colours 0..K-1 (draw_series), runs the next ones
    styles = {r["run_name"]: Style(palette[(len(objectives) + i) % 10], "-", "o") for i, r in enumerate(runs)}
    handles: dict[str, Any] = {}
    for ax, name in zip(axes, objectives):
        for r in runs:
            line = draw_eval_curve(ax, r, name, styles[r["run_name"]])
            if line is not None:
                handles.setdefault(r["run_name"], line)
        ax.set_title(f"eval {name} (band: 95 % CI)", fontsize="medium")
        ax.set_ylabel("eval mean")
    series_handles: dict[str, Any] = {}
    weight_axes = axes[len(objectives) : len(objectives) + len(weighted)]
    for ax, r in zip(weight_axes, weighted):
        draw_series(ax, r["weights"], "weights", objectives, series_handles)
        ax.set_title(f"{r['run_name']}: weights", fontsize="medium")
        ax.set_ylabel("weight")
    values = [v for r in weighted for e in r["weights"] for v in e["weights"].values() if math.isfinite(v)]
    for ax in weight_axes:  # one scale for every run's weights, from 0, so a flat trajectory looks flat
        weight_limits(ax, values)
    if ctwa:
        ax, run = axes[-1], ctwa[0]
        draw_series(ax, run["cov_ema"], "values", objectives, series_handles)
        for name, target in cov_targets(run, objectives).items():
            k = objectives.index(name) if name in objectives else 0
            line = ax.axhline(target, color=palette[k % len(palette)], linestyle=":", linewidth=1.2)
            handles[f"target c_k: {name}"] = line
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        ax.set_title(f"{run['run_name']}: covariance EMA (dotted: targets)", fontsize="medium")
        ax.set_ylabel("covariance EMA")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    handles.update({f"objective: {k}": v for k, v in series_handles.items()})
    return fig, handles


def demo_extras(run_dirs: Sequence[str], out_root: str, figure: bool = True) -> list[str]:
    """The lines the lab prints after its tables: CTWA's targets for every CTWA run, and (``figure``) the path of
    ``demo.png`` written into ``out_root``."""
    runs = load_runs(run_dirs)
    lines = [text for r in runs if r["algorithm"] == "ctwa" and (text := ctwa_targets(r))]
    if figure:
        path = os.path.join(out_root, DEMO_FIGURE)
        demo_figure(runs, path)
        lines.append(f"figure (eval curves with 95 % CI bands, weights, CTWA's covariance EMA): {path}")
    return lines
