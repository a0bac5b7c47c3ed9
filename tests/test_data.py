"""Data: the paper's MATH-500 split reproduced row for row, the loaders, and the synthetic arithmetic task."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from mo_align.data import math500
from mo_align.data.math500 import COLUMNS, fingerprint, load_split, make_prompt, split_math500
from mo_align.data.synthetic import all_problems, make_synthetic
from mo_align.rewards import REWARDS


SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "math500"
SUFFIX = " Let's think step by step and output the final answer within \\boxed{}."
FINGERPRINTS = {"train": "a177468d192ae963", "validation": "d61cdff354c03a17", "test": "9cf4929abfc102fd"}  # §5


def shared_rows(split):
    assert SHARED.is_dir(), f"missing {SHARED}: the shared MATH-500 data must sit next to the repository"
    name = "val" if split == "validation" else split  # the reference names the file val.parquet
    return pq.read_table(SHARED / f"{name}.parquet").to_pylist()


def original_order():
    """MATH-500's rows in the Hub's order, recovered from the reference files by inverting the two seeded shuffles
    (``train_test_split`` draws ``np.random.default_rng(seed).permutation(n)``; test indices come first)."""
    rows = [None] * 500
    held = [None] * 200
    perm, perm2 = np.random.default_rng(42).permutation(500), np.random.default_rng(42).permutation(200)
    for k, row in enumerate(shared_rows("train")):
        rows[perm[200 + k]] = row
    for k, row in enumerate(shared_rows("val")):
        held[perm2[k]] = row
    for k, row in enumerate(shared_rows("test")):
        held[perm2[100 + k]] = row
    for j in range(200):
        rows[perm[j]] = held[j]
    return rows


def write_source(path, rows):
    """A local copy of HuggingFaceH4/MATH-500 in its own layout (problem, solution, answer, subject, level, id)."""
    with open(path, "w") as f:
        for row in rows:
            content = row["prompt"][0]["content"]
            assert content.endswith(SUFFIX)
            record = {
                "problem": content[: -len(SUFFIX)],
                "solution": row["solution"],
                "answer": row["reward_model"]["ground_truth"],
                "subject": row["subject"],
                "level": row["level"],
                "unique_id": row["unique_id"],
            }
            f.write(json.dumps(record) + "\n")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "math500.jsonl"
    rows = original_order()
    # the recovered order is the published one: its first problems are these
    assert [r["unique_id"] for r in rows[:3]] == [
        "test/precalculus/807.json",
        "test/intermediate_algebra/1994.json",
        "test/algebra/2584.json",
    ]
    assert rows[0]["prompt"][0]["content"].startswith("Convert the point $(0,3)$ in rectangular coordinates")
    write_source(path, rows)
    return path


def test_prompt_text_exact():
    assert make_prompt("What is $1+1$?") == [
        {
            "role": "user",
            "content": "What is $1+1$? Let's think step by step and output the final answer within \\boxed{}.",
        }
    ]
    assert math500.problem_from_prompt(make_prompt("x")) == "x"


def test_cli_reproduces_the_reference_split(source, tmp_path):
    out = tmp_path / "math500"
    assert math500.main(["--source", str(source), "--out", str(out)]) == 0
    splits = {name: load_split(str(out), name) for name in ("train", "validation", "test")}
    assert {n: len(s) for n, s in splits.items()} == {"train": 300, "validation": 100, "test": 100}
    assert sorted(os.listdir(out)) == ["test.parquet", "train.parquet", "validation.parquet"]
    ids = {n: set(s["unique_id"]) for n, s in splits.items()}
    assert not (ids["train"] & ids["validation"]) and not (ids["train"] & ids["test"])
    assert not (ids["validation"] & ids["test"])
    assert len(ids["train"] | ids["validation"] | ids["test"]) == 500
    for name, split in splits.items():
        assert tuple(split.column_names) == COLUMNS
        assert fingerprint(split)[:16] == FINGERPRINTS[name]
        reference = shared_rows(name)
        for mine, ref in zip(split, reference, strict=True):  # row order, prompts byte for byte, gold, metadata
            assert mine["unique_id"] == ref["unique_id"]
            assert mine["prompt"] == [{"role": "user", "content": ref["prompt"][0]["content"]}]
            assert mine["answer"] == ref["reward_model"]["ground_truth"]
            assert (mine["level"], mine["subject"]) == (ref["level"], ref["subject"])
    first = splits["train"][0]
    assert first["answer"] == "1" and first["prompt"][0]["content"].startswith("If $t(x) = 3-g(x)$")
    assert first["prompt"][0]["content"].endswith(SUFFIX)


def test_second_split_first_half_is_test():
    ds = Dataset.from_list(
        [{"problem": f"p{i}", "answer": str(i), "level": 1, "subject": "s", "unique_id": f"u{i}"} for i in range(500)]
    )
    splits = split_math500(ds)
    held = ds.train_test_split(test_size=0.4, seed=42)["test"]
    second = held.train_test_split(test_size=0.5, seed=42)
    assert splits["test"]["unique_id"] == second["train"]["unique_id"]
    assert splits["validation"]["unique_id"] == second["test"]["unique_id"]
    again = split_math500(ds)
    assert all(again[n]["unique_id"] == splits[n]["unique_id"] for n in splits)  # deterministic
    other = split_math500(ds, seed=0)
    assert other["train"]["unique_id"] != splits["train"]["unique_id"]


def test_cli_module_with_a_parquet_source(source, tmp_path):
    parquet = tmp_path / "math500.parquet"
    Dataset.from_json(str(source)).to_parquet(str(parquet))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "mo_align.data.math500",
        "--source",
        str(parquet),
        "--out",
        str(out),
        "--format",
        "jsonl",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    for name, digest in FINGERPRINTS.items():
        assert f"{name}" in result.stdout and digest in result.stdout
        assert (out / f"{name}.jsonl").exists()
        assert fingerprint(load_split(str(out), name))[:16] == digest


def test_loader_reads_the_reference_parquet_layout():
    train = load_split(str(SHARED), "train")
    assert len(train) == 300 and tuple(train.column_names) == COLUMNS
    row = train[0]
    assert row["unique_id"] == "test/algebra/1529.json" and row["answer"] == "1" and row["level"] == 3
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"].endswith(SUFFIX)
    assert [len(load_split(str(SHARED), s)) for s in ("val", "validation", "test")] == [100, 100, 100]
    # the gold column feeds the accuracy reward directly
    acc = REWARDS["accuracy"](mode="reference")
    assert acc(None, [f"\\boxed{{{a}}}" for a in train["answer"]], None, answer=train["answer"]) == [1.0] * 300


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_split(str(tmp_path), "train")
    Dataset.from_list([{"prompt": "x"}]).to_json(str(tmp_path / "train.jsonl"))
    with pytest.raises(ValueError, match="answer"):
        load_split(str(tmp_path), "train")


# ---- synthetic arithmetic ----------------------------------------------------------------------------------------
def test_synthetic_is_deterministic_disjoint_and_exact():
    a, b = make_synthetic(n_train=100, n_eval=20, seed=3), make_synthetic(n_train=100, n_eval=20, seed=3)
    assert a["train"].to_list() == b["train"].to_list() and a["test"].to_list() == b["test"].to_list()
    assert make_synthetic(n_train=100, n_eval=20, seed=4)["train"]["prompt"] != a["train"]["prompt"]
    train_q = {r["prompt"][0]["content"] for r in a["train"]}
    test_q = {r["prompt"][0]["content"] for r in a["test"]}
    assert len(train_q) == 100 and len(test_q) == 20 and not train_q & test_q
    for row in list(a["train"]) + list(a["test"]):
        assert set(COLUMNS) <= set(row)
        content = row["prompt"][0]["content"]
        assert row["prompt"][0]["role"] == "user" and content.endswith(SUFFIX)
        expression = content[len("Compute ") : -len(SUFFIX) - 1]  # "a o b o c"
        assert str(eval(expression)) == row["answer"] and int(row["answer"]) >= 0
    assert len(all_problems()) == 1899
    with pytest.raises(ValueError):
        make_synthetic(n_train=1899, n_eval=1)
