"""The report's documents: one block list, rendered to markdown and to self-contained html; the console table.

A block is a tuple: ``("h", level, text)``, ``("p", text)``, ``("list", items)``, ``("table", _Table)`` or
``("img", name, path, title)``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mo_align.runs.report.law import law_lines, pooled_lines
from mo_align.runs.report.plots import COV_EMA_PNG, EVAL_CURVES_PNG, WEIGHTS_PNG, Plots
from mo_align.runs.report.seeds import seed_tables
from mo_align.runs.summary import TRAIN_FALLBACK
from mo_align.stats import format_bounds, format_interval


__all__ = ["blocks", "format_console_table", "law_lines", "to_html", "to_markdown"]


def _fmt(value: float | None, signed: bool = False, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _fmt_stats(stats: Mapping[str, Any], signed: bool = False) -> str:
    """``median [min, max]`` over seeds; one seed has no range: the value and ``n = 1 (no range)``."""
    if stats["median"] is None:
        return "—"
    if stats["n"] == 1:
        return f"{_fmt(stats['median'], signed)} (n = 1, no range)"
    return f"{_fmt(stats['median'], signed)} [{_fmt(stats['min'], signed)}, {_fmt(stats['max'], signed)}]"


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]


def _fmt_ci(value: float | None, ci: list[float] | None, signed: bool = False) -> str:
    """``0.600`` or, with its interval, to the interval's precision (:func:`mo_align.stats.ci_decimals`):
    ``0.60 [0.45, 0.75]``, ``0.516 [0.484, 0.547]``."""
    if ci is None or value is None:
        return _fmt(value, signed)
    return format_interval(value, ci[0], ci[1], signed)


def _delta_cell(run: Mapping[str, Any], name: str) -> str:
    """A run's Δ with its paired CI; ``— (no step-0 value)`` for an objective whose first evaluation had no reference."""
    if name in run["unavailable"] and run["start"][name] is None:
        return "— (no step-0 value)"
    return _fmt_ci(run["delta"][name], run["delta_ci"][name], True)


def interference_cell(run: Mapping[str, Any]) -> str:
    """A run's interference verdict in a table (report.md and the console): the objectives, ``no``, or ``no
    verdict`` when the run recorded no intervals (:func:`mo_align.runs.summary.run_interference`)."""
    if run["interference"] is None:
        return "no verdict (no CIs)"
    return "yes: " + ", ".join(run["interference_objectives"]) if run["interference"] else "no"


def _algorithm_table(analysis: dict[str, Any]) -> _Table:
    objs = analysis["objectives"]
    headers = ["algorithm", "seeds"]
    headers += [f"{o} final median [min, max]" for o in objs] + [f"{o} Δ median [min, max]" for o in objs]
    headers += ["HV(median final)", "median run HV [min, max]", "HV(all seeds)"]
    rows = []
    for algorithm, agg in analysis["algorithms"].items():
        hv_range = agg["run_hv_range"]
        run_hv = (
            "—"
            if hv_range is None
            else f"{_fmt(agg['median_run_hv'], digits=4)} [{_fmt(hv_range[0], digits=4)}, {_fmt(hv_range[1], digits=4)}]"
        )
        if hv_range is not None and len(agg["runs"]) == 1:
            run_hv = f"{_fmt(agg['median_run_hv'], digits=4)} (n = 1, no range)"
        rows.append(
            [algorithm, str(len(agg["runs"]))]
            + [_fmt_stats(agg["final"][o]) for o in objs]
            + [_fmt_stats(agg["delta"][o], signed=True) for o in objs]
            + [_fmt(agg["hv_of_median_final"], digits=4), run_hv, _fmt(agg["hv_of_all_seeds"], digits=4)]
        )
    return _Table(headers, rows)


