"""``make lab-front``'s verdict on the conditioned policy: its hypervolume against the Linear sweep's and the soup's,
seed by seed, paired.

For every front (an algorithm of the lab-front report: the Linear sweep, the soup, a conditioned policy evaluated at
the sweep's preferences, ...) and every seed, the **HV of that seed's own points** (their final eval means) above the
reference point (:func:`mo_align.runs.report.pareto.hypervolume`; dominated points add nothing). A seed whose front
lacks a point (a failed run or evaluation) has no HV and leaves every comparison it is part of.

A **comparison** (conditioned row A against front B) takes, for each seed both have, the paired difference
ΔHV_s = HV_A(s) − HV_B(s): same seed, same warm start, same held-out prompts. Its mean over seeds gets a Student t
interval (:func:`mo_align.stats.t_test`), and the comparisons of one table form one Holm family
(:func:`mo_align.runs.report.seeds.family`: :func:`mo_align.stats.holm_levels` and :func:`mo_align.stats.holm_adjust`),
so each interval is at its Holm level and excludes 0 exactly when its Holm-adjusted p-value is ≤ α. The verdict
reads that interval: ``better`` (above 0), ``worse`` (below 0), ``not significant``, or ``n < 2`` (fewer than two
seeds: no interval).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mo_align.runs.report.pareto import hypervolume
from mo_align.runs.report.seeds import family, verdict
from mo_align.stats import format_interval


ALPHA = 0.05
TITLES = {
    "conditioned-same-steps": "conditioned, same steps",
    "conditioned-same-compute": "conditioned, same compute",
    "linear": "Linear sweep",
    "soup": "soup",
}


def title(front: str) -> str:
    return TITLES.get(front, front)


def seed_hypervolumes(
    points: Mapping[str, Mapping[int, Sequence[Sequence[float]]]],
    expected: Mapping[str, int],
    reference: Sequence[float],
) -> dict[str, dict[int, float | None]]:
    """front -> seed -> HV of that seed's points (one vector of objective means each) above ``reference``; ``None``
    where the seed has fewer complete points (every objective finite) than ``expected[front]``."""
    out: dict[str, dict[int, float | None]] = {}
    for front, per_seed in points.items():
        out[front] = {}
        for seed in sorted(per_seed):
            vectors = np.asarray(per_seed[seed], dtype=float).reshape(-1, len(reference))
            complete = int(np.isfinite(vectors).all(axis=1).sum())
            ok = complete >= expected.get(front, complete) and complete > 0
            out[front][seed] = hypervolume(vectors, reference) if ok else None
    return out


def compare(
    hv: Mapping[str, Mapping[int, float | None]], pairs: Sequence[tuple[str, str]], alpha: float = ALPHA
) -> list[dict[str, Any]]:
    """One row per (A, B) of ``pairs`` present in ``hv``: the per-seed ΔHV = HV_A − HV_B over the seeds both have, the
    mean with its t interval at the Holm level of the family of these rows, the raw and Holm-adjusted p-values and
    the verdict (module docstring)."""
    pairs = [(a, b) for a, b in pairs if a in hv and b in hv]
    samples, per_seed = {}, {}
    for a, b in pairs:
        seeds = sorted(s for s in hv[a] if hv[a][s] is not None and hv[b].get(s) is not None)
        # rounded to 1e-12: equal HVs must not read as a tiny effect with no spread (float noise of the subtraction)
        per_seed[(a, b)] = {s: round(float(hv[a][s]) - float(hv[b][s]), 12) for s in seeds}
        samples[(a, b)] = list(per_seed[(a, b)].values())
    cells = family(samples, alpha)
    rows = []
    for a, b in pairs:
        cell = cells[(a, b)]
        rows.append(
            {"front": a, "against": b, "per_seed": per_seed[(a, b)], **cell, "verdict": verdict(cell, "vs_reference")}
        )
    return rows


def _number(value: float | None, spec: str = ".4f") -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def hv_table(hv: Mapping[str, Mapping[int, float | None]], seeds: Sequence[int], expected: Mapping[str, int]) -> str:
    """Markdown: per front, its points per seed, the HV of each seed and their mean."""
    lines = [
        "| front | points per seed | " + " | ".join(f"HV seed {s}" for s in seeds) + " | mean HV |",
        "|---|---|" + "---|" * len(seeds) + "---|",
    ]
    for front, per_seed in hv.items():
        values = [per_seed.get(s) for s in seeds]
        finite = [v for v in values if v is not None]
        mean = float(np.mean(finite)) if finite else None
        cells = " | ".join(_number(v) for v in values)
        lines.append(f"| {title(front)} | {expected.get(front, '—')} | {cells} | {_number(mean)} |")
    return "\n".join(lines)


def comparison_table(rows: Sequence[Mapping[str, Any]], alpha: float = ALPHA) -> str:
    """Markdown: per comparison, the per-seed ΔHV, the mean with its interval (and level), p, Holm p and the verdict;
    the test's terms stated under the table."""
    lines = [
        "| comparison | seeds | ΔHV per seed | mean ΔHV [interval] | level | p | p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        seeds = ", ".join(f"{s}: {d:+.4f}" for s, d in r["per_seed"].items()) or "—"
        interval = format_interval(r["estimate"], r["low"], r["high"])
        level = "—" if r["level"] is None else f"{100 * r['level']:.1f} %"
        p, holm = _number(r["p"], ".3g"), _number(r["p_holm"], ".3g")
        name = f"{title(r['front'])} − {title(r['against'])}"
        lines.append(f"| {name} | {r['n']} | {seeds} | {interval} | {level} | {p} | {holm} | {r['verdict']} |")
    tests = sum(1 for r in rows if r["level"] is not None)
    lines += [
        "",
        f"ΔHV = HV(conditioned) − HV(other front) at the same seed (same warm start, same held-out prompts), each HV "
        f"over that seed's own points. Interval: Student t over seeds at the level shown; Holm's step-down procedure "
        f"over the {tests} comparison(s) of this table with at least 2 seeds (family level {alpha:g}) sets each "
        f"level, so an interval excludes 0 exactly when its Holm-adjusted p ≤ {alpha:g}. better / worse: the "
        "interval lies above / below 0.",
    ]
    return "\n".join(lines)
