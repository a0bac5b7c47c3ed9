"""The lab's known-answer check: the answer-style classifier, the predicted attractor of Linear and its boundary by
hand, the observed style, and the check end to end with a fake runner (``python -m mo_align.lab --known-answer``)."""

import json
import random

import numpy as np
import pytest

from mo_align.lab.known_answer import (
    SEGMENT,
    boundary,
    check_rows,
    format_check,
    lead,
    linear_name,
    linear_weighting,
    observed_style,
    parse_linear_name,
    place_preferences,
    predict_style,
    verdict,
)
from mo_align.lab.styles import STYLE_CLASSES, style_of, style_profiles, style_tallies
from mo_align.lab.task import STYLE_FUNCS, split_problems


# ---- the style classifier ------------------------------------------------------------------------------------------
HAND = {
    "Step 1: 8+7=15.\nStep 2: 15+6=21.\nSo the answer is \\boxed{21}.": "A",
    "First, 8+7=15.\nThen, 15+6=21.\nSo the answer is \\boxed{21}.": "A",
    "Step 1: 8+7=15.\nStep 2: 15+6=23.\nSo the answer is \\boxed{23}.": "A",  # the data's C: the same template
    "The answer is \\boxed{21}.": "B",
    "\\boxed{21}": "B",
    "The answer is \\boxed{19}.": "B",  # the data's D
    "The answer is 21.": "E",
    "Step 1: 8+7=15.\nStep 2: 15+6=21.\nThe answer is 21.": "F",
    "Step 1: 8+7=15.": "F",  # a step-by-step answer cut before its box
    "1. 15\n2. 21\n\\boxed{21}": "G",
    "1. 15\n2. 23\n\\boxed{23}": "G",
    "1. 9\n1. 8\n\\boxed{7}": "G",  # the compact template with a numbering slip (a trained policy's common form)
    "1. 15\n\\boxed{21}": "other",  # one numbered line is no compact template
    "1. 15\n2. 21": "other",  # compact without its box
    "The answer is \\boxed{}.": "other",  # an empty box is no box, and the line is no E either
    "21\n\\boxed{21}": "other",  # two lines, no template
    "": "other",
    "banana": "other",
}


@pytest.mark.parametrize("text, expected", list(HAND.items()))
def test_style_classifier_on_hand_written_examples(text, expected):
    assert style_of(text) == expected


def test_style_classifier_recovers_the_template_of_every_generated_style():
    """Every warm-start style function over 200 problems: A and C share a template, so do B and D."""
    template = {"A": "A", "C": "A", "B": "B", "D": "B", "E": "E", "F": "F", "G": "G"}
    problems = split_problems()[0][:200]
    rng = random.Random(0)
    for name, fn in STYLE_FUNCS.items():
        got = {style_of(fn(p, rng)) for p in problems}
        assert got == {template[name]}, (name, got)


def test_style_tallies_and_profiles_by_hand():
    labels = [["A", "G"], ["A", "A"]]
    acc = [[1.0, 0.0], [0.0, float("nan")]]  # the NaN sample is left out of its style
    counts, sums = style_tallies(labels, acc)
    j = {s: i for i, s in enumerate(STYLE_CLASSES)}
    assert counts[:, j["A"]].tolist() == [1, 1] and counts[:, j["G"]].tolist() == [1, 0]
    assert sums[:, j["A"]].tolist() == [1.0, 0.0] and counts.sum() == 3
    rewards = np.array([[[1, 0, 1], [0, 1, 1]], [[0, 0, 1], [1, 0, 0]]], dtype=float)
    prof = style_profiles(labels, rewards)
    assert prof["A"] == {"count": 3, "share": 0.75, "means": [pytest.approx(2 / 3), 0.0, pytest.approx(2 / 3)]}
    assert prof["G"]["means"] == [0.0, 1.0, 1.0] and set(prof) == {"A", "G"}
    assert set(style_profiles(labels, rewards, min_count=2)) == {"A"}
    with pytest.raises(ValueError, match="unknown style label"):
        style_tallies([["Z"]], [[1.0]])


# ---- prediction and boundary -----------------------------------------------------------------------------------------
PROFILES = {"A": (0.6, 0.0, 1.0), "G": (0.3, 1.0, 1.0), "B": (0.4, 1.0, 0.0)}