def _run_table(analysis: dict[str, Any]) -> _Table:
    objs = analysis["objectives"]
    headers = ["run", "algorithm", "seed"]
    for o in objs:
        headers += [f"{o} final [95% CI]", f"{o} best", f"{o} Δ [95% paired CI]"]
    headers += ["fixed scalar Δ [95% paired CI]", "HV", "non-dominated", "interference", "values from"]
    rows = []
    for name, r in analysis["runs"].items():
        row = [name, r["algorithm"], "—" if r["seed"] is None else str(r["seed"])]
        for o in objs:
            row += [_fmt_ci(r["final"][o], r["final_ci"][o]), _fmt(r["best"][o]), _delta_cell(r, o)]
        row.append(format_bounds(*(r["scalar_delta_ci"] or (None, None))))
        nd = "yes" if r["non_dominated"] else "no"
        rows.append([*row, _fmt(r["hypervolume"], digits=4), nd, interference_cell(r), r["values_from"]])
    return _Table(headers, rows)


def _fallback_note(analysis: Mapping[str, Any]) -> str:
    names = [n for n, r in analysis["runs"].items() if r["values_from"] == TRAIN_FALLBACK]
    if not names:
        return ""
    return (
        f" Runs without evaluation ({', '.join(names)}) show their training-batch reward means instead (final = "
        "last batch, best = highest batch, Δ = last − first batch): sampled at the training temperature on training "
        "prompts, not comparable with eval means."
    )


_HV_TEXT = (
    "Hypervolume (HV) = volume of objective space dominated by the final points and bounded below by the "
    "reference point (maximisation; moocore on negated values; a point not strictly above the reference in "
    "every objective adds nothing). Per run: the HV of the run's final point. Per algorithm: HV(median final) "
    "is the HV of the point made of the per-objective medians of the seeds' finals; median run HV is the median "
    "of the seeds' per-run HVs (with their range); HV(all seeds) is the HV of the seeds' final points together."
)
_PLOT_TITLES = {
    EVAL_CURVES_PNG: "Eval curves",
    WEIGHTS_PNG: "Weight trajectories",
    COV_EMA_PNG: "Covariance-law EMA",
}


def _intro_blocks(analysis: dict[str, Any]) -> list[tuple]:
    """The title, what the values are, and the hypervolume reference point with its reasons."""
    objs, roles = analysis["objectives"], analysis.get("objective_roles") or {}
    ref = ", ".join(f"{v:g}" for v in analysis["reference"])
    named = ", ".join(f"{o} ({roles.get(o, 'train')})" for o in objs)
    intro = (
        f"{len(analysis['_runs'])} runs, {len(analysis['algorithms'])} algorithms; objectives (all maximised; role): "
        f"{named}. Values are per-objective eval means: final = last evaluation, best = highest "
        "evaluation, Δ = final − start (first evaluation). Where the trainer recorded them, a run's final mean "
        "carries its 95 % bootstrap CI over prompts and its Δ the paired CI (the same prompts resampled at start "
        "and end): the evaluation noise of that one run. Verdicts between algorithms come from the seed-level "
        "comparison (seeds as the unit, Holm-adjusted per table)." + _fallback_note(analysis)
    )
    reasons = [f"{o} = {v:g}: {analysis['reference_reasons'][o]}" for o, v in zip(objs, analysis["reference"])]
    return [
        ("h", 1, "Multi-objective alignment report"),
        ("p", intro),
        ("h", 2, "Hypervolume reference point"),
        ("p", f"Reference point ({', '.join(objs)}) = ({ref}) — {analysis['reference_source']}."),
        ("list", reasons),
        ("p", _HV_TEXT),
    ]


def _front_blocks(analysis: dict[str, Any]) -> list[tuple]:
    """The non-dominated runs, each run's interference verdict with its reasons, and its notes (at most 12)."""
    nd = analysis["non_dominated"]
    items = []
    for name, r in analysis["runs"].items():
        text = f"{name}: {interference_cell(r)}" + "".join(f"; {why}" for why in r["interference_reasons"])
        notes = r["interference_notes"][:12]
        more = len(r["interference_notes"]) - len(notes)
        if notes:
            text += " (notes, no verdict: " + "; ".join(notes) + (f"; … and {more} more" if more > 0 else "") + ")"
        items += [text] + [f"{name}: {o} has no Δ: {why}" for o, why in r["unavailable"].items()]
    front = (
        "Non-dominated runs (final points over all objectives; no other run is >= everywhere and > somewhere): "
        + (", ".join(nd) if nd else "none (no run has final values for every objective)")
        + "."
    )
    rule = (
        "One rule everywhere (mo_align.stats.interfering; the same verdict as the run summary's and the console's): "
        "an objective interferes when its Δ interval lies below 0 while the fixed scalar's Δ interval lies above 0. "
        "Per run, the intervals are the run's paired 95 % CIs of Δ vs its start (that run's evaluation noise; the "
        "fixed scalar with the run's own preference weights); per algorithm, the seed level's adjusted intervals "
        "over seeds (the seed-level table). Monitor events (a negative covariance EMA: the covariance law's "
        "prediction) and, for runs without intervals, falls larger than the tolerance "
        f"({analysis['tolerance']:g}) are listed as notes: they decide nothing."
    )
    return [("h", 2, "Pareto front"), ("p", front), ("h", 2, "Interference"), ("p", rule), ("list", items)]


