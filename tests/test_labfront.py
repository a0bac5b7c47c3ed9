"""make lab-front's pipeline (lab warm start, sweep, soup of the corner runs, report with fronts) on a tiny budget,
and its one-line refusal of an algorithm the checkout lacks."""

import json

import pytest

from mo_align.sweep import labfront
from mo_align.weightings import WEIGHTINGS


def test_a_missing_algorithm_is_refused_in_one_line():
    with pytest.raises(SystemExit, match=r"unknown algorithm\(s\) \['nope'\]"):
        labfront.check_algorithms(["linear", "nope"])
    if "upgrad" in WEIGHTINGS:  # the TorchJD family is merged: UPGrad is available and takes a pref_vector
        labfront.check_algorithms(list(labfront.ALGORITHMS))
    else:
        with pytest.raises(SystemExit) as info:
            labfront.check_algorithms(list(labfront.ALGORITHMS))
        message = str(info.value)
        assert "weighting 'upgrad' is not available" in message and "--algorithms linear ctwa soup" in message
        assert "\n" not in message


@pytest.mark.slow  # about 2 minutes on 2 cores: a short warm start, 5 + 2 two-step runs, 6 soup evaluations
def test_lab_front_writes_fronts_for_linear_ctwa_and_the_soup(tmp_path):
    out = tmp_path / "front"
    argv = ["--out", str(out), "--cache", str(tmp_path / "cache"), "--steps", "2", "--sft-steps", "5"]
    labfront.main([*argv, "--eval-prompts", "16", "--algorithms", "linear", "ctwa", "soup"])
    report = json.loads((out / "report/report.json").read_text())
    fronts = report["fronts"]
    assert {a: len(f["points"]) for a, f in fronts.items()} == {"linear": 5, "ctwa": 2, "soup": 6}
    assert all(f["hypervolume"] is not None and f["front"] for f in fronts.values())
    soup = json.loads((out / "soup/soup.json").read_text())
    assert all(
        p.endswith(f"linear-w{w}-seed0") for p, w in zip(soup["runs"], ["1_0_0", "0_1_0", "0_0_1"], strict=True)
    )
    table = (out / "front.md").read_text()
    assert "`make lab-front`" in table and "| soup | 6 |" in table and "| ctwa | 2 |" in table
    assert (out / "report/fronts.png").stat().st_size > 1000
