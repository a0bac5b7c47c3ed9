"""``mo_align.runs.report``: hypervolume and dominance against hand-computed answers, seed aggregation, interference,
the written report (markdown, self-contained html, valid PNGs), the trainer_state.json fallback and the CLI."""

import base64
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from mo_align.cli import main
from mo_align.runs.report import (
    PNG_SIGNATURE,
    ReportError,
    analyse,
    format_console_table,
    hypervolume,
    interference,
    non_dominated,
    write_report,
)
from mo_align.runs.summary import load_run, load_runs
from mo_align.train import objective_table


OBJECTIVES = ["accuracy", "conciseness", "clarity"]
PARETO_PNGS = {"pareto_accuracy__conciseness.png", "pareto_accuracy__clarity.png", "pareto_conciseness__clarity.png"}
ALL_PNGS = {"eval_curves.png", "weights.png", "cov_ema.png"} | PARETO_PNGS


def summary(name, algorithm, seed, start, final, events=(), curves=True, objectives=OBJECTIVES):
    """A version-1 mo_summary.json dict: a 3-point eval curve from start to final, and the training curves."""
    start, final = dict(zip(objectives, start)), dict(zip(objectives, final))
    mid = {o: (start[o] + final[o]) / 2 + 0.01 for o in objectives}
    evals = [
        {"step": s, "means": m, "completion_length": 20.0 - s / 10} for s, m in ((0, start), (10, mid), (20, final))
    ]
    return {
        "version": 1,
        "run_name": name,
        "output_dir": f"/runs/{name}",
        "algorithm": algorithm,
        "weighting_hyperparameters": {"cov_targets": [0.15, 0.08, 0.08]} if algorithm == "ctwa" else {},
        "objectives": list(objectives),
        "seed": seed,
        "launch_command": f"python -m mo_align.train --config recipes/tiny/{algorithm}.yaml --seed {seed}",
        "eval": evals,
        "start": start,
        "final": final,
        "best": {o: max(e["means"][o] for e in evals) for o in objectives},
        "delta": {o: final[o] - start[o] for o in objectives},
        "weights": [
            {"step": s, "weights": {o: 1 / 3 + 0.01 * s * (k - 1) for k, o in enumerate(objectives)}}
            for s in range(1, 21)
        ]
        if curves
        else [],
        "cov_ema": [
            {"step": s, "values": {o: 0.1 - 0.01 * s * k for k, o in enumerate(objectives)}} for s in range(1, 21)
        ]
        if curves
        else [],
        "train_reward": [{"step": s, "means": dict.fromkeys(objectives, 0.4 + 0.01 * s)} for s in range(1, 21)]
        if curves
        else [],
        "events": list(events),
    }


def four_runs():
    """2 algorithms x 2 seeds, 3 objectives; ctwa-seed1 carries an event, linear-seed1 trades conciseness away."""
    event = {
        "step": 7,
        "kind": "negative_covariance",
        "objective": "clarity",
        "message": "Cov(clarity) < 0 for 5 steps",
    }
    return [
        summary("ctwa-seed0", "ctwa", 0, (0.40, 0.50, 0.30), (0.60, 0.55, 0.40)),
        summary("ctwa-seed1", "ctwa", 1, (0.40, 0.50, 0.30), (0.50, 0.65, 0.35), events=[event]),
        summary("linear-seed0", "linear", 0, (0.40, 0.50, 0.30), (0.45, 0.52, 0.31)),
        summary("linear-seed1", "linear", 1, (0.40, 0.50, 0.30), (0.70, 0.40, 0.30)),
    ]


# ---- hypervolume and dominance -------------------------------------------------------------------------------------
def test_hypervolume_2d_hand_computed():
    front = np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]])
    # slabs from the left: 0.2*0.8 + (0.5-0.2)*0.5 + (0.8-0.5)*0.2 = 0.16 + 0.15 + 0.06
    assert hypervolume(front, [0.0, 0.0]) == pytest.approx(0.37, abs=1e-12)
    # reference (0.1, 0.1): 0.1*0.7 + 0.3*0.4 + 0.3*0.1 = 0.07 + 0.12 + 0.03
    assert hypervolume(front, [0.1, 0.1]) == pytest.approx(0.22, abs=1e-12)
    # one point: its box
    assert hypervolume([[0.5, 0.4]], [0.0, 0.0]) == pytest.approx(0.2, abs=1e-12)
    assert hypervolume(np.empty((0, 2)), [0.0, 0.0]) == 0.0


def test_hypervolume_3d_inclusion_exclusion():
    a, b, c = (0.8, 0.4, 0.3), (0.3, 0.9, 0.5), (0.5, 0.5, 0.6)
    # Boxes [0, p] of a mutually non-dominated 3-D front; by inclusion-exclusion
    #   |A| = 0.8*0.4*0.3 = 0.096, |B| = 0.3*0.9*0.5 = 0.135, |C| = 0.5*0.5*0.6 = 0.150          sum 0.381
    #   |A∩B| = 0.3*0.4*0.3 = 0.036, |A∩C| = 0.5*0.4*0.3 = 0.060, |B∩C| = 0.3*0.5*0.5 = 0.075    sum 0.171
    #   |A∩B∩C| = 0.3*0.4*0.3 = 0.036
    #   union = 0.381 - 0.171 + 0.036 = 0.246
    assert hypervolume([a, b, c], [0.0, 0.0, 0.0]) == pytest.approx(0.246, abs=1e-12)
    # independent check: every coordinate is a multiple of 0.1, so counting the dominated 0.1-cells is exact
    cells = sum(
        any(all((i + 1) / 10 <= p[d] + 1e-9 for d, i in enumerate(cell)) for p in (a, b, c))
        for cell in itertools.product(range(10), repeat=3)
    )
    assert cells / 1000 == pytest.approx(0.246, abs=1e-12)


def test_dominated_points_do_not_change_hypervolume():
    front = [[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]]
    dominated = [[0.1, 0.1], [0.5, 0.4], [0.2, 0.8], [0.8, 0.0], [-0.3, 0.9]]  # inside, ties, duplicate, below ref
    assert hypervolume(front + dominated, [0.0, 0.0]) == pytest.approx(0.37, abs=1e-12)
    front3 = [[0.8, 0.4, 0.3], [0.3, 0.9, 0.5], [0.5, 0.5, 0.6]]
    assert hypervolume([*front3, [0.3, 0.4, 0.3], [0.5, 0.5, 0.6]], [0, 0, 0]) == pytest.approx(0.246, abs=1e-12)
    # a point that is not better than the reference in every objective adds nothing; NaN rows are ignored
    assert hypervolume([[0.9, 0.05], [np.nan, 0.9]], [0.1, 0.1]) == 0.0
    with pytest.raises(ValueError, match="do not match"):
        hypervolume(front, [0.0, 0.0, 0.0])


def test_non_dominated_known_answer_with_duplicates_and_ties():
    points = np.array(
        [
            [1.0, 0.0],  # 0 front
            [0.0, 1.0],  # 1 front
            [0.5, 0.5],  # 2 front
            [0.5, 0.5],  # 3 duplicate of 2: kept
            [0.4, 0.5],  # 4 tie on y with 2, worse on x: dominated
            [1.0, 0.0],  # 5 duplicate of 0: kept
            [0.2, 0.2],  # 6 dominated
            [1.0, -0.1],  # 7 tie on x with 0: dominated
            [np.nan, 2.0],  # 8 incomplete: never on the front
        ]
    )
    expected = [True, True, True, True, False, True, False, False, False]
    assert non_dominated(points).tolist() == expected
    assert non_dominated(np.empty((0, 3))).tolist() == []
    assert non_dominated([[0.3, 0.3, 0.3]]).tolist() == [True]


def _dominance_by_definition(points):
    """The pairwise definition (mo_align's own filter before moocore): row i dominates row j when it is >= everywhere
    and > somewhere; a row with a NaN or an infinity dominates nothing and is never non-dominated."""
    p = np.asarray(points, dtype=float)
    finite = np.isfinite(p).all(axis=1)
    at_least = (p[:, None, :] >= p[None, :, :]).all(axis=2)
    better = (p[:, None, :] > p[None, :, :]).any(axis=2)
    return finite & ~(at_least & better & finite[:, None]).any(axis=0)


