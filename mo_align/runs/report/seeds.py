"""Seed-level comparisons: each algorithm against the warm start and against a reference algorithm, over seeds.

The unit of replication is the **seed** (training randomness), not the evaluation's prompts:

* **Baseline**: one per warm start — the mean of the first (step-0) evaluation of every run that starts from it
  (every algorithm, every seed), not each run's own step-0 draw; per objective, and for the fixed scalar. Runs start
  from the same warm start when their summaries name the same one (the lab worker's ``--sft`` directory in the
  launch command); runs that name none are taken as one warm start.
* **Δ vs start**, per algorithm and quantity: one value per seed, ``final − baseline``; the seeds' mean with a t
  interval over seeds (:func:`mo_align.stats.t_test`).
* **Rows**: the runs that differ only in the seed (the run name without ``-seed<N>``, else the algorithm).
* **vs the reference** (``linear``), per algorithm: one *paired* difference per seed that both ran from the same warm
  start, ``final_algorithm − final_reference`` (same seed, same warm start, same prompts), with its t interval.
* **Holm**: every table is one family; its tests (cells with at least 2 seeds) are adjusted together
  (:func:`mo_align.stats.holm_levels`): an interval excludes 0 exactly when its Holm-adjusted p-value ≤ ``alpha``.
  The verdict reads the adjusted interval: ``up`` / ``down`` (vs start), ``better`` / ``worse`` (vs the reference),
  or ``not significant``; ``n < 2`` where there is no interval.
* **Fixed scalar**: ``Σ_k w_k · mean_k`` with one weight vector for every algorithm (the recipe's preference
  weights: given, else the reference run's ``weights`` hyperparameter, else ``1/K`` each), never an algorithm's
  current weights.
* **Interference** (per algorithm): the fixed scalar's Δ interval lies entirely above 0 and an objective's Δ
  interval entirely below 0, both from the Δ-vs-start table's adjusted intervals (:func:`mo_align.stats.interfering`,
  the one rule every output that says "interference" applies).
* **Missing values**: an objective without a start or final value in a run (its step-0 evaluation had no reference,
  e.g. conciseness against a running mean before any training batch) has no Δ there; the fixed scalar sums the
  objectives every evaluated run has at both ends (:func:`scalar_objectives`), and the tables say which.
"""

from __future__ import annotations

import math
import re
import shlex
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mo_align.stats import CI, format_interval, holm_adjust, holm_levels, interfering, t_test


SCALAR = "scalar"
REFERENCE_ALGORITHM = "linear"
ALPHA = 0.05
_SEED = re.compile(r"-seed\d+(#\d+)?$")
SPREAD_VERDICTS = {"vs_start": ("up", "down"), "vs_reference": ("better", "worse")}


def warm_start_key(run: Mapping[str, Any]) -> str:
    """The warm start a run's summary names: the ``--sft`` value of its launch command (the lab's workers), else
    ``""`` (one shared warm start)."""
    try:
        argv = shlex.split(run.get("launch_command") or "")
    except ValueError:
        return ""
    return argv[argv.index("--sft") + 1] if "--sft" in argv[:-1] else ""


def preference_weights(
    runs: Sequence[Mapping[str, Any]], objectives: Sequence[str], given: Sequence[float] | None = None
) -> tuple[list[float], str]:
    """The fixed scalar's weights and where they came from (see the module docstring): ``given``, else the weights
    every run of the reference algorithm records (when they agree), else ``1/K`` each."""
    k = len(objectives)
    if given is not None:
        w = [float(v) for v in given]
        if len(w) != k or not all(math.isfinite(v) and v >= 0 for v in w) or sum(w) <= 0:
            raise ValueError(f"preference: expected {k} finite weights >= 0 with a positive sum, got {list(given)}")
        return w, "given"
    recorded = {
        tuple(float(v) for v in w)
        for r in runs
        if r.get("algorithm") == REFERENCE_ALGORITHM
        and isinstance(w := (r.get("weighting_hyperparameters") or {}).get("weights"), list)
        and len(w) == k
    }
    if len(recorded) == 1:
        return list(next(iter(recorded))), f"the {REFERENCE_ALGORITHM} runs' weights"
    why = "disagree" if recorded else "are not recorded"
    return [1.0 / k] * k, f"equal weights: none given and the {REFERENCE_ALGORITHM} runs' weights {why}"


