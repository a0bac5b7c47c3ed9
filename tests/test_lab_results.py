"""Committed lab results: archiving a run's files, reading them back, and the docs' numbers recomputed from them."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from mo_align.lab import results
from mo_align.lab.results import ResultsError, archive, archived_name, check_docs, docs_blocks, unpack


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS_WITH_RESULTS = ("docs/lab.md", "README.md")


def _fake_run(root, name, accuracy=0.5):
    run = root / name
    run.mkdir(parents=True)
    (run / "mo_summary.json").write_text(json.dumps({"run_name": name, "final": {"accuracy": accuracy}}))
    (run / "lab_eval_scores.json").write_text(json.dumps({"objectives": ["accuracy"], "evals": []}))
    (run / "lab_settings.json").write_text(json.dumps({"seed": 0}))
    return str(run)


def test_archive_keeps_each_file_byte_for_byte_and_unpack_relabels_only_the_run_name(tmp_path):
    src = _fake_run(tmp_path / "out", "ctwa-seed3", accuracy=0.25)
    dest = tmp_path / "archive"
    assert archive([src], str(dest), label="ctwa@matched", note="--eta matched") == ["ctwa@matched-seed3"]
    for f in results.RUN_FILES:
        with gzip.open(dest / "ctwa@matched-seed3" / (f + ".gz"), "rb") as g:
            assert g.read() == (tmp_path / "out" / "ctwa-seed3" / f).read_bytes()
    index = json.loads((dest / "index.json").read_text())
    assert index["runs"]["ctwa@matched-seed3"] == {
        "source": "ctwa-seed3",
        "label": "ctwa@matched",
        "note": "--eta matched",
    }
    (run_dir,) = unpack(str(dest), str(tmp_path / "back"))
    summary = json.loads(Path(run_dir, "mo_summary.json").read_text())
    assert summary == {"run_name": "ctwa@matched-seed3", "final": {"accuracy": 0.25}}
    assert Path(run_dir, "lab_settings.json").read_text() == json.dumps({"seed": 0})


def test_archive_extends_an_index_and_never_overwrites_a_result(tmp_path):
    dest = str(tmp_path / "archive")
    archive([_fake_run(tmp_path / "a", "linear-seed0")], dest)
    archive([_fake_run(tmp_path / "a", "linear-seed1")], dest)
    assert list(json.loads(Path(dest, "index.json").read_text())["runs"]) == ["linear-seed0", "linear-seed1"]
    with pytest.raises(ResultsError, match="already in"):
        archive([_fake_run(tmp_path / "b", "linear-seed0")], dest)


@pytest.mark.parametrize(
    "run_name, label, message",
    [("ctwa", "ctwa@matched", "no -seed<N> suffix"), ("ctwa-seed0", "a b", "letters, digits")],
)
def test_bad_labels_are_one_line(tmp_path, run_name, label, message):
    with pytest.raises(ResultsError, match=message):
        archive([_fake_run(tmp_path, run_name)], str(tmp_path / "archive"), label=label)


def test_a_run_without_its_files_is_refused(tmp_path):
    run = tmp_path / "linear-seed0"
    run.mkdir()
    with pytest.raises(
        ResultsError, match=r"lacks \['mo_summary.json', 'lab_eval_scores.json', 'lab_settings.json'\]"
    ):
        archive([str(run)], str(tmp_path / "archive"))


def test_a_tampered_index_is_one_line(tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({"runs": {"../../etc": {}}}))
    with pytest.raises(ResultsError, match="plain run names"):
        unpack(str(tmp_path), str(tmp_path / "out"))


def test_archived_name():
    assert archived_name("ctwa-seed12", "ctwa@matched") == "ctwa@matched-seed12"
    assert archived_name("linear-seed0", None) == "linear-seed0"
    assert archived_name("smooth_tchebycheff-seed3", "{algorithm}@matched") == "smooth_tchebycheff@matched-seed3"


def test_one_label_template_names_the_rows_of_several_algorithms(tmp_path):
    out = tmp_path / "lab"
    runs = [_fake_run(out, name) for name in ("gradnorm-seed0", "dynamic-seed0", "dynamic-seed1")]
    dest = tmp_path / "archive"
    assert archive(runs, str(dest), label="{algorithm}@matched") == [
        "gradnorm@matched-seed0",
        "dynamic@matched-seed0",
        "dynamic@matched-seed1",
    ]
    index = json.loads((dest / "index.json").read_text())["runs"]
    assert index["dynamic@matched-seed1"] == {"source": "dynamic-seed1", "label": "dynamic@matched", "note": None}
    with pytest.raises(ResultsError, match="letters, digits"):
        archive(runs, str(tmp_path / "other"), label="{algorithm} matched")


def test_docs_blocks_and_a_stale_block_is_reported(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text(
        "x\n<!-- lab-results: arch/one -->\n```text\nold\n```\n<!-- lab-results: arch/two -->\n```text\nnew\n```\n"
    )
    assert docs_blocks(page.read_text()) == [("--tables arch/one", "old\n"), ("--tables arch/two", "new\n")]
    brief = "<!-- lab-summary: arch/one -->\n```text\nshort\n```\n<!-- lab-horizon: a b -->\n```text\nh\n```\n"
    assert docs_blocks(brief) == [("--summary arch/one", "short\n"), ("--horizon a b", "h\n")]
    monkeypatch.setattr(results, "tables", lambda src: "new\n")
    assert check_docs(str(page), str(tmp_path)) == [
        f"{page}: the block differs from `python -m mo_align.lab --tables arch/one`"
    ]


@pytest.mark.parametrize("page", DOCS_WITH_RESULTS)
def test_every_lab_number_in_the_docs_is_recomputed_from_committed_files(page):
    """The oracle for the published lab numbers: each quoted block equals the tables recomputed from its archive."""
    path = os.path.join(ROOT, page)
    with open(path, encoding="utf-8") as f:
        quoted = docs_blocks(f.read())
    for command, _ in quoted:
        for where in command.split()[1:]:
            assert os.path.isfile(os.path.join(ROOT, where, "index.json")), f"{page} quotes {where}, not committed"
    assert page != "docs/lab.md" or len(quoted) >= 2  # the results table and the horizon check
    assert page != "README.md" or [c.split()[0] for c, _ in quoted] == ["--summary"]  # the README's lab summary
    assert check_docs(path, ROOT) == []


def test_the_lab_command_archives_a_lab_output_and_reports_a_missing_archive_in_one_line(tmp_path, capsys):
    from mo_align.lab.run import main

    out = tmp_path / "lab"
    _fake_run(out, "ctwa-seed0")
    _fake_run(out, "ctwa-seed1")
    (out / "logs").mkdir()  # not a run: left out
    dest = tmp_path / "archive"
    main(["--archive", str(out), str(dest), "--label", "ctwa@matched"])
    assert "archived 2 runs" in capsys.readouterr().out
    assert sorted(json.loads((dest / "index.json").read_text())["runs"]) == [
        "ctwa@matched-seed0",
        "ctwa@matched-seed1",
    ]
    with pytest.raises(SystemExit) as exc:
        main(["--tables", str(tmp_path / "nowhere")])
    assert exc.value.code == 2
    assert "nowhere/index.json: not a readable lab results index" in capsys.readouterr().err


def test_law_lines_pool_each_configurations_seeds_by_hand():
    def scores(law, largest, previous, forced):
        rates = {"law": law, "largest_weight": largest, "previous_change": previous}
        return {
            "records": 9,
            "hit_rates": {p: {"hits": h, "n": n} for p, (h, n) in rates.items()},
            "not_significant": 2,
            "undetermined": 1,
            "forced_intervals": forced,
            "judged_intervals": 3,
        }

    result = {
        "runs": {
            "ctwa-seed0": {"law_scores": scores((5, 6), (3, 6), (2, 3), 3)},
            "ctwa-seed1": {"law_scores": scores((4, 6), (6, 6), (1, 2), 2)},
            "linear-seed0": {"law_scores": scores((6, 6), (0, 6), (0, 0), 0)},
        }
    }
    lines = results.law_lines(result)
    assert lines[3].split() == ["ctwa", "18", "9/12", "(75%)", "9/12", "(75%)", "3/5", "(60%)", "4", "+", "2", "5/6"]
    assert lines[4].split() == ["linear", "9", "6/6", "(100%)", "0/6", "(0%)", "0/0", "2", "+", "1", "0/3"]
