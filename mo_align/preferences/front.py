"""The preferences ``mo-align evaluate-preferences`` measures, its points' names, and the front it writes.

The front is computed as ``mo-align report`` computes an algorithm's front (:mod:`mo_align.runs.report.fronts`):
the points' final eval means, non-dominated points (every objective maximised, :func:`mo_align.runs.report.pareto.
non_dominated`) and the hypervolume of all points above the reference point (:func:`~mo_align.runs.report.pareto.
hypervolume`); the reference is ``--reference`` or the report's default over these points
(:func:`mo_align.runs.report.analysis.default_reference`), so the report of the same points shows the same HV.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mo_align.runs.report.analysis import default_reference, parse_reference
from mo_align.runs.report.pareto import hypervolume, non_dominated
from mo_align.runs.summary import json_safe, normalize_summary
from mo_align.simplex import simplex_grid


MAX_POINTS = 1000


def parse_preferences(text: str, k: int) -> list[list[float]]:
    """``grid:N`` (the simplex grid with N steps per edge) or ``a,b,c;d,e,f`` (vectors of K numbers >= 0, each
    normalised to sum to 1); one line naming the mistake otherwise."""
    text = text.strip()
    if text.startswith("grid:"):
        steps = text[len("grid:") :]
        if not steps.isdigit() or not 1 <= int(steps) <= 100:
            raise ValueError(f"--preferences {text!r}: grid:N with an integer N in [1, 100]")
        if math.comb(int(steps) + k - 1, k - 1) > MAX_POINTS:
            raise ValueError(f"--preferences {text!r}: more than {MAX_POINTS} points for {k} objectives")
        return simplex_grid(k, int(steps))
    out = []
    for i, part in enumerate(p for p in text.split(";") if p.strip()):
        try:
            w = [float(x) for x in part.split(",")]
        except ValueError:
            raise ValueError(f"--preferences {text!r}: vector {i + 1} is not comma-separated numbers") from None
        if len(w) != k or not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"--preferences {text!r}: vector {i + 1} needs {k} numbers >= 0, not all 0")
        out.append([x / math.fsum(w) for x in w])
    if not out:
        raise ValueError("--preferences: grid:N, or vectors 'a,b;c,d' (one number per objective)")
    return [list(w) for w in dict.fromkeys(tuple(w) for w in out)]


def point_name(preference: Sequence[float]) -> str:
    """``pref-w0.5_0.25_0.25``: the point's directory and the tail of its run name."""
    return "pref-w" + "_".join(format(round(w, 4), "g") for w in preference)


def front_record(
    run: str,
    run_summary: Mapping[str, Any],
    summaries: Sequence[Mapping[str, Any]],
    objectives: Sequence[str],
    reference: str | None,
    out: str,
) -> dict[str, Any]:
    """``preference_front.json``: points (preference, means, CIs over prompts), front, reference and HV."""
    runs = [normalize_summary(s) for s in summaries]
    means = np.array([[r["final"].get(o, math.nan) for o in objectives] for r in runs], dtype=float)
    ref = parse_reference(reference, objectives)
    ref_from = "--reference" if ref is not None else "default (as mo-align report)"
    if ref is None:
        ref = default_reference(runs, objectives)[0]
    mask = non_dominated(means)
    points = []
    for r, nd in zip(runs, mask, strict=True):
        w = r["weighting_hyperparameters"].get("preference") or []
        last = (r.get("eval") or [{}])[-1]
        points.append(
            {
                "name": point_name(w),
                "preference": dict(zip(objectives, w, strict=False)),
                "means": {o: r["final"].get(o) for o in objectives},
                "ci": {o: (last.get("ci") or {}).get(o) for o in objectives},
                "non_dominated": bool(nd),
                "dir": os.path.abspath(os.path.join(out, point_name(w))),
            }
        )
    record = run_summary["preference_conditioning"]
    return json_safe(
        {
            "run": os.path.abspath(run),
            "algorithm": f"{run_summary['algorithm']}-conditioned",
            "template": record.get("template"),
            "placement": record.get("placement"),
            "objectives": list(objectives),
            "ci_level": "bootstrap over prompts (the recipe's mo_eval_ci_level)",
            "points": points,
            "front": [p["name"] for p in points if p["non_dominated"]],
            "reference": [float(x) for x in ref],
            "reference_from": ref_from,
            "hypervolume": hypervolume(means, ref),
        }
    )