def configuration(run: Mapping[str, Any]) -> str:
    """A row of the tables: the runs that differ only in the seed — the run name without ``-seed<N>`` (the lab's
    ``<algorithm>-seed<N>``, a sweep's ``<label>-w…-seed<N>``), else the run's algorithm."""
    name = run["run_name"]
    return _SEED.sub("", name) if _SEED.search(name) else run["algorithm"]


def scalar_objectives(runs: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> list[str]:
    """The objectives of the fixed scalar: those with a finite start and final in every evaluated run."""
    evaluated = [r for r in runs if r.get("values_from", "eval") == "eval"]

    def scored(r: Mapping[str, Any], o: str) -> bool:
        return math.isfinite(float(r["start"].get(o, math.nan))) and math.isfinite(float(r["final"].get(o, math.nan)))

    return [o for o in objectives if all(scored(r, o) for r in evaluated)]


def seed_points(runs: Sequence[Mapping[str, Any]], objectives: Sequence[str], weights: Sequence[float]) -> list[dict]:
    """Per evaluated run with a finite start and final for some objective: algorithm, warm start, seed, and the
    start and final of every objective (NaN where the run has none) and of the fixed scalar (over
    :func:`scalar_objectives`; NaN when there is none)."""
    common = scalar_objectives(runs, objectives)
    points = []
    for r in runs:
        if r.get("values_from", "eval") != "eval":
            continue
        start = {o: float(r["start"].get(o, math.nan)) for o in objectives}
        final = {o: float(r["final"].get(o, math.nan)) for o in objectives}
        if not any(math.isfinite(start[o]) and math.isfinite(final[o]) for o in objectives):
            continue
        for values in (start, final):
            terms = [w * values[o] for w, o in zip(weights, objectives) if o in common]
            values[SCALAR] = float(sum(terms)) if terms else math.nan
        seed = r.get("seed")
        points.append(
            {
                "run": r["run_name"],
                "algorithm": configuration(r),
                "warm_start": warm_start_key(r),
                "seed": r["run_name"] if seed is None else seed,  # no seed: a seed of its own, never paired
                "start": start,
                "final": final,
            }
        )
    return points


def baselines(points: Sequence[Mapping[str, Any]], quantities: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per warm start: the mean over its runs of their first evaluation, per quantity."""
    out: dict[str, dict[str, float]] = {}
    for key in dict.fromkeys(p["warm_start"] for p in points):
        mine = [p for p in points if p["warm_start"] == key]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a quantity no run of this warm start has stays NaN
            out[key] = {q: float(np.nanmean([p["start"][q] for p in mine])) for q in quantities}
    return out


def _per_seed(points: Sequence[Mapping[str, Any]], algorithm: str, value: Any) -> dict[tuple, float]:
    """``(warm start, seed) -> value(point)`` for one algorithm; repeated runs of one seed averaged."""
    groups: dict[tuple, list[float]] = {}
    for p in points:
        if p["algorithm"] == algorithm:
            groups.setdefault((p["warm_start"], p["seed"]), []).append(value(p))
    # rounded to 1e-12: a difference of eval means must not carry the subtraction's float noise (0.55 − 0.5499…9
    # at every seed would read as a tiny effect with no spread)
    return {key: round(float(np.mean(v)), 12) for key, v in groups.items()}


def family(samples: Mapping[tuple[str, str], Sequence[float]], alpha: float = ALPHA) -> dict[tuple[str, str], dict]:
    """One table's tests, Holm-adjusted together: per cell the seeds' mean, its interval at the Holm level, the raw
    and adjusted p-values, the number of seeds and the interval's level (``None`` where there is no test)."""
    keys = list(samples)
    raw = [t_test(samples[k]).p for k in keys]
    levels, adjusted = holm_levels(raw, alpha), holm_adjust(raw)
    out = {}
    for key, p, a, p_holm in zip(keys, raw, levels, adjusted):
        test = t_test(samples[key], level=1.0 - a) if math.isfinite(a) else t_test(samples[key])
        out[key] = {
            "estimate": test.estimate,
            "low": test.low,
            "high": test.high,
            "p": p,
            "p_holm": p_holm,
            "n": test.n,
            "level": 1.0 - a if math.isfinite(a) else None,
        }
    return out


def cell_ci(cell: Mapping[str, Any]) -> CI:
    """A table cell's adjusted interval as a :class:`~mo_align.stats.CI` (NaN bounds where it has none)."""

    def number(v: Any) -> float:
        return math.nan if v is None else float(v)

    return CI(number(cell["estimate"]), number(cell["low"]), number(cell["high"]))


def verdict(cell: Mapping[str, Any], table: str) -> str:
    """``up`` / ``down`` or ``better`` / ``worse`` from the adjusted interval, else ``not significant``; ``n < 2``."""
    low, high = cell["low"], cell["high"]
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "n < 2"
    rise, fall = SPREAD_VERDICTS[table]
    return rise if low > 0 else fall if high < 0 else "not significant"


def _table(samples: dict, counts: dict[str, int], quantities: Sequence[str], name: str, alpha: float) -> dict:
    cells = family(samples, alpha)
    rows = {}
    for algorithm, n in counts.items():
        row = {q: {**cells[(algorithm, q)], "verdict": verdict(cells[(algorithm, q)], name)} for q in quantities}
        rows[algorithm] = {"n": n, "cells": row}
    tests = sum(1 for c in cells.values() if c["level"] is not None)
    return {"tests": tests, "rows": rows}


def seed_level(
    runs: Sequence[Mapping[str, Any]],
    objectives: Sequence[str],
    preference: Sequence[float] | None = None,
    reference: str = REFERENCE_ALGORITHM,
    alpha: float = ALPHA,
    trained: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Both tables and the interference verdicts (module docstring); ``vs_reference`` is ``None`` unless there are
    runs of ``reference`` and of another row. ``trained``: the objectives of the fixed scalar (the runs' ``train``
    objectives; default all), the others weigh 0 in it. JSON-ready: missing numbers are ``None``."""
    trained = [o for o in objectives if o in trained] if trained is not None else list(objectives)
    w, source = preference_weights(runs, trained, preference)  # the scalar: the train objectives (their roles)
    weights = [w[trained.index(o)] if o in trained else 0.0 for o in objectives]
    quantities = [*objectives, SCALAR]
    points = seed_points(runs, objectives, weights)
    base = baselines(points, quantities)
    algorithms = list(dict.fromkeys(p["algorithm"] for p in points))
    start_samples, start_counts = {}, {}
    for a in algorithms:
        for q in quantities:
            per_seed = _per_seed(points, a, lambda p, q=q: p["final"][q] - base[p["warm_start"]][q])
            start_samples[(a, q)] = list(per_seed.values())
        start_counts[a] = len(per_seed)
    vs_start = _table(start_samples, start_counts, quantities, "vs_start", alpha)
    for row in vs_start["rows"].values():
        row["interference"] = interfering(
            {o: cell_ci(row["cells"][o]) for o in objectives}, cell_ci(row["cells"][SCALAR])
        )
    vs_reference = None
    if reference in algorithms and len(algorithms) > 1:
        ref_samples, ref_counts = {}, {}
        for a in [a for a in algorithms if a != reference]:
            for q in quantities:
                mine = _per_seed(points, a, lambda p, q=q: p["final"][q])
                theirs = _per_seed(points, reference, lambda p, q=q: p["final"][q])
                ref_samples[(a, q)] = [round(mine[k] - theirs[k], 12) for k in mine if k in theirs]
            ref_counts[a] = len(ref_samples[(a, objectives[0])])
        vs_reference = {"reference": reference, **_table(ref_samples, ref_counts, quantities, "vs_reference", alpha)}
    out = {
        "preference": weights,
        "preference_source": source,
        "scalar_objectives": scalar_objectives(runs, objectives),
        "quantities": quantities,
        "alpha": alpha,
        "warm_starts": len(base),
        "baseline": base,
        "vs_start": vs_start,
        "vs_reference": vs_reference,
    }
    return _json_ready(out)


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_cell(cell: Mapping[str, Any]) -> str:
    """``+0.12 [+0.08, +0.16] up`` (decimals: :func:`mo_align.stats.ci_decimals`); ``+0.123 (n < 2)`` without an
    interval; ``—`` without a value."""
    est = cell.get("estimate")
    if est is None:
        return "—"
    if cell.get("low") is None or cell.get("high") is None:
        return f"{est:+.3f} ({cell['verdict']})"
    return f"{format_interval(est, cell['low'], cell['high'])} {cell['verdict']}"  # to the interval's precision


def seed_tables(seeds: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The two tables as ``{"title", "headers", "rows", "note"}`` (rows of strings), for markdown and the console."""
    qs = seeds["quantities"]
    over = seeds.get("scalar_objectives", qs[:-1])
    within = "" if list(over) == list(qs[:-1]) else f" over {', '.join(over) or 'no objective'}"
    label = {
        q: (f"scalar (w = {', '.join(f'{w:.3g}' for w in seeds['preference'])}){within}" if q == SCALAR else q)
        for q in qs
    }
    level = f"{1 - seeds['alpha']:.0%}"
    start = seeds["vs_start"]
    rows = []
    for algorithm, row in start["rows"].items():
        flagged = ", ".join(row["interference"]) or ("n < 2" if row["n"] < 2 else "none")
        rows.append([algorithm, str(row["n"]), *[format_cell(row["cells"][q]) for q in qs], flagged])
    tables = [
        {
            "title": "Δ vs the warm start, over seeds",
            "headers": ["algorithm", "seeds", *[f"Δ {label[q]}" for q in qs], "interference"],
            "rows": rows,
            "note": (
                f"Holm-adjusted over {start['tests']} tests (family level {level}). Δ = a seed's final eval mean − "
                "its warm start's baseline (the mean of the step-0 evaluations of every run from that warm start); "
                "mean over seeds [t interval over seeds at the Holm step's level] and the verdict it gives (up / "
                "down / not significant). The scalar uses the same fixed weights for every algorithm "
                f"({seeds['preference_source']}); interference = the scalar's Δ interval above 0 and the "
                "objective's below 0."
            ),
        }
    ]
    ref = seeds.get("vs_reference")
    if ref and ref["rows"]:
        rows = [[a, str(row["n"]), *[format_cell(row["cells"][q]) for q in qs]] for a, row in ref["rows"].items()]
        tables.append(
            {
                "title": f"each algorithm − {ref['reference']}, paired by seed",
                "headers": ["algorithm", "paired seeds", *[f"{label[q]} − {ref['reference']}" for q in qs]],
                "rows": rows,
                "note": (
                    f"Holm-adjusted over {ref['tests']} tests (family level {level}). Per seed, the algorithm's "
                    f"final eval mean − {ref['reference']}'s at the same seed and warm start (same prompts); mean "
                    "over seeds [t interval over the paired differences at the Holm step's level] and the verdict "
                    "it gives (better / worse / not significant)."
                ),
            }
        )
    return tables
