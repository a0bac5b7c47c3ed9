"""MATH-500 in the paper's 300/100/100 split (REFERENCE_SPEC §5), and a loader for local splits.

Build the splits (``python -m mo_align.data.math500 --out data/math500``; ``--source FILE`` reads a local copy of
``HuggingFaceH4/MATH-500`` instead of the Hub, as ``.jsonl``/``.json``/``.parquet``/``.csv`` with the columns
``problem``, ``answer``, ``level``, ``subject``, ``unique_id``, rows in the dataset's original order):

1. ``train_test_split(test_size=0.4, seed=42, shuffle=True)``: 300 ``train``, 200 held out;
2. the 200 again with ``test_size=0.5, seed=42``: its **first** half (that call's ``"train"`` part) is the
   **test** split and its second half (that call's ``"test"`` part) is **val**, as in the reference's
   ``scripts/math500.py``. The paper trains on train and validates on test; val is unused.

Each row: ``prompt`` (one user message, ``problem + " Let's think step by step and output the final answer within
\\boxed{}."``), ``answer`` (str, the gold for the accuracy reward), ``level`` (int), ``subject`` (str), ``unique_id``
(str). The reference's parquet files are reproduced row for row, prompts byte for byte (``tests/test_data.py``
checks it against ``shared/data/math500``).

:func:`load_split` reads ``{dir}/{split}.parquet`` (or ``.jsonl``/``.json``) in mo_align's layout, in the
reference's verl layout (``prompt`` + ``reward_model.ground_truth`` + ``extra_info``), or in MATH-500's own layout
(``problem`` + ``answer``), and returns mo_align's five columns.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from datasets import Dataset


HUB_DATASET = "HuggingFaceH4/MATH-500"
INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
PROMPT_SUFFIX = " " + INSTRUCTION
SPLITS = ("train", "val", "test")
COLUMNS = ("prompt", "answer", "level", "subject", "unique_id")
SEED = 42


def make_prompt(problem: str) -> list[dict[str, str]]:
    """The chat prompt of one problem: a single user message, problem + one space + the instruction."""
    return [{"role": "user", "content": problem + PROMPT_SUFFIX}]


def problem_from_prompt(prompt: Any) -> str:
    """Inverse of :func:`make_prompt` (for the reference's parquet, which stores the prompt, not the problem)."""
    content = prompt[0]["content"] if isinstance(prompt, list) else str(prompt)
    if not content.endswith(PROMPT_SUFFIX):
        raise ValueError(f"prompt does not end with the instruction {PROMPT_SUFFIX!r}: ...{content[-80:]!r}")
    return content[: -len(PROMPT_SUFFIX)]


def _level(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.startswith("Level "):  # the original MATH dataset writes "Level 3"
        value = value[len("Level ") :]
    return int(value)


def _row(problem_or_prompt: Any, answer: Any, row: dict[str, Any]) -> dict[str, Any]:
    prompt = make_prompt(problem_or_prompt) if isinstance(problem_or_prompt, str) else problem_or_prompt
    return {
        "prompt": [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt],
        "answer": str(answer),
        "level": _level(row.get("level")),
        "subject": None if row.get("subject") is None else str(row["subject"]),
        "unique_id": None if row.get("unique_id") is None else str(row["unique_id"]),
    }


def to_mo_align_row(row: dict[str, Any]) -> dict[str, Any]:
    """One row of any supported layout → mo_align's five columns."""
    if "answer" in row and "prompt" in row:
        return _row(row["prompt"], row["answer"], row)
    if "reward_model" in row:  # the reference's verl layout
        return _row(row["prompt"], row["reward_model"]["ground_truth"], row)
    if "problem" in row and "answer" in row:  # MATH-500's own layout
        return _row(row["problem"], row["answer"], row)
    raise ValueError(f"unrecognised row layout (columns {sorted(row)}): need problem+answer, prompt+answer or verl")


def to_mo_align(ds: Dataset) -> Dataset:
    """A dataset of any supported layout → mo_align's five columns, in order."""
    if tuple(ds.column_names) == COLUMNS:
        return ds
    return Dataset.from_list([to_mo_align_row(r) for r in ds])


def _read_file(path: str) -> Dataset:
    lower = path.lower()
    if lower.endswith(".parquet"):
        return Dataset.from_parquet(path, keep_in_memory=True)
    if lower.endswith((".jsonl", ".json")):
        return Dataset.from_json(path, keep_in_memory=True)
    if lower.endswith(".csv"):
        return Dataset.from_csv(path, keep_in_memory=True)
    raise ValueError(f"unsupported source file {path!r}: use .jsonl, .json, .parquet or .csv")


def load_source(source: str | None = None) -> Dataset:
    """MATH-500's 500 problems in their original order: the Hub's ``test`` split, or a local file."""
    if source is None:
        import datasets

        return datasets.load_dataset(HUB_DATASET, split="test")
    return _read_file(source)


def split_math500(ds: Dataset, seed: int = SEED) -> dict[str, Dataset]:
    """The reference's two seeded splits: ``{"train": 60%, "val": 20%, "test": 20%}`` (300/100/100 of 500)."""
    ds = to_mo_align(ds)
    first = ds.train_test_split(test_size=0.4, seed=seed, shuffle=True, keep_in_memory=True)
    second = first["test"].train_test_split(test_size=0.5, seed=seed, shuffle=True, keep_in_memory=True)
    # Note the swap: the second call's "train" half is the test split, its "test" half the val split.
    splits = {"train": first["train"], "val": second["test"], "test": second["train"]}
    return {name: split.flatten_indices(keep_in_memory=True) for name, split in splits.items()}


def fingerprint(ds: Dataset) -> str:
    """SHA-1 of the newline-joined sorted ``unique_id`` s (REFERENCE_SPEC §5 gives its first 16 hex digits)."""
    return hashlib.sha1("\n".join(sorted(ds["unique_id"])).encode()).hexdigest()


def write_splits(splits: dict[str, Dataset], out: str, fmt: str = "parquet") -> list[str]:
    """Write ``{out}/{split}.{parquet|jsonl}``; returns the paths."""
    os.makedirs(out, exist_ok=True)
    paths = []
    for name, split in splits.items():
        path = os.path.join(out, f"{name}.{fmt}")
        if fmt == "parquet":
            split.to_parquet(path)
        elif fmt == "jsonl":
            split.to_json(path, lines=True, force_ascii=False)
        else:
            raise ValueError(f"unknown format {fmt!r}: parquet or jsonl")
        paths.append(path)
    return paths


def load_split(path: str, split: str) -> Dataset:
    """Load one split from a local directory (parquet or jsonl), normalised to mo_align's five columns."""
    for ext in (".parquet", ".jsonl", ".json"):
        file = os.path.join(path, split + ext)
        if os.path.exists(file):
            ds = _read_file(file)
            break
    else:
        raise FileNotFoundError(f"no {split}.parquet / {split}.jsonl in {path!r}")
    columns = set(ds.column_names)
    if "answer" not in columns and "reward_model" not in columns:
        raise ValueError(f"{path}/{split}: no gold column 'answer' (or verl 'reward_model.ground_truth')")
    if "prompt" not in columns and "problem" not in columns:
        raise ValueError(f"{path}/{split}: no 'prompt' (or 'problem') column")
    return to_mo_align(ds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mo_align.data.math500", description="Write the paper's MATH-500 train/val/test split."
    )
    parser.add_argument("--source", default=None, help=f"local copy of {HUB_DATASET} (default: the Hub)")
    parser.add_argument("--out", required=True, help="output directory (e.g. data/math500)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    args = parser.parse_args(argv)
    splits = split_math500(load_source(args.source), seed=args.seed)
    write_splits(splits, args.out, args.format)
    for name in SPLITS:
        sys.stdout.write(
            f"{name:5s} {len(splits[name]):4d} rows  sha1(sorted unique_id) {fingerprint(splits[name])[:16]}\n"
        )
    sys.stdout.write(f"wrote {args.out}/{{{','.join(SPLITS)}}}.{args.format}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