def _law_blocks(analysis: dict[str, Any]) -> list[tuple]:
    items = [line.strip() for name, r in analysis["runs"].items() for line in law_lines(name, r)]
    if not items:
        return []
    items = pooled_lines(analysis) + items
    text = (
        "For each interval between evaluations and each objective, the covariance law's first-order prediction — "
        "the sign of the mean within-group covariance of its reward with the optimised advantage over the "
        "interval's training batches, when its 95 % t interval over those batches excludes 0 (else undetermined) — "
        "against the realised change of its eval mean (paired 95 % CI: significantly up, down, or not significant, "
        "which gives no verdict). Two baseline predictors are scored on the same changes: the objective(s) with "
        "the largest mean weight over the interval rise (the others fall), and the sign of the previous "
        "interval's change. Where every weight is >= 0 and the rewards' within-group covariance makes every "
        "Cov(r_k, Σ_j w_j r_j) > 0, the law predicts that every objective rises by construction; the report says "
        "in how many intervals that held."
    )
    return [("h", 2, "Covariance law"), ("p", text), ("list", items)]


def _seed_blocks(analysis: dict[str, Any]) -> list[tuple]:
    """The seed-level tables (:mod:`~.seeds`), each with its Holm statement under it."""
    tables = seed_tables(analysis["seed_level"]) if analysis["seed_level"]["vs_start"]["rows"] else []
    out: list[tuple] = [("h", 2, "Seed-level comparison")] if tables else []
    for t in tables:
        out += [("h", 3, t["title"]), ("table", _Table(t["headers"], t["rows"])), ("p", t["note"])]
    return out


def _launch_table(runs: list[dict[str, Any]]) -> _Table:
    rows = []
    for r in runs:
        hp = r["weighting_hyperparameters"]
        hp = json.dumps(_short(hp), sort_keys=True) if hp else "—"  # float32 0.3330000042915344 reads 0.333
        seed = "—" if r["seed"] is None else str(r["seed"])
        command, source = r["launch_command"] or "—", r.get("source") or "—"
        rows.append([r["run_name"], r["algorithm"], seed, r["output_dir"] or "—", hp, command, source])
    headers = ["run", "algorithm", "seed", "output_dir", "weighting hyperparameters", "launch command", "read from"]
    return _Table(headers, rows)


def _plot_blocks(plots: Plots) -> list[tuple]:
    b: list[tuple] = [("h", 2, "Plots")]
    for name in [*plots.written, *plots.skipped]:
        title = _PLOT_TITLES.get(name, name.removesuffix(".png").replace("__", " vs ").replace("pareto_", "Pareto: "))
        b.append(("h", 3, title))
        if name in plots.written:
            b.append(("img", name, plots.written[name], title))
        else:
            b.append(("p", f"Skipped: {plots.skipped[name]}."))
        b += [("p", f"Note: {note}.") for note in plots.notes.get(name, [])]
    return b


