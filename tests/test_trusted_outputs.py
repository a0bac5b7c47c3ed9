"""What a person reads about a real tiny run, checked against the run itself: the model card, report.md, the
console of ``mo-align report`` and ``mo_summary.json`` (recipes/tiny/linear.yaml, 4 steps, evaluations at steps 0,
2 and 4, trained once for the module)."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mo_align.cli import main as cli_main
from mo_align.hub import main as push
from mo_align.runs.summary import load_run
from tests.test_cli import tiny_recipe
from tests.test_hub import FakeHfApi


REPO = "someone/tiny-linear"
REASON = "no running-mean length before the first training batch"


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    """(run directory, recipe path): ``python -m mo_align.train --config <recipe>``, as a person launches it."""
    tmp = tmp_path_factory.mktemp("trusted")
    recipe = tiny_recipe(tmp, tiny_model_dir, max_steps=4, eval_steps=2)
    cmd = [sys.executable, "-m", "mo_align.train", "--config", recipe, "--disable_tqdm", "true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "out", recipe


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "mo_summary.json").read_text())


def test_card_of_a_real_run_names_its_dataset_and_the_uploaded_recipe(tiny_run, tmp_path, monkeypatch):
    """Before: "## Dataset / Not recorded." (the card read summary["dataset"]; the summary stores dataset_name) and
    a launch command naming a recipe path the repository does not hold. Now the card names the dataset, the run
    directory holds the recipe it was launched with (mo_recipe.yaml, uploaded by mo-align push) and the card's
    command names that file."""
    run_dir, recipe = tiny_run
    summary = _summary(run_dir)
    assert summary["dataset_name"] == "synthetic"
    assert summary["launch_command"] == f"python -m mo_align.train --config {recipe} --disable_tqdm true"
    assert yaml.safe_load((run_dir / "mo_recipe.yaml").read_text()) == yaml.safe_load(Path(recipe).read_text())
    monkeypatch.setenv("HF_TOKEN", "hf_NotUploadedAnywhere42")
    api = FakeHfApi(tmp_path / "hub")
    assert push([str(run_dir), "--repo-id", REPO], api=api) == 0
    uploaded = api.uploaded(REPO)
    card = (uploaded / "README.md").read_text()
    assert "## Dataset\n\n`synthetic`\n" in card and "Not recorded" not in card
    assert (uploaded / "mo_recipe.yaml").read_text() == (run_dir / "mo_recipe.yaml").read_text()
    assert "```bash\npython -m mo_align.train --config mo_recipe.yaml --disable_tqdm true\n```" in card
    assert "@misc{lu2026interference," in card and "eprint = {2602.06869}," in card
    assert "## Interference\n\nVerdict: none (the rule of arXiv 2602.06869" in card  # the summary's verdict


def test_step0_conciseness_without_a_reference_has_no_value_and_no_verdict(tiny_run, tmp_path, capsys):
    """Before: the step-0 evaluation scored conciseness against a running mean that did not exist yet (every
    completion 1.0), so the report showed conciseness 1.000 -> 0.000, Δ -1.000 [-1.000, -1.000], a significant
    drop. Now that evaluation is not available (NaN, with the reason), the run has no conciseness Δ, and neither
    the report nor the console shows a conciseness change."""
    run_dir, _ = tiny_run
    summary = _summary(run_dir)
    first, last = summary["eval"][0], summary["eval"][-1]
    assert (first["step"], last["step"]) == (0, 4)
    assert first["unavailable"] == {"conciseness": REASON} and first["means"]["conciseness"] is None
    assert "unavailable" not in last and math.isfinite(last["means"]["conciseness"])  # a reference exists by then
    assert summary["start"]["conciseness"] is None and summary["delta"]["conciseness"] is None
    assert last["delta_ci"]["conciseness"] == [None, None]
    assert summary["preference"]["objectives"] == ["accuracy", "clarity"]  # the fixed scalar leaves it out
    logged = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    step0 = next(e for e in logged if "eval_conciseness/mean" in e and e["step"] == 0)
    assert math.isnan(step0["eval_conciseness/mean"]) and math.isnan(step0["eval_conciseness/running_mean"])
    out = tmp_path / "report"
    assert cli_main(["report", str(run_dir), "--out", str(out)]) == 0
    console = capsys.readouterr().out
    result = json.loads((out / "report.json").read_text())
    row = result["runs"]["out"]
    assert row["significant"]["conciseness"] is None and row["delta"]["conciseness"] is None
    assert result["seed_level"]["vs_start"]["rows"]["linear"]["cells"]["conciseness"]["estimate"] is None
    md = (out / "report.md").read_text()
    assert "| — (no step-0 value) |" in md and f"- out: conciseness has no Δ: {REASON}" in md
    assert "-1.000" not in md and "-1.000" not in console
    per_run = console[console.index("per run: Δ vs start") :].splitlines()
    assert re.split(r"\s{2,}", per_run[3])[2] == "— (no step-0 value)"


def _interfering_copy(run_dir: Path, dest: Path, seed: int) -> Path:
    """The real run's summary with its last evaluation changed to a run that interferes on accuracy: accuracy fell
    significantly while the fixed scalar rose, and conciseness rose +0.516 [+0.484, +0.547] after a negative
    covariance event on it."""
    raw = copy.deepcopy(_summary(run_dir))
    raw.update(run_name=f"linear-seed{seed}", seed=seed)
    raw["eval"][0]["means"] = {"accuracy": 0.3, "conciseness": 0.2, "clarity": 0.0}
    raw["eval"][0].pop("unavailable")
    last = raw["eval"][-1]
    last["means"] = {"accuracy": 0.1, "conciseness": 0.716, "clarity": 0.5}
    last["delta_ci"] = {"accuracy": [-0.3, -0.1], "conciseness": [0.484, 0.547], "clarity": [0.45, 0.55]}
    last["scalar_delta_ci"] = [0.05, 0.3]
    for key in ("start", "final", "best", "delta", "interference"):
        raw.pop(key, None)  # rebuilt from the eval curve when read
    raw["events"] = [{"step": 3, "kind": "negative_covariance", "objective": "conciseness", "message": "EMA < 0"}]
    (dest / raw["run_name"]).mkdir(parents=True)
    (dest / raw["run_name"] / "mo_summary.json").write_text(json.dumps(raw))
    return dest / raw["run_name"]


def test_one_interference_verdict_in_the_summary_the_report_and_the_console(tiny_run, tmp_path, capsys):
    """Before: report.md listed "interference: conciseness" for a run whose conciseness rose +0.516 [+0.484,
    +0.547] (a negative-covariance event counted as interference) while the console said "accuracy" only. Now
    mo_summary.json, report.md and the console give, per run and per algorithm, the verdict of the one rule
    (mo_align.stats.interfering): on the real run and on three runs that interfere on accuracy."""
    run_dir, _ = tiny_run
    assert _summary(run_dir)["interference"] == []  # written by the trainer: nothing fell, nothing rose
    dirs = [_interfering_copy(run_dir, tmp_path / "runs", seed) for seed in range(3)]
    for path, expected in [(run_dir, "no"), *((d, "yes: accuracy") for d in dirs)]:
        out = tmp_path / f"report-{path.name}"
        assert cli_main(["report", str(path), "--out", str(out)]) == 0
        console = capsys.readouterr().out
        run = load_run(path)
        assert run["interference"] == ([] if expected == "no" else ["accuracy"])  # the summary's verdict
        per_run = console[console.index("per run: Δ vs start") :].splitlines()
        assert re.split(r"\s{2,}", per_run[3])[-1] == expected  # the console's
        md = (out / "report.md").read_text()
        assert f"| {expected} | eval |" in md and f"- {path.name}: {expected}" in md  # report.md's
    out = tmp_path / "report-seeds"
    assert cli_main(["report", *map(str, dirs), "--out", str(out)]) == 0
    console = capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert md.count("| yes: accuracy | eval |") == 3 and "yes: conciseness" not in md
    assert "negative_covariance on conciseness" in md  # the event is a note, not a verdict
    seed_row = next(line for line in md.splitlines() if line.startswith("| linear | 3 | -0.200 ["))
    assert seed_row.endswith("| accuracy |")  # the seed level: accuracy down, the scalar up, over 3 seeds
    algorithm_row = next(line for line in console.splitlines() if line.startswith("linear "))
    assert algorithm_row.endswith("  accuracy")