def test_non_dominated_matches_the_pairwise_definition_on_2000_random_sets():
    rng = np.random.default_rng(14)
    kept_duplicates = 0
    for trial in range(2000):
        n, m = int(rng.integers(1, 13)), int(rng.integers(1, 5))
        pts = rng.integers(0, 4, size=(n, m)).astype(float)  # small integer grid: many ties and duplicates
        if trial % 5 == 0:
            pts[rng.integers(0, n), rng.integers(0, m)] = rng.choice([np.nan, np.inf, -np.inf])
        ours = non_dominated(pts)
        expected = _dominance_by_definition(pts)
        assert ours.tolist() == expected.tolist(), pts
        front = pts[expected]
        kept_duplicates += len(front) - len(np.unique(front, axis=0))
    assert kept_duplicates > 100  # the sets did exercise duplicated points on the front


# ---- aggregation and interference ----------------------------------------------------------------------------------
def test_seed_aggregation_median_and_range():
    runs = [
        summary("a0", "alg", 0, (0.1, 0.1, 0.1), (0.5, 0.2, 0.9)),
        summary("a1", "alg", 1, (0.2, 0.1, 0.1), (0.3, 0.6, 0.7)),
        summary("a2", "alg", 2, (0.3, 0.1, 0.1), (0.4, 0.4, 0.8)),
        summary("b0", "other", 0, (0.1, 0.1, 0.1), (0.2, 0.2, 0.2)),
    ]
    result = analyse(runs)
    agg = result["algorithms"]["alg"]
    assert agg["runs"] == ["a0", "a1", "a2"]
    assert agg["final"]["accuracy"] == {"median": pytest.approx(0.4), "min": 0.3, "max": 0.5, "n": 3}
    assert agg["final"]["conciseness"]["median"] == pytest.approx(0.4)
    assert agg["final"]["clarity"] == {"median": pytest.approx(0.8), "min": 0.7, "max": 0.9, "n": 3}
    # accuracy deltas 0.4, 0.1, 0.1
    assert agg["delta"]["accuracy"]["median"] == pytest.approx(0.1)
    assert agg["delta"]["accuracy"]["min"] == pytest.approx(0.1)
    assert agg["delta"]["accuracy"]["max"] == pytest.approx(0.4)
    # all finals in [0, 1] -> reference = origin; one point's HV is its box volume
    assert result["reference"] == [0.0, 0.0, 0.0]
    assert result["hypervolume"]["a0"] == pytest.approx(0.5 * 0.2 * 0.9)
    assert agg["hv_of_median_final"] == pytest.approx(0.4 * 0.4 * 0.8)
    assert agg["median_run_hv"] == pytest.approx(np.median([0.5 * 0.2 * 0.9, 0.3 * 0.6 * 0.7, 0.4 * 0.4 * 0.8]))
    assert agg["run_hv_range"] == [pytest.approx(0.09), pytest.approx(0.128)]  # HVs 0.09, 0.126, 0.128
    assert result["algorithms"]["other"]["runs"] == ["b0"]
    assert result["non_dominated"] == ["a0", "a1", "a2"]  # b0 is dominated by a2


def test_default_reference_outside_unit_interval_uses_worst_start():
    runs = [
        summary("a", "x", 0, (0.2, 30.0, 0.1), (0.5, 12.0, 0.4)),
        summary("b", "x", 1, (0.3, 25.0, 0.1), (0.6, 40.0, 0.2)),
    ]
    result = analyse(runs)
    assert result["reference"] == [0.0, 25.0, 0.0]
    assert result["hypervolume"]["a"] == 0.0  # conciseness fell below the worst start
    assert result["hypervolume"]["b"] == pytest.approx(0.6 * 15.0 * 0.2)
    assert analyse(runs, reference="0,10,0")["hypervolume"]["a"] == pytest.approx(0.5 * 2.0 * 0.4)
    with pytest.raises(ReportError, match="has 2 values but the runs have 3 objectives"):
        analyse(runs, reference="0,0")


def test_a_runs_interference_is_the_one_rule_on_its_intervals():
    """Before: a run was flagged by any recorded event (a negative covariance EMA on an objective that rose) or by a
    fall beyond a tolerance, a rule of its own beside the seed level's. Now a run's verdict is
    mo_align.stats.interfering on its paired CIs of Δ (each objective's and the fixed scalar's, as the trainer
    records them); events, and falls of runs without intervals, are notes that decide nothing."""
    base, deltas = (0.5, 0.5, 0.5), {"accuracy": [0.05, 0.15], "conciseness": [-0.08, -0.02], "clarity": [-0.01, 0.01]}
    run = with_cis(summary("r", "a", 0, base, (0.6, 0.45, 0.5)), {}, deltas, scalar=[0.001, 0.05])
    flagged = interference(run)
    assert (flagged["interference"], flagged["objectives"]) == (True, ["conciseness"])
    assert flagged["reasons"] == [
        "conciseness: 95 % CI of Δ -0.050 [-0.080, -0.020] below 0 while the fixed scalar's is [+0.001, +0.050], "
        "above 0"
    ]
    # the same fall while the fixed scalar's interval reaches 0: no interference
    run = with_cis(summary("r", "a", 0, base, (0.6, 0.45, 0.5)), {}, deltas, scalar=[-0.001, 0.05])
    assert interference(run)["interference"] is False and interference(run)["objectives"] == []
    # an event on an objective that rose significantly: a note, not a verdict
    event = {"step": 7, "kind": "negative_covariance", "objective": "conciseness", "message": "EMA < 0"}
    rose = {"accuracy": [-0.01, 0.01], "conciseness": [0.484, 0.547], "clarity": [-0.01, 0.01]}
    run = with_cis(summary("r", "a", 0, base, (0.5, 1.0, 0.5), events=[event]), {}, rose, scalar=[0.1, 0.2])
    flags = interference(run)
    assert flags["interference"] is False and flags["notes"] == [
        "step 7: negative_covariance on conciseness (EMA < 0)"
    ]
    # no intervals: no verdict; a fall beyond the tolerance while another objective rose is a note
    plain = interference(summary("r", "a", 0, base, (0.6, 0.45, 0.5)))
    assert plain["interference"] is None and plain["objectives"] == []
    assert plain["notes"] == ["conciseness fell by 0.050 (more than 0.02; no interval recorded: no verdict)"]
    assert interference(summary("r", "a", 0, base, (0.6, 0.45, 0.5)), tolerance=0.1)["notes"] == []
    assert interference({"start": {}, "final": {}, "events": []})["interference"] is None


# ---- the written report --------------------------------------------------------------------------------------------
def check_png(path):
    from matplotlib import image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100, (path, pixels.shape)
    return data


