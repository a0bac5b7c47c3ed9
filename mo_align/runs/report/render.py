"""The report's documents: one block list, rendered to markdown and to self-contained html; the console table.

A block is a tuple: ``("h", level, text)``, ``("p", text)``, ``("list", items)``, ``("table", _Table)`` or
``("img", name, path, title)``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mo_align.runs.report.plots import Plots
from mo_align.runs.summary import TRAIN_FALLBACK


__all__ = ["blocks", "format_console_table", "law_lines", "to_html", "to_markdown"]


def _fmt(value: float | None, signed: bool = False, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _fmt_stats(stats: Mapping[str, Any], signed: bool = False) -> str:
    if stats["median"] is None:
        return "—"
    return f"{_fmt(stats['median'], signed)} [{_fmt(stats['min'], signed)}, {_fmt(stats['max'], signed)}]"


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]


def _fmt_ci(value: float | None, ci: list[float] | None, signed: bool = False) -> str:
    """``0.600`` or, with its interval, ``0.600 [0.570, 0.630]``."""
    if ci is None or value is None:
        return _fmt(value, signed)
    return f"{_fmt(value, signed)} [{_fmt(ci[0], signed)}, {_fmt(ci[1], signed)}]"


def _fmt_significant(counts: Mapping[str, int]) -> str:
    """``↓1 ↑2 of 3``: seeds whose paired Δ CI lies below / above 0, of the seeds with a CI."""
    return f"↓{counts['drop']} ↑{counts['rise']} of {counts['n']}" if counts["n"] else "—"


def _algorithm_table(analysis: dict[str, Any]) -> _Table:
    objs = analysis["objectives"]
    headers = ["algorithm", "seeds"]
    headers += [f"{o} final median [min, max]" for o in objs] + [f"{o} Δ median [min, max]" for o in objs]
    headers += [f"{o}: seeds with Δ significantly ↓ / ↑" for o in objs]
    headers += ["HV(median final)", "median run HV [min, max]", "HV(all seeds)", "runs with interference"]
    rows = []
    for algorithm, agg in analysis["algorithms"].items():
        hv_range = agg["run_hv_range"]
        run_hv = (
            "—"
            if hv_range is None
            else f"{_fmt(agg['median_run_hv'], digits=4)} [{_fmt(hv_range[0], digits=4)}, {_fmt(hv_range[1], digits=4)}]"
        )
        flagged = agg["interference_runs"]
        rows.append(
            [algorithm, str(len(agg["runs"]))]
            + [_fmt_stats(agg["final"][o]) for o in objs]
            + [_fmt_stats(agg["delta"][o], signed=True) for o in objs]
            + [_fmt_significant(agg["significant"][o]) for o in objs]
            + [_fmt(agg["hv_of_median_final"], digits=4), run_hv, _fmt(agg["hv_of_all_seeds"], digits=4)]
            + [f"{len(flagged)}/{len(agg['runs'])}" + (f": {', '.join(flagged)}" if flagged else "")]
        )
    return _Table(headers, rows)


def _run_table(analysis: dict[str, Any]) -> _Table:
    objs = analysis["objectives"]
    headers = ["run", "algorithm", "seed"]
    for o in objs:
        headers += [f"{o} final [95% CI]", f"{o} best", f"{o} Δ [95% paired CI]"]
    headers += ["HV", "non-dominated", "interference", "values from"]
    rows = []
    for name, r in analysis["runs"].items():
        row = [name, r["algorithm"], "—" if r["seed"] is None else str(r["seed"])]
        for o in objs:
            final, delta = _fmt_ci(r["final"][o], r["final_ci"][o]), _fmt_ci(r["delta"][o], r["delta_ci"][o], True)
            row += [final, _fmt(r["best"][o]), delta]
        flag = ("yes: " + ", ".join(r["interference_objectives"])) if r["interference"] else "no"
        if r["interference"] and not r["interference_objectives"]:
            flag = "yes"
        nd = "yes" if r["non_dominated"] else "no"
        rows.append([*row, _fmt(r["hypervolume"], digits=4), nd, flag, r["values_from"]])
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
    "eval_curves.png": "Eval curves",
    "weights.png": "Weight trajectories",
    "cov_ema.png": "Covariance-law EMA",
}


def _intro_blocks(analysis: dict[str, Any]) -> list[tuple]:
    """The title, what the values are, and the hypervolume reference point with its reasons."""
    objs = analysis["objectives"]
    ref = ", ".join(f"{v:g}" for v in analysis["reference"])
    intro = (
        f"{len(analysis['_runs'])} runs, {len(analysis['algorithms'])} algorithms; objectives (all maximised): "
        f"{', '.join(objs)}. Values are per-objective eval means: final = last evaluation, best = highest "
        "evaluation, Δ = final − start (first evaluation). Where the trainer recorded them, a run's final mean "
        "carries its 95 % bootstrap CI over prompts and its Δ the paired CI (the same prompts resampled at start "
        "and end); across seeds, ↓k / ↑k counts the seeds whose Δ CI lies entirely below / above 0."
        + _fallback_note(analysis)
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
    """The non-dominated runs and each run's interference reasons (at most 12 shown)."""
    nd = analysis["non_dominated"]
    items = []
    for name, r in analysis["runs"].items():
        if r["interference"]:
            shown = r["interference_reasons"][:12]
            more = len(r["interference_reasons"]) - len(shown)
            items.append(f"{name}: " + "; ".join(shown) + (f"; … and {more} more" if more > 0 else ""))
        else:
            items.append(f"{name}: none")
    front = (
        "Non-dominated runs (final points over all objectives; no other run is >= everywhere and > somewhere): "
        + (", ".join(nd) if nd else "none (no run has final values for every objective)")
        + "."
    )
    rule = (
        "A run shows interference if it recorded an event, or if an objective's final eval mean fell while another "
        "objective improved: significantly (the paired 95 % CI of its Δ entirely below 0) where the run recorded "
        f"CIs, else by more than the tolerance ({analysis['tolerance']:g})."
    )
    return [("h", 2, "Pareto front"), ("p", front), ("h", 2, "Interference"), ("p", rule), ("list", items)]