def test_predict_style_by_hand():
    # accuracy only: A 0.6 > B 0.4 > G 0.3; equal weights: G 2.3/3 > A 1.6/3 > B 1.4/3
    assert predict_style(PROFILES, [1, 0, 0]) == "A" and lead(PROFILES, [1, 0, 0]) == pytest.approx(0.2)
    assert predict_style(PROFILES, [1 / 3] * 3) == "G" and lead(PROFILES, [1 / 3] * 3) == pytest.approx(0.7 / 3)
    assert predict_style(PROFILES, [0, 1, 0]) == "G"  # conciseness only: G and B tie at 1; G is first in order
    assert predict_style({"B": (0.4, 1, 0), "G": (0.3, 1, 1)}, [0, 1, 0]) == "B"
    with pytest.raises(ValueError, match="3 reward means but 2 weights"):
        predict_style(PROFILES, [1, 0])


def test_boundary_by_hand_matches_the_closed_form():
    """w(t) = (1 − 2t/3, t/3, t/3): A scores 0.6 − 0.2t/3, G 0.3 + 1.4t/3, B 0.4 + 0.2t/3. G overtakes A at
    t = 0.3 / (1.6/3) = 0.5625 = 3Δp / (1 + 2Δp) with Δp = p_A − p_G = 0.3; B overtakes A only at t = 1.5."""
    (c,) = boundary(PROFILES, SEGMENT)
    assert (c.before, c.after) == ("A", "G") and c.t == pytest.approx(0.5625)
    assert c.weights == pytest.approx((1 - 2 * 0.5625 / 3, 0.5625 / 3, 0.5625 / 3))
    # a third style X crossing first: A -> X at t = 0.05 / 0.1 = 0.5, X -> G at 0.25 / (1.3/3) = 0.75 / 1.3
    x = {**PROFILES, "X": (0.55, 0.6, 0.6)}
    first, second = boundary(x, SEGMENT)
    assert (first.before, first.after, second.before, second.after) == ("A", "X", "X", "G")
    assert first.t == pytest.approx(0.5) and second.t == pytest.approx(0.75 / 1.3)
    # the oracle: the argmax on a fine grid changes exactly at these points
    grid = np.linspace(0, 1, 4001)
    winners = [predict_style(x, [(1 - t) * a + t * b for a, b in zip(*SEGMENT)]) for t in grid]
    flips = [grid[i] for i in range(1, len(grid)) if winners[i] != winners[i - 1]]
    assert flips == pytest.approx([first.t, second.t], abs=1 / 4000)
    assert boundary({"A": (1, 1, 1), "B": (0, 0, 0)}, SEGMENT) == []  # A dominates: no crossing


def test_preferences_sit_at_the_margin_on_both_sides_of_the_boundary():
    """Near t* = 0.5625 the lead grows as |t − t*| · 1.6/3 (A's runner-up on the left is G while A − B ≥ 0.1),
    so a lead of 0.1 is reached at t* ∓ 0.1875; the weights are rounded to 3 decimals."""
    crossing, (left, right) = place_preferences(PROFILES, SEGMENT, margin=0.1)
    assert crossing.t == pytest.approx(0.5625)
    assert left.predicted == "A" and right.predicted == "G"
    assert left.t == pytest.approx(0.375, abs=2e-3) and right.t == pytest.approx(0.75, abs=2e-3)
    for p in (left, right):
        assert p.gap >= 0.1 and p.gap == pytest.approx(lead(PROFILES, p.weights))
        assert p.weights == tuple(round(v, 3) for v in p.weights)
        # the nearest such point: one grid step closer to the boundary, the lead is below the margin
        closer = p.t + (1 / 2000 if p is left else -1 / 2000)
        w = [round((1 - closer) * a + closer * b, 3) for a, b in zip(*SEGMENT)]
        assert lead(PROFILES, w) < 0.1 or w == list(p.weights)
    # no crossing: both ends of the segment
    none, ends = place_preferences({"A": (1, 1, 1), "B": (0, 0, 0)}, SEGMENT)
    assert none is None and [p.t for p in ends] == [0.0, 1.0] and {p.predicted for p in ends} == {"A"}