def test_write_report_two_algorithms_two_seeds(tmp_path):
    out = tmp_path / "report"
    result = write_report(four_runs(), out)

    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == ALL_PNGS
    assert set(result["plots"]) == ALL_PNGS and result["skipped_plots"] == {}
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for name in ALL_PNGS:
        assert f"]({name})" in md, name
        data = check_png(out / name)
        assert f"data:image/png;base64,{base64.b64encode(data).decode()}" in page, name
    assert "<img" in page and 'src="' in page and not re.search(r'<img[^>]+src="(?!data:)', page)  # self-contained

    # the numbers
    assert result["reference"] == [0.0, 0.0, 0.0]
    assert "Reference point (accuracy, conciseness, clarity) = (0, 0, 0)" in md
    assert result["hypervolume"]["ctwa-seed0"] == pytest.approx(0.60 * 0.55 * 0.40)
    ctwa = result["algorithms"]["ctwa"]
    assert ctwa["final"]["accuracy"]["median"] == pytest.approx(0.55)
    assert ctwa["final"]["accuracy"]["min"] == pytest.approx(0.50)
    assert ctwa["hv_of_median_final"] == pytest.approx(0.55 * 0.60 * 0.375)
    # no run recorded intervals: no per-run verdict (the event and the fall are notes)
    assert ctwa["interference_runs"] == [] and result["algorithms"]["linear"]["interference_runs"] == []
    assert result["interference"] == dict.fromkeys(["ctwa-seed0", "ctwa-seed1", "linear-seed0", "linear-seed1"])
    assert result["runs"]["linear-seed1"]["interference_objectives"] == []
    # linear-seed0 (0.45, 0.52, 0.31) is dominated by ctwa-seed0 (0.60, 0.55, 0.40)
    assert result["non_dominated"] == ["ctwa-seed0", "ctwa-seed1", "linear-seed1"]

    # the tables: per run and per algorithm, with the interference column
    assert "| ctwa-seed0 | ctwa | 0 | 0.600 | " in md
    assert "| ctwa | 2 | 0.550 [0.500, 0.600] |" in md
    assert "yes:" not in md and md.count("| no verdict (no CIs) |") == 4
    assert "- ctwa-seed1: no verdict (no CIs) (notes, no verdict: step 7: negative_covariance on clarity" in md
    assert "- linear-seed1: no verdict (no CIs) (notes, no verdict: conciseness fell by 0.100 (more than 0.02" in md
    assert "<td>ctwa-seed1</td>" in page and "0.550 [0.500, 0.600]" in page
    assert json.loads((out / "report.json").read_text())["non_dominated"] == result["non_dominated"]


def test_empty_curves_skip_plots_with_a_note(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "weights.png").write_bytes(b"stale")  # from an earlier report: must not stay linked or on disk
    runs = [summary(f"r{i}", "linear", i, (0.4, 0.5, 0.3), (0.5, 0.5, 0.4), curves=False) for i in range(2)]
    result = write_report(runs, out)
    assert set(result["skipped_plots"]) == {"weights.png", "cov_ema.png"}
    assert {p.name for p in out.glob("*.png")} == {"eval_curves.png"} | PARETO_PNGS
    md = (out / "report.md").read_text()
    assert "](weights.png)" not in md and "](cov_ema.png)" not in md
    assert "Skipped: no run recorded a weight trajectory." in md
    assert "Skipped: no run recorded a covariance-law EMA." in md

    # no evaluation and no training rewards at all: no eval curves and no Pareto plots, HV unknown, still a report
    # (with training rewards, see test_runs_without_evaluation_report_their_training_batch_means_labelled)
    bare = [
        {
            **summary("bare", "linear", 0, (0, 0, 0), (0, 0, 0)),
            "train_reward": [],
            "eval": [],
            "start": {},
            "final": {},
            "best": {},
            "delta": {},
        }
    ]
    result = write_report(bare, tmp_path / "bare")
    assert result["plots"].keys() == {"weights.png", "cov_ema.png"}
    assert result["hypervolume"] == {"bare": None} and result["non_dominated"] == []


# ---- trainer_state.json fallback ----------------------------------------------------------------------------------
def log_history(offset=0.0, prefix="eval_", reward_key="mo/reward/{}/mean"):
    """A trainer's log history with per-objective evals named as transformers names them (``eval_<obj>/mean``;
    ``prefix="eval/"``: the older names), beside TRL's own eval metrics, which are not objectives. ``reward_key``:
    the per-objective training reward as older versions logged it, or TRL's ``rewards/{}/mean`` (with
    ``mo/scalar/mean`` and TRL's ``reward``, which are not objectives)."""
    history = []
    for step, acc, clar in ((0, 0.40, 0.20), (4, 0.50, 0.10), (8, 0.55 + offset, 0.15)):
        p = prefix
        history.append(
            {"step": step, f"{p}accuracy/mean": acc, f"{p}accuracy/delta": acc - 0.4, f"{p}clarity/mean": clar}
            | {f"{p}completion_length/mean": 20.0 + step, "epoch": step / 8}
            | {"eval_loss": 0.01, "eval_rewards/accuracy/mean": 0.9, "eval_mo/reward/accuracy/mean": 0.9}
        )
    for step in range(1, 9):
        history.append(
            {
                "step": step,
                "loss": 0.1,
                "mo/weight/accuracy": 0.5 + step / 100,
                "mo/weight/clarity": 0.5 - step / 100,
                reward_key.format("accuracy"): 0.3,
                reward_key.format("clarity"): 0.2,
                "mo/scalar/mean": 0.25,
                "reward": 0.5,
                "mo/adv/accuracy/mean": 0.0,
                "mo/ctwa/ema/accuracy": 0.1,
                "mo/ctwa/ema/clarity": -0.01 * step,
                "mo/events/negative_covariance/clarity": 1.0 if step == 5 else 0.0,
            }
        )
    history.append({"step": 8, "train_runtime": 1.0, "train_loss": 0.1})
    return {"global_step": 8, "log_history": history}


@pytest.mark.parametrize("prefix", ["eval_", "eval/"])
def test_trainer_state_fallback_reconstructs_the_summary(tmp_path, prefix):
    run = tmp_path / "ctwa-old"
    for step, offset in ((9, -0.5), (10, 0.0)):  # checkpoint-10 is the latest, although "checkpoint-9" sorts after it
        (run / f"checkpoint-{step}").mkdir(parents=True)
        state = log_history(offset, prefix)
        (run / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps(state))
    loaded = load_run(run)
    assert loaded["run_name"] == "ctwa-old" and loaded["output_dir"] == str(run.resolve())
    assert loaded["source"].endswith("checkpoint-10/trainer_state.json")
    assert loaded["algorithm"] == "ctwa"  # the one weighting namespace under mo/
    assert loaded["objectives"] == ["accuracy", "clarity"]  # completion_length is not an objective
    assert [e["step"] for e in loaded["eval"]] == [0, 4, 8]
    assert [e["means"]["accuracy"] for e in loaded["eval"]] == [0.40, 0.50, 0.55]
    assert loaded["eval"][1]["completion_length"] == 24.0
    assert loaded["start"] == {"accuracy": 0.40, "clarity": 0.20}
    assert loaded["final"] == {"accuracy": 0.55, "clarity": 0.15}
    assert loaded["best"] == {"accuracy": 0.55, "clarity": 0.20}
    assert loaded["delta"]["accuracy"] == pytest.approx(0.15) and loaded["delta"]["clarity"] == pytest.approx(-0.05)
    assert len(loaded["weights"]) == 8 and loaded["weights"][0] == {
        "step": 1,
        "weights": {"accuracy": 0.51, "clarity": 0.49},
    }
    assert loaded["cov_ema"][4] == {"step": 5, "values": {"accuracy": 0.1, "clarity": -0.05}}
    assert loaded["train_reward"][0]["means"] == {"accuracy": 0.3, "clarity": 0.2}
    assert [(e["step"], e["kind"], e["objective"]) for e in loaded["events"]] == [
        (5, "negative_covariance", "clarity")
    ]

    # a trainer_state.json in the run directory itself wins over the checkpoints; no weighting namespace -> unknown
    state = log_history()
    for entry in state["log_history"]:
        for key in [k for k in entry if k.startswith("mo/ctwa/")]:
            del entry[key]
    (run / "trainer_state.json").write_text(json.dumps(state))
    direct = load_run(run)
    assert direct["algorithm"] == "unknown" and direct["cov_ema"] == []
    assert direct["source"] == str((run / "trainer_state.json").resolve())
    # and a mo_summary.json wins over both
    (run / "mo_summary.json").write_text(json.dumps(summary("from-summary", "ctwa", 3, (0.1,) * 3, (0.2,) * 3)))
    assert load_run(run)["run_name"] == "from-summary"


