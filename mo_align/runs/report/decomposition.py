"""The report's section "Δ accuracy: between styles vs within styles", for runs that recorded per-sample answer styles.

The lab's workers write ``lab_eval_scores.json`` beside ``mo_summary.json`` with, per evaluation, every sample's
accuracy and answer style (:mod:`mo_align.lab.styles`). For the runs that have it, each configuration's Δ accuracy
(the seeds' mean, against the pooled step-0 evaluations of the runs from the same warm start, as the seed-level
tables use) is split into mass moved between styles and change within styles (:mod:`~.style_split`), with
intervals over prompts and seeds and a reading: moved along the front, optimizer damage, or no significant loss.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from mo_align.runs.report.render import _Table
from mo_align.runs.report.seeds import configuration, warm_start_key
from mo_align.runs.report.style_split import (
    EVAL_SCORES_FILE,
    NOTE,
    decompose_runs,
    load_styles,
    style_lines,
    table_rows,
)


def style_decomposition(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The decomposition of the runs whose output directory holds per-sample styles (``None`` when none does);
    a malformed file raises ``ValueError`` naming it."""
    entries = []
    for r in runs:
        # beside the summary read (the run directory given), else in the output_dir the summary names
        dirs = [os.path.dirname(r["source"]) if r.get("source") else None, r.get("output_dir")]
        path = next((os.path.join(d, EVAL_SCORES_FILE) for d in dirs if d and _exists(d)), None)
        if path is None:
            continue
        data = load_styles(path)
        if data is None:
            continue
        entries.append(
            {
                "run": r["run_name"],
                "configuration": configuration(r),
                "warm_start": warm_start_key(r),
                "start": data["start"],
                "final": data["final"],
            }
        )
    return decompose_runs(entries) if entries else None


def decomposition_blocks(result: Mapping[str, Any] | None) -> list[tuple]:
    """The section's blocks for ``render`` (empty without data)."""
    if not result:
        return []
    head, body = table_rows(result)
    return [
        ("h", 2, "Δ accuracy: between styles vs within styles"),
        ("p", __doc__.split("\n\n")[1].replace("\n", " ") + " " + NOTE + "."),
        ("table", _Table(head, body)),
        ("p", "Per style: share start→final, accuracy start→final (seeds' mean)."),
        ("list", style_lines(result)),
    ]


def _exists(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, EVAL_SCORES_FILE))
