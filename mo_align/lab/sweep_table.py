"""The phase diagram's numbers, table and plot, from a sweep's files (the statistics are stated in
:mod:`mo_align.lab.sweep`).

Layout read: ``<out>/share-<s>/interference.json`` (the lab's per-run Δ against the share's warm-start baseline, of
every objective and of the fixed scalar: :func:`~mo_align.lab.evidence.lab_evidence`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps

from mo_align.lab.evidence import EVIDENCE_FILE
from mo_align.runs.plotting import figure, save
from mo_align.runs.report.seeds import ALPHA, cell_ci, family, verdict
from mo_align.stats import interfering


SCALAR = "scalar"
_SEED = re.compile(r"-seed\d+$")


def share_dir(out_root: str, share: float) -> str:
    """The directory of one share's runs and report in a sweep: ``<out_root>/share-<s>``."""
    return os.path.join(out_root, f"share-{share:g}")


def _read(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"lab sweep: {path} is missing (did every run of this share finish?)") from None


def _seed_deltas(row: Mapping[str, Any], path: str) -> dict[str, float]:
    """One run's Δ vs its warm start's baseline, per objective and for the fixed scalar."""
    if "preference" not in row:
        raise ValueError(
            f"lab sweep: {path} was written before the warm-start baseline and the fixed scalar; rerun the sweep "
            "(finished runs are reused, only the tables are rebuilt)"
        )
    deltas = {**{q: ci["estimate"] for q, ci in row["delta"].items()}, SCALAR: row["scalar_delta"]["estimate"]}
    return {q: None if v is None else round(v, 12) for q, v in deltas.items()}  # no float noise read as an effect


