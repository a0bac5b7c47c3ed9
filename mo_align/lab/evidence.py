"""The lab's evidence: per-prompt eval scores of each run, Δ against the warm start's baseline, seed-level statistics.

Each worker keeps the per-prompt scores of every evaluation (``lab_eval_scores.json``, from the trainer's
``mo.eval_samples``). :func:`lab_evidence` reads the runs of one warm start and computes

* the **baseline**: per held-out prompt, the mean over every run of its step-0 scores (all algorithms and seeds start
  from the same warm start, so their step-0 evaluations are draws of the same policy), instead of each run's own
  step-0 draw;
* per run (:func:`run_evidence`): each objective's and the fixed scalar's Δ = final − baseline with a paired prompt
  bootstrap CI — that run's evaluation noise only, no verdict;
* per configuration (``<algorithm>`` of ``<algorithm>-seed<N>``): the seed-level tables of
  :func:`mo_align.runs.report.seeds.seed_level` (t intervals over seeds, Holm-adjusted, verdicts, interference
  against the fixed scalar) and, beside them, a two-stage bootstrap interval of each Δ (seeds, then prompts:
  :func:`mo_align.stats.hierarchical_delta_ci`), unadjusted.

The fixed scalar is ``Σ_k w_k r_k`` with one preference vector for every algorithm. :func:`format_evidence` is the
console's per-run table, ``interference.json`` the file.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mo_align.lab.styles import style_of
from mo_align.runs.report.seeds import configuration, seed_level
from mo_align.runs.report.style_split import EVAL_SCORES_FILE  # the report reads it too
from mo_align.stats import CI, hierarchical_delta_ci, paired_delta_ci


EVIDENCE_FILE = "interference.json"
SCALAR = "scalar"
_SEED = re.compile(r"-seed(\d+)$")

if TYPE_CHECKING:
    from mo_align.trainer import MOGRPOTrainer


class EvalScoreRecorder:
    """Writes the trainer's per-sample scores of every evaluation of its own split (``trainer.mo.eval_samples``:
    rewards (prompts, samples, K) as the trainer reports them, the optimised scalar and the lengths (prompts,
    samples)) and each sample's answer style (``labels`` (prompts, samples), :func:`mo_align.lab.styles.style_of`,
    set as the trainer's ``mo.eval_labeler``; ``labeler=None`` keeps the trainer's own)."""

    def __init__(self, trainer: MOGRPOTrainer, labeler: Any = "style") -> None:
        self.mo = trainer.mo  # the objective names, the evaluation record and its labeler
        if labeler == "style":
            labeler = style_of
        if labeler is not None:
            self.mo.eval_labeler = labeler

    def write(self, path: str) -> None:
        payload = {"objectives": list(self.mo.objective_names), "evals": self.mo.eval_samples}
        with open(path, "w") as f:
            json.dump(payload, f)


def _load(run_dir: str) -> tuple[list[str], Any, Any, list[int]]:
    """(objectives, first and last evaluation's rewards (prompts, samples, K), their steps)."""
    with open(os.path.join(run_dir, EVAL_SCORES_FILE)) as f:
        data = json.load(f)
    first, last = data["evals"][0], data["evals"][-1]
    start, final = np.asarray(first["rewards"], dtype=float), np.asarray(last["rewards"], dtype=float)
    return list(data["objectives"]), start, final, [first["step"], last["step"]]


def prompt_means(rewards: Any) -> Any:
    """(prompts, K) per-prompt means over the samples (``NaN`` scores ignored) of (prompts, samples, K) rewards."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a prompt without any finite score stays NaN
        return np.nanmean(np.asarray(rewards, dtype=float), axis=1)


def warm_start_baseline(starts: Sequence[Any]) -> Any:
    """(prompts, K): per prompt, the mean over the runs of their step-0 per-prompt means."""
    shapes = {np.asarray(s).shape[0] for s in starts}
    if len(shapes) != 1:
        raise ValueError(
            f"baseline: every run must be evaluated on the same prompts, got prompt counts {sorted(shapes)}"
        )
    return np.nanmean(np.stack([prompt_means(s) for s in starts]), axis=0)


def run_evidence(
    run_dir: str,
    baseline: Any = None,
    preference: Sequence[float] | None = None,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """One run's Δ = final − baseline of every objective and of the fixed scalar, each with its paired prompt-bootstrap
    CI. ``baseline``: (prompts, K) per-prompt means (default: the run's own first evaluation); ``preference``: the
    fixed scalar's weights (default ``1/K`` each)."""
    names, start, final, steps = _load(run_dir)
    base = prompt_means(start) if baseline is None else np.asarray(baseline, dtype=float)
    w = np.asarray(preference if preference is not None else [1.0 / len(names)] * len(names), dtype=float)
    if base.shape != (final.shape[0], len(names)) or w.shape != (len(names),):
        raise ValueError(f"{run_dir}: baseline {base.shape} / preference {w.shape} do not match {final.shape}")
    deltas = {name: paired_delta_ci(base[:, k], final[:, :, k], level, n_boot, seed) for k, name in enumerate(names)}
    scalar = paired_delta_ci(base @ w, final @ w, level, n_boot, seed)
    return {
        "run": os.path.basename(os.path.normpath(run_dir)),
        "steps": steps,
        "prompts": int(final.shape[0]),
        "samples": int(final.shape[1]),
        "start": {name: float(np.nanmean(start[:, :, k])) for k, name in enumerate(names)},
        "final": {name: float(np.nanmean(final[:, :, k])) for k, name in enumerate(names)},
        "baseline": {name: float(np.nanmean(base[:, k])) for k, name in enumerate(names)},
        "preference": [float(v) for v in w],
        "delta": {name: ci._asdict() for name, ci in deltas.items()},
        "scalar_delta": scalar._asdict(),
    }


def _pseudo_summary(row: dict[str, Any]) -> dict[str, Any]:
    """A run as :func:`~mo_align.runs.report.seeds.seed_level` reads it (every run here shares one warm start)."""
    m = _SEED.search(row["run"])
    return {
        "run_name": row["run"],
        "algorithm": row["run"] if m is None else row["run"][: m.start()],
        "seed": None if m is None else int(m.group(1)),
        "start": row["start"],
        "final": row["final"],
    }


def lab_evidence(
    run_dirs: Sequence[str],
    preference: Sequence[float] | None = None,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The evidence of runs that share one warm start (module docstring): ``baseline``, ``runs`` (per run),
    ``seed_level`` (the tables) and ``hierarchical`` (configuration -> quantity -> two-stage bootstrap CI)."""
    loaded = {d: _load(d) for d in run_dirs}
    names = next(iter(loaded.values()))[0]
    base = warm_start_baseline([start for _, start, _, _ in loaded.values()])
    w = np.asarray(preference if preference is not None else [1.0 / len(names)] * len(names), dtype=float)
    rows = [run_evidence(d, base, w, level, n_boot, seed) for d in run_dirs]
    summaries = [_pseudo_summary(r) for r in rows]
    table = seed_level(summaries, names, [float(v) for v in w])
    hierarchical: dict[str, dict[str, Any]] = {}
    for config in dict.fromkeys(configuration(s) for s in summaries):
        mine = [prompt_means(loaded[d][2]) for d, s in zip(run_dirs, summaries) if configuration(s) == config]
        finals = np.stack(mine)  # (seeds, prompts, K)
        cis = {
            name: hierarchical_delta_ci(finals[:, :, k], base[:, k], level, n_boot, seed)
            for k, name in enumerate(names)
        }
        cis[SCALAR] = hierarchical_delta_ci(finals @ w, base @ w, level, n_boot, seed)
        hierarchical[config] = {q: ci._asdict() for q, ci in cis.items()}
    baseline = {name: float(np.nanmean(base[:, k])) for k, name in enumerate(names)}
    return {
        "preference": [float(v) for v in w],
        "baseline": baseline,
        "runs": rows,
        "seed_level": table,
        "hierarchical": hierarchical,
    }


def format_evidence(rows: list[dict[str, Any]]) -> str:
    """Console table: per run, Δ vs the warm start's baseline [95 % prompt-bootstrap CI] per objective and for the
    fixed scalar. No verdicts: those are the seed-level tables'."""
    if not rows:
        return ""
    names = list(rows[0]["delta"])
    weights = ", ".join(f"{v:.3g}" for v in rows[0]["preference"])
    head = ["run", *[f"Δ {n} [95% CI]" for n in names], f"Δ scalar (w = {weights}) [95% CI]"]
    body = [[r["run"], *[CI(**r["delta"][n]).format() for n in names], CI(**r["scalar_delta"]).format()] for r in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [head, *body]]
    note = (
        "per run: Δ = final − the warm start's baseline (per prompt, the mean of every run's step-0 evaluation); the "
        "interval is that run's evaluation noise only (prompts resampled), no verdict — verdicts across seeds are "
        "the seed-level tables' (t intervals over seeds, Holm-adjusted)"
    )
    return "\n".join([note, *lines])