@pytest.mark.parametrize("reward_key", ["rewards/{}/mean", "mo/reward/{}/mean"])
def test_trainer_state_fallback_reads_trl_reward_keys_and_older_logs(tmp_path, reward_key):
    """The training reward series is TRL's ``rewards/<obj>/mean``; logs of older versions (``mo/reward/<obj>/mean``)
    still read the same; ``mo/scalar/...`` is not a weighting's namespace, TRL's ``reward`` is not an objective."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "trainer_state.json").write_text(json.dumps(log_history(reward_key=reward_key)))
    loaded = load_run(tmp_path / "run")
    assert [r["step"] for r in loaded["train_reward"]] == list(range(1, 9))
    assert all(r["means"] == {"accuracy": 0.3, "clarity": 0.2} for r in loaded["train_reward"])
    assert loaded["algorithm"] == "ctwa" and loaded["objectives"] == ["accuracy", "clarity"]


def test_trl_reward_key_wins_over_the_older_duplicate(tmp_path):
    state = log_history(reward_key="rewards/{}/mean")
    for entry in state["log_history"]:
        if "rewards/accuracy/mean" in entry:
            entry["mo/reward/accuracy/mean"] = -1.0  # a stale duplicate beside TRL's own mean
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "trainer_state.json").write_text(json.dumps(state))
    assert {r["means"]["accuracy"] for r in load_run(tmp_path / "run")["train_reward"]} == {0.3}


@pytest.mark.parametrize("reward_key", ["rewards/{}/mean", "mo/reward/{}/mean"])
def test_log_objective_table_reads_trl_reward_keys_and_older_logs(reward_key):
    history = [
        {"step": 1, reward_key.format("a"): 0.25, "mo/weight/a": 0.5, "reward": 9.0},
        {"step": 2, "loss": 0.1},
        {"step": 3, reward_key.format("a"): 0.75, "mo/weight/a": 0.4, "mo/scalar/mean": 9.0},
    ]
    lines = objective_table(history, ["a", "b"]).splitlines()
    assert lines[1].split() == ["objective", "weight", "step", "1", "step", "3", "delta"]
    assert lines[2].split() == ["a", "0.400", "0.250", "0.750", "+0.500"]
    assert lines[3].split() == ["b", "nan", "n/a", "n/a"]


def test_load_errors_name_the_path(tmp_path):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    with pytest.raises(ReportError, match=re.escape(str(empty)) + ".*neither mo_summary.json nor trainer_state.json"):
        load_run(empty)
    with pytest.raises(ReportError, match="no such file or directory"):
        load_run(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "mo_summary.json").write_text("{not json")
    with pytest.raises(ReportError, match=re.escape(str(bad / "mo_summary.json")) + ": not valid JSON"):
        load_run(bad)
    (bad / "mo_summary.json").write_text(json.dumps({"version": 2}))
    with pytest.raises(ReportError, match="summary version 2"):
        load_run(bad)


def test_load_runs_disambiguates_equal_names(tmp_path):
    paths = []
    for parent in ("a", "b"):
        d = tmp_path / parent / "seed0"
        d.mkdir(parents=True)
        s = summary("x", "linear", 0, (0.1,) * 3, (0.2,) * 3)
        del s["run_name"]  # defaults to the output_dir basename: both are "seed0"
        s["output_dir"] = str(d)
        (d / "mo_summary.json").write_text(json.dumps(s))
        paths.append(d)
    assert [r["run_name"] for r in load_runs(paths)] == ["seed0", "seed0#2"]


# ---- CLI ----------------------------------------------------------------------------------------------------------
def write_run_dirs(tmp_path, runs):
    dirs = []
    for s in runs:
        d = tmp_path / "runs" / s["run_name"]
        d.mkdir(parents=True)
        (d / "mo_summary.json").write_text(json.dumps({**s, "output_dir": str(d)}))
        dirs.append(str(d))
    return dirs


def test_cli_end_to_end(tmp_path, capsys):
    dirs = write_run_dirs(tmp_path, four_runs())
    out = tmp_path / "out"
    assert main(["report", *dirs, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    header = next(line for line in lines if line.startswith("algorithm"))
    columns = ["algorithm", "n", "accuracy", "conciseness", "clarity", "HV(med)", "med HV", "interference"]
    assert re.split(r"\s{2,}", header) == columns
    ctwa = next(line for line in lines if line.startswith("ctwa "))
    # median final (median delta): accuracy finals 0.60 / 0.50, deltas +0.20 / +0.10
    assert re.split(r"\s{2,}", ctwa)[:3] == ["ctwa", "2", "0.550 (+0.150)"]
    # the interference column is the seed-level verdict: 2 seeds per algorithm, nothing significant after Holm (the
    # per-run flags of ctwa-seed1's event and linear-seed1's fall are no verdict across seeds)
    assert ctwa.endswith("  none") and next(line for line in lines if line.startswith("linear ")).endswith("  none")
    assert "seed level: Δ vs the warm start, over seeds" in printed and "Holm-adjusted over 8 tests" in printed
    assert "seed level: each algorithm − linear, paired by seed" in printed and "Holm-adjusted over 4 tests" in printed
    assert "↓" not in printed and " of 2" not in printed
    assert "HV reference (accuracy, conciseness, clarity) = (0, 0, 0) [default]" in printed
    assert lines[-1] == f"report: {out / 'report.md'}"
    assert {p.name for p in out.glob("*.png")} == ALL_PNGS and (out / "report.html").exists()

    # --reference and --tolerance reach the report
    assert main(["report", *dirs, "--out", str(out), "--reference", "0.1,0.1,0.1", "--tolerance", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "= (0.1, 0.1, 0.1) [given]" in printed
    md = (out / "report.md").read_text()
    assert "(0.1, 0.1, 0.1) — given" in md
    assert "conciseness fell by" not in md and "negative_covariance on clarity" in md  # 0.1 is within 0.5


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    assert main(["report", str(empty), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mo-align: error: ") and str(empty) in err[0]
    assert not (tmp_path / "out").exists()

    dirs = write_run_dirs(tmp_path, four_runs()[:1])
    assert main(["report", *dirs, "--out", str(tmp_path / "out"), "--reference", "0,0"]) == 2
    assert "has 2 values but the runs have 3 objectives" in capsys.readouterr().err
    assert main(["report", *dirs, "--out", str(tmp_path / "out"), "--tolerance", "-1"]) == 2
    assert "--tolerance" in capsys.readouterr().err
    assert main(["report", *dirs]) == 2  # --out is required (argparse usage error)
    assert "--out" in capsys.readouterr().err


def test_help_lists_both_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "train --config FILE" in out and "report RUN_DIR [RUN_DIR ...] --out DIR" in out
    assert main(["report", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Compare finished training runs" in out and "--reference" in out and "--tolerance" in out


# ---- runs without evaluation ---------------------------------------------------------------------------------------
def test_runs_without_evaluation_report_their_training_batch_means_labelled(tmp_path):
    runs = []
    for name, algorithm, slope in (("lin", "linear", 0.01), ("ct", "ctwa", 0.02)):
        raw = summary(name, algorithm, 0, (0.0,) * 3, (0.0,) * 3)
        raw.update(eval=[], start={}, final={}, best={}, delta={})
        raw["train_reward"] = [
            {"step": s, "means": {o: 0.3 + slope * s - 0.05 * (s == 3) * k for k, o in enumerate(OBJECTIVES)}}
            for s in range(1, 6)
        ]
        (tmp_path / name).mkdir()
        (tmp_path / name / "mo_summary.json").write_text(json.dumps(raw))
        runs.append(tmp_path / name)
    loaded = load_runs(runs)
    lin = loaded[0]
    assert lin["values_from"] == "training batches (no evaluation)"
    assert lin["start"]["accuracy"] == pytest.approx(0.31) and lin["final"]["accuracy"] == pytest.approx(0.35)
    assert lin["delta"]["clarity"] == pytest.approx(0.04) and lin["best"]["clarity"] == pytest.approx(0.35)
    result = write_report(loaded, tmp_path / "report")
    assert result["runs"]["ct"]["final"]["accuracy"] == pytest.approx(0.40)
    assert result["hypervolume"]["ct"] is not None  # a table of numbers, not of dashes
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Runs without evaluation (lin, ct) show their training-batch reward means" in md
    row = next(line for line in md.splitlines() if line.startswith("| lin |"))
    assert "0.350" in row and row.rstrip(" |").endswith("training batches (no evaluation)")
    console = format_console_table(result)
    assert "no evaluation, values are training-batch means: lin, ct" in console
    assert "—" not in console.splitlines()[3]  # the linear row has numbers


# ---- confidence intervals ------------------------------------------------------------------------------------------
def with_cis(run, ci, delta_ci, law=(), scalar=None):
    """The run with 95 % CIs on its last evaluation (as the trainer records them: ``scalar`` is the fixed scalar's
    paired CI of Δ) and law records."""
    run["eval"][-1]["ci"] = ci
    run["eval"][-1]["delta_ci"] = delta_ci
    if scalar is not None:
        run["eval"][-1]["scalar_delta_ci"] = scalar
    run["law"] = list(law)
    return run


def test_cis_in_tables_and_the_seed_level_verdicts(tmp_path):
    """Two seeds of linear with CIs: seed 0's conciseness Δ CI lies below 0, seed 1's straddles 0; accuracy rises
    significantly on both. The per-run cells carry the intervals; the verdicts across seeds are the seed-level ones
    (no "k of n seeds" counts). By hand, baseline (0.4, 0.5, 0.3); Δ per seed: accuracy 0.2, 0.1 (t = 3, df 1,
    p = 1 − 2 atan(3) / π); conciseness −0.05 twice (no spread: p = 0); clarity 0 twice (p = 1); scalar (equal weights:
    the linear runs record none) 0.05, 1/60 (t = 2, p = 1 − 2 atan(2) / π). Holm over 4 tests: conciseness is rejected
    at α/4, accuracy's 0.205 > α/3 stops the procedure, so accuracy, clarity and the scalar get intervals at 1 − α/3."""
    import math

    ci = {"accuracy": [0.55, 0.65], "conciseness": [0.40, 0.50], "clarity": [0.25, 0.35]}
    runs = [
        with_cis(
            summary("linear-seed0", "linear", 0, (0.4, 0.5, 0.3), (0.6, 0.45, 0.3)),
            ci,
            {"accuracy": [0.15, 0.25], "conciseness": [-0.08, -0.02], "clarity": [-0.03, 0.03]},
            scalar=[0.01, 0.09],
        ),
        with_cis(
            summary("linear-seed1", "linear", 1, (0.4, 0.5, 0.3), (0.5, 0.45, 0.3)),
            ci,
            {"accuracy": [0.05, 0.15], "conciseness": [-0.10, 0.01], "clarity": [-0.03, 0.03]},
            scalar=[0.0, 0.03],
        ),
    ]
    result = write_report(runs, tmp_path / "report")
    seed0, seed1 = result["runs"]["linear-seed0"], result["runs"]["linear-seed1"]
    assert seed0["final_ci"]["accuracy"] == [0.55, 0.65] and seed0["delta_ci"]["conciseness"] == [-0.08, -0.02]
    assert seed0["significant"] == {"accuracy": "rise", "conciseness": "drop", "clarity": "none"}
    assert seed1["significant"]["conciseness"] == "none"
    # the 0.05 fall of seed 1 is beyond the 0.02 tolerance but not significant: with CIs, no per-run flag
    assert seed0["interference_objectives"] == ["conciseness"] and not seed1["interference"]
    assert "95 % CI of Δ -0.050 [-0.080, -0.020] below 0" in seed0["interference_reasons"][0]
    assert "significant" not in result["algorithms"]["linear"]  # no per-algorithm seed counts any more
    seeds = result["seed_level"]
    assert seeds["preference"] == pytest.approx([1 / 3] * 3) and seeds["vs_reference"] is None
    row = seeds["vs_start"]["rows"]["linear"]
    acc, conc, clar, scalar = (row["cells"][q] for q in ("accuracy", "conciseness", "clarity", "scalar"))
    assert (acc["estimate"], acc["p"]) == pytest.approx((0.15, 1 - 2 * math.atan(3) / math.pi))
    half = math.tan(math.pi * (0.5 - 0.05 / 6)) * 0.05  # df 1: t quantile = tan(π (q − 1/2)); s / √n = 0.05
    assert (acc["low"], acc["high"], acc["level"]) == pytest.approx((0.15 - half, 0.15 + half, 1 - 0.05 / 3))
    assert (conc["estimate"], conc["low"], conc["high"], conc["p"]) == pytest.approx((-0.05, -0.05, -0.05, 0.0))
    assert (conc["level"], conc["verdict"], conc["p_holm"]) == (pytest.approx(1 - 0.05 / 4), "down", 0.0)
    assert (clar["p"], clar["verdict"]) == (1.0, "not significant")
    assert (scalar["estimate"], scalar["p"]) == pytest.approx((0.1 / 3, 1 - 2 * math.atan(2) / math.pi))
    assert acc["p_holm"] == pytest.approx(3 * acc["p"]) and scalar["p_holm"] == pytest.approx(3 * acc["p"])
    assert seeds["vs_start"]["tests"] == 4 and row["interference"] == []  # the scalar did not rise significantly
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| linear-seed0 | linear | 0 | 0.600 [0.550, 0.650] | 0.600 | +0.200 [+0.150, +0.250] |" in md
    # to the interval's precision: the accuracy interval's half-width 1.9 (2 significant digits) gives 1 decimal
    assert f"| linear | 2 | {acc['estimate']:+.1f} [{acc['low']:+.1f}, {acc['high']:+.1f}] not significant |" in md
    assert "| +0.03 [-0.60, +0.67] not significant | none |" in md  # the scalar: half-width 0.64, 2 decimals
    assert "] not significant | -0.050 [-0.050, -0.050] down |" in md
    assert "Holm-adjusted over 4 tests (family level 95%)" in md and "↓" not in md and " of 2 " not in md
    console = format_console_table(result)
    assert "0.550 (+0.150)" in console and "0.450 (-0.050)" in console and "↓" not in console
    assert "per run: Δ vs start [95% paired CI" in console
    assert "+0.200 [+0.150, +0.250]  -0.050 [-0.080, -0.020]" in console
    assert "per run:" not in format_console_table(result, per_run=False)


