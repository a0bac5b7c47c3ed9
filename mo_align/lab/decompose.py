"""Trade-off or interference? The lab's Δ accuracy split into mass moved between answer styles and change within
each style: :mod:`mo_align.runs.report.style_split`, re-exported here (``mo-align report`` shows the same section,
and the report does not import the lab)."""

from __future__ import annotations

from mo_align.runs.report.style_split import (
    NOTE,
    PARTS,
    Split,
    decompose,
    decompose_runs,
    format_decomposition,
    load_styles,
    reading,
    split_accuracy,
    style_lines,
    table_rows,
    write_json,
)


__all__ = [
    "NOTE",
    "PARTS",
    "Split",
    "decompose",
    "decompose_runs",
    "format_decomposition",
    "load_styles",
    "reading",
    "split_accuracy",
    "style_lines",
    "table_rows",
    "write_json",
]
