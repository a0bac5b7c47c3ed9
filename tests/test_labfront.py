"""make lab-front's pipeline (lab warm start, sweep, soup of the corner runs, report with fronts) on a tiny budget,
and its one-line refusal of an algorithm the checkout lacks."""

import json

import pytest
import yaml

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


def test_lab_front_points_are_lab_runs_with_no_settings_of_their_own(tmp_path):
    """Each point of the lab-front sweep trains exactly what a lab run of its algorithm trains (the recipe under the
    lab's scaling rule, --eta included), except the sweep's own harness (resume, eval schedule), its name, seed and
    preference; nothing is written, nothing trained."""
    import argparse
    import dataclasses
    import warnings

    from mo_align.lab.scaling import lab_config, lab_settings
    from mo_align.sweep import load_sweep
    from mo_align.sweep.spec import point_recipe
    from mo_align.train import parse_args

    (tmp_path / "data").mkdir()
    args = argparse.Namespace(
        out=str(tmp_path), algorithms=["linear", "ctwa", "soup"], seeds=[0], steps=12, eta="matched"
    )
    sweep = load_sweep(labfront.write_sweep_file(args, "sft-dir", str(tmp_path / "data"), {"reference_length": 21.0}))
    assert sorted({p.label for p in sweep.points}) == ["ctwa", "linear"]
    own = {"output_dir", "run_name", "seed", "eval_steps", "save_strategy", "save_steps", "save_total_limit"}
    for point in sweep.points:
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(point_recipe(sweep, point)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, got, _ = parse_args(["--config", str(tmp_path / "p.yaml")])
        want = lab_config(point.label, 12, "matched", output_dir="x", seed=point.seed)
        diff = {f.name for f in dataclasses.fields(got) if getattr(got, f.name) != getattr(want, f.name)}
        assert diff - own <= {"weighting_kwargs"}, point.name
        pref = "weights"  # linear's and CTWA's preference field: their (initial) weights
        assert {**got.weighting_kwargs, pref: None} == {**want.weighting_kwargs, pref: None}
        assert got.weighting_kwargs[pref] == point.preference
    ctwa = lab_settings("ctwa", 12, "matched")
    assert ctwa["weighting_kwargs"]["lambda_lr"] == pytest.approx(0.05 * 810 / 6)  # 12 steps = 6 batches
    assert (
        ctwa["weighting_kwargs"]["obj_targets"] == [1.0, 0.95, 0.95] and ctwa["advantage_estimator"] == "reinforce_pp"
    )
