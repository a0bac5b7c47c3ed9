"""Every number of the report: reference point, per-run values, interference, seeds aggregated by algorithm.

The conventions are stated in :mod:`mo_align.runs.report` (and in the written report itself).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mo_align.runs.jsonfile import clip, finite_float
from mo_align.runs.report.law import law_scores
from mo_align.runs.report.pareto import hypervolume, non_dominated
from mo_align.runs.report.seeds import seed_level
from mo_align.runs.summary import SummaryError, law_tally, normalize_summary, unique_run_names
from mo_align.stats import format_bounds, format_interval


__all__ = [
    "DEFAULT_TOLERANCE",
    "ReportError",
    "analyse",
    "default_reference",
    "final_cis",
    "interference",
    "parse_reference",
]

DEFAULT_TOLERANCE = 0.02
ReportError = SummaryError  # a run cannot be read or the report cannot be built (the message names path or value)


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
    """A run's interference by the one rule: :func:`mo_align.runs.summary.run_interference` (the run summary's own
    verdict, :func:`mo_align.stats.interfering` on the run's paired CIs of Δ vs the start, each objective's and the
    fixed scalar's). Returns ``{"interference": True / False, or None when the run recorded no such intervals (no
    verdict), "objectives": [...], "reasons": [...], "notes": [...]}``; the notes, which decide nothing, are the
    monitor's events and, for a run without intervals, the objectives that fell more than ``tolerance`` below their
    start while another rose.
    """
    run = normalize_summary(run)
    flagged = run["interference"]
    last = run["eval"][-1] if flagged is not None else {}
    reasons = []
    for name in flagged or []:
        low, high = last["delta_ci"][name]
        s_low, s_high = last["scalar_delta_ci"]
        reasons.append(
            f"{name}: 95 % CI of Δ {format_interval(run['delta'].get(name), low, high)} below 0 while the fixed "
            f"scalar's is {format_bounds(s_low, s_high)}, above 0"
        )
    notes = [
        f"step {ev['step']}: {ev['kind']}"
        + (f" on {ev['objective']}" if ev["objective"] else "")
        + _suffix(ev["message"])
        for ev in run["events"]
    ]
    if flagged is None:
        delta = {k: v for k, v in run["delta"].items() if not math.isnan(v)}
        rose = [k for k, v in delta.items() if v > 0]
        for name, change in delta.items():
            if change < -tolerance and [k for k in rose if k != name]:
                notes.append(
                    f"{name} fell by {-change:.3f} (more than {tolerance:g}; no interval recorded: no verdict)"
                )
    return {
        "interference": None if flagged is None else bool(flagged),
        "objectives": list(flagged or []),
        "reasons": reasons,
        "notes": notes,
    }


def final_cis(run: Mapping[str, Any]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The last evaluation's 95 % CIs (``[low, high]``) of each objective's mean and of its paired Δ vs the start,
    as the trainer recorded them (``mo_summary.json``); empty for runs without them (older summaries, runs rebuilt
    from ``trainer_state.json``, runs without evaluation). Non-finite intervals are left out."""
    evals = run.get("eval") or []
    if not evals or run.get("values_from", "eval") != "eval":
        return {}, {}

    def finite(mapping: Any) -> dict[str, list[float]]:
        out = {}
        for name, pair in dict(mapping or {}).items():
            low, high = finite_float(pair[0]), finite_float(pair[1])
            if math.isfinite(low) and math.isfinite(high):
                out[str(name)] = [low, high]
        return out

    return finite(evals[-1].get("ci")), finite(evals[-1].get("delta_ci"))


def _significance(delta_ci: Mapping[str, list[float]], objectives: Sequence[str]) -> dict[str, str | None]:
    """Per objective: ``drop`` (Δ CI entirely below 0), ``rise`` (entirely above), ``none``; ``None`` without a CI."""
    out: dict[str, str | None] = {}
    for name in objectives:
        ci = delta_ci.get(name)
        out[name] = None if ci is None else ("drop" if ci[1] < 0 else "rise" if ci[0] > 0 else "none")
    return out