def law_lines(name: str, run: Mapping[str, Any]) -> list[str]:
    """The covariance-law check of one run (``analysis["runs"][name]``): how often it held, and every disagreement
    (the sign of the interval's mean covariance against a significant change of the eval mean)."""
    law = run.get("law") or {}
    if not sum(law.values()):
        return []
    significant = law["held"] + law["failed"]
    lines = [
        f"covariance law, {name}: held in {law['held']} of {significant} significant changes between "
        f"evaluations ({law['not_significant']} not significant)"
    ]
    keys = ("objective", "from", "to", "predicted_cov", "realised", "delta", "ci")
    for x in run.get("law_disagreements") or []:
        if not all(k in x for k in keys):  # a record without its numbers: counted above, nothing to show
            continue
        low, high = x["ci"]
        lines.append(
            f"  disagreement: {x['objective']} steps {x['from']}->{x['to']}: mean covariance {x['predicted_cov']:+.3f} "
            f"predicts {'up' if x['predicted_cov'] > 0 else 'down'}, eval mean went {x['realised']} "
            f"(Δ {x['delta']:+.3f} [{low:+.3f}, {high:+.3f}])"
        )
    return lines


def _law_blocks(analysis: dict[str, Any]) -> list[tuple]:
    items = [line.strip() for name, r in analysis["runs"].items() for line in law_lines(name, r)]
    if not items:
        return []
    text = (
        "For each interval between evaluations and each objective, the sign of the mean within-group covariance of "
        "its reward with the optimised advantage over the interval's training batches (the covariance law's "
        "first-order prediction) against the realised change of its eval mean (paired 95 % CI: significantly up, "
        "down, or not significant, which gives no verdict)."
    )
    return [("h", 2, "Covariance law"), ("p", text), ("list", items)]


def _launch_table(runs: list[dict[str, Any]]) -> _Table:
    rows = []
    for r in runs:
        hp = json.dumps(r["weighting_hyperparameters"], sort_keys=True) if r["weighting_hyperparameters"] else "—"
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


def _columns(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()
    return [line, "-" * len(line), *("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)]


def _console_runs(result: Mapping[str, Any]) -> list[str]:
    """Per run, each objective's Δ with its paired 95 % CI (runs that recorded CIs only)."""
    objs = result["objectives"]
    runs = {n: r for n, r in result["runs"].items() if any(r["delta_ci"].get(o) for o in objs)}
    if not runs:
        return []
    rows = [[n, *(_fmt_ci(r["delta"][o], r["delta_ci"][o], True) for o in objs)] for n, r in runs.items()]
    return ["per run: Δ vs start [95% paired CI]", *_columns(["run", *objs], rows)]


def format_console_table(result: Mapping[str, Any], per_run: bool = True) -> str:
    """The compact per-algorithm table the CLI prints: median final (median Δ; seeds with Δ significantly ↓ / ↑)
    per objective, both HVs, interference; then (``per_run``) each run's Δ with its CI, and the law checks."""
    objs = result["objectives"]
    headers = ["algorithm", "n", *objs, "HV(med)", "med HV", "interference"]
    rows = []
    for algorithm, agg in result["algorithms"].items():
        cells = [algorithm, str(len(agg["runs"]))]
        for o in objs:
            sig = agg["significant"][o]
            counts = f"; ↓{sig['drop']} ↑{sig['rise']}" if sig["n"] else ""
            cells.append(f"{_fmt(agg['final'][o]['median'])} ({_fmt(agg['delta'][o]['median'], signed=True)}{counts})")
        flagged = agg["interference_runs"]
        cells += [_fmt(agg["hv_of_median_final"], digits=4), _fmt(agg["median_run_hv"], digits=4)]
        cells.append(f"{len(flagged)}/{len(agg['runs'])}" + (f" {','.join(flagged)}" if flagged else ""))
        rows.append(cells)
    out = [
        "per algorithm: median final eval (median Δ vs start; ↓/↑ seeds whose Δ 95% CI is below / above 0); "
        "HV(med) = HV of the median final point, med HV = median of per-run HVs",
        *_columns(headers, rows),
    ]
    ref = ", ".join(f"{v:g}" for v in result["reference"])
    out.append(f"HV reference ({', '.join(objs)}) = ({ref}) [{result['reference_source']}]")
    nd = result["non_dominated"]
    out.append("non-dominated runs: " + (", ".join(nd) if nd else "none"))
    fallback = [n for n, r in result["runs"].items() if r["values_from"] == TRAIN_FALLBACK]
    if fallback:
        out.append(f"no evaluation, values are training-batch means: {', '.join(fallback)}")
    out += _console_runs(result) if per_run else []
    for name, run in result["runs"].items():
        out += law_lines(name, run)
    return "\n".join(out)
