"""The phase diagram's numbers, table and plot, from a sweep's files (the statistics are stated in
:mod:`mo_align.lab.sweep`).

Layout read: ``<out>/share-<s>/interference.json`` (the lab's per-run Δ CIs and verdicts, :func:`run_evidence`) and
``<out>/share-<s>/<algorithm>-seed<n>/lab_eval_scores.json`` (the per-prompt scores of every evaluation).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mo_align.lab.run import EVAL_SCORES_FILE, EVIDENCE_FILE
from mo_align.lab.sweep import share_dir
from mo_align.stats import mean_paired_delta_ci


def _read(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"lab sweep: {path} is missing (did every run of this share finish?)") from None


def _pairs(run_dir: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(objectives, start rewards, final rewards): the run's first and last evaluations, (prompts, samples, K)."""
    data = _read(os.path.join(run_dir, EVAL_SCORES_FILE))
    start = np.asarray(data["evals"][0]["rewards"], dtype=float)
    final = np.asarray(data["evals"][-1]["rewards"], dtype=float)
    return list(data["objectives"]), start, final


def _cell(share: float, algorithm: str, rows: list[dict[str, Any]], share_root: str) -> dict[str, Any]:
    """One (share, algorithm): interference rate and, per objective, the seeds' Δ summarised."""
    objectives = list(rows[0]["delta"])
    scores = [_pairs(os.path.join(share_root, r["run"])) for r in rows]
    per_objective = {}
    for k, name in enumerate(objectives):
        deltas = [r["delta"][name]["estimate"] for r in rows]
        pooled = mean_paired_delta_ci([(start[:, :, k], final[:, :, k]) for _, start, final in scores])
        per_objective[name] = {
            "deltas": deltas,
            "median": float(np.median(deltas)),
            "min": float(min(deltas)),
            "max": float(max(deltas)),
            "mean": pooled.estimate,
            "ci": [pooled.low, pooled.high],
            "drop": sum(r["delta"][name]["high"] < 0 for r in rows),
            "rise": sum(r["delta"][name]["low"] > 0 for r in rows),
        }
    flagged = [r for r in rows if r["interfering"]]
    return {
        "share": share,
        "algorithm": algorithm,
        "n": len(rows),
        "runs": [r["run"] for r in rows],
        "interfering": len(flagged),
        "interfering_runs": {r["run"]: list(r["interfering"]) for r in flagged},
        "objectives": per_objective,
    }


