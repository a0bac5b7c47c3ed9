"""The report's empirical fronts: points grouped over seeds, t-intervals, non-dominated points and hypervolume per
algorithm against hand-computed values, and the section, figure and console lines `mo-align report` writes."""

import json
import math

import pytest

from mo_align.cli import main as cli_main
from mo_align.runs.report import PNG_SIGNATURE, write_report
from mo_align.runs.report.fronts import empirical_fronts, point_key


def _run(name: str, algorithm: str, acc: float, brev: float, ci=None) -> dict:
    entry = {"step": 10, "means": {"acc": acc, "brev": brev}}
    if ci:
        entry["ci"] = ci
    hp = {"alphas": [float(name[-3]), float(name[-1])]} if name.startswith("soup") else {"weights": [1, 0]}
    run = {"run_name": name, "algorithm": algorithm, "objectives": ["acc", "brev"], "eval": [entry], "seed": 0}
    return {**run, "weighting_hyperparameters": hp}


RUNS = [
    _run("linear-w1_0-seed0", "linear", 0.7, 0.1),
    _run("linear-w1_0-seed1", "linear", 0.9, 0.3),  # point w1_0: mean (0.8, 0.2)
    _run("linear-w0.5_0.5-seed0", "linear", 0.5, 0.5),
    _run("linear-w0.5_0.5-seed1", "linear", 0.5, 0.5),
    _run("linear-w0_1-seed0", "linear", 0.3, 0.4),  # dominated by (0.5, 0.5)
    _run("linear-w0_1-seed1", "linear", 0.3, 0.4),
    _run("soup-a1_0", "soup", 0.6, 0.6, ci={"acc": [0.5, 0.7], "brev": [0.55, 0.65]}),
    _run("soup-a0_1", "soup", 0.2, 0.9),
]


def test_point_key_drops_only_the_seed():
    assert point_key("ctwa-w0.5_0_0.5-learning_rate=0.001-seed12") == "ctwa-w0.5_0_0.5-learning_rate=0.001"
    assert point_key("soup-a0.5_0.5") == "soup-a0.5_0.5"
    assert point_key("linear-seed0#2") == "linear"
    # runs named without a seed: one point per weighting configuration (seeds share it)
    assert point_key("r0", {"weights": [1, 0]}) == point_key("r1", {"weights": [1, 0]})
    assert point_key("soup-a1_0", {"alphas": [1, 0]}) != point_key("soup-a0_1", {"alphas": [0, 1]})


def test_fronts_against_hand_computed_values():
    from mo_align.runs.summary import normalize_summary

    fronts = empirical_fronts([normalize_summary(r) for r in RUNS], ["acc", "brev"], [0.0, 0.0])
    linear, soup = fronts["linear"], fronts["soup"]
    p = linear["points"]["linear-w1_0"]
    assert p["seeds"] == 2 and p["mean"] == pytest.approx({"acc": 0.8, "brev": 0.2})
    half = 12.706 * math.sqrt(0.02) / math.sqrt(2)  # t_{0.975,1} · s / √2, s = std(0.7, 0.9) = √0.02
    assert p["ci"]["acc"] == pytest.approx([0.8 - half, 0.8 + half]) and p["ci_over"] == "2 seeds (t)"
    assert linear["front"] == ["linear-w1_0", "linear-w0.5_0.5"]
    # HV of {(0.8, 0.2), (0.5, 0.5)} above the origin: 0.8·0.2 + 0.5·(0.5 − 0.2)
    assert linear["hypervolume"] == pytest.approx(0.16 + 0.15)
    assert soup["front"] == ["soup-a1_0", "soup-a0_1"]
    assert soup["hypervolume"] == pytest.approx(0.6 * 0.6 + 0.2 * (0.9 - 0.6))
    one = soup["points"]["soup-a1_0"]
    assert one["ci"] == {"acc": [0.5, 0.7], "brev": [0.55, 0.65]} and one["ci_over"] == "prompts (bootstrap)"


def test_report_writes_the_fronts_section_figure_and_console_lines(tmp_path, capsys):
    dirs = []
    for r in RUNS:
        d = tmp_path / r["run_name"]
        d.mkdir()
        (d / "mo_summary.json").write_text(json.dumps(r))
        dirs.append(str(d))
    result = write_report([json.loads((tmp_path / n / "mo_summary.json").read_text()) for n in dirs], tmp_path / "r")
    assert set(result["fronts"]) == {"linear", "soup"}
    md = (tmp_path / "r/report.md").read_text()
    assert "## Fronts (preference sweeps)" in md and "| linear | 3 | 2 | 2 | 0.3100 |" in md
    assert (tmp_path / "r/fronts.png").read_bytes().startswith(PNG_SIGNATURE)
    assert cli_main(["report", *dirs, "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "linear                 3 points    2 non-dominated  HV 0.3100" in out
    # runs without a sweep (one point per algorithm) get no fronts section
    plain = write_report([RUNS[0], RUNS[6]], tmp_path / "p")
    assert plain["fronts"] == {} and "Fronts" not in (tmp_path / "p/report.md").read_text()