def test_a_small_significant_fall_interferes_and_runs_without_cis_have_no_verdict():
    run = with_cis(
        summary("r", "a", 0, (0.5, 0.5, 0.5), (0.6, 0.49, 0.5)),
        {},
        {"accuracy": [0.05, 0.15], "conciseness": [-0.015, -0.005], "clarity": [0.0, 0.0]},
        scalar=[0.01, 0.04],
    )
    assert interference(run)["objectives"] == ["conciseness"]  # 0.01 < tolerance, but significant
    assert interference(summary("r", "a", 0, (0.5, 0.5, 0.5), (0.6, 0.49, 0.5)))["interference"] is None


def test_law_disagreements_are_listed_in_the_report_and_the_console(tmp_path):
    law = [
        {
            "from": 0,
            "to": 10,
            "objective": "accuracy",
            "predicted_cov": 0.17,
            "delta": -0.05,
            "ci": [-0.08, -0.02],
            "realised": "down",
            "held": False,
        },
        {
            "from": 0,
            "to": 10,
            "objective": "clarity",
            "predicted_cov": 0.1,
            "delta": 0.2,
            "ci": [0.15, 0.25],
            "realised": "up",
            "held": True,
        },
        {
            "from": 0,
            "to": 10,
            "objective": "conciseness",
            "predicted_cov": -0.01,
            "delta": 0.0,
            "ci": [-0.03, 0.03],
            "realised": "not significant",
            "held": None,
        },
    ]
    run = summary("ctwa-seed0", "ctwa", 0, (0.4, 0.5, 0.3), (0.35, 0.5, 0.5))
    run["law"] = law
    result = write_report([run], tmp_path / "report")
    expected = (
        "disagreement: accuracy steps 0->10: mean covariance +0.170 predicts up, eval mean went down "
        "(Δ -0.050 [-0.080, -0.020])"
    )
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Covariance law" in md and expected in md
    # the law called 1 of the 2 significant changes; the largest weight (clarity's, rising over steps 1..10 in
    # summary()) called both: clarity up, accuracy (a smaller weight) down; no previous interval, no covariances
    assert (
        "- covariance law, ctwa-seed0: hit rate 1/2 (50%) vs baselines largest weight rises 2/2 (100%), previous "
        "change's sign 0/0 (of 3 checks: 1 changes not significant, 0 covariance signs undetermined)" in md
    )
    assert "  " + expected in format_console_table(result)