def test_linear_names_round_trip_and_resolve_to_the_linear_weighting():
    assert linear_name((0.75, 0.125, 0.125)) == "linear-w0.75_0.125_0.125"
    assert linear_name((1.0, 0.0, 0.0)) == "linear-w1_0_0"
    assert parse_linear_name("linear-w0.75_0.125_0.125") == [0.75, 0.125, 0.125]
    assert linear_weighting("linear-w1_0_0") == ("linear", {"weights": [1.0, 0.0, 0.0]})
    assert parse_linear_name("linear") is None and parse_linear_name("linear-seed0") is None
    assert linear_weighting("ctwa") is None
    with pytest.raises(ValueError, match="must not all be 0"):
        parse_linear_name("linear-w0_0_0")


# ---- observation and verdict ---------------------------------------------------------------------------------------
def test_observed_style_and_verdicts_by_hand():
    """4 prompts × 2 samples. Start: A everywhere but one G per prompt (G 1/2). Final: G on prompts 0–2 (both
    samples), A on prompt 3: G's share 3/4, its Δ share +1/4; A's Δ −1/4."""
    start = [["A", "G"]] * 4
    final = [["G", "G"]] * 3 + [["A", "A"]]
    obs = observed_style(final, start, n_boot=500)
    assert obs["style"] == "G" and obs["share"]["estimate"] == 0.75 and obs["shares"]["A"] == 0.25
    assert obs["share"]["low"] >= 0.25 and obs["share"]["high"] == 1.0  # prompts resampled: 0, 1/4, ..., 1
    assert obs["delta_share"]["G"]["estimate"] == 0.25 and obs["delta_share"]["A"]["estimate"] == -0.25
    assert verdict("G", {**obs, "delta_share": {**obs["delta_share"], "G": {"estimate": 0.25, "low": 0.1}}}) == "pass"
    assert verdict("G", obs) == "fail"  # the interval of G's rise reaches 0 (prompt 3 fell back): not significant
    rising = {
        "A": {"estimate": -0.3, "low": -0.4},
        "G": {"estimate": 0.3, "low": 0.1},
        "B": {"estimate": 0.0, "low": 0},
    }
    assert verdict("G", {"style": "A", "delta_share": rising}) == "moving"
    assert verdict("B", {"style": "A", "delta_share": rising}) == "fail"


# ---- end to end with a fake runner ----------------------------------------------------------------------------------
N_PROMPTS = 50


def _start_records():
    """Per prompt: samples A, A, G, B with the rewards of PROFILES (A acc 3/5, G 3/10, B 2/5)."""
    labels = [["A", "A", "G", "B"] for _ in range(N_PROMPTS)]
    rewards = [
        [
            [float(i % 5 < 3), 0.0, 1.0],
            [float(i % 5 < 3), 0.0, 1.0],
            [float(i % 10 < 3), 1.0, 1.0],
            [float(i % 5 < 2), 1.0, 0.0],
        ]
        for i in range(N_PROMPTS)
    ]
    return labels, rewards


def _weights(algo):
    """The Linear weights a lab run trains with, read from the recipe file itself (accuracy_only: [1, 0, 0])."""
    import pathlib

    import yaml

    if algo == "accuracy_only":
        return [1.0, 0.0, 0.0]
    if algo == "linear":
        recipe = pathlib.Path(__file__).resolve().parents[1] / "recipes" / "qwen2.5-1.5b" / "linear.yaml"
        return yaml.safe_load(recipe.read_text())["weighting_kwargs"]["weights"]
    return parse_linear_name(algo)