def collect(
    out_root: str, shares: Sequence[float], algorithms: Sequence[str]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The cells (one per share and algorithm that has runs) and, per share, its start means (averaged over the
    share's runs) and the warm start's conciseness reference length."""
    cells, starts = [], {}
    for share in shares:
        root = share_dir(out_root, share)
        evidence = _read(os.path.join(root, EVIDENCE_FILE))
        runs = evidence["runs"]
        if not runs:
            raise ValueError(f"lab sweep: {root}/{EVIDENCE_FILE} lists no finished run")
        names = list(runs[0]["start"])
        starts[f"{share:g}"] = {
            "start": {n: float(np.mean([r["start"][n] for r in runs])) for n in names},
            "reference_length": evidence.get("reference_length"),
        }
        for algorithm in algorithms:
            rows = [r for r in runs if r["run"].rsplit("-seed", 1)[0] == algorithm]
            if rows:
                cells.append(_cell(share, algorithm, rows, root))
    return cells, starts


def _num(x: float) -> str:
    return f"{x:+.3f}"


def format_cell(stats: Mapping[str, Any], n: int) -> str:
    """``median (min..max); mean [CI]; ↓k ↑k`` of one objective's Δ over the seeds."""
    low, high = stats["ci"]
    return (
        f"{_num(stats['median'])} ({_num(stats['min'])}..{_num(stats['max'])}); "
        f"{_num(stats['mean'])} [{_num(low)}, {_num(high)}]; ↓{stats['drop']} ↑{stats['rise']} of {n}"
    )


def format_markdown(cells: list[dict[str, Any]], starts: Mapping[str, Any], timing: Mapping[str, Any]) -> str:
    """The phase diagram as markdown: the per-(share, algorithm) table, the starts, the run time."""
    if not cells:
        return "lab sweep: no finished runs\n"
    objectives = list(cells[0]["objectives"])
    lines = [
        "Δ = final − start eval mean (256 held-out prompts × 4 samples, T = 1). Per objective: median over seeds "
        "(range min..max); mean over seeds [95 % CI, joint prompt bootstrap: evaluation noise of the mean, not the "
        "spread between seeds]; seeds with a significant drop ↓ / rise ↑ (own paired CI). interferes = seeds with "
        "an objective's Δ CI entirely below 0 while the optimised scalar rose.",
        "",
        "| G share | algorithm | interferes | " + " | ".join(f"Δ {o}" for o in objectives) + " |",
        "|---" * (3 + len(objectives)) + "|",
    ]
    for c in cells:
        flagged = sorted({o for objs in c["interfering_runs"].values() for o in objs})
        verdict = f"{c['interfering']}/{c['n']}" + (f" ({', '.join(flagged)})" if flagged else "")
        row = [f"{c['share']:g}", c["algorithm"], verdict]
        lines.append("| " + " | ".join(row + [format_cell(c["objectives"][o], c["n"]) for o in objectives]) + " |")
    lines += ["", "| G share | " + " | ".join(f"start {o}" for o in objectives) + " | reference length |"]
    lines.append("|---" * (2 + len(objectives)) + "|")
    for share, s in starts.items():
        ref = s.get("reference_length")
        cells_ = [f"{s['start'][o]:.3f}" for o in objectives] + ["—" if ref is None else f"{ref:.1f}"]
        lines.append(f"| {share} | " + " | ".join(cells_) + " |")
    if timing.get("seconds") is not None:
        warm = ", ".join(
            f"{s}: {'cached' if v is None else f'{v:.0f} s'}" for s, v in (timing.get("warm_starts") or {}).items()
        )
        lines += [
            "",
            f"Run time {timing['seconds']:.0f} s = {timing['seconds'] / 60:.1f} min (warm starts "
            f"{timing['warm_start_seconds']:.0f} s [{warm}], runs {timing['runs_seconds']:.0f} s).",
        ]
    return "\n".join(lines) + "\n"


def plot_sweep(cells: list[dict[str, Any]], path: str) -> None:
    """One PNG: a panel per objective (x = G share, y = Δ: the seeds' mean with its CI as error bar, each seed a
    faint dot, one colour per algorithm) and a panel of the interference rate."""
    from matplotlib import colormaps

    from mo_align.runs.report.plots import _figure, _save

    objectives = list(cells[0]["objectives"])
    algorithms = list(dict.fromkeys(c["algorithm"] for c in cells))
    shares = sorted({c["share"] for c in cells})
    step = min(np.diff(shares)) if len(shares) > 1 else 0.1
    palette = colormaps["tab10"].colors
    fig, axes = _figure(len(objectives) + 1, ncols_max=2, panel=(5.2, 3.6))
    handles = {}
    for i, algorithm in enumerate(algorithms):
        mine = sorted((c for c in cells if c["algorithm"] == algorithm), key=lambda c: c["share"])
        offset = (i - (len(algorithms) - 1) / 2) * step * 0.12  # keep the error bars apart
        x = np.array([c["share"] for c in mine]) + offset
        color = palette[i % len(palette)]
        for ax, name in zip(axes, objectives):
            stats = [c["objectives"][name] for c in mine]
            (line,) = ax.plot(x, [s["mean"] for s in stats], color=color, marker="o")
            # the interval as drawn bars (a percentile interval need not contain the mean: no errorbar offsets)
            ax.vlines(x, [s["ci"][0] for s in stats], [s["ci"][1] for s in stats], color=color, linewidth=2.5)
            for xi, s in zip(x, stats):
                ax.plot([xi] * len(s["deltas"]), s["deltas"], "o", color=color, alpha=0.3, markersize=3)
            handles.setdefault(algorithm, line)
        rate = [c["interfering"] / c["n"] for c in mine]
        axes[-1].plot(x, rate, color=color, marker="o")
    for ax, name in zip(axes, objectives):
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        ax.set_title(f"Δ {name} (mean of seeds, 95 % CI; dots: seeds)", fontsize="medium")
        ax.set_ylabel(f"Δ {name}")
    axes[-1].set_title("interference rate (share of seeds that interfere)", fontsize="medium")
    axes[-1].set_ylabel("share of seeds")
    axes[-1].set_ylim(-0.05, 1.05)
    for ax in axes:
        ax.set_xlabel("share of the compact style G in the warm start")
        ax.set_xticks(shares)
        ax.grid(alpha=0.3)
    _save(fig, path, handles)
