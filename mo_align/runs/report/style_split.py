"""Trade-off or interference? Δ accuracy split into mass moved between answer styles and change within each style.

With ``π(s)`` the share of style ``s`` among an evaluation's samples and ``acc(s)`` the mean accuracy of its
samples (the lab's answer styles: :mod:`mo_align.lab.styles` labels each sample, the labels are read here), the mean
accuracy is ``Σ_s π(s) acc(s)``, so from the start ``0`` to the final evaluation ``1``, exactly::

    Δ acc = Σ_s (π_1(s) − π_0(s)) acc_0(s)      between styles: mass moved, judged at the start's accuracies
          + Σ_s π_1(s) (acc_1(s) − acc_0(s))    within styles: the accuracy of each style changed

(a Kitagawa/Oaxaca-style decomposition). A style absent from the start has no ``acc_0``: its final mass counts as
moved, ``acc_0(s) := acc_1(s)`` (between ``π_1 acc_1``, within 0); a style absent from the final contributes
``−π_0 acc_0`` to the between part. Samples without an accuracy score (``NaN``) are left out of ``π`` and ``acc``.

The start is the warm start's baseline as in :mod:`mo_align.runs.report.seeds`: the step-0 evaluations of every run
from that warm start, pooled (draws of the same policy on the same prompts). Intervals (95 %): a run's, bootstrap
over prompts (the samples of a prompt resampled together, the baseline on the same drawn prompts); a configuration's
(its seeds), the two-stage bootstrap of :func:`mo_align.stats.hierarchical_delta_ci` (seeds with replacement, then
prompts for each drawn seed) of the seeds' mean of each part.

Reading, for an accuracy loss (Δ interval below 0): **optimizer damage** when the within part's interval lies below 0
and below the between part (the interval of within − between below 0); **moved along the front** when the between
part is the larger loss (its estimate at or below the within part's); otherwise the within part is larger but not
significantly so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mo_align.runs.jsonfile import read_json
from mo_align.runs.summary import json_safe
from mo_align.stats import CI


# the lab's answer-style classes (mo_align.lab.styles classifies a completion; re-exported there)
STYLE_CLASSES: dict[str, str] = {
    "A": "step-by-step, boxed (the data's A and C)",
    "B": "short, boxed (the data's B and D)",
    "E": "short, no box",
    "F": "step-by-step, no box",
    "G": "compact 1. / 2. / box",
    "other": "none of the templates",
}
PARTS = ("delta", "between", "within")
EVAL_SCORES_FILE = (
    "lab_eval_scores.json"  # a run's per-sample scores and styles (the lab writes it, load_styles reads it)
)
_LEVEL, _BOOT = 0.95, 2000


class Split(NamedTuple):
    """Δ accuracy and its two parts (arrays over any leading axes, or floats)."""

    delta: Any
    between: Any
    within: Any


def style_tallies(labels: Any, values: Any, styles: Sequence[str] = tuple(STYLE_CLASSES)) -> tuple[Any, Any]:
    """Per prompt and style: the number of samples with a finite value, and the sum of their values.

    ``labels``: (prompts, samples) style names; ``values``: (prompts, samples) scores (``NaN`` = no score: the
    sample is left out of both, as the trainer's ``nanmean`` leaves it out). Returns two (prompts, styles) arrays.
    """
    vals = np.asarray(values, dtype=np.float64)
    labs = np.asarray(labels, dtype=object)
    if vals.ndim != 2 or labs.shape != vals.shape:
        raise ValueError(
            f"style tallies: labels {labs.shape} and values {vals.shape} must be the same (prompts, samples)"
        )
    unknown = sorted({str(x) for x in labs.ravel()} - set(styles))
    if unknown:
        raise ValueError(f"style tallies: unknown style label(s) {unknown[:5]}; styles are {list(styles)}")
    finite = np.isfinite(vals)
    counts = np.zeros((vals.shape[0], len(styles)))
    sums = np.zeros((vals.shape[0], len(styles)))
    for j, s in enumerate(styles):
        mine = (labs == s) & finite
        counts[:, j] = mine.sum(axis=1)
        sums[:, j] = np.where(mine, vals, 0.0).sum(axis=1)
    return counts, sums


def split_accuracy(base_counts: Any, base_sums: Any, final_counts: Any, final_sums: Any) -> Split:
    """The decomposition of the module docstring from per-style sample counts and accuracy sums, each ``(...,
    styles)`` (totals over the prompts); vectorised over the leading axes."""
    bc, bs, fc, fs = (np.asarray(x, dtype=np.float64) for x in (base_counts, base_sums, final_counts, final_sums))
    with np.errstate(invalid="ignore", divide="ignore"):
        pi0 = bc / bc.sum(axis=-1, keepdims=True)
        pi1 = fc / fc.sum(axis=-1, keepdims=True)
        acc1 = np.where(fc > 0, fs / np.where(fc > 0, fc, 1.0), 0.0)
        acc0 = np.where(bc > 0, bs / np.where(bc > 0, bc, 1.0), acc1)
    between = ((pi1 - pi0) * acc0).sum(axis=-1)
    within = (pi1 * (acc1 - acc0)).sum(axis=-1)
    delta = (pi1 * acc1).sum(axis=-1) - (pi0 * acc0).sum(axis=-1)
    return Split(delta, between, within)


def _ci(estimate: float, reps: Any, level: float) -> dict[str, float]:
    """The estimate with the percentile interval of the finite replicates (numpy's linear-interpolation quantile,
    as :mod:`mo_align.stats`); ``NaN`` bounds without any."""
    reps = np.asarray(reps, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if not np.isfinite(estimate) or reps.size == 0:
        return {"estimate": float(estimate), "low": float("nan"), "high": float("nan")}
    low, high = np.quantile(reps, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return {"estimate": float(estimate), "low": float(low), "high": float(high)}


def decompose(
    finals: Sequence[tuple[Any, Any]],
    baseline: tuple[Any, Any],
    level: float = _LEVEL,
    n_boot: int = _BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """The seeds' mean of each part with its interval: ``finals`` = per seed the (prompts, styles) counts and
    accuracy sums of the final evaluation, ``baseline`` = the same of the (pooled) start, on the same prompts. One
    seed: the prompt bootstrap; several: the two-stage bootstrap (module docstring). Also ``within_minus_between``
    and, per style, the start and mean final share and accuracy."""
    bc, bs = (np.asarray(x, dtype=np.float64) for x in baseline)
    fc = np.stack([np.asarray(c, dtype=np.float64) for c, _ in finals])  # (seeds, prompts, styles)
    fs = np.stack([np.asarray(s, dtype=np.float64) for _, s in finals])
    if fc.shape[1:] != bc.shape or fs.shape != fc.shape or bs.shape != bc.shape:
        raise ValueError(f"decompose: finals {fc.shape[1:]} and baseline {bc.shape} must be (prompts, styles) alike")
    per_seed = split_accuracy(bc.sum(0), bs.sum(0), fc.sum(1), fs.sum(1))  # each (seeds,)
    rng = np.random.default_rng(seed)
    n_seeds, n_prompts = fc.shape[0], bc.shape[0]
    drawn_seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    mult = rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=(n_boot, n_seeds)).astype(float)
    base_c, base_s = mult @ bc, mult @ bs  # (n_boot, seeds, styles): the baseline on each drawn seed's prompts
    fin_c, fin_s = np.empty_like(base_c), np.empty_like(base_s)
    for q in range(n_seeds):  # each actual seed's finals on the prompts drawn wherever it was drawn
        where = drawn_seeds == q
        fin_c[where], fin_s[where] = mult[where] @ fc[q], mult[where] @ fs[q]
    reps = split_accuracy(base_c, base_s, fin_c, fin_s)
    out: dict[str, Any] = {"seeds": n_seeds, "per_seed": {p: [float(v) for v in getattr(per_seed, p)] for p in PARTS}}
    for p in PARTS:
        out[p] = _ci(np.mean(getattr(per_seed, p)), np.nanmean(getattr(reps, p), axis=1), level)
    diff = np.mean(per_seed.within - per_seed.between)
    out["within_minus_between"] = _ci(diff, np.nanmean(reps.within - reps.between, axis=1), level)
    out["styles"] = _style_rows(bc, bs, fc, fs)
    out["reading"] = reading(out)
    return out


def _style_rows(bc: Any, bs: Any, fc: Any, fs: Any) -> dict[str, dict[str, float | None]]:
    def acc(c: Any, s: Any) -> float | None:
        return float(s / c) if c > 0 else None

    b_c, b_s, f_c, f_s = bc.sum(0), bs.sum(0), fc.sum(1), fs.sum(1)  # baseline (styles,), finals (seeds, styles)
    rows = {}
    for j, name in enumerate(STYLE_CLASSES):
        finals = [acc(c[j], s[j]) for c, s in zip(f_c, f_s)]
        known = [v for v in finals if v is not None]
        rows[name] = {
            "share_start": float(b_c[j] / b_c.sum()),
            "share_final": float(np.mean(f_c[:, j] / f_c.sum(axis=1))),
            "acc_start": acc(b_c[j], b_s[j]),
            "acc_final": float(np.mean(known)) if known else None,
        }
    return rows


def reading(parts: Mapping[str, Any]) -> str:
    """Which part the accuracy loss is (module docstring)."""
    delta, between, within = (parts[p] for p in PARTS)
    if not delta["high"] < 0:
        return "no significant accuracy loss"
    if within["high"] < 0 and parts["within_minus_between"]["high"] < 0:
        return "optimizer damage (within-style dominates)"
    if between["estimate"] <= within["estimate"]:
        return "moved along the front (between-style dominates)"
    return "unclear (within-style larger, not significantly)"


def load_styles(path: str) -> dict[str, Any] | None:
    """From a run's ``lab_eval_scores.json``: ``objectives`` and, for the first (``start``) and last (``final``)
    evaluation, its ``rewards`` (prompts, samples, K), their ``acc`` column and the style ``labels``, or ``None`` when the file holds no labels (recorded before they were). Read as untrusted input (size
    cap, UTF-8, JSON); a malformed field raises ``ValueError`` naming the file and field."""
    data = read_json(Path(path))
    if not isinstance(data, dict) or not isinstance(data.get("evals"), list) or not data["evals"]:
        raise ValueError(f"{path}: 'evals' must be a non-empty list")
    objectives = data.get("objectives")
    if not isinstance(objectives, list) or "accuracy" not in objectives:
        raise ValueError(f"{path}: 'objectives' must be a list naming 'accuracy'")
    k = objectives.index("accuracy")
    out: dict[str, Any] = {}
    for key, i in (("start", 0), ("final", len(data["evals"]) - 1)):
        rec = data["evals"][i]
        if not isinstance(rec, dict) or "labels" not in rec:
            return None
        try:
            rewards = np.asarray(rec["rewards"], dtype=np.float64)
            labels = np.asarray(rec["labels"], dtype=object)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: evals[{i}].rewards/labels are not arrays ({exc})") from exc
        if rewards.ndim != 3 or rewards.shape[2] != len(objectives) or labels.shape != rewards.shape[:2]:
            raise ValueError(f"{path}: evals[{i}]: labels {labels.shape} do not match rewards {rewards.shape}")
        bad = sorted({str(x) for x in labels.ravel()} - set(STYLE_CLASSES))
        if bad:
            raise ValueError(f"{path}: evals[{i}].labels: unknown style(s) {bad[:3]}")
        out[key] = {"step": rec.get("step"), "acc": rewards[:, :, k], "labels": labels, "rewards": rewards}
    out["objectives"] = [str(o) for o in objectives]
    return out


def decompose_runs(
    entries: Sequence[Mapping[str, Any]], level: float = _LEVEL, n_boot: int = _BOOT, seed: int = 0
) -> dict[str, Any]:
    """``entries``: per run ``{"run", "configuration", "warm_start", "start", "final"}`` (the last two as
    :func:`load_styles` gives them). The baseline pools the starts of every run of the same warm start; returns
    ``{"runs": {run: parts}, "configurations": {configuration: parts}}``."""
    tallies = {
        e["run"]: {key: style_tallies(e[key]["labels"], e[key]["acc"]) for key in ("start", "final")} for e in entries
    }
    base: dict[str, tuple[Any, Any]] = {}
    for ws in dict.fromkeys(e["warm_start"] for e in entries):
        starts = [tallies[e["run"]]["start"] for e in entries if e["warm_start"] == ws]
        if len({c.shape for c, _ in starts}) != 1:
            raise ValueError(f"warm start {ws or '(unnamed)'}: its runs were evaluated on different prompt counts")
        base[ws] = (sum(c for c, _ in starts), sum(s for _, s in starts))
    runs = {
        e["run"]: decompose([tallies[e["run"]]["final"]], base[e["warm_start"]], level, n_boot, seed) for e in entries
    }
    configurations = {}
    for config in dict.fromkeys((e["configuration"], e["warm_start"]) for e in entries):
        mine = [e for e in entries if (e["configuration"], e["warm_start"]) == config]
        finals = [tallies[e["run"]]["final"] for e in mine]
        name = config[0] if len(base) == 1 else f"{config[0]} ({config[1]})"
        configurations[name] = decompose(finals, base[config[1]], level, n_boot, seed)
    return {"runs": runs, "configurations": configurations}


NOTE = (
    "between = Σ_s (π_final − π_start)(s)·acc_start(s) (mass moved between answer styles); within = Σ_s "
    "π_final(s)·(acc_final − acc_start)(s); the two sum to Δ; start = the warm start's step-0 evaluations pooled; "
    "intervals: prompts bootstrapped, and seeds where there are several"
)


def table_rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): per configuration, Δ accuracy and its two parts with their intervals, and the reading."""
    head = ["configuration", "seeds", "Δ accuracy [95% CI]", "between styles", "within styles", "reading"]
    body = [
        [name, str(c["seeds"]), *[CI(**c[p]).format() for p in PARTS], c["reading"]]
        for name, c in result["configurations"].items()
    ]
    return head, body


def style_lines(result: Mapping[str, Any]) -> list[str]:
    """Per configuration, every style present: share start→final, accuracy start→final."""
    lines = []
    for name, c in result["configurations"].items():
        cells = [
            f"{s} {v['share_start']:.0%}→{v['share_final']:.0%} acc {_fmt(v['acc_start'])}→{_fmt(v['acc_final'])}"
            for s, v in c["styles"].items()
            if v["share_start"] > 0 or v["share_final"] > 0
        ]
        lines.append(f"{name}: " + "; ".join(cells))
    return lines


def format_decomposition(result: Mapping[str, Any]) -> list[str]:
    """The console's section: :func:`table_rows`, :data:`NOTE`, :func:`style_lines`."""
    head, body = table_rows(result)
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["Δ accuracy: between styles vs within styles"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
    return [*lines, NOTE, *("  " + line for line in style_lines(result))]


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def write_json(result: Mapping[str, Any], path: str) -> None:
    """``result`` as JSON (a missing number as ``null``)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(json_safe(dict(result)), f, indent=1)