def blocks(analysis: dict[str, Any], plots: Plots) -> list[tuple]:
    """The report, top to bottom, as a block list (see the module docstring)."""
    return [
        *_intro_blocks(analysis),
        ("h", 2, "Per algorithm (seeds aggregated)"),
        ("table", _algorithm_table(analysis)),
        *_seed_blocks(analysis),
        ("h", 2, "Per run"),
        ("table", _run_table(analysis)),
        *_front_blocks(analysis),
        *_law_blocks(analysis),
        ("h", 2, "Runs"),
        ("table", _launch_table(analysis["_runs"])),
        *_plot_blocks(plots),
    ]


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[tuple]) -> str:
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            table: _Table = block[1]
            lines.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
            lines.append("|" + "---|" * len(table.headers))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{block[3]}]({block[1]})", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def to_html(blocks: list[tuple]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Multi-objective alignment report</title>',
        f"<style>{_CSS}</style></head><body>",
    ]
    esc = html.escape
    for block in blocks:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{esc(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{esc(block[1])}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            table: _Table = block[1]
            head = "".join(f"<th>{esc(h)}</th>" for h in table.headers)
            body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(Path(block[2]).read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{esc(block[3])}" src="data:image/png;base64,{data}"></figure>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _short(value: Any) -> Any:
    """Floats to 6 significant digits, recursively: recorded float32 values without their conversion noise."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.6g}")
    if isinstance(value, Mapping):
        return {k: _short(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_short(v) for v in value]
    return value


def columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain-text table: the header, a rule, the rows, each column padded to its widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()
    return [line, "-" * len(line), *("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)]


def _console_runs(result: Mapping[str, Any]) -> list[str]:
    """Per run, each objective's Δ with its paired 95 % CI (runs that recorded CIs only)."""
    objs = result["objectives"]
    runs = {n: r for n, r in result["runs"].items() if any(r["delta_ci"].get(o) for o in objs)}
    if not runs:
        return []
    rows = [[n, *(_delta_cell(r, o) for o in objs), interference_cell(r)] for n, r in runs.items()]
    head = (
        "per run: Δ vs start [95% paired CI: that run's evaluation noise]; interference = that run's verdict "
        "(mo_align.stats.interfering on these intervals and the fixed scalar's, as report.md and mo_summary.json)"
    )
    return [head, *columns(["run", *objs, "interference"], rows)]


def _seed_verdict(agg: Mapping[str, Any]) -> str:
    """The console's interference cell: the seed-level verdict (objectives, ``none``, ``n < 2``; ``no eval`` for an
    algorithm whose runs have no evaluation to compare)."""
    flagged = agg.get("seed_interference")
    if flagged is None:
        return "no eval"
    return ",".join(flagged) or ("n < 2" if len(agg["runs"]) < 2 else "none")


def _console_seeds(result: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    if not result["seed_level"]["vs_start"]["rows"]:
        return out
    for t in seed_tables(result["seed_level"]):
        out += [f"seed level: {t['title']}", *columns(t["headers"], t["rows"]), t["note"]]
    return out


def format_console_table(result: Mapping[str, Any], per_run: bool = True) -> str:
    """The compact per-algorithm table the CLI prints: median final (median Δ) per objective, both HVs, the
    seed-level interference verdict; the seed-level tables; then (``per_run``) each run's Δ with its CI; the law."""
    objs = result["objectives"]
    headers = ["algorithm", "n", *objs, "HV(med)", "med HV", "interference"]
    rows = []
    for algorithm, agg in result["algorithms"].items():
        cells = [algorithm, str(len(agg["runs"]))]
        for o in objs:
            cells.append(f"{_fmt(agg['final'][o]['median'])} ({_fmt(agg['delta'][o]['median'], signed=True)})")
        cells += [_fmt(agg["hv_of_median_final"], digits=4), _fmt(agg["median_run_hv"], digits=4)]
        rows.append([*cells, _seed_verdict(agg)])
    out = [
        "per algorithm: median final eval (median Δ vs start); HV(med) = HV of the median final point, med HV = "
        "median of per-run HVs; interference = the seed-level verdict (fixed scalar up, objective down)",
        *columns(headers, rows),
    ]
    ref = ", ".join(f"{v:g}" for v in result["reference"])
    out.append(f"HV reference ({', '.join(objs)}) = ({ref}) [{result['reference_source']}]")
    nd = result["non_dominated"]
    out.append("non-dominated runs: " + (", ".join(nd) if nd else "none"))
    fallback = [n for n, r in result["runs"].items() if r["values_from"] == TRAIN_FALLBACK]
    if fallback:
        out.append(f"no evaluation, values are training-batch means: {', '.join(fallback)}")
    out += _console_seeds(result)
    out += _console_runs(result) if per_run else []
    out += pooled_lines(result)
    for name, run in result["runs"].items():
        out += law_lines(name, run)
    return "\n".join(out)