def collect(
    out_root: str, shares: Sequence[float], algorithms: Sequence[str]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The cells (one per share and algorithm that has runs), Holm-adjusted together over every cell and quantity,
    and, per share, its warm-start baseline and the warm start's conciseness reference length."""
    groups, starts = {}, {}
    for share in shares:
        root = share_dir(out_root, share)
        path = os.path.join(root, EVIDENCE_FILE)
        evidence = _read(path)
        runs = evidence["runs"]
        if not runs:
            raise ValueError(f"lab sweep: {root}/{EVIDENCE_FILE} lists no finished run")
        baseline = evidence.get("baseline") or {
            n: float(np.mean([r["start"][n] for r in runs])) for n in runs[0]["start"]
        }
        starts[f"{share:g}"] = {"start": baseline, "reference_length": evidence.get("reference_length")}
        for algorithm in algorithms:
            rows = [r for r in runs if _SEED.sub("", r["run"]) == algorithm]
            if rows:
                groups[(share, algorithm)] = (rows, [_seed_deltas(r, path) for r in rows])
    quantities = [*next(iter(groups.values()))[0][0]["delta"], SCALAR] if groups else []
    tests = family({(key, q): [d[q] for d in deltas] for key, (_, deltas) in groups.items() for q in quantities})
    cells = []
    for (share, algorithm), (rows, deltas) in groups.items():
        stats = {}
        for q in quantities:
            values, cell = [d[q] for d in deltas], tests[((share, algorithm), q)]
            stats[q] = {
                "deltas": values,
                "median": float(np.median(values)),
                "min": float(min(values)),
                "max": float(max(values)),
                "mean": cell["estimate"],
                "ci": [cell["low"], cell["high"]],
                "p": cell["p"],
                "p_holm": cell["p_holm"],
                "level": cell["level"],
                "verdict": verdict(cell, "vs_start"),
            }
        cis = {q: cell_ci(tests[((share, algorithm), q)]) for q in quantities}
        flagged = interfering({q: cis[q] for q in quantities[:-1]}, cis[SCALAR])  # the one rule
        cells.append(
            {
                "share": share,
                "algorithm": algorithm,
                "n": len(rows),
                "runs": [r["run"] for r in rows],
                "interfering": flagged,
                "objectives": stats,
            }
        )
    n_tests = sum(1 for c in tests.values() if c["level"] is not None)
    return _finite(cells), {**starts, "_tests": n_tests}


def _finite(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:+.3f}"


def format_cell(stats: Mapping[str, Any]) -> str:
    """``mean [adjusted CI] verdict; median (min..max)`` of one quantity's Δ over the seeds."""
    low, high = stats["ci"]
    interval = f"[{_num(low)}, {_num(high)}] {stats['verdict']}" if low is not None else f"({stats['verdict']})"
    return f"{_num(stats['mean'])} {interval}; {_num(stats['median'])} ({_num(stats['min'])}..{_num(stats['max'])})"


def format_markdown(cells: list[dict[str, Any]], starts: Mapping[str, Any], timing: Mapping[str, Any]) -> str:
    """The phase diagram as markdown: the per-(share, algorithm) table, the baselines, the run time."""
    if not cells:
        return "lab sweep: no finished runs\n"
    quantities = list(cells[0]["objectives"])
    lines = [
        "| G share | algorithm | seeds | interferes | " + " | ".join(f"Δ {q}" for q in quantities) + " |",
        "|---" * (4 + len(quantities)) + "|",
    ]
    for c in cells:
        row = [f"{c['share']:g}", c["algorithm"], str(c["n"]), ", ".join(c["interfering"]) or "none"]
        lines.append("| " + " | ".join(row + [format_cell(c["objectives"][q]) for q in quantities]) + " |")
    lines += [
        "",
        f"Holm-adjusted over {starts.get('_tests', 0)} tests (family level {1 - ALPHA:.0%}). Δ = a seed's final eval "
        "mean − its share's warm-start baseline (per held-out prompt, the mean of every run's step-0 evaluation; "
        "256 prompts × 4 samples, T = 1). Per quantity: mean over seeds [t interval over seeds at the Holm step's "
        "level] and its verdict (up / down / not significant); median (min..max) over seeds. scalar = Σ w_k r_k "
        "with the linear recipe's weights for every algorithm; interferes = the scalar's interval above 0 and the "
        "objective's below 0.",
    ]
    objectives = quantities[:-1]
    lines += ["", "| G share | " + " | ".join(f"baseline {o}" for o in objectives) + " | reference length |"]
    lines.append("|---" * (2 + len(objectives)) + "|")
    for share, s in starts.items():
        if share.startswith("_"):
            continue
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
    """One PNG: a panel per objective and one for the fixed scalar (x = G share, y = Δ: the seeds' mean with its
    Holm-adjusted t interval as a bar, each seed a faint dot, one colour per algorithm)."""
    quantities = list(cells[0]["objectives"])
    algorithms = list(dict.fromkeys(c["algorithm"] for c in cells))
    shares = sorted({c["share"] for c in cells})
    step = min(np.diff(shares)) if len(shares) > 1 else 0.1
    palette = colormaps["tab10"].colors
    fig, axes = figure(len(quantities), ncols_max=2, panel=(5.2, 3.6))
    handles = {}
    for i, algorithm in enumerate(algorithms):
        mine = sorted((c for c in cells if c["algorithm"] == algorithm), key=lambda c: c["share"])
        offset = (i - (len(algorithms) - 1) / 2) * step * 0.12  # keep the bars apart
        x = np.array([c["share"] for c in mine]) + offset
        color = palette[i % len(palette)]
        for ax, name in zip(axes, quantities):
            stats = [c["objectives"][name] for c in mine]
            (line,) = ax.plot(x, [s["mean"] for s in stats], color=color, marker="o")
            bars = [(xi, s["ci"]) for xi, s in zip(x, stats) if s["ci"][0] is not None]
            if bars:
                ax.vlines(
                    [b[0] for b in bars], [b[1][0] for b in bars], [b[1][1] for b in bars], color=color, linewidth=2.5
                )
            for xi, s in zip(x, stats):
                ax.plot([xi] * len(s["deltas"]), s["deltas"], "o", color=color, alpha=0.3, markersize=3)
            handles.setdefault(algorithm, line)
    for ax, name in zip(axes, quantities):
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        ax.set_title(f"Δ {name} (mean of seeds, Holm-adjusted t interval; dots: seeds)", fontsize="medium")
        ax.set_ylabel(f"Δ {name}")
        ax.set_xlabel("share of the compact style G in the warm start")
        ax.set_xticks(shares)
        ax.grid(alpha=0.3)
    save(fig, path, handles)
