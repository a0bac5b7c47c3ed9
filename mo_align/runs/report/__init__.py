"""Compare finished training runs: per-objective tables, hypervolume, Pareto fronts, interference, plots.

``mo-align report RUN_DIR [RUN_DIR ...] --out DIR`` (see :func:`write_report`) reads each run's
``mo_summary.json`` (written in every ``output_dir``), or, for runs without one, rebuilds the same summary from
transformers' ``trainer_state.json`` (in the run directory, else in its latest ``checkpoint-*`` subdirectory), and
writes ``report.md``, a self-contained ``report.html``, ``report.json`` and the PNG plots into ``--out``.

Summaries are untrusted files (:mod:`mo_align.runs.jsonfile`): every run is read and checked before anything is
written, and a file that is too large, not UTF-8, not JSON, or holds a ``NaN`` / ``Infinity`` (which JSON does not
have; a missing value is ``null``) is refused in one line naming the file and the field. **Runs that measure different
sets of objectives are refused** (naming two sets and their files), not merged: a report is one objective space, with
one reference point and hypervolume; report each set on its own.

Conventions (every one of them is also stated in the written report):

* Every objective is **maximised**; a run's point in objective space is its **final** eval mean per objective.
* **Hypervolume** (HV) is the volume dominated by a set of points and bounded below by a reference point, computed
  by ``moocore`` (which minimises) on the negated points. Points that are not strictly better than the reference
  in every objective add nothing; a run with a missing final value has no HV (``None``).
* **Default reference point**, per objective: ``0`` (the origin) when every run's final value of that objective is
  within [0, 1]; otherwise the worst (smallest) *start* value of that objective across the runs (the smallest final
  if no run recorded a start). ``reference=`` / ``--reference x,y,z`` overrides it.
* **Seeds aggregate by algorithm** (the summary's ``algorithm``). Per objective: the median and the range
  (min–max) of the seeds' final values and of their deltas (final − start). Two hypervolumes per algorithm:
  ``hv_of_median_final`` — the HV of the single point made of the per-objective medians of the seeds' finals
  (the console's ``HV(med)``), and ``median_run_hv`` — the median of the seeds' per-run HVs, with their range
  (the console's ``med HV``). They differ when the seeds trade objectives differently.
* **Non-dominated runs**: runs whose final point no other run's final point dominates (>= everywhere and > somewhere);
  duplicates do not dominate each other, so both copies stay non-dominated.
* **Confidence intervals**: where the trainer recorded them (``mo_summary.json``'s last eval entry, ``ci`` and
  ``delta_ci``), a run's final eval mean carries its 95 % bootstrap CI over prompts and its Δ the paired CI
  (:mod:`mo_align.stats`): the evaluation noise of that one run, no verdict across seeds.
* **Seed-level comparison** (:mod:`~.seeds`): the seed is the unit. Per algorithm, each seed's Δ against its warm
  start's baseline (the mean of the step-0 evaluations of every run from that warm start) and each seed's paired
  difference with linear at the same seed, with t intervals over seeds, Holm-adjusted over each table's tests
  (stated under the table); verdicts up / down or better / worse / not significant come from those intervals.
* **Interference**, one rule (:func:`mo_align.stats.interfering`): an objective's Δ interval lies below 0 while
  the fixed scalar ``Σ w_k r_k``'s lies above 0. Per algorithm (seed level): the adjusted intervals over seeds, one
  weight vector for every algorithm. Per run: the run's paired CIs of Δ vs its start and its fixed scalar's (its own
  preference weights), the verdict its ``mo_summary.json`` records (:func:`mo_align.runs.summary.run_interference`);
  ``None`` (no verdict) for a run without them. Events (``negative_covariance``, ``eval_drop``, …) and, for runs
  without intervals, falls of more than ``tolerance`` are notes, never a verdict.
* **Numbers** are shown to the precision of their interval (2 significant digits of its half-width); a one-seed
  aggregate shows its value and ``n = 1 (no range)``; an objective without a step-0 value (its reward had no
  reference yet) has no Δ.
* **Δ accuracy between vs within styles** (:mod:`~.decomposition`, runs that recorded per-sample answer styles:
  the lab's): each configuration's Δ accuracy split into mass moved between styles and change within styles.
* **Covariance law** (:mod:`~.law`): per run, the hit rate of the law's prediction (the sign of an interval's mean
  covariance when its t interval excludes 0) on the significant changes of the eval mean, against two baseline
  predictors (the largest weight's objective rises; the previous interval's sign), the intervals where the law's
  prediction is fixed by construction, and each disagreement (the trainer's ``law`` records).

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend switch). A plot whose data is empty in every
run is skipped and the report says why.

Modules: :mod:`~.pareto` (dominance and hypervolume, by moocore), :mod:`~.analysis` (every number),
:mod:`~.plots` (the PNGs, and the model card's weight plot), :mod:`~.render` (markdown, html, console table).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mo_align.runs.report.analysis import (
    DEFAULT_TOLERANCE,
    ReportError,
    analyse,
    default_reference,
    interference,
    parse_reference,
)
from mo_align.runs.report.decomposition import decomposition_blocks, style_decomposition
from mo_align.runs.report.fronts import front_blocks
from mo_align.runs.report.pareto import hypervolume, non_dominated
from mo_align.runs.report.plots import PNG_SIGNATURE, make_plots
from mo_align.runs.report.render import blocks, format_console_table, to_html, to_markdown
from mo_align.runs.summary import json_safe


__all__ = [
    "DEFAULT_TOLERANCE",
    "PNG_SIGNATURE",
    "REPORT_MD",
    "ReportError",
    "analyse",
    "default_reference",
    "format_console_table",
    "hypervolume",
    "interference",
    "non_dominated",
    "parse_reference",
    "write_report",
]

REPORT_MD = "report.md"  # with report.html and report.json, in the report's --out directory


def write_report(
    runs: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    reference: str | Sequence[float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    preference: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Write ``report.md``, ``report.html`` (self-contained), ``report.json`` and the PNG plots into ``out_dir``.

    ``runs`` are summary dicts (:func:`~mo_align.runs.summary.load_runs`); ``reference`` is one value per objective (or ``"x,y,z"``),
    ``None`` for the default (see the module docstring); ``preference`` the seed-level comparison's fixed scalar
    weights (default: the linear runs' weights, else equal weights). Returns the numbers of :func:`analyse` plus
    ``out_dir``, ``report_md``, ``report_html``, ``report_json``, ``plots`` (name -> path) and ``skipped_plots``
    (name -> reason).
    """
    analysis = analyse(runs, reference=reference, tolerance=tolerance, preference=preference)
    try:  # runs with per-sample answer styles (the lab's): Δ accuracy between vs within styles, read before writing
        styles = style_decomposition(analysis["_runs"])
    except ValueError as e:
        raise ReportError(str(e)) from e
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"{out}: cannot create the output directory ({e})") from e
    plots = make_plots(analysis, out)
    fronts, front_numbers = front_blocks(analysis, out)  # preference sweeps: each algorithm's front (fronts.py)
    document = blocks(analysis, plots) + fronts + decomposition_blocks(styles)
    md, page, js = out / REPORT_MD, out / "report.html", out / "report.json"
    md.write_text(to_markdown(document), encoding="utf-8")
    page.write_text(to_html(document), encoding="utf-8")
    result = {k: v for k, v in analysis.items() if not k.startswith("_")}
    result.update(
        out_dir=str(out),
        report_md=str(md),
        report_html=str(page),
        report_json=str(js),
        plots={name: str(p) for name, p in plots.written.items()},
        skipped_plots=dict(plots.skipped),
        fronts=front_numbers,
        style_decomposition=styles,
    )
    js.write_text(json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return result