def _fake_lab(moves: bool):
    """A stand-in for run_lab: per algorithm, one run whose final evaluation is all of the predicted style
    (``moves``) or the start again."""
    from mo_align.lab.evidence import EVAL_SCORES_FILE

    calls = []

    def run_lab(algorithms, seeds, steps, eval_steps, out, jobs, sft_steps, cache, task, regime, threads, eta="paper",
                save_models=False):  # fmt: skip
        assert not save_models  # make lab keeps no checkpoints unless --save-models
        calls.append((list(algorithms), list(seeds), steps))
        runs = {}
        for algo in algorithms:
            labels, rewards = _start_records()
            style = predict_style(PROFILES, _weights(algo))
            row = {"A": [0.0, 0.0, 1.0], "G": [1.0, 1.0, 1.0]}[style]  # the final: accuracy 1 within its style
            final = ([[style] * 4] * N_PROMPTS, [[row] * 4] * N_PROMPTS) if moves else (labels, rewards)
            run_dir = f"{out}/{algo}-seed0"
            import os

            os.makedirs(run_dir)
            evals = [
                {"step": 0, "rewards": rewards, "labels": labels},
                {"step": steps, "rewards": final[1], "labels": final[0]},
            ]
            payload = {"objectives": ["accuracy", "conciseness", "clarity"], "evals": evals}
            with open(os.path.join(run_dir, EVAL_SCORES_FILE), "w") as f:
                json.dump(payload, f)
            runs[f"{algo}-seed0"] = {"output_dir": run_dir}
        return {"runs": runs}

    return run_lab, calls


@pytest.mark.parametrize("moves", [True, False])
def test_known_answer_check_end_to_end_with_a_fake_runner(tmp_path, monkeypatch, capsys, moves):
    from mo_align.lab import fidelity, run, sft

    profiles = {s: {"count": 100, "share": 0.25, "means": list(m)} for s, m in PROFILES.items()}
    monkeypatch.setattr(sft, "warm_start", lambda cache, **kw: (str(tmp_path / "sft"), {"reference_length": 20.0}))
    monkeypatch.setattr(fidelity, "probe_profiles", lambda sft_dir, ref: profiles)
    fake, calls = _fake_lab(moves)
    monkeypatch.setattr(run, "run_lab", fake)
    out = tmp_path / "ka"
    run.main(["--known-answer", "--out", str(out), "--cache", str(tmp_path / "cache"), "--steps", "7"])
    printed = capsys.readouterr().out
    ((algorithms, seeds, steps),) = calls
    assert seeds == [0] and steps == 7 and len(algorithms) == 2
    left, right = (parse_linear_name(a) for a in algorithms)
    assert predict_style(PROFILES, left) == "A" and predict_style(PROFILES, right) == "G"
    assert "A → G at t = 0.56" in printed  # t* = 0.5625
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if "predicted (lead)" in line)
    rows = [line.split() for line in lines[header + 1 : header + 3]]
    assert [r[0] for r in rows] == [f"{a}-seed0" for a in algorithms]
    assert [r[4] for r in rows] == ["A", "G"]  # predicted
    if moves:  # the final evaluation is all of the predicted style: dominant, share 1, rise significant
        assert [r[6] for r in rows] == ["A", "G"] and [r[-1] for r in rows] == ["pass", "pass"]
        assert "the lab passes its known-answer check: yes" in printed
    else:  # nothing moved: A still dominates (a half of the samples) but did not rise; G is not dominant
        assert [r[6] for r in rows] == ["A", "A"] and [r[-1] for r in rows] == ["fail", "fail"]
        assert "the lab passes its known-answer check: no" in printed
    saved = json.loads((out / "fidelity.json").read_text())
    assert [r["verdict"] for r in saved["known_answer"]] == (["pass"] * 2 if moves else ["fail"] * 2)
    assert saved["profiles"]["A"]["means"] == pytest.approx([0.6, 0.0, 1.0])
    assert "Δ accuracy: between styles vs within styles" in printed
    split = saved["decomposition"]["runs"][f"{algorithms[1]}-seed0"]
    if moves:  # to G (start accuracy 0.3) with accuracy 1 within: between (0.25·0.3 + ...) and within both known
        assert split["delta"]["estimate"] == pytest.approx(1.0 - 0.475)
        assert split["between"]["estimate"] == pytest.approx(0.3 - 0.475)  # all mass to G at G's start accuracy
        assert split["within"]["estimate"] == pytest.approx(1.0 - 0.3)
    else:
        assert split["delta"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}


