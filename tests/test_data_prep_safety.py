"""``mo-align data math500``: an overwrite replaces the old splits only once the new ones are written, and a blank
gold is refused like a null one."""

from __future__ import annotations

import json
import os

import pytest

from mo_align.data import math500
from tests.test_reliability import _prep, _source


def _snapshot(folder) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


@pytest.fixture
def old_splits(tmp_path, capsys):
    out = tmp_path / "data"
    assert _prep(["--source", _source(tmp_path / "old.jsonl", 50), "--out", str(out)], capsys)[0] == 0
    before = _snapshot(out)
    assert sorted(before) == ["test.parquet", "train.parquet", "validation.parquet"]
    return out, before


def _error_line(err: str) -> str:
    """The one error line (stderr also carries datasets' progress bars)."""
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and err.endswith(lines[0]), err
    return lines[0]


def _hub_down(*args, **kwargs):
    raise ConnectionError("Couldn't reach 'HuggingFaceH4/MATH-500' on the Hub (ConnectionError)")


@pytest.mark.parametrize("failure", ["missing file", "null gold", "too few rows", "hub unreachable"])
def test_a_failing_source_with_overwrite_leaves_the_old_splits_byte_identical(
    tmp_path, capsys, monkeypatch, old_splits, failure
):
    """Before: --overwrite removed the old split files first, then the source failed: the directory was empty."""
    import datasets

    out, before = old_splits
    argv = ["--out", str(out), "--overwrite", "--format", "jsonl"]
    if failure == "missing file":
        argv += ["--source", str(tmp_path / "nope.jsonl")]
    elif failure == "null gold":
        argv += ["--source", _source(tmp_path / "n.jsonl", 60, {59: {"answer": None}})]
    elif failure == "too few rows":
        argv += ["--source", _source(tmp_path / "few.jsonl", 10)]
    else:
        monkeypatch.setattr(datasets, "load_dataset", _hub_down)  # the default source is the Hub
    code, err = _prep(argv, capsys)
    assert code == 2 and _error_line(err).startswith("python -m mo_align.data.math500: error: ")
    assert _snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == sorted(p for p in os.listdir(tmp_path) if not p.startswith("."))


def test_a_failing_write_with_overwrite_leaves_the_old_splits_and_no_temporary_directory(
    tmp_path, capsys, monkeypatch, old_splits
):
    out, before = old_splits
    real = math500.write_splits

    def full_disk(splits, folder, fmt="parquet"):
        real({"train": splits["train"]}, folder, fmt)  # one file written, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(math500, "write_splits", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _prep(["--source", _source(tmp_path / "new.jsonl", 100), "--out", str(out), "--overwrite"], capsys)
    assert _snapshot(out) == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # the temporary sibling is removed


def test_overwrite_swaps_in_the_new_splits_with_the_directory_mode_kept(tmp_path, capsys, old_splits):
    out, _ = old_splits
    os.chmod(out, 0o750)
    source = _source(tmp_path / "new.jsonl", 100)
    assert _prep(["--source", source, "--out", str(out), "--overwrite", "--format", "jsonl"], capsys)[0] == 0
    assert sorted(os.listdir(out)) == ["test.jsonl", "train.jsonl", "validation.jsonl"]
    assert [len(math500.load_split(str(out), s)) for s in math500.SPLITS] == [60, 20, 20]
    assert os.stat(out).st_mode & 0o777 == 0o750
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def _solution_source(path, n, golds):
    """A TRL / open-r1 style source: ``problem`` + ``solution`` (the gold is its last boxed answer)."""
    rows = [
        {"problem": f"What is {i} + 1?", "solution": golds.get(i, f"\\boxed{{{i + 1}}}"), "unique_id": f"u{i}"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("gold", ["", "   ", "\t\n"])
@pytest.mark.parametrize("field", ["answer", "solution"])
def test_an_empty_or_whitespace_gold_is_refused_naming_row_and_field(tmp_path, capsys, gold, field):
    """Before: an empty gold became the gold string '' (or '   ') and the run trained on it."""
    if field == "answer":
        src = _source(tmp_path / "s.jsonl", 60, {7: {"answer": gold}})
    else:
        src = _solution_source(tmp_path / "s.jsonl", 60, {7: gold})
    out = tmp_path / "out"
    code, err = _prep(["--source", src, "--out", str(out)], capsys)
    assert code == 2 and _error_line(err).endswith(
        f"s.jsonl: row 7 (u7): the gold answer is empty (field {field!r} = {gold!r})"
    )
    assert not out.exists()


def test_a_blank_gold_in_a_split_in_mo_align_layout_is_refused_on_load(tmp_path):
    """A split file already in mo_align's five columns is read without conversion: the blank check still runs."""
    from datasets import Dataset

    rows = [math500.to_mo_align_row({"problem": f"p{i}", "answer": str(i), "unique_id": f"u{i}"}) for i in range(3)]
    rows[1]["answer"] = " "
    Dataset.from_list(rows).to_json(str(tmp_path / "train.jsonl"))
    with pytest.raises(ValueError, match=r"train.jsonl: row 1 \(u1\): the gold answer is empty \(field 'answer'"):
        math500.load_split(str(tmp_path), "train")