def test_eval_curves_draw_the_ci_band():
    from mo_align.runs.report.plots import _figure, _Style, draw_eval_curve

    run = summary("r", "a", 0, (0.4, 0.5, 0.3), (0.6, 0.5, 0.3))
    for entry, (low, high) in zip(run["eval"], [(0.35, 0.45), (0.45, 0.55), (0.55, 0.65)]):
        entry["ci"] = {"accuracy": [low, high]}
    run = load_run_dict(run)
    _fig, (ax,) = _figure(1)
    line = draw_eval_curve(ax, run, "accuracy", _Style("C0", "-", "o"))
    assert list(line.get_xdata()) == [0, 10, 20]
    (band,) = ax.collections
    vertices = {tuple(np.round(v, 6)) for v in band.get_paths()[0].vertices}
    assert {(0, 0.35), (0, 0.45), (10, 0.45), (10, 0.55), (20, 0.55), (20, 0.65)} <= vertices
    assert draw_eval_curve(ax, run, "conciseness", _Style("C1", "-", "o")) is not None
    assert len(ax.collections) == 1  # no CI recorded for conciseness: no band


def load_run_dict(raw):
    from mo_align.runs.summary import normalize_summary

    return normalize_summary(raw)


# ---- untrusted summaries: one line naming the file, nothing written -------------------------------------------------
def _refused(tmp_path, capsys, dirs):
    """``mo-align report`` on ``dirs``: exit 2, one stderr line of at most 300 characters, no output directory."""
    out = tmp_path / "out"
    assert main(["report", *map(str, dirs), "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("mo-align: error: ") and len(err[0]) <= 300, err
    assert not out.exists()  # every summary is checked before anything is written
    return err[0]


def test_binary_bytes_in_a_summary_are_one_line_naming_the_file(tmp_path, capsys):
    good, bad = write_run_dirs(tmp_path, four_runs()[:2])
    path = f"{bad}/mo_summary.json"
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:40] + b"\xff\xfe\x00binary" + data[40:])
    line = _refused(tmp_path, capsys, [good, bad])
    assert f"{path}: not UTF-8 text (byte 0xff at offset 40)" in line


@pytest.mark.parametrize(
    ("edit", "field", "literal"),
    [
        (lambda s: s["final"].update(accuracy=float("nan")), "final.accuracy", "NaN"),
        (lambda s: s["eval"][1]["means"].update(clarity=float("inf")), "eval[1].means.clarity", "Infinity"),
        (lambda s: s["start"].update(accuracy=float("-inf")), "start.accuracy", "-Infinity"),
        (lambda s: s.update(seed=float("nan")), "seed", "NaN"),
        (
            lambda s: s.update(law=[{"objective": "accuracy", "predicted_cov": math.nan}]),
            "law[0].predicted_cov",
            "NaN",
        ),
        (lambda s: s["final"].update(clarity="1e999"), "final.clarity", "1e999"),  # parses to inf
    ],
)
def test_nan_and_infinity_in_a_summary_are_refused_naming_file_and_field(tmp_path, capsys, edit, field, literal):
    good, bad = write_run_dirs(tmp_path, four_runs()[:2])
    path = f"{bad}/mo_summary.json"
    raw = json.loads(Path(path).read_text())
    edit(raw)
    text = json.dumps(raw).replace('"1e999"', "1e999")  # Python's json writes NaN / Infinity literals as they are
    Path(path).write_text(text)
    line = _refused(tmp_path, capsys, [good, bad])
    assert f"{path}: {field} is {literal}" in line


def test_trainer_state_nan_loss_is_kept_and_an_infinite_eval_mean_is_missing(tmp_path):
    """transformers writes NaN losses into trainer_state.json: not a summary field, so the run still reads; an
    infinite eval mean there counts as a missing value (like NaN), so it cannot become the run's final point."""
    state = log_history()
    state["log_history"][1]["loss"] = math.nan
    state["log_history"][2]["eval_accuracy/mean"] = math.inf  # the last evaluation (step 8)
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "trainer_state.json").write_text(json.dumps(state))
    loaded = load_run(run)
    assert math.isnan(loaded["final"]["accuracy"]) and loaded["final"]["clarity"] == 0.15
    assert loaded["best"]["accuracy"] == 0.50
    result = write_report([loaded], tmp_path / "report")
    assert result["runs"]["old-run"]["final"]["accuracy"] is None and result["hypervolume"]["old-run"] is None


def test_mixed_objective_sets_are_refused_naming_the_sets_and_files(tmp_path, capsys):
    two = summary("two-obj", "linear", 2, (0.4, 0.5), (0.5, 0.6), objectives=["accuracy", "conciseness"])
    dirs = write_run_dirs(tmp_path, [*four_runs()[:2], two])
    line = _refused(tmp_path, capsys, dirs)
    assert "different objective sets" in line
    # long paths keep their end (the line is capped at 300 characters, whatever the temporary directory's length)
    first, other = (f"{Path(d).name}/mo_summary.json" for d in (dirs[0], dirs[2]))
    assert "accuracy, clarity, conciseness (" in line and f"{first})" in line
    assert "accuracy, conciseness (" in line and f"{other})" in line
    with pytest.raises(ReportError, match="different objective sets"):
        analyse([four_runs()[0], two])  # the library refuses too
    same_set = summary("reordered", "ctwa", 5, (0.4, 0.5, 0.3), (0.5, 0.6, 0.4), objectives=OBJECTIVES[::-1])
    assert analyse([four_runs()[0], same_set])["objectives"] == OBJECTIVES  # one set, in any order


