"""The covariance law scored as a prediction, against two baseline predictors.

Each record of a run's ``law`` (one per interval between evaluations and objective, written by the trainer's
interference monitor) holds the realised change of the objective's eval mean (``realised``: significantly ``up`` /
``down`` by its paired CI, or ``not significant``) and the law's prediction (``predicted``: the sign of the interval's
mean within-group covariance of the reward with the optimised advantage when its t interval over the interval's
training batches excludes 0, else ``undetermined``; records written before that interval was kept carry only the
mean, and their prediction is its sign). Three predictors are scored on the same records:

* **law**: ``predicted``;
* **largest weight**: the objective(s) with the largest mean weight over the interval's batches (the run's weight
  curve, steps ``from < step ≤ to``) rise, the others fall;
* **previous change**: the sign of the same objective's Δ over the previous interval (no prediction for the first).

A predictor's **hit rate** = hits / records where the change was significant and it made a prediction.

**Fixed by construction**: an interval whose weights are all ≥ 0 and whose rewards' within-group covariance ``C``
(the record's ``reward_cov``, averaged over the interval's batches) gives ``(C w)_k > 0`` for every objective: then
every ``Cov(r_k, s) = Σ_j w_j C_kj`` with the scalar ``s = Σ_j w_j r_j`` is positive, and for an advantage that
increases with ``s`` within a group the law predicts that *every* objective rises whatever the training does —
there the law cannot predict a trade-off, and its hits are those of "everything rises".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


PREDICTORS = ("law", "largest_weight", "previous_change")
_NAMES = {"law": "law", "largest_weight": "largest weight rises", "previous_change": "previous change's sign"}


def interval_weights(
    curve: Sequence[Mapping[str, Any]], step_from: int, step_to: int, objectives: Sequence[str]
) -> list[float] | None:
    """Mean weight per objective over the batches of steps ``step_from < step ≤ step_to``; ``None`` without any."""
    rows = [e["weights"] for e in curve if step_from < e["step"] <= step_to and isinstance(e.get("weights"), Mapping)]
    values = [[float(w.get(o, math.nan)) for o in objectives] for w in rows]
    values = [v for v in values if all(math.isfinite(x) for x in v)]
    return [float(x) for x in np.mean(values, axis=0)] if values else None


def forced_by_construction(weights: Sequence[float] | None, reward_cov: Any) -> bool | None:
    """Whether every ``Cov(r_k, Σ_j w_j r_j) = (C w)_k`` is > 0 with every weight ≥ 0 (module docstring); ``None``
    when the weights or the covariance are missing."""
    if weights is None or reward_cov is None:
        return None
    c = np.asarray(reward_cov, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if c.shape != (w.size, w.size) or not np.isfinite(c).all():
        return None
    return bool((w >= 0).all() and ((c @ w) > 0).all())


def _sign(x: Any) -> str | None:
    if not isinstance(x, int | float) or not math.isfinite(x) or x == 0:
        return None
    return "up" if x > 0 else "down"


def _law_prediction(record: Mapping[str, Any]) -> str | None:
    predicted = record.get("predicted")
    if predicted in ("up", "down"):
        return predicted
    if predicted == "undetermined":
        return None
    return _sign(record.get("predicted_cov"))  # a record without the covariance's interval


def predictions(
    records: Sequence[Mapping[str, Any]], weight_curve: Sequence[Mapping[str, Any]], objectives: Sequence[str]
) -> list[dict[str, Any]]:
    """Per record with a realised outcome: the outcome, each predictor's call (``None``: no prediction) and whether
    the interval is fixed by construction."""
    previous: dict[tuple[str, Any], Any] = {(r.get("objective"), r.get("to")): r.get("delta") for r in records}
    out = []
    for r in records:
        if r.get("realised") not in ("up", "down", "not significant") or r.get("objective") not in objectives:
            continue
        weights = interval_weights(weight_curve, r["from"], r["to"], objectives)
        largest = None
        if weights is not None:
            top = max(weights)
            largest = "up" if weights[list(objectives).index(r["objective"])] >= top - 1e-12 else "down"
        out.append(
            {
                "from": r["from"],
                "to": r["to"],
                "objective": r["objective"],
                "realised": r["realised"],
                "law": _law_prediction(r),
                "largest_weight": largest,
                "previous_change": _sign(previous.get((r["objective"], r["from"]))),
                "forced": forced_by_construction(weights, r.get("reward_cov")),
            }
        )
    return out


def hit_rates(preds: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per predictor: hits and scored records (a significant change and a prediction)."""
    out = {}
    for name in PREDICTORS:
        scored = [p for p in preds if p["realised"] != "not significant" and p[name] is not None]
        out[name] = {"hits": sum(p[name] == p["realised"] for p in scored), "n": len(scored)}
    return out


