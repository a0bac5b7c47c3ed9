"""MATH-500 in the paper's 300/100/100 split, and a loader for local splits.

Build the splits (``python -m mo_align.data.math500 --out data/math500``; ``--source FILE`` reads a local copy of
``HuggingFaceH4/MATH-500`` instead of the Hub, as ``.jsonl``/``.json``/``.parquet``/``.csv`` with the columns
``problem``, ``answer``, ``level``, ``subject``, ``unique_id``, rows in the dataset's original order):

1. ``train_test_split(test_size=0.4, seed=42, shuffle=True)``: 300 ``train``, 200 held out;
2. the 200 again with ``test_size=0.5, seed=42``: its **first** half (that call's ``"train"`` part) is the
   **test** split and its second half (that call's ``"test"`` part) is **validation**, as in the reference's
   ``scripts/math500.py`` (which names it ``val``; files named ``val.*`` are still read). The paper trains on train
   and validates on test; validation is unused.

``--out DIR`` must be empty or new: with ``--overwrite`` the new splits are written to a sibling temporary directory
and swapped in only once they are complete, replacing every earlier split file (any format), so a stale file of
another format can never shadow the new split and a source that fails to load leaves the old files as they were.
``--push-to-hub ID`` publishes the three splits as a Hub dataset (``datasets.DatasetDict.push_to_hub``; the token
comes from ``HF_TOKEN`` / ``huggingface-cli login``), which a recipe then names with ``dataset_name: ID``. A source
must have at least ``MIN_SOURCE_ROWS`` rows and a non-blank gold for every row (``answer``, or else ``solution``,
whose last ``\\boxed{}`` is taken); a file that cannot be parsed is reported with its name and line.

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
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import datasets
from datasets import Dataset, DatasetDict
from huggingface_hub.utils import HFValidationError, validate_repo_id

from mo_align.cli import CommandParser, UsageError, run_module
from mo_align.rewards.common import last_boxed


HUB_DATASET = "HuggingFaceH4/MATH-500"
INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
PROMPT_SUFFIX = " " + INSTRUCTION
SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"validation": ("validation", "val"), "val": ("val", "validation")}  # old files say `val`
MIN_SOURCE_ROWS = 50  # 60/20/20: at least 10 rows in each evaluation split
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


def _row(problem_or_prompt: Any, answer: Any, row: dict[str, Any], field: str = "answer") -> dict[str, Any]:
    if answer is None:
        raise ValueError("the gold answer is null")
    if not str(answer).strip():  # an empty gold matches nothing (or, through a lenient verifier, anything)
        raise ValueError(f"the gold answer is empty (field {field!r} = {str(answer)[:20]!r})")
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
        return _row(row["prompt"], row["reward_model"]["ground_truth"], row, "reward_model.ground_truth")
    if "problem" in row and "answer" in row:  # MATH-500's own layout
        return _row(row["problem"], row["answer"], row)
    if "solution" in row and ("problem" in row or "prompt" in row):  # TRL / open-r1: the gold is `solution`
        solution = row["solution"]
        answer = None if solution is None else (last_boxed(str(solution)) or str(solution))
        return _row(row["problem"] if "problem" in row else row["prompt"], answer, row, "solution")
    raise ValueError(
        f"unrecognised row layout (columns {sorted(row)}): need problem+answer, prompt+answer, "
        "problem/prompt+solution or verl"
    )


def to_mo_align(ds: Dataset, name: str = "the dataset") -> Dataset:
    """A dataset of any supported layout → mo_align's five columns, in order; a row without a gold answer is an
    error naming the row (a null ``answer`` used to become the gold string ``'None'``), and so is a blank one."""
    if tuple(ds.column_names) == COLUMNS and all(a is not None and str(a).strip() for a in ds["answer"]):
        return ds
    rows = []
    for i, row in enumerate(ds):
        try:
            rows.append(to_mo_align_row(row))
        except (ValueError, KeyError, TypeError) as exc:
            ident = f" ({row['unique_id']})" if row.get("unique_id") else ""
            raise ValueError(f"{name}: row {i}{ident}: {exc}") from None
    return Dataset.from_list(rows)


def _check_json_lines(path: str) -> None:
    """A JSON-lines file: every non-blank line one JSON object, and at least one (errors name file and line)."""
    count = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object per line, got {type(record).__name__}")
            count += 1
    if count == 0:
        raise ValueError(f"{path}: the file holds no rows")


def _read_file(path: str) -> Dataset:
    lower = path.lower()
    if not lower.endswith((".parquet", ".jsonl", ".json", ".csv")):
        raise ValueError(f"unsupported source file {path!r}: use .jsonl, .json, .parquet or .csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    if lower.endswith(".jsonl") or (lower.endswith(".json") and _first_char(path) == "{"):
        _check_json_lines(path)
    try:
        if lower.endswith(".parquet"):
            return Dataset.from_parquet(path, keep_in_memory=True)
        if lower.endswith((".jsonl", ".json")):
            return Dataset.from_json(path, keep_in_memory=True)
        return Dataset.from_csv(path, keep_in_memory=True)
    except Exception as exc:  # pyarrow / datasets errors carry a position but not the file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{path}: cannot read it ({type(exc).__name__}: {first})") from None


def _first_char(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read(4096).lstrip()[:1]


def load_source(source: str | None = None) -> Dataset:
    """MATH-500's 500 problems in their original order: the Hub's ``test`` split, or a local file."""
    if source is None:
        return datasets.load_dataset(HUB_DATASET, split="test")
    return _read_file(source)


def split_math500(ds: Dataset, seed: int = SEED, name: str = "the source") -> dict[str, Dataset]:
    """The reference's two seeded splits: ``{"train": 60%, "validation": 20%, "test": 20%}`` (300/100/100 of 500)."""
    if len(ds) < MIN_SOURCE_ROWS:
        raise ValueError(
            f"{name} has {len(ds)} rows: a 60/20/20 split needs at least {MIN_SOURCE_ROWS} (10 per evaluation split)"
        )
    ds = to_mo_align(ds, name)
    first = ds.train_test_split(test_size=0.4, seed=seed, shuffle=True, keep_in_memory=True)
    second = first["test"].train_test_split(test_size=0.5, seed=seed, shuffle=True, keep_in_memory=True)
    # Note the swap: the second call's "train" half is the test split, its "test" half the val split.
    splits = {"train": first["train"], "validation": second["test"], "test": second["train"]}
    return {name: split.flatten_indices(keep_in_memory=True) for name, split in splits.items()}


