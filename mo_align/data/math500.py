"""MATH-500 data in the paper's layout (REFERENCE_SPEC §5).

``load_split(dir, split)`` reads ``{dir}/{split}.parquet`` or ``.jsonl`` in either mo_align's schema (``prompt``,
``answer``, ``level``, ``subject``, ``unique_id``) or the reference repository's verl layout
(``reward_model.ground_truth``, ``extra_info``), which it converts to mo_align's.
"""

from __future__ import annotations

import os
from typing import Any

from datasets import Dataset


def _convert_verl_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt": row["prompt"],
        "answer": str(row["reward_model"]["ground_truth"]),
        "level": row.get("level"),
        "subject": row.get("subject"),
        "unique_id": row.get("unique_id"),
    }


def load_split(path: str, split: str) -> Dataset:
    """Load one split from a local directory (parquet or jsonl), normalised to mo_align's columns."""
    for ext, fmt in ((".parquet", "parquet"), (".jsonl", "json"), (".json", "json")):
        file = os.path.join(path, split + ext)
        if os.path.exists(file):
            ds = Dataset.from_parquet(file) if fmt == "parquet" else Dataset.from_json(file)
            break
    else:
        raise FileNotFoundError(f"no {split}.parquet / {split}.jsonl in {path!r}")
    if "answer" not in ds.column_names:
        if "reward_model" not in ds.column_names:
            raise ValueError(f"{path}/{split}: no gold column 'answer' (or verl 'reward_model.ground_truth')")
        ds = ds.map(_convert_verl_row, remove_columns=ds.column_names)
    if "prompt" not in ds.column_names:
        raise ValueError(f"{path}/{split}: no 'prompt' column")
    return ds