def test_a_summary_over_the_size_cap_is_refused_before_reading(tmp_path, capsys, monkeypatch):
    import mo_align.runs.jsonfile as jsonfile

    dirs = write_run_dirs(tmp_path, four_runs()[:2])
    size = Path(f"{dirs[0]}/mo_summary.json").stat().st_size
    monkeypatch.setattr(jsonfile, "MAX_JSON_BYTES", size - 1)
    line = _refused(tmp_path, capsys, dirs)
    assert line == (
        f"mo-align: error: {dirs[0]}/mo_summary.json: {size} bytes, over the {size - 1}-byte limit for a run's JSON"
    )


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda s: s["eval"][-1].update(ci={"accuracy": [0.4]}), "eval[2].ci.accuracy: expected [low, high]"),
        (lambda s: s.update(law=[{"objective": "accuracy", "ci": [1]}]), "law[0].ci: expected [low, high]"),
        (lambda s: s.update(law=["held"]), "law[0]: expected an object"),
        (lambda s: s.update(launch_command={"argv": []}), "launch_command: expected a string or null"),
    ],
)
def test_malformed_fields_are_one_line_before_any_output(tmp_path, capsys, edit, says):
    good, bad = write_run_dirs(tmp_path, four_runs()[:2])
    path = Path(bad) / "mo_summary.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    assert f"{path}: malformed summary (ValueError: {says}" in _refused(tmp_path, capsys, [good, bad])


def test_law_records_without_numbers_are_counted_not_shown(tmp_path):
    """A law record whose delta is null and whose CI has a null bound: counted, but no disagreement line to format."""
    run = summary("ctwa-seed0", "ctwa", 0, (0.4, 0.5, 0.3), (0.35, 0.5, 0.5))
    kept = {"from": 0, "to": 10, "objective": "accuracy", "realised": "down", "held": False, "predicted_cov": 0.2}
    run["law"] = [{**kept, "delta": None, "ci": [-0.1, None]}]
    result = write_report([run], tmp_path / "report")
    assert result["runs"]["ctwa-seed0"]["law"] == {"held": 0, "failed": 1, "not_significant": 0}
    assert result["runs"]["ctwa-seed0"]["law_disagreements"] == [kept]
    assert "disagreement:" not in (tmp_path / "report" / "report.md").read_text()


# ---- seed-level comparison ----------------------------------------------------------------------------------------
def three_seed_table():
    """linear and ctwa at seeds 0, 1, 2. The step-0 evaluation is one draw per seed, shared by both algorithms:
    accuracy 0.40 / 0.50 / 0.45, conciseness 0.60 / 0.50 / 0.55, clarity 0.5. Finals:
    linear accuracy 0.55 / 0.65 / 0.75, conciseness 0.35 / 0.45 / 0.40; ctwa accuracy 0.60 / 0.75 / 0.90,
    conciseness 0.55 each; clarity 0.5 everywhere."""
    starts = [(0.40, 0.60, 0.5), (0.50, 0.50, 0.5), (0.45, 0.55, 0.5)]
    finals = {
        "linear": [(0.55, 0.35, 0.5), (0.65, 0.45, 0.5), (0.75, 0.40, 0.5)],
        "ctwa": [(0.60, 0.55, 0.5), (0.75, 0.55, 0.5), (0.90, 0.55, 0.5)],
    }
    runs = []
    for algorithm, rows in finals.items():
        for seed, (start, final) in enumerate(zip(starts, rows)):
            run = summary(f"{algorithm}-seed{seed}", algorithm, seed, start, final)
            run["weighting_hyperparameters"] = {"weights": [0.333, 0.333, 0.334]} if algorithm == "linear" else {}
            runs.append(run)
    return runs


def test_seed_level_by_hand_one_baseline_paired_seeds_and_holm():
    """The baseline is the mean of all six step-0 evaluations (0.45, 0.55, 0.5), not each run's own draw.
    linear's accuracy Δ per seed = 0.10 / 0.20 / 0.30 (against its own draws it would be 0.15 / 0.15 / 0.30): mean 0.2,
    s = 0.1, t = 2√3, p = 1 − 2√3/√14 = 0.0742. ctwa − linear per seed, accuracy 0.05 / 0.10 / 0.15 (same t, same p),
    conciseness 0.20 / 0.10 / 0.15 (t = 3√3), scalar 0.333 · 0.25 / 0.20 / 0.30 (t = 5√3, p = 0.0131: below 0.05
    alone, not after Holm's 0.05/4). No p-value of either table passes its first Holm step (0.05/8, 0.05/4), so every
    interval is at that level and every verdict is "not significant"."""
    import math

    from mo_align.runs.report.seeds import seed_level

    res = seed_level(three_seed_table(), OBJECTIVES)
    assert res["preference"] == [0.333, 0.333, 0.334] and res["preference_source"] == "the linear runs' weights"
    assert res["baseline"] == {
        "": pytest.approx({"accuracy": 0.45, "conciseness": 0.55, "clarity": 0.5, "scalar": 0.5})
    }
    lin = res["vs_start"]["rows"]["linear"]
    acc = lin["cells"]["accuracy"]
    p_2sqrt3 = 1 - 2 * math.sqrt(3) / math.sqrt(14)
    assert (acc["estimate"], acc["p"]) == pytest.approx((0.2, p_2sqrt3))
    q = 1 - 0.05 / 16  # the first Holm step of 8 tests, two-sided
    half = (2 * q - 1) / math.sqrt(2 * q * (1 - q)) * 0.1 / math.sqrt(3)
    assert (acc["low"], acc["high"], acc["level"]) == pytest.approx((0.2 - half, 0.2 + half, 1 - 0.05 / 8))
    conc = lin["cells"]["conciseness"]  # Δ −0.20 / −0.10 / −0.15: t = −3√3
    assert (conc["estimate"], conc["p"]) == pytest.approx((-0.15, 1 - 3 * math.sqrt(3) / math.sqrt(29)))
    assert res["vs_start"]["tests"] == 8 and lin["n"] == 3 and lin["interference"] == []
    assert {c["verdict"] for row in res["vs_start"]["rows"].values() for c in row["cells"].values()} == {
        "not significant"
    }
    ref = res["vs_reference"]
    assert ref["reference"] == "linear" and ref["tests"] == 4 and list(ref["rows"]) == ["ctwa"]
    ctwa = ref["rows"]["ctwa"]
    assert ctwa["n"] == 3 and (ctwa["cells"]["accuracy"]["estimate"], ctwa["cells"]["accuracy"]["p"]) == pytest.approx(
        (0.1, p_2sqrt3)
    )
    scalar = ctwa["cells"]["scalar"]
    assert scalar["estimate"] == pytest.approx(0.333 * 0.25 + 0.334 * 0.0)
    assert scalar["p"] == pytest.approx(1 - 5 * math.sqrt(3) / math.sqrt(77)) and scalar["p"] < 0.05
    assert scalar["p_holm"] == pytest.approx(4 * scalar["p"]) and scalar["verdict"] == "not significant"
    assert scalar["level"] == pytest.approx(1 - 0.05 / 4)
    assert ctwa["cells"]["clarity"]["p"] == 1.0  # no difference at any seed


def test_seed_level_interference_needs_the_fixed_scalar_up_and_the_objective_down():
    """Every seed of linear gains accuracy +0.3 and loses conciseness −0.2 exactly (no spread: p = 0), so with the
    fixed weights (0.5, 0.25, 0.25) the scalar rises by 0.1 at every seed: interference on conciseness. ctwa gains
    accuracy +0.3 too but its conciseness moves −0.1 / +0.1 / 0: no interference although its scalar rose. Its
    pairing with linear is by (warm start, seed): seeds from another warm start are not paired."""
    from mo_align.runs.report.seeds import seed_level

    runs = []
    for seed, conc in enumerate((-0.1, 0.1, 0.0)):
        runs.append(summary(f"linear-seed{seed}", "linear", seed, (0.4, 0.5, 0.5), (0.7, 0.3, 0.5)))
        runs.append(summary(f"ctwa-seed{seed}", "ctwa", seed, (0.4, 0.5, 0.5), (0.7, 0.5 + conc, 0.5)))
    other = summary("ctwa-seed7", "ctwa", 7, (0.4, 0.5, 0.5), (0.7, 0.5, 0.5))
    for r in [*runs, other]:
        r["launch_command"] = f"python -m mo_align.lab worker --sft {'/b' if r is other else '/a'}"
    res = seed_level([*runs, other], OBJECTIVES, preference=[0.5, 0.25, 0.25])
    lin = res["vs_start"]["rows"]["linear"]
    assert lin["cells"]["scalar"]["estimate"] == pytest.approx(0.1) and lin["cells"]["scalar"]["verdict"] == "up"
    assert lin["cells"]["conciseness"]["verdict"] == "down" and lin["interference"] == ["conciseness"]
    ctwa = res["vs_start"]["rows"]["ctwa"]
    assert ctwa["n"] == 4 and ctwa["cells"]["scalar"]["verdict"] == "up" and ctwa["interference"] == []
    assert res["warm_starts"] == 2 and res["vs_reference"]["rows"]["ctwa"]["n"] == 3
    with pytest.raises(ValueError, match="preference"):
        seed_level(runs, OBJECTIVES, preference=[1.0, -1.0, 1.0])


def test_law_scored_against_the_baselines_and_fixed_by_construction():
    """Two intervals, two objectives. Weights: a larger over steps 1..10, b larger over 11..20. Interval 0->10: a up
    (law up: hit; largest weight a up: hit), b down (law undetermined; largest weight b down: hit). Interval 10->20:
    a down (law up: miss; largest weight a down: hit; previous change +0.1 up: miss), b up (law up: hit; largest weight
    b up: hit; previous −0.1 down: miss). Reward covariance: interval 1 anti-correlated (C w < 0: not fixed),
    interval 2 positively correlated (C w > 0 with w >= 0: fixed by construction)."""
    from mo_align.runs.report.law import forced_by_construction, law_scores, predictions

    def rec(frm, to, obj, predicted, realised, delta, cov):
        return {"from": frm, "to": to, "objective": obj, "predicted": predicted, "predicted_cov": 0.1,
                "realised": realised, "delta": delta, "ci": [delta - 0.01, delta + 0.01], "reward_cov": cov}  # fmt: skip

    anti, pos = [[0.25, -0.3], [-0.3, 0.25]], [[0.25, 0.05], [0.05, 0.25]]
    law = [
        rec(0, 10, "a", "up", "up", 0.1, anti),
        rec(0, 10, "b", "undetermined", "down", -0.1, anti),
        rec(10, 20, "a", "up", "down", -0.1, pos),
        rec(10, 20, "b", "up", "up", 0.1, pos),
    ]
    weights = [
        {"step": s, "weights": {"a": 0.6 if s <= 10 else 0.4, "b": 0.4 if s <= 10 else 0.6}} for s in range(1, 21)
    ]
    preds = predictions(law, weights, ["a", "b"])
    assert [p["largest_weight"] for p in preds] == ["up", "down", "down", "up"]
    assert [p["previous_change"] for p in preds] == [None, None, "up", "down"]
    assert [p["forced"] for p in preds] == [False, False, True, True]
    scores = law_scores({"law": law, "weights": weights}, ["a", "b"])
    assert scores["hit_rates"] == {
        "law": {"hits": 2, "n": 3},
        "largest_weight": {"hits": 4, "n": 4},
        "previous_change": {"hits": 0, "n": 2},
    }
    assert (scores["undetermined"], scores["forced_intervals"], scores["judged_intervals"]) == (1, 1, 2)
    # by hand: C w with w = (1/3, 1/3, 1/3) and correlation −0.9 between unit-variance rewards stays > 0 (fixed);
    # a larger variance of the second reward turns the first one's covariance with the scalar negative
    w = [1 / 3] * 3
    assert forced_by_construction(w, [[1, -0.9, 0], [-0.9, 1, 0], [0, 0, 1]]) is True
    assert forced_by_construction(w, [[1, -1.8, 0], [-1.8, 4, 0], [0, 0, 1]]) is False
    assert (
        forced_by_construction([0.5, -0.1, 0.6], np.eye(3)) is False
        and forced_by_construction(None, np.eye(3)) is None
    )


def test_numbers_to_the_precision_of_their_interval_and_one_seed_has_no_range(tmp_path):
    """Before: report.md printed the recorded float32 weights as 0.3330000042915344, every interval to 3 decimals
    whatever its width, and a one-seed algorithm as "0.090 [0.090, 0.090]", a range that is not one. Now weights
    read 0.333, an estimate and its interval carry 2 significant digits of the half-width, and one seed shows its
    value with "n = 1 (no range)"."""
    from mo_align.stats import ci_decimals, format_interval

    assert [ci_decimals(0.484, 0.547), ci_decimals(0.25, 0.75), ci_decimals(-0.002, 0.002)] == [3, 2, 4]
    assert ci_decimals(-0.2 - 1e-17, -0.2 + 1e-17) == ci_decimals(0.0, 0.0) == ci_decimals(None, 1.0) == 3
    assert format_interval(0.516, 0.484, 0.547) == "+0.516 [+0.484, +0.547]"
    assert format_interval(0.09, 0.04, 0.14, signed=False) == "0.090 [0.040, 0.140]"  # half-width 0.050
    assert format_interval(0.09, 0.0, 0.3, signed=False) == "0.09 [0.00, 0.30]"  # half-width 0.15
    run = with_cis(
        summary("solo-seed0", "linear", 0, (0.05, 0.2, 0.3), (0.09, 0.716, 0.3)),
        {"accuracy": [0.0, 0.3], "conciseness": [0.69, 0.74], "clarity": [0.3, 0.3]},
        {"accuracy": [-0.16, 0.24], "conciseness": [0.484, 0.547], "clarity": [0.0, 0.0]},
        scalar=[0.15, 0.2],
    )
    run["weighting_hyperparameters"] = {"weights": [0.3330000042915344, 0.3330000042915344, 0.33399999141693115]}
    result = write_report([run], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert '{"weights": [0.333, 0.333, 0.334]}' in md and "0.33300000" not in md
    row = next(line for line in md.splitlines() if line.startswith("| solo-seed0 | linear | 0 |"))
    assert "| 0.09 [0.00, 0.30] | 0.090 | +0.04 [-0.16, +0.24] |" in row  # best has no interval: 3 decimals
    assert "| 0.716 [0.690, 0.740] |" in row and "| +0.516 [+0.484, +0.547] |" in row
    algorithm = next(line for line in md.splitlines() if line.startswith("| linear | 1 |"))
    assert algorithm.startswith("| linear | 1 | 0.090 (n = 1, no range) | 0.716 (n = 1, no range) |")
    assert "(n = 1, no range)" in algorithm.split("|")[-3] and "[" not in algorithm
    assert result["algorithms"]["linear"]["final"]["accuracy"]["n"] == 1


# ---- plots: read from the matplotlib figures, not from pixels -------------------------------------------------------
def _legend(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_weights_plot_starts_at_zero_and_equal_weights_cannot_hide_each_other(tmp_path):
    """Before: weights.png autoscaled to 0.3330–0.3340, so equal weights looked far apart, and the three lines had one
    style, the last drawn hiding the others. Now the y-range starts at 0 and spans at least 0.1, the spread is
    written in the panel, and each objective has its own line style and marker, later ones thinner and above."""
    from mo_align.runs.report import plots
    from mo_align.runs.summary import normalize_summary

    run = summary("linear-seed0", "linear", 0, (0.4, 0.5, 0.3), (0.5, 0.5, 0.3))
    w32 = [0.3330000042915344, 0.3330000042915344, 0.33399999141693115]  # float32 weights read back
    run["weights"] = [{"step": s, "weights": dict(zip(OBJECTIVES, w32))} for s in range(1, 21)]
    fig, handles = plots.weights_figure([normalize_summary(run)], OBJECTIVES)
    (ax,) = [a for a in fig.axes if a.get_visible()]
    low, high = ax.get_ylim()
    assert low == 0.0 and high - low >= 0.1 and high > 0.334
    assert [t.get_text() for t in ax.texts] == ["weights 0.333 to 0.334 (spread 0.001)"]
    lines = ax.get_lines()
    assert len(lines) == 3
    styles = [(str(line.get_linestyle()), line.get_marker()) for line in lines]
    assert len(set(styles)) == 3 and ":" not in [s for s, _ in styles]  # dotted is left to targets
    widths = [line.get_linewidth() for line in lines]
    sizes = [line.get_markersize() for line in lines]
    order = [line.get_zorder() for line in lines]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == 3
    assert sizes == sorted(sizes, reverse=True) and order == sorted(order) and len(set(order)) == 3
    plots._save(fig, tmp_path / "weights.png", handles)
    assert _legend(fig) == OBJECTIVES


def test_cov_ema_targets_are_in_the_legend(tmp_path):
    """Before: CTWA's dotted target lines were drawn without a legend entry. Now each run with targets has one."""
    from mo_align.runs.report import plots
    from mo_align.runs.summary import normalize_summary

    runs = [normalize_summary(r) for r in four_runs()[:3]]  # two ctwa runs (targets 0.15, 0.08, 0.08) and linear
    fig, handles = plots.cov_ema_figure(runs, OBJECTIVES, plots._styles(runs), [])
    plots._save(fig, tmp_path / "cov_ema.png", handles)
    legend = _legend(fig)
    assert "ctwa-seed0: target c_k" in legend and "ctwa-seed1: target c_k" in legend
    assert not any(label.startswith("linear-seed0: target") for label in legend)  # linear has no targets
    for ax, target in zip([a for a in fig.axes if a.get_visible()], (0.15, 0.08, 0.08)):
        dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
        assert [line.get_ydata()[0] for line in dotted] == [target, target]  # one per ctwa run
    assert handles["ctwa-seed0: target c_k"].get_linestyle() == ":"
