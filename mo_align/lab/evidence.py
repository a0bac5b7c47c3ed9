"""The lab's evidence: per-prompt eval scores of each run, paired Δ CIs vs the start and the interference verdict.

Each worker keeps the per-prompt scores of every evaluation (``lab_eval_scores.json``, from the trainer's
``mo_eval_samples``); :func:`run_evidence` computes, per run, the paired-bootstrap 95 % CI of every objective's Δ
(final − start) and of the optimised scalar's; an objective *interferes* when its CI lies entirely below 0 while the
scalar rose (:mod:`mo_align.stats`). :func:`format_evidence` is the console table, ``interference.json`` the file.
"""

from __future__ import annotations

import json
import os
from typing import Any


EVAL_SCORES_FILE = "lab_eval_scores.json"
EVIDENCE_FILE = "interference.json"


class EvalScoreRecorder:
    """Writes the trainer's per-sample scores of every evaluation of its own split (``mo_eval_samples``: rewards
    (prompts, samples, K) as the trainer reports them, the optimised scalar and the lengths (prompts, samples))."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def write(self, path: str) -> None:
        payload = {"objectives": list(self.trainer.objective_names), "evals": self.trainer.mo_eval_samples}
        with open(path, "w") as f:
            json.dump(payload, f)


def run_evidence(run_dir: str, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Paired Δ CIs (first vs last evaluation) of every objective and of the scalar of one run, and its verdict."""
    import numpy as np

    from mo_align.stats import interfering, paired_delta_ci

    with open(os.path.join(run_dir, EVAL_SCORES_FILE)) as f:
        data = json.load(f)
    first, last = data["evals"][0], data["evals"][-1]
    start, final = np.asarray(first["rewards"], dtype=float), np.asarray(last["rewards"], dtype=float)
    deltas = {
        name: paired_delta_ci(start[:, :, k], final[:, :, k], level, n_boot, seed)
        for k, name in enumerate(data["objectives"])
    }
    scalar = paired_delta_ci(first["scalar"], last["scalar"], level, n_boot, seed)
    return {
        "run": os.path.basename(os.path.normpath(run_dir)),
        "steps": [first["step"], last["step"]],
        "prompts": int(start.shape[0]),
        "samples": int(start.shape[1]),
        "start": {name: float(np.nanmean(start[:, :, k])) for k, name in enumerate(data["objectives"])},
        "delta": {name: ci._asdict() for name, ci in deltas.items()},
        "scalar_delta": scalar._asdict(),
        "interfering": interfering(deltas, scalar.estimate),
    }


def format_evidence(rows: list[dict[str, Any]]) -> str:
    """Console table: per run, Δ [95 % CI] per objective and for the scalar, and the interfering objectives."""
    from mo_align.stats import CI

    if not rows:
        return ""
    names = list(rows[0]["delta"])

    def verdict(row: dict[str, Any]) -> str:
        return ",".join(row["interfering"]) or "-"

    head = ["run", *[f"Δ {n} [95% CI]" for n in names], "Δ scalar [95% CI]", "interferes"]
    body = [
        [r["run"], *[CI(**r["delta"][n]).format() for n in names], CI(**r["scalar_delta"]).format(), verdict(r)]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [head, *body]]
    by_algo: dict[str, list[bool]] = {}
    for r in rows:
        by_algo.setdefault(r["run"].rsplit("-seed", 1)[0], []).append(bool(r["interfering"]))
    tally = ", ".join(f"{a} {sum(v)}/{len(v)}" for a, v in by_algo.items())
    return "\n".join([*lines, f"seeds with significant interference: {tally}"])