def fingerprint(ds: Dataset) -> str:
    """SHA-1 of the newline-joined sorted ``unique_id`` s (the ``--out`` run prints its first 16 hex digits)."""
    return hashlib.sha1("\n".join(sorted(ds["unique_id"])).encode()).hexdigest()


SPLIT_FILES = tuple(
    f"{n}.{ext}" for n in ("train", "validation", "val", "test") for ext in ("parquet", "jsonl", "json")
)


def check_out(out: str, overwrite: bool) -> None:
    """An output directory must be new or empty; with ``overwrite`` it may hold earlier split files (any format),
    which :func:`replace_splits` replaces, and nothing else. Nothing is removed here."""
    existing = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if not existing:
        return
    if not overwrite:
        raise FileExistsError(
            f"{out} is not empty ({', '.join(existing[:5])}{', ...' if len(existing) > 5 else ''}); pass --overwrite "
            "to replace its split files"
        )
    others = [n for n in existing if n not in SPLIT_FILES]
    if others:
        raise FileExistsError(f"{out} holds files that are not split files ({', '.join(others[:5])}); not removing")


def replace_splits(splits: dict[str, Dataset], out: str, fmt: str = "parquet") -> list[str]:
    """Write the splits to a temporary sibling of ``out``, then swap it in for ``out`` (whose earlier split files go
    with the old directory): until the swap ``out`` is untouched, so a failed write leaves it as it was."""
    target = os.path.realpath(out)  # a symlinked --out: swap the directory it points to
    parent, base = os.path.dirname(target), os.path.basename(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{base}.new-", dir=parent)
    try:
        write_splits(splits, tmp, fmt)
        if os.path.isdir(target):
            shutil.copymode(target, tmp)
            old = tmp + ".old"
            os.rename(target, old)
            try:
                os.rename(tmp, target)
            except OSError:
                os.rename(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o777 & ~mask)  # mkdtemp's 0700 would outlive the swap
            os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful swap
    return [os.path.join(out, f"{name}.{fmt}") for name in splits]


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
    """Load one split from a local directory (parquet or jsonl), normalised to mo_align's five columns.
    ``validation`` and ``val`` name the same split (whichever file exists)."""
    candidates = [
        os.path.join(path, name + ext)
        for name in SPLIT_ALIASES.get(split, (split,))
        for ext in (".parquet", ".jsonl", ".json")
    ]
    found = [file for file in candidates if os.path.exists(file)]
    if not found:
        raise FileNotFoundError(f"no {split}.parquet / {split}.jsonl in {path!r}")
    if len(found) > 1:
        raise ValueError(f"{path}: several files hold split {split!r} ({', '.join(found)}); keep one")
    ds = _read_file(found[0])
    columns = set(ds.column_names)
    if not columns & {"answer", "solution", "reward_model"}:
        raise ValueError(f"{found[0]}: no gold column 'answer' (or 'solution', or verl 'reward_model.ground_truth')")
    if "prompt" not in columns and "problem" not in columns:
        raise ValueError(f"{found[0]}: no 'prompt' (or 'problem') column")
    return to_mo_align(ds, found[0])


def add_parser(subparsers: Any) -> CommandParser:
    """``mo-align data math500`` and ``python -m mo_align.data.math500``."""
    parser = subparsers.add_parser(
        "math500", description="Write the paper's MATH-500 train/val/test split.", exits=True
    )
    parser.add_argument("--source", default=None, help=f"local copy of {HUB_DATASET} (default: the Hub)")
    parser.add_argument("--out", required=True, help="output directory (e.g. data/math500)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    parser.add_argument("--overwrite", action="store_true", help="replace the split files of a non-empty --out")
    parser.add_argument("--push-to-hub", metavar="ID", default=None, help="also publish the splits as Hub dataset ID")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: a private dataset repo")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_module(add_parser, run, argv, "python -m mo_align.data.math500")


def run(args: argparse.Namespace) -> int:
    try:
        if args.push_to_hub is not None:
            try:
                validate_repo_id(args.push_to_hub)
            except HFValidationError:
                raise ValueError(f"--push-to-hub {args.push_to_hub[:100]!r} is not a valid Hub repo id") from None
        check_out(args.out, args.overwrite)
        splits = split_math500(load_source(args.source), seed=args.seed, name=args.source or HUB_DATASET)
    except (ValueError, OSError) as exc:  # OSError: a missing file, an occupied --out, an unreachable Hub
        raise UsageError(str(exc).replace(chr(10), " "), usage=False) from None
    replace_splits(splits, args.out, args.format)
    for name in SPLITS:
        sys.stdout.write(
            f"{name:10s} {len(splits[name]):4d} rows  sha1(sorted unique_id) {fingerprint(splits[name])[:16]}\n"
        )
    sys.stdout.write(f"wrote {args.out}/{{{','.join(SPLITS)}}}.{args.format}\n")
    if args.push_to_hub is not None:
        DatasetDict(splits).push_to_hub(args.push_to_hub, private=args.private)
        sys.stdout.write(
            f"pushed to https://huggingface.co/datasets/{args.push_to_hub} (recipes: dataset_name: {args.push_to_hub})\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