def test_every_lab_run_ends_with_the_check_of_its_linear_runs(tmp_path, monkeypatch, capsys):
    """make lab's path: the lab's named Linear algorithms (accuracy_only = (1, 0, 0), linear = equal weights) are
    checked after the demo's lines, before the report's path."""
    from mo_align.lab import demo, run

    fake, calls = _fake_lab(True)
    monkeypatch.setattr(run, "run_lab", fake)
    monkeypatch.setattr(demo, "demo_extras", lambda dirs, out, figure: ["(demo extras)"])
    out = tmp_path / "lab"
    run.main(["--algorithms", "accuracy_only", "linear", "--seeds", "0", "--out", str(out)])
    printed = capsys.readouterr().out
    assert calls == [(["accuracy_only", "linear"], [0], 50)]
    rows = {
        line.split()[0]: line.split() for line in printed.splitlines() if line.startswith("  ") and "-seed0" in line
    }
    assert rows["accuracy_only-seed0"][4] == "A" and rows["linear-seed0"][4] == "G"  # predicted
    assert rows["accuracy_only-seed0"][-1] == "pass" and rows["linear-seed0"][-1] == "pass"
    assert "the lab passes its known-answer check: yes" in printed and (out / "fidelity.json").exists()
    assert printed.index("(demo extras)") < printed.index("known-answer check") < printed.index("report: ")


def test_known_answer_refuses_flags_that_pick_runs(capsys):
    from mo_align.lab.run import main

    with pytest.raises(SystemExit):
        main(["--known-answer", "--algorithms", "linear"])
    assert "--known-answer: cannot be combined with --sweep, --algorithms or --quick" in capsys.readouterr().err


def test_near_ties_get_no_verdict_and_the_overall_line_has_three_outcomes():
    """A leads by 0.2 under accuracy only; at (0.55, 0.225, 0.225) A scores 0.555 and G 0.615: G by 0.06; at
    (0.6, 0.2, 0.2) A 0.56 and G 0.58: G by 0.02 < MIN_LEAD, too close to call."""
    start, to_a, to_g = [["A", "G"]] * 4, [["A", "A"]] * 4, [["G", "G"]] * 4

    def run(name, w, final):
        return {"run": name, "weights": w, "start_labels": start, "final_labels": final}

    rows = check_rows(PROFILES, [run("acc", [1, 0, 0], to_a), run("near", [0.6, 0.2, 0.2], to_a)])
    assert [r["predicted"] for r in rows] == ["A", "G"] and rows[1]["lead"] == pytest.approx(0.02)
    assert [r["verdict"] for r in rows] == ["pass", "too close"]  # "near" went to A, but G's lead is noise
    assert format_check(rows)[-1] == "the lab passes its known-answer check: yes"
    rows = check_rows(PROFILES, [run("acc", [1, 0, 0], to_a), run("g", [0.55, 0.225, 0.225], to_a)])
    assert rows[1]["lead"] == pytest.approx(0.06) and rows[1]["verdict"] == "fail"
    assert format_check(rows)[-1] == "the lab passes its known-answer check: no"
    assert check_rows(PROFILES, [run("g", [0.55, 0.225, 0.225], to_g)])[0]["verdict"] == "pass"
    rows = check_rows(PROFILES, [run("near", [0.6, 0.2, 0.2], to_g)])
    assert format_check(rows)[-1] == "the lab passes its known-answer check: cannot be checked"


def test_runs_without_styles_or_with_a_broken_file_get_one_line(tmp_path):
    from mo_align.lab.fidelity import fidelity_lines

    (tmp_path / "old-seed0").mkdir()
    evals = [{"step": 0, "rewards": [[[1.0, 0.0, 1.0]]]}, {"step": 5, "rewards": [[[1.0, 0.0, 1.0]]]}]
    payload = {"objectives": ["accuracy", "conciseness", "clarity"], "evals": evals}
    (tmp_path / "old-seed0" / "lab_eval_scores.json").write_text(json.dumps(payload))
    (line,) = fidelity_lines([str(tmp_path / "old-seed0")])
    assert (
        line == "known-answer check and Δ-accuracy decomposition skipped: no answer styles recorded in ['old-seed0']"
    )
    (tmp_path / "gone-seed0").mkdir()
    (line,) = fidelity_lines([str(tmp_path / "gone-seed0")])
    assert line.startswith("known-answer check and Δ-accuracy decomposition skipped: ") and "cannot be read" in line