def law_scores(run: Mapping[str, Any], objectives: Sequence[str]) -> dict[str, Any]:
    """A run's law records scored: hit rates of the law and the baselines, records without a significant change,
    law predictions left undetermined, and the intervals fixed by construction (of those with the numbers)."""
    preds = predictions(run.get("law") or [], run.get("weights") or [], objectives)
    intervals: dict[tuple, list] = {}
    for p in preds:
        intervals.setdefault((p["from"], p["to"]), []).append(p["forced"])
    judged = [all(v) for v in intervals.values() if None not in v]
    return {
        "records": len(preds),
        "hit_rates": hit_rates(preds),
        "not_significant": sum(p["realised"] == "not significant" for p in preds),
        "undetermined": sum(p["law"] is None for p in preds),
        "forced_intervals": sum(judged),
        "judged_intervals": len(judged),
    }


def _rate(counts: Mapping[str, int]) -> str:
    return f"{counts['hits']}/{counts['n']}" + (f" ({counts['hits'] / counts['n']:.0%})" if counts["n"] else "")


def law_lines(name: str, run: Mapping[str, Any]) -> list[str]:
    """The covariance-law check of one run (``analysis["runs"][name]``): the hit rates of the law and the two
    baselines, what had no verdict, where the law's prediction was fixed by construction, and every disagreement."""
    scores = run.get("law_scores") or {}
    if not scores.get("records"):
        return []
    rates = scores["hit_rates"]
    lines = [
        f"covariance law, {name}: hit rate {_rate(rates['law'])} vs baselines "
        + ", ".join(f"{_NAMES[p]} {_rate(rates[p])}" for p in PREDICTORS[1:])
        + f" (of {scores['records']} checks: {scores['not_significant']} changes not significant, "
        f"{scores['undetermined']} covariance signs undetermined)"
    ]
    if scores["judged_intervals"]:
        lines.append(
            f"  fixed by construction in {scores['forced_intervals']} of {scores['judged_intervals']} intervals: "
            "weights >= 0 and the rewards' within-group covariance make every Cov(r_k, s) > 0, so there the law "
            "predicts that every objective rises"
        )
    keys = ("objective", "from", "to", "predicted_cov", "realised", "delta", "ci")
    for x in run.get("law_disagreements") or []:
        if not all(k in x for k in keys):  # a record without its numbers: counted above, nothing to show
            continue
        low, high = x["ci"]
        band = x.get("cov_ci")
        shown = f" [{band[0]:+.3f}, {band[1]:+.3f}]" if band and None not in band else ""
        lines.append(
            f"  disagreement: {x['objective']} steps {x['from']}->{x['to']}: mean covariance {x['predicted_cov']:+.3f}"
            f"{shown} predicts {'up' if x['predicted_cov'] > 0 else 'down'}, eval mean went {x['realised']} "
            f"(Δ {x['delta']:+.3f} [{low:+.3f}, {high:+.3f}])"
        )
    return lines


def pooled_lines(analysis: Mapping[str, Any]) -> list[str]:
    """Over every run of the report: the law's and the baselines' hit rates pooled."""
    totals = {p: {"hits": 0, "n": 0} for p in PREDICTORS}
    for r in analysis["runs"].values():
        for p, counts in ((r.get("law_scores") or {}).get("hit_rates") or {}).items():
            totals[p]["hits"] += counts["hits"]
            totals[p]["n"] += counts["n"]
    if not totals["law"]["n"] and not totals["largest_weight"]["n"]:
        return []
    return [
        "covariance law, all runs: hit rate "
        + ", ".join(f"{_NAMES[p]} {_rate(totals[p])}" for p in PREDICTORS)
        + " (hits / significant changes the predictor called)"
    ]