def _suffix(message: Any) -> str:
    return f" ({message})" if message else ""


def _clean(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _stats(values: Sequence[float]) -> dict[str, Any]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": float(np.median(vals)), "min": float(min(vals)), "max": float(max(vals)), "n": len(vals)}


def _one_objective_set(runs: Sequence[Mapping[str, Any]]) -> None:
    """Refuse runs that measure different sets of objectives (names, in any order), naming two sets and their files:
    one report compares runs in one objective space (one reference point, one hypervolume). A run that records no
    objective at all is not a set of its own."""
    sets: dict[frozenset[str], Mapping[str, Any]] = {}
    for r in runs:
        if r["objectives"]:
            sets.setdefault(frozenset(r["objectives"]), r)
    if len(sets) > 1:
        (a, run_a), (b, run_b) = list(sets.items())[:2]
        names = [clip(", ".join(sorted(x)), 50) for x in (a, b)]
        files = [clip(r.get("source") or r["run_name"], 80) for r in (run_a, run_b)]
        raise ReportError(
            f"the runs measure different objective sets: {names[0]} ({files[0]}) vs {names[1]} ({files[1]}); "
            "report each set on its own"
        )


def _objectives(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    _one_objective_set(runs)
    objectives: list[str] = []
    for r in runs:
        objectives += [o for o in r["objectives"] if o not in objectives]
    if not objectives:
        raise ReportError("the runs record no objectives (no eval, weights or reward curves)")
    return objectives


def objective_roles(runs: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> dict[str, str]:
    """Each objective's role in the runs (``objective_roles`` of their summaries; ``train`` when not recorded):
    the one role they agree on, else the roles seen joined by ``/`` (then it is not a ``train`` objective of the
    seed-level scalar)."""
    out = {}
    for o in objectives:
        seen = sorted({str((r.get("objective_roles") or {}).get(o, "train")) for r in runs})
        out[o] = "/".join(seen)
    return out


def _reference(
    runs: Sequence[Mapping[str, Any]], objectives: list[str], reference: str | Sequence[float] | None
) -> tuple[list[float], list[str], str]:
    """The reference point, one reason per objective, and where it came from (``default`` / ``given``)."""
    ref = parse_reference(reference, objectives)
    if ref is None:
        ref, reasons = default_reference(runs, objectives)
        return ref, reasons, "default"
    return ref, ["given with --reference"] * len(objectives), "given"


def _per_run(
    runs: Sequence[Mapping[str, Any]], objectives: list[str], ref: list[float], tolerance: float
) -> dict[str, dict[str, Any]]:
    finals = np.array([[r["final"].get(o, math.nan) for o in objectives] for r in runs], dtype=float)
    complete = np.isfinite(finals).all(axis=1)
    front = non_dominated(finals)
    per_run: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(runs):
        flags = interference(r, tolerance)
        mean_ci, delta_ci = final_cis(r)
        per_run[r["run_name"]] = {
            "algorithm": r["algorithm"],
            "seed": r["seed"],
            "output_dir": r["output_dir"],
            "values_from": r.get("values_from", "eval"),
            "law": law_tally(r.get("law") or []),
            "law_scores": law_scores(r, objectives),
            "law_disagreements": [dict(x) for x in r.get("law") or [] if x.get("held") is False],
            "final": {o: _clean(r["final"].get(o)) for o in objectives},
            "best": {o: _clean(r["best"].get(o)) for o in objectives},
            "start": {o: _clean(r["start"].get(o)) for o in objectives},
            "delta": {o: _clean(r["delta"].get(o)) for o in objectives},
            "final_ci": {o: mean_ci.get(o) for o in objectives},
            "delta_ci": {o: delta_ci.get(o) for o in objectives},
            "significant": _significance(delta_ci, objectives),
            "hypervolume": hypervolume(finals[i : i + 1], ref) if complete[i] else None,
            "non_dominated": bool(front[i]),
            "interference": flags["interference"],
            "interference_objectives": flags["objectives"],
            "interference_reasons": flags["reasons"],
            "interference_notes": flags["notes"],
            "scalar_delta_ci": (r["eval"][-1].get("scalar_delta_ci") if r["eval"] else None),
            "preference": r.get("preference"),
            "unavailable": {k: v for e in r["eval"] for k, v in (e.get("unavailable") or {}).items()},
            "num_events": len(r["events"]),
        }
    return per_run


def _aggregate(members: list[dict[str, Any]], objectives: list[str], ref: list[float]) -> dict[str, Any]:
    """The seeds of one algorithm: median and range of finals and deltas, the two hypervolumes, HV of all seeds."""
    agg: dict[str, Any] = {}
    agg["final"] = {o: _stats([finite_float(m["final"][o]) for m in members]) for o in objectives}
    agg["delta"] = {o: _stats([finite_float(m["delta"][o]) for m in members]) for o in objectives}
    median_final = [agg["final"][o]["median"] for o in objectives]
    agg["median_final"] = dict(zip(objectives, median_final))
    agg["hv_of_median_final"] = None if None in median_final else hypervolume([median_final], ref)
    run_hvs = [m["hypervolume"] for m in members if m["hypervolume"] is not None]
    agg["median_run_hv"] = float(np.median(run_hvs)) if run_hvs else None
    agg["run_hv_range"] = [min(run_hvs), max(run_hvs)] if run_hvs else None
    seed_points = [[finite_float(m["final"][o]) for o in objectives] for m in members]
    agg["hv_of_all_seeds"] = hypervolume(seed_points, ref) if run_hvs else None
    return agg


def analyse(
    runs: Sequence[Mapping[str, Any]],
    reference: str | Sequence[float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    preference: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Every number of the report (JSON-serialisable; missing values are ``None``), without writing anything.
    ``preference``: the fixed scalar's weights of the seed-level comparison (:mod:`~.seeds`; default: the linear
    runs' weights, else equal weights)."""
    if not runs:
        raise ReportError("no runs to report on")
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
        raise ReportError(f"--tolerance must be a finite number >= 0, got {tolerance!r}")
    runs = unique_run_names([normalize_summary(r) for r in runs])
    objectives = _objectives(runs)
    roles = objective_roles(runs, objectives)
    ref, reasons, ref_source = _reference(runs, objectives, reference)
    per_run = _per_run(runs, objectives, ref, tolerance)
    per_algorithm: dict[str, dict[str, Any]] = {}
    for r in runs:
        per_algorithm.setdefault(r["algorithm"], {"runs": []})["runs"].append(r["run_name"])
    try:
        seeds = seed_level(runs, objectives, preference, trained=[o for o in objectives if roles[o] == "train"])
    except ValueError as e:
        raise ReportError(str(e)) from e
    for algorithm, agg in per_algorithm.items():
        agg.update(_aggregate([per_run[n] for n in agg["runs"]], objectives, ref))
        agg["interference_runs"] = [n for n in agg["runs"] if per_run[n]["interference"]]  # per-run flags
        row = seeds["vs_start"]["rows"].get(algorithm)
        agg["seed_interference"] = None if row is None else row["interference"]
    return {
        "objectives": objectives,
        "objective_roles": roles,
        "reference": [float(v) for v in ref],
        "reference_source": ref_source,
        "reference_reasons": dict(zip(objectives, reasons)),
        "tolerance": float(tolerance),
        "runs": per_run,
        "algorithms": per_algorithm,
        "hypervolume": {n: v["hypervolume"] for n, v in per_run.items()},
        "non_dominated": [n for n, v in per_run.items() if v["non_dominated"]],
        "interference": {n: v["interference"] for n, v in per_run.items()},
        "seed_level": seeds,
        "_runs": runs,  # the normalised summaries, for the plots; dropped from what write_report returns
    }
