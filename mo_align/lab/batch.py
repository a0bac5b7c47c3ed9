"""What the lab does around a batch of runs, shared by ``python -m mo_align.lab`` (:mod:`mo_align.lab.run`) and its sweep
(:mod:`mo_align.lab.sweep`): the scaling rule of the runs, checked and recorded before any warm start
(:func:`lab_scaling`), and the report, tables and evidence of the finished runs (:func:`write_results`)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from mo_align.lab.evidence import EVIDENCE_FILE, format_evidence, lab_evidence
from mo_align.lab.protocol import describe, record
from mo_align.lab.scaling import LabRecipeError, check_recipes, paper_recipe
from mo_align.runs.report import format_console_table, write_report
from mo_align.runs.summary import load_runs


__all__ = ["lab_scaling", "write_results"]


def lab_scaling(algorithms: list[str], steps: int, eta: str, eval_steps: int | None, say: Any = None) -> dict:
    """The scaling rule of these runs as JSON (:func:`~.protocol.record`), each line passed to ``say``
    (:func:`~.protocol.describe`); a missing or unreadable paper recipe stops the lab in one line."""
    try:
        check_recipes(algorithms, steps, eta)
        rule = record(algorithms, steps, eta, eval_steps)
    except LabRecipeError as exc:
        raise SystemExit(str(exc)) from None
    for line in describe(algorithms, steps, eta, eval_steps) if say is not None else []:
        say(line)
    return rule


def write_results(done: list, seconds: dict, out_root: str, setting: dict[str, Any], meta: dict) -> dict[str, Any]:
    """The report of the finished runs and its console table (with the seed-level tables), then the per-run table of
    Δ vs the warm start's baseline (printed) and the evidence (``interference.json``)."""
    ok = [out for out, rc in done if rc == 0]
    if not ok:
        raise SystemExit("mo-align lab: every run failed; see " + os.path.join(out_root, "logs"))
    preference = paper_recipe("linear")["weighting_kwargs"]["weights"]  # one fixed scalar for every algorithm
    result = write_report(load_runs(ok), os.path.join(out_root, "report"), preference=preference)
    sys.stdout.write("\n" + format_console_table(result, per_run=False) + "\n")  # per run: the evidence table
    evidence = lab_evidence(ok, preference)
    for row, out in zip(evidence["runs"], ok):
        row["seconds"] = seconds.get(out)
    with open(os.path.join(out_root, EVIDENCE_FILE), "w") as f:
        json.dump({**setting, **evidence}, f, indent=1)
    sys.stdout.write("\n" + format_evidence(evidence["runs"]) + "\n")
    return result
