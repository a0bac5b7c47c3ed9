"""Does the lab's matched step size stand in for the paper's long horizon? Weight trajectories in relative time.

The lab trains 50 steps where the paper trains 1,620 optimizer steps; ``--eta matched`` multiplies an adaptive
method's step size by (paper weight updates / lab weight updates) so that it *can* move its weights as far
(:mod:`mo_align.lab.scaling`). That is only a miniature if a short run at the matched step behaves like a long run at
the paper's step. The check: the same algorithm at the paper's η over a long horizon (``--steps 400``) and at the
matched η over the lab's horizon, their weights read at the same *relative* times (0, ¼, ½, ¾, 1 of each run's
steps) as factors of the starting weights, and each run's final Δ against its own start::

    python -m mo_align.lab --algorithms linear ctwa --seeds 0 1 --steps 400 --eval-steps 100 --out outputs/lab-long
    python -m mo_align.lab --algorithms linear ctwa --seeds 0 1 --eta matched --out outputs/lab-matched
    python -m mo_align.lab --horizon outputs/lab-long outputs/lab-matched   # run directories or archives

Linear's weights never move: its rows show what the longer horizon alone does to the policy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from mo_align.runs.summary import load_runs


FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def weights_at(records: Sequence[Mapping[str, Any]], step: float) -> dict[str, float] | None:
    """The weights in force at ``step``: the last record at or before it (the first record before any)."""
    if not records:
        return None
    ordered = sorted(records, key=lambda r: r["step"])
    chosen = ordered[0]
    for r in ordered:
        if r["step"] <= step:
            chosen = r
    return {k: float(v) for k, v in chosen["weights"].items()}


def trajectory(run: Mapping[str, Any], fractions: Sequence[float] = FRACTIONS) -> list[dict[str, float] | None]:
    """The run's weights at each relative time, as factors of its first recorded weights (``w(t) / w(0)``)."""
    records = run.get("weights") or []
    steps = max((r["step"] for r in records), default=0)
    first = weights_at(records, 0)
    out = []
    for f in fractions:
        now = weights_at(records, f * steps)
        if now is None or first is None:
            out.append(None)
            continue
        out.append({k: (v / first[k] if first[k] else math.nan) for k, v in now.items()})
    return out


def _steps(run: Mapping[str, Any]) -> int:
    return int(max((e["step"] for e in run.get("eval") or []), default=0))


def horizon_rows(run_dirs: Sequence[str], fractions: Sequence[float] = FRACTIONS) -> list[dict[str, Any]]:
    """Per run: name, steps, its weight factors at each relative time and its final Δ per objective."""
    rows = []
    for run in load_runs(run_dirs):
        rows.append(
            {
                "run": run["run_name"],
                "source": os.path.basename(os.path.dirname(os.path.normpath(run.get("output_dir") or ""))),
                "steps": _steps(run),
                "objectives": list(run["objectives"]),
                "trajectory": trajectory(run, fractions),
                "delta": {o: run["delta"].get(o) for o in run["objectives"]},
            }
        )
    return rows


def _factors(point: Mapping[str, float] | None, objectives: Sequence[str]) -> str:
    if point is None:
        return "—"
    return "/".join("–" if math.isnan(point[o]) else f"{point[o]:.3f}" for o in objectives)  # – : w_k(0) = 0


def horizon_lines(rows: Sequence[Mapping[str, Any]], fractions: Sequence[float] = FRACTIONS) -> list[str]:
    """The comparison as text: one line per run (the caller groups long and matched runs)."""
    if not rows:
        return ["horizon check: no runs"]
    objectives = rows[0]["objectives"]
    head = ["run", "steps", *[f"w/w0 at {f:.0%}" for f in fractions], *[f"Δ {o}" for o in objectives]]
    body = [
        [
            r["run"],
            str(r["steps"]),
            *[_factors(p, objectives) for p in r["trajectory"]],
            *[("—" if r["delta"][o] is None else f"{r['delta'][o]:+.3f}") for o in objectives],
        ]
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = [
        f"horizon check: weight factors w_k(t)/w_k(0) ({'/'.join(objectives)}) at relative times, final Δ vs own start"
    ]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(x, widths)).rstrip() for x in [head, *body]]
    return lines
